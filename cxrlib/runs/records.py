"""Run records: every training run leaves a machine-readable account of itself.

A run directory holds ``record.json`` (this module), ``model.keras``, ``history.csv`` and
perhaps ``metrics.json``. The record says *what* was trained (data, split, backbone,
preprocessing, hyperparameters), *where* (library versions, device), *how it went* (the
full history, wall time) and *how good it is* (the test metrics of
:func:`cxrlib.runs.metrics.compute_metrics`). Every table and figure of the report is built from
records only, never from numbers copied by hand: a number in a table can always be traced
back to the run that produced it.

Two rules keep records trustworthy:

- a record is **validated** when it is made (:func:`to_record`) and when it is read, so a
  malformed one fails loudly and early, naming the problems; only a typed, valid record is
  ever written;
- it is written **atomically** (temporary file in the same directory, ``fsync``,
  ``os.replace``): a crash or a full disk never leaves half a JSON file where the previous
  good one was.

Schema ``cxrlib.run/2``, defined once as the typed :class:`RunRecord`: :func:`read_record`,
:func:`find_records` and :func:`cxrlib.runs.train.train` hand back that object, read by
attribute (``record.test.ci.accuracy``, ``record.prep.to_prep()``), never as a dict. Its
``spec`` section is the run's :class:`cxrlib.spec.RunSpec` as it was given (everything the
run is), ``runtime`` how it was computed (strategy, mixed precision, XLA; the workers,
replicas and batches), ``prep`` the :class:`cxrlib.data.prepare.Prep` that made its inputs
(:class:`PrepInfo`) and ``test`` its test metrics (:class:`TestResult`; null without a test
set)::

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
from typing import Annotated, Literal, Mapping

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    PrivateAttr,
    ValidationError,
    field_validator,
    model_validator,
)

from cxrlib.data.prepare import Prep
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
    preset: str | None = None   # the course preset and its run the run was trained for, if any
    run: str | None = None


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
    split: str = "split.csv"


class Skipped(_Section):
    path: str
    error: str


Pair = Annotated[list[int], Field(min_length=2, max_length=2)]              # a tuple, as JSON has it
MeanStd = Annotated[list[float], Field(min_length=2, max_length=2)]
Interval = Annotated[list[float | None], Field(min_length=2, max_length=2)]  # [low, high]


class PrepInfo(_Section):
    """How the run's files became inputs: its :class:`cxrlib.data.prepare.Prep`, field by field
    (the defaults are Prep's, for records written before a field existed)."""

    image_size: int
    backbone: str = "densenet121"
    channels: int = 3
    crop: bool = False
    crop_reference: Pair | None = None    # (w_max, h_max) of the training data
    equalize: str | None = None
    interpolation: str = "bilinear"
    normalization: str = "backbone"
    norm_stats: MeanStd | None = None     # featurewise: (mean, std) of the training pixels

    def to_prep(self) -> Prep:
        """The :class:`Prep` to apply to every file the run's model sees."""
        return Prep(image_size=self.image_size, backbone=self.backbone, channels=self.channels,
                    crop=self.crop, equalize=self.equalize, interpolation=self.interpolation,
                    normalization=self.normalization,
                    crop_reference=None if self.crop_reference is None else tuple(self.crop_reference),
                    norm_stats=None if self.norm_stats is None else tuple(self.norm_stats))


class ClassScores(_Section):
    """One class against the rest, on the test set."""

    precision: float
    recall: float
    specificity: float
    f1: float
    support: int
    auc: float | None        # None when the set has no image of the class, or only such images


class Intervals(_Section):
    """Bootstrap 95 % intervals ``[low, high]``; None where there is none (no resamples, an
    undefined AUC)."""

    accuracy: Interval | None = None
    auc_macro: Interval | None = None


class Roc(_Section):
    """The positive class's ROC curve (two classes)."""

    fpr: list[float]
    tpr: list[float]
    thresholds: list[float]


class OperatingPoint(_Section):
    """The highest threshold reaching ``target`` sensitivity; nulls where none is defined."""

    threshold: float | None
    sensitivity: float | None
    specificity: float | None
    target: float


class TestResult(_Section):
    """The ``test`` section: :func:`cxrlib.runs.metrics.compute_metrics` on the test split, plus
    ``skipped`` and ``non_finite_outputs`` (:func:`cxrlib.runs.evaluate.evaluate`)."""

    __test__ = False   # not a pytest test class

    classes: list[str] = Field(min_length=1)
    n: int
    accuracy: float | None
    loss: float | None = None                       # absent in records older than the test loss
    per_class: dict[str, ClassScores]
    auc_macro: float | None
    auc_macro_note: str | None = None               # why the macro AUC is undefined
    confusion_matrix: list[list[int]]               # rows true, columns predicted
    ci: Intervals
    roc: Roc | None = None                          # two classes only
    operating_point: OperatingPoint | None = None   # two classes only
    skipped: list[Skipped] = []
    non_finite_outputs: int = 0


class RunRecord(_Section):
    """A run record (schema ``cxrlib.run/2``): the one definition of what ``record.json`` holds."""

    schema_: Literal["cxrlib.run/2"] = Field(alias="schema")
    name: str
    created: str
    config_key: str | None = None   # what a finished run is reused by (cxrlib.runs.run_folder)
    dataset: DatasetInfo
    model: ModelInfo
    prep: PrepInfo
    spec: RunSpec
    runtime: Runtime
    environment: Environment
    training: Training
    final: Final
    test: TestResult | None
    skipped: list[Skipped]
    artifacts: Artifacts
    _folder: Path | None = PrivateAttr(default=None)

    @property
    def folder(self) -> Path | None:
        """The run folder the record was read from; None for one made in memory."""
        return self._folder

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


def _parse(data: Mapping) -> RunRecord | list[str]:
    """The typed record of ``data`` (numpy values judged as the JSON they will be written as),
    or one readable line per problem: ``where: what``."""
    if not isinstance(data, Mapping):
        return [f"a record must be a JSON object, not {type(data).__name__}"]
    try:
        return RunRecord.model_validate(jsonable(dict(data)))
    except ValidationError as error:
        return problems_of(error)


def validate_record(record: Mapping) -> list[str]:
    """Human-readable problems with record (a record's JSON); ``[]`` when it is a valid
    ``cxrlib.run/2`` record.

    Checked against :class:`RunRecord`: every required section and key with its type, a
    parseable ``created`` time, and that every history list has ``epochs_run`` entries.
    Numpy values are judged as the JSON they will be written as.
    """
    parsed = _parse(record)
    return parsed if isinstance(parsed, list) else []


def to_record(data: Mapping, source: str = "The record") -> RunRecord:
    """``data`` (a record's JSON, or what a run computed: numpy values and NaN are taken as the
    JSON they will be written as) as a typed :class:`RunRecord`.

    Raises InputError (a ValueError) naming ``source`` and every problem, one line each.
    """
    parsed = _parse(data)
    if isinstance(parsed, list):
        raise InputError(f"{source} is not a valid run record:\n- " + "\n- ".join(parsed))
    return parsed


def record_json(record: RunRecord) -> dict:
    """The record as the JSON object ``record.json`` holds (schema ``cxrlib.run/2``)."""
    return record.model_dump(mode="json", by_alias=True)


def write_record(run_dir: str | os.PathLike, record: RunRecord) -> Path:
    """Write record atomically to ``run_dir/record.json``; return that path."""
    return write_json_atomic(Path(run_dir) / RECORD_FILE, record_json(record))


def read_record(path_or_run_dir: str | os.PathLike) -> RunRecord:
    """The record in a ``record.json`` file or a run directory; its :attr:`RunRecord.folder`
    is that directory.

    Raises FileNotFoundError when it does not exist, InputError (a ValueError) naming the
    file when it is not valid JSON or not a valid record.
    """
    path = Path(path_or_run_dir)
    if path.is_dir():
        path = path / RECORD_FILE
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as error:
        raise InputError(f"{path} is not valid JSON: {error}") from error
    except UnicodeDecodeError as error:
        raise InputError(f"{path} is not a UTF-8 text file: {error}") from error
    record = to_record(data, str(path))
    record._folder = path.parent
    return record


def record_float(record: RunRecord | None, section: str, key: str) -> float:
    """``record.<section>.<key>`` as a float (``record_float(r, "test", "accuracy")``); NaN
    when there is no record or no such section (a run without a test set), or the value is
    null or not a number (a bool is not one)."""
    value = getattr(getattr(record, section, None), key, None)
    return float(value) if isinstance(value, Real) and not isinstance(value, bool) else math.nan


def find_records(runs_dir: str | os.PathLike) -> list[RunRecord]:
    """Every valid record under runs_dir (searched recursively), oldest first, each with its
    :attr:`RunRecord.folder`.

    Unreadable or invalid records are logged as warnings and skipped, so one broken run
    never hides all the others.
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
            records.append(read_record(path))
        except (OSError, ValueError) as error:
            log.warning("Skipping run record %s: %s", path, error)
    return sorted(records, key=lambda r: (_parse_time(r.created), str(r.folder)))
