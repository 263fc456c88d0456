"""cxrlib's own error types: the problems a user can fix.

The command line (:mod:`cxrlib.apps.cli`) prints a :class:`UserError` as one line and exits
with status 2; any other exception is a bug, reported as an internal error with a log file.
So raise one of these only where the message says what is wrong *and* what to do about it
(the file, the row, the flag), and let everything else propagate.

Each type is also a subclass of the built-in error it replaces, so callers that catch
``ValueError`` or ``FileExistsError`` keep working.
"""

from __future__ import annotations


class UserError(Exception):
    """A problem the user can fix (a flag, a file, a folder); the message says how."""


class InputError(UserError, ValueError):
    """A value the user gave, or the content of a file they gave, that cxrlib cannot use."""


class RefusedFolderError(UserError, FileExistsError):
    """An output folder cxrlib will not write into: it holds files cxrlib did not write."""
