"""Writing files safely: the one way cxrlib writes a JSON, CSV or text file.

Every write goes to a temporary file beside the target, is flushed to disk, then renamed over
the target in one step (``os.replace``). Until that rename the previous file is untouched; if
anything fails the temporary file is removed and the error re-raised, so a crash or a full
disk never leaves half a file where a good one was.
"""

from __future__ import annotations

import json
import math
import os
import tempfile
from pathlib import Path
from typing import IO, Any, Callable

import numpy as np
import pandas as pd


def jsonable(value: Any) -> Any:
    """A copy of value made of plain JSON types: numpy scalars and arrays become Python
    numbers and lists, tuples lists, paths strings, and NaN or infinite floats ``None``."""
    if isinstance(value, dict):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple, set, frozenset)):
        return [jsonable(v) for v in value]
    if isinstance(value, np.ndarray):
        return jsonable(value.tolist())
    if isinstance(value, (bool, np.bool_)):
        return bool(value)
    if isinstance(value, (int, np.integer)):
        return int(value)
    if isinstance(value, (float, np.floating)):
        return float(value) if math.isfinite(value) else None
    if isinstance(value, os.PathLike):
        return os.fspath(value)
    return value


def write_atomic(path: str | os.PathLike, write: Callable[[IO[str]], None]) -> Path:
    """Call ``write(handle)`` on a temporary text file beside ``path``, then rename it over
    ``path``; return the path. The old file's mode is kept (new files get 0644)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    mode = path.stat().st_mode & 0o777 if path.exists() else 0o644
    fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        os.chmod(tmp_name, mode)
        with os.fdopen(fd, "w", encoding="utf-8", newline="") as handle:
            write(handle)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp_name, path)
    except BaseException:
        Path(tmp_name).unlink(missing_ok=True)
        raise
    _fsync_dir(path.parent)
    return path


def write_json_atomic(path: str | os.PathLike, data: Any) -> Path:
    """Write ``data`` as indented JSON (NaN → null, numpy → Python) atomically."""
    clean = jsonable(data)

    def dump(handle: IO[str]) -> None:
        json.dump(clean, handle, indent=2, allow_nan=False)
        handle.write("\n")

    return write_atomic(path, dump)


def write_csv_atomic(frame: pd.DataFrame, path: str | os.PathLike) -> Path:
    """Write a DataFrame as CSV (no index) atomically."""
    return write_atomic(path, lambda handle: frame.to_csv(handle, index=False))


def write_text_atomic(path: str | os.PathLike, text: str) -> Path:
    """Write a text file atomically."""
    return write_atomic(path, lambda handle: handle.write(text))


def _fsync_dir(directory: Path) -> None:
    """Make a rename in directory durable (POSIX); silently skipped where unsupported."""
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)
