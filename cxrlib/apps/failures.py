"""How ``cxr`` fails: an error the user can fix is one line and exit status 2
(:func:`user_error_message`); any other is an internal error, its traceback written to a log
file (:func:`log_traceback`, in :func:`log_dir`) and exit status 1.
"""

from __future__ import annotations

import argparse
import errno
import os
import sys
import time
import traceback
from pathlib import Path
from typing import Sequence

from cxrlib.errors import UserError
from cxrlib.text import one_line


def log_dir() -> Path:
    """Where internal errors' tracebacks go: ``$CXR_LOG_DIR``, else ``~/.cache/cxrlib/logs``."""
    from cxrlib.environment import user_folder

    return user_folder("CXR_LOG_DIR", "logs")


def log_traceback(argv: Sequence[str] | None) -> Path | None:
    """Write the current exception's traceback (and the command line) to a new log file."""
    from cxrlib.files import write_text_atomic

    try:
        path = log_dir() / f"cxr-{time.strftime('%Y%m%d-%H%M%S')}-{os.getpid()}.log"
        return write_text_atomic(path, f"cxr {' '.join(sys.argv[1:] if argv is None else argv)}\n\n"
                                 + traceback.format_exc())
    except OSError:
        return None


def check_out(args: argparse.Namespace) -> None:
    """Refuse an output path that exists as a file before any work starts."""
    out = getattr(args, "out", None)
    if out and Path(out).exists() and not Path(out).is_dir():
        raise NotADirectoryError(f"The output path {out} is a file; give a folder path.")


#: The errors the user can fix: cxrlib's own, the file system's plain answers about a path
#: they gave, and a bad flag. Every other exception is a bug (exit 1, traceback in a log file).
USER_ERRORS: tuple[type[BaseException], ...] = (
    UserError, FileNotFoundError, PermissionError, NotADirectoryError, IsADirectoryError,
    argparse.ArgumentError, argparse.ArgumentTypeError)
_DISK_FULL = frozenset({errno.ENOSPC, errno.EDQUOT})


def user_error_message(error: BaseException, args: argparse.Namespace) -> str | None:
    """The one line to print for an error the user can fix, or None for an internal error."""
    if isinstance(error, OSError) and error.errno in _DISK_FULL:
        where = Path(error.filename).parent if error.filename else getattr(args, "out", None)
        return (f"the disk is full: cannot write in {where or 'the output folder'}; free some "
                "space there, or give an output folder on another disk.")
    if isinstance(error, USER_ERRORS):
        return one_line(error)
    return None
