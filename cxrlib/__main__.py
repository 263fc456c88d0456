"""``python -m cxrlib``: the command-line interface."""

import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # keep TensorFlow's C++ start-up chatter out

from cxrlib.apps.cli import main

if __name__ == "__main__":
    sys.exit(main())
