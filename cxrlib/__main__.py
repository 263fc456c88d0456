"""``python -m cxrlib``: the command-line interface."""

import sys

from cxrlib.apps.cli import main  # importing cxrlib quiets TensorFlow's start-up (cxrlib/quiet.py)

if __name__ == "__main__":
    sys.exit(main())
