"""``python -m cxrlib``: the command-line interface."""

import sys

from cxrlib.cli import main

if __name__ == "__main__":
    sys.exit(main())
