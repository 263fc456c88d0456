"""Run records: every training run leaves a machine-readable account of itself.

A run directory holds ``record.json`` (this module), ``model.keras``, ``history.csv`` and
perhaps ``metrics.json``. The record says *what* was trained (data, split, backbone,
preprocessing, hyperparameters), *where* (library versions, device), *how it went* (the
full history, wall time) and *how good it is* (the test metrics of
:func:`cxrlib.runs.metrics.compute_metrics`). Every table and figure of the report is built from
records only, never from numbers copied by hand: a number in a table can always be traced
back to the run that produced it.

Two rules keep records trustworthy:

- a record is **validated** before it is written and when it is read, so a malformed one
  fails loudly and early, naming the problems;
- it is written **atomically** (temporary file in the same directory, ``fsync``,
  ``os.replace``): a crash or a full disk never leaves half a JSON file where the previous
  good one was.

Schema ``cxrlib.run/1`` (the sections and their required keys are in :data:`REQUIRED`)::

    {"schema": "cxrlib.run/1", "name": "DN-V2", "created": "2024-05-01T12:00:00+00:00",
     "dataset": {...}, "model": {...}, "prep": {...}, "hyperparameters": {...},
     "environment": {...}, "training": {...}, "final": {...},
     "test": {...compute_metrics...} or null, "skipped": [{"path", "error"}],
     "artifacts": {"model": "model.keras", "history": "history.csv"}}

JSON has no NaN: a NaN or infinite number (a diverged loss, say) is stored as ``null``.
"""

from __future__ import annotations

import json
import logging
import math
import os
import platform
import tempfile
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np

log = logging.getLogger(__name__)

SCHEMA = "cxrlib.run/1"
RECORD_FILE = "record.json"

_STR, _INT, _BOOL = (str,), (int,), (bool,)
_NUM = (int, float)
_OPT_STR, _OPT_NUM = (str, type(None)), (int, float, type(None))

REQUIRED: dict[str, dict[str, tuple[type, ...]]] = {
    "dataset": {"root": _STR, "layout": _STR, "split_file": _STR, "classes": (list,),
                "n_train": _INT, "n_val": _INT, "n_test": _INT},
    "model": {"backbone": _STR, "variant": _STR, "weights": _OPT_STR, "image_size": _INT,
              "channels": _INT, "trainable_params": _INT, "total_params": _INT},
    "prep": {},
    "hyperparameters": {"epochs": _INT, "batch_size": _INT, "optimizer": _STR,
                        "learning_rate": _NUM, "seed": _INT},
    "environment": {"python": _STR, "tensorflow": _STR, "keras": _STR, "cxrlib": _STR,
                    "numpy": _STR, "device": _STR, "platform": _STR},
    "training": {"epochs_run": _INT, "wall_time_s": _NUM, "history": (dict,),
                 "resumed": _BOOL},
    # null where the value was NaN (a diverged loss) or there was no validation set
    "final": {"loss": _OPT_NUM, "accuracy": _OPT_NUM, "val_loss": _OPT_NUM,
              "val_accuracy": _OPT_NUM},
    "artifacts": {"model": _STR, "history": _STR},
}
"""Each dict section of a record and its required keys with their allowed types."""

TOP_LEVEL: dict[str, tuple[type, ...]] = {
    "schema": _STR, "name": _STR, "created": _STR, **{section: (dict,) for section in REQUIRED},
    "test": (dict, type(None)), "skipped": (list,),
}
"""Every required top-level key of a record and its allowed types."""

HISTORY_KEYS = ("loss", "accuracy")


def utc_now() -> str:
    """The current time as an ISO-8601 UTC string, for ``record["created"]``."""
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


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


def write_json_atomic(path: str | os.PathLike, data: dict) -> Path:
    """Write data as JSON to path atomically; return the path.

    The JSON goes to a temporary file next to the target, is flushed to disk, then renamed
    over the target in one step (``os.replace``). Until that rename the previous file is
    untouched; if anything fails the temporary file is removed and the error re-raised.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    clean = jsonable(data)
    # mkstemp makes a private (0600) file; keep the old file's mode, or the usual 0644
    mode = path.stat().st_mode & 0o777 if path.exists() else 0o644
    fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        os.chmod(tmp_name, mode)
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            json.dump(clean, handle, indent=2, allow_nan=False)
            handle.write("\n")
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp_name, path)
    except BaseException:
        Path(tmp_name).unlink(missing_ok=True)
        raise
    _fsync_dir(path.parent)
    return path


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


def environment_info() -> dict:
    """Library versions, device and platform of this process, for ``record["environment"]``.

    TensorFlow and Keras are imported here only, and may be absent ("not installed").
    """
    import cxrlib

    info = {"python": platform.python_version(), "tensorflow": "not installed",
            "keras": "not installed", "cxrlib": cxrlib.__version__, "numpy": np.__version__,
            "device": "CPU", "platform": platform.platform()}
    try:
        import keras
        info["keras"] = str(keras.__version__)
    except ImportError:
        pass
    try:
        import tensorflow as tf
    except ImportError:
        return info
    info["tensorflow"] = str(tf.__version__)
    info["device"] = _device_name(tf)
    return info


def _device_name(tf: Any) -> str:
    """"GPU: <name>" for the first visible GPU, else "CPU"."""
    try:
        gpus = tf.config.list_physical_devices("GPU")
        if not gpus:
            return "CPU"
        details = tf.config.experimental.get_device_details(gpus[0])
        return f"GPU: {details.get('device_name', gpus[0].name)}"
    except Exception as error:  # a broken driver must not stop a record being written
        log.warning("Could not query the GPU: %s", error)
        return "CPU"


def validate_record(record: dict) -> list[str]:
    """Human-readable problems with record; ``[]`` when it is a valid ``cxrlib.run/1`` record.

    Checks the schema string, every required section and key with its type, a parseable
    ``created`` time, and that every history list has ``epochs_run`` entries. Numpy values
    are judged as the JSON they will be written as.
    """
    if not isinstance(record, dict):
        return [f"a record must be a JSON object, not {type(record).__name__}"]
    record = jsonable(record)
    problems = _check_keys(record, TOP_LEVEL, "record")
    if "schema" in record and record["schema"] != SCHEMA:
        problems.append(f"schema is {record['schema']!r}, expected {SCHEMA!r}")
    if isinstance(record.get("created"), str) and _parse_time(record["created"]) is None:
        problems.append(f"created {record['created']!r} is not an ISO-8601 time")
    for section, keys in REQUIRED.items():
        if isinstance(record.get(section), dict):
            problems += _check_keys(record[section], keys, section)
    dataset = record.get("dataset") if isinstance(record.get("dataset"), dict) else {}
    classes = dataset.get("classes")
    if isinstance(classes, list) and not (classes and all(isinstance(c, str) for c in classes)):
        problems.append("dataset.classes must be a non-empty list of class names")
    if isinstance(record.get("training"), dict):
        problems += _check_history(record["training"])
    if isinstance(record.get("skipped"), list):
        problems += [f"skipped[{i}] must be an object with 'path' and 'error'"
                     for i, item in enumerate(record["skipped"])
                     if not (isinstance(item, dict) and {"path", "error"} <= item.keys())]
    return problems


def _type_names(types: tuple[type, ...]) -> str:
    """'int', 'number or null', ... for error messages."""
    names = {int: "int", float: "number", str: "str", bool: "bool", dict: "object",
             list: "list", type(None): "null"}
    words = [names.get(t, t.__name__) for t in types]
    if "number" in words:
        words.remove("int")
    return " or ".join(words)


def _has_type(value: Any, types: tuple[type, ...]) -> bool:
    """isinstance, except that a bool is not accepted as a number."""
    if isinstance(value, bool) and bool not in types:
        return False
    return isinstance(value, types)


def _check_keys(section: dict, keys: dict[str, tuple[type, ...]], where: str) -> list[str]:
    """Missing keys and wrongly typed values of one section ("record" for the top level)."""
    top = where == "record"
    problems = []
    for key, types in keys.items():
        if key not in section:
            problems.append(f"missing section {key!r}" if top else f"{where}: missing key {key!r}")
        elif not _has_type(section[key], types):
            name = key if top else f"{where}.{key}"
            problems.append(f"{name} must be {_type_names(types)}, "
                            f"not {type(section[key]).__name__}")
    return problems


def _check_history(training: dict) -> list[str]:
    """Every history series is a list of numbers (or null) with epochs_run entries."""
    history, epochs = training.get("history"), training.get("epochs_run")
    if not isinstance(history, dict):
        return []
    problems = ([] if epochs == 0 else  # an untrained run (V0) has no history
                [f"training.history: missing {key!r}" for key in HISTORY_KEYS if key not in history])
    for key, values in history.items():
        if not isinstance(values, list):
            problems.append(f"training.history.{key} must be a list")
        elif any(not _has_type(v, _OPT_NUM) for v in values):
            problems.append(f"training.history.{key} must hold numbers only")
        elif _has_type(epochs, _INT) and len(values) != epochs:
            problems.append(f"training.history.{key} has {len(values)} entries "
                            f"but epochs_run is {epochs}")
    return problems


def _parse_time(text: str) -> datetime | None:
    """The datetime of an ISO-8601 string (naive ones taken as UTC); None if unparseable."""
    if text.endswith(("Z", "z")):  # Python < 3.11 does not read the "Z" suffix
        text = text[:-1] + "+00:00"
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        return None
    return moment if moment.tzinfo else moment.replace(tzinfo=timezone.utc)


def write_record(run_dir: str | os.PathLike, record: dict) -> Path:
    """Validate record and write it atomically to ``run_dir/record.json``; return that path.

    Raises ValueError listing every problem when the record is not valid. The ``_dir``
    key that :func:`find_records` adds is not written.
    """
    record = {k: v for k, v in record.items() if k != "_dir"}
    problems = validate_record(record)
    if problems:
        raise ValueError(f"Invalid run record for {run_dir}:\n- " + "\n- ".join(problems))
    return write_json_atomic(Path(run_dir) / RECORD_FILE, record)


def read_record(path_or_run_dir: str | os.PathLike) -> dict:
    """The record in a ``record.json`` file or a run directory.

    Raises FileNotFoundError when it does not exist, ValueError naming the file when it is
    not valid JSON or not a valid record.
    """
    path = Path(path_or_run_dir)
    if path.is_dir():
        path = path / RECORD_FILE
    try:
        record = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as error:
        raise ValueError(f"{path} is not valid JSON: {error}") from error
    except UnicodeDecodeError as error:
        raise ValueError(f"{path} is not a UTF-8 text file: {error}") from error
    problems = validate_record(record)
    if problems:
        raise ValueError(f"{path} is not a valid run record:\n- " + "\n- ".join(problems))
    return record


def find_records(runs_dir: str | os.PathLike) -> list[dict]:
    """Every valid record under runs_dir (searched recursively), oldest first.

    Each gets ``"_dir"``, the path of its run directory. Unreadable or invalid records are
    logged as warnings and skipped, so one broken run never hides all the others.
    """
    runs_dir = Path(runs_dir)
    if not runs_dir.is_dir():
        log.warning("No runs directory %s.", runs_dir)
        return []
    records = []
    for path in sorted(runs_dir.rglob(RECORD_FILE)):
        if any(part.startswith(".") for part in path.relative_to(runs_dir).parts[:-1]):
            continue  # a run still in progress (RUN_DIR/.partial/) is not a run yet
        try:
            record = read_record(path)
        except (OSError, ValueError) as error:
            log.warning("Skipping run record %s: %s", path, error)
            continue
        record["_dir"] = str(path.parent)
        records.append(record)
    return sorted(records, key=lambda r: (_parse_time(r["created"]), r["_dir"]))
