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

Schema ``cxrlib.run/2``, defined once as the typed :class:`RunRecord`. Its ``spec`` section
is the run's :class:`cxrlib.spec.RunSpec` as it was given (everything the run is), and
``runtime`` how it was computed (strategy, mixed precision, XLA; the workers, replicas and
batches)::

    {"schema": "cxrlib.run/2", "name": "DN-V2", "created": "2024-05-01T12:00:00+00:00",
     "dataset": {...}, "model": {...}, "prep": {...}, "spec": {...}, "runtime": {...},
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
from datetime import datetime, timezone
from numbers import Real
from pathlib import Path
from typing import Literal, Mapping

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from cxrlib.errors import InputError
from cxrlib.files import jsonable, write_json_atomic
from cxrlib.spec import RunSpec

log = logging.getLogger(__name__)

SCHEMA = "cxrlib.run/2"
RECORD_FILE = "record.json"

class _Section(BaseModel):
    """A record section: typed keys, checked strictly (no bool for an int, no str for a
    number); keys beyond the schema are kept, so newer records still read."""

    model_config = ConfigDict(strict=True, extra="allow")


class Runtime(_Section):
    """How a run was computed, which does not change what it is (:func:`cxrlib.runs.train.train`'s
    keyword options)."""

    strategy: str | None = None
    mixed_precision: bool = False
    xla: bool = False
    run_eagerly: bool = False
    # how the work was split (absent in records written before multi-worker training):
    workers: int = 1                       # processes training together (1 unless multiworker)
    replicas: int = 1                      # devices over all of them (num_replicas_in_sync)
    per_worker_batch: int | None = None    # images per step on each worker: global_batch / workers
    global_batch: int | None = None        # images per step in all: spec.batch_size
    loss_scale: bool = False               # the optimizer scales the loss (mixed precision)


class DatasetInfo(_Section):
    root: str
    layout: str
    split_file: str
    classes: list[str] = Field(min_length=1)
    n_train: int
    n_val: int
    n_test: int


class ModelInfo(_Section):
    backbone: str
    variant: str
    weights: str | None
    image_size: int
    channels: int
    trainable_params: int
    total_params: int


class Environment(_Section):
    python: str
    tensorflow: str
    keras: str
    cxrlib: str
    numpy: str
    device: str
    platform: str


class Training(_Section):
    epochs_run: int
    wall_time_s: float
    history: dict[str, list[float | None]]
    resumed: bool

    @model_validator(mode="after")
    def _history_matches_epochs(self) -> "Training":
        if self.epochs_run:  # an untrained run (V0) has no history
            missing = [k for k in HISTORY_KEYS if k not in self.history]
            if missing:
                raise ValueError(f"history: missing {missing}")
        for key, values in self.history.items():
            if len(values) != self.epochs_run:
                raise ValueError(f"history.{key} has {len(values)} entries but epochs_run is "
                                 f"{self.epochs_run}")
        return self


class Final(_Section):
    """Last-epoch numbers; null where the value was NaN (a diverged loss) or there was no
    validation set."""

    loss: float | None
    accuracy: float | None
    val_loss: float | None
    val_accuracy: float | None


class Artifacts(_Section):
    model: str
    history: str


class Skipped(_Section):
    path: str
    error: str


class RunRecord(_Section):
    """A run record (schema ``cxrlib.run/2``): the one definition of what ``record.json`` holds."""

    schema_: Literal["cxrlib.run/2"] = Field(alias="schema")
    name: str
    created: str
    dataset: DatasetInfo
    model: ModelInfo
    prep: dict
    spec: RunSpec
    runtime: Runtime
    environment: Environment
    training: Training
    final: Final
    test: dict | None
    skipped: list[Skipped]
    artifacts: Artifacts

    @field_validator("created")
    @classmethod
    def _iso_time(cls, value: str) -> str:
        if _parse_time(value) is None:
            raise ValueError(f"{value!r} is not an ISO-8601 time")
        return value


HISTORY_KEYS = ("loss", "accuracy")


def _parse_time(text: str) -> datetime | None:
    """The datetime of an ISO-8601 string (naive ones taken as UTC); None if unparseable.
    Not a pydantic ``datetime`` field: that reads a numeric string ("2024") as Unix seconds."""
    if text.endswith(("Z", "z")):  # Python < 3.11 does not read the "Z" suffix
        text = text[:-1] + "+00:00"
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        return None
    return moment if moment.tzinfo else moment.replace(tzinfo=timezone.utc)


def problems_of(error: ValidationError) -> list[str]:
    """One readable line per problem of a pydantic validation error: ``where: what``."""
    lines = []
    for item in error.errors():
        where = ".".join(str(part) for part in item["loc"]) or "record"
        message = item["msg"].removeprefix("Value error, ")
        lines.append(f"{where}: {message}")
    return lines


def validate_record(record: dict) -> list[str]:
    """Human-readable problems with record; ``[]`` when it is a valid ``cxrlib.run/1`` record.

    Checked against :class:`RunRecord`: every required section and key with its type, a
    parseable ``created`` time, and that every history list has ``epochs_run`` entries.
    Numpy values are judged as the JSON they will be written as.
    """
    if not isinstance(record, dict):
        return [f"a record must be a JSON object, not {type(record).__name__}"]
    try:
        RunRecord.model_validate(jsonable(record))
    except ValidationError as error:
        return problems_of(error)
    return []


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
        raise InputError(f"{path} is not valid JSON: {error}") from error
    except UnicodeDecodeError as error:
        raise InputError(f"{path} is not a UTF-8 text file: {error}") from error
    problems = validate_record(record)
    if problems:
        raise InputError(f"{path} is not a valid run record:\n- " + "\n- ".join(problems))
    return record


def record_float(record: Mapping | None, section: str, key: str) -> float:
    """``record[section][key]`` as a float; NaN when the record, section or key is missing or
    null, or the value is not a number (a bool is not one)."""
    value = ((record or {}).get(section) or {}).get(key)
    return float(value) if isinstance(value, Real) and not isinstance(value, bool) else math.nan


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
