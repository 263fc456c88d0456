"""Writing files safely: the one way cxrlib writes a JSON, CSV, text, npz or binary file (and
reads a small JSON file back).

Every write goes to a temporary file beside the target, is flushed to disk, then renamed over
the target in one step (``os.replace``). Until that rename the previous file is untouched; if
anything fails the temporary file is removed and the error re-raised, so a crash or a full
disk never leaves half a file where a good one was. A temporary file is named
``.<target name>.<random><suffix>``, so one that a killed process left behind is recognisably
that target's (:mod:`cxrlib.runs.pretrain_cache` removes its own stale ones).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import math
import os
import tempfile
from pathlib import Path
from typing import IO, Any, Callable, Iterator

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


@contextlib.contextmanager
def replacing(path: str | os.PathLike, suffix: str = ".tmp") -> Iterator[Path]:
    """A temporary path beside ``path`` to write (``.<name>.<random><suffix>``, created empty);
    when the block ends it is flushed to disk and renamed over ``path``, and if the block raises
    it is removed. The old file's mode is kept (new files get 0644)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    mode = path.stat().st_mode & 0o777 if path.exists() else 0o644
    fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=suffix, dir=path.parent)
    os.close(fd)
    try:
        yield Path(tmp_name)
        _fsync_file(Path(tmp_name))
        os.chmod(tmp_name, mode)
        os.replace(tmp_name, path)
    except BaseException:
        Path(tmp_name).unlink(missing_ok=True)
        raise
    _fsync_dir(path.parent)


def write_atomic(path: str | os.PathLike, write: Callable[[IO], None], binary: bool = False) -> Path:
    """Call ``write(handle)`` on a temporary file beside ``path`` (text, or bytes with
    ``binary``), then rename it over ``path``; return the path (see :func:`replacing`)."""
    with replacing(path) as tmp:
        with open(tmp, "wb") if binary else open(tmp, "w", encoding="utf-8", newline="") as handle:
            write(handle)
    return Path(path)


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


def write_npz_atomic(path: str | os.PathLike, arrays: dict[str, Any], compressed: bool = False) -> Path:
    """Write named arrays as an ``.npz`` (zip-compressed with ``compressed``) atomically."""
    save = np.savez_compressed if compressed else np.savez
    return write_atomic(path, lambda handle: save(handle, **arrays), binary=True)


def read_json(path: str | os.PathLike) -> dict:
    """The JSON object in a small file; {} when it is missing, unreadable, half written or not
    an object."""
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def _fsync_file(path: Path) -> None:
    """Flush a written file's content to disk before it is renamed into place."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


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


def sha256_file(path: str | os.PathLike) -> str:
    """The sha256 of a file's content, as hex (read in 1 MiB chunks)."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()
