"""The comparison report, built from run records only.

The course compares many models (backbones, image sizes, preprocessing variants) in one
table. Copying numbers from notebook outputs into a table by hand is how wrong numbers get
published; here the table and every figure are generated from the ``record.json`` of each
run (:mod:`cxrlib.runs.records`), so each number can be traced back to the run that produced it,
and re-running the report after a new run updates everything.

:func:`write_report` writes into ``out_dir`` (by default the runs directory itself):

- ``table.md`` (Markdown, 3 decimals) and ``table.csv`` (full precision);
- ``figures/comparison.png``: test accuracy per model with its bootstrap 95 % interval,
  so differences smaller than the test set can resolve are visibly so;
- per run, ``figures/<name>_curves.png`` (training curves), ``figures/<name>_confusion.png``
  and, for two classes, ``figures/<name>_roc.png`` with the operating point.
"""

from __future__ import annotations

import logging
import math
import os
import re
from collections import Counter
from numbers import Integral, Real
from pathlib import Path
from typing import Any, Callable

import numpy as np
import pandas as pd

from cxrlib import plots
from cxrlib.files import write_csv_atomic, write_text_atomic
from cxrlib.runs.records import RunRecord, TestResult, find_records, record_float

log = logging.getLogger(__name__)

TABLE_COLUMNS = ["Model", "Loss", "Accuracy", "Validation Loss", "Validation Accuracy",
                 "Test Accuracy", "Epochs", "Test AUC", "Wall time (s)"]

# column -> (section, key) of the record it comes from (:func:`cxrlib.runs.records.record_float`)
_SOURCES = {
    "Loss": ("final", "loss"),
    "Accuracy": ("final", "accuracy"),
    "Validation Loss": ("final", "val_loss"),
    "Validation Accuracy": ("final", "val_accuracy"),
    "Test Accuracy": ("test", "accuracy"),
    "Epochs": ("training", "epochs_run"),
    "Test AUC": ("test", "auc_macro"),
    "Wall time (s)": ("training", "wall_time_s"),
}
MISSING = "—"


def model_names(records: list[RunRecord]) -> list[str]:
    """The ``Model`` label of each record: its name, made unambiguous where names repeat.

    Runs from different notebooks may share a name ("CNN-scratch" in 05 and 06); a repeated
    name gets the run directory, relative to the runs' common parent, in brackets, so every
    row of a table and every bar of a figure points at exactly one run.
    """
    names = [record.name for record in records]
    repeated = {name for name, count in Counter(names).items() if count > 1}
    dirs = [str(record.folder or "") for record in records]
    known = [d for d, name in zip(dirs, names) if d and name in repeated]
    root = os.path.commonpath(known) if len(known) > 1 else ""
    labels = []
    for index, (name, run) in enumerate(zip(names, dirs)):
        if name not in repeated:
            labels.append(name)
            continue
        where = os.path.relpath(run, root) if run and root else (Path(run).name if run else "")
        labels.append(f"{name} [{where}]" if where and where != "." else f"{name} [#{index + 1}]")
    return labels


def comparison_table(records: list[RunRecord]) -> pd.DataFrame:
    """One row per record, in the given order, with :data:`TABLE_COLUMNS`.

    ``Model`` comes from :func:`model_names`; missing values are NaN (``<NA>`` in the
    integer ``Epochs`` column).
    """
    rows = [{"Model": label,
             **{column: record_float(record, *source) for column, source in _SOURCES.items()}}
            for label, record in zip(model_names(records), records)]
    table = pd.DataFrame(rows, columns=TABLE_COLUMNS)
    table["Epochs"] = table["Epochs"].astype("Int64")
    return table


def _cell(value: object) -> str:
    """One Markdown cell: integers as such, other numbers with 3 decimals, '|' escaped."""
    if value is None or value is pd.NA or (isinstance(value, float) and math.isnan(value)):
        return MISSING
    if isinstance(value, (bool, np.bool_)):
        return str(bool(value))
    if isinstance(value, Integral):
        return str(int(value))
    if isinstance(value, Real):
        return f"{float(value):.3f}"
    return str(value).replace("|", "\\|").replace("\n", " ")


def markdown_table(frame: pd.DataFrame) -> str:
    """frame as a GitHub Markdown table (pandas' ``to_markdown``, index left out), each cell
    written by :func:`_cell`, numeric columns right-aligned."""
    cells = frame.astype(object).map(_cell)
    cells.columns = [_cell(str(column)) for column in frame.columns]
    align = ["right" if pd.api.types.is_numeric_dtype(frame[c]) else "left" for c in frame.columns]
    return cells.to_markdown(index=False, tablefmt="pipe", colalign=align, disable_numparse=True) + "\n"


def _slug(name: str) -> str:
    """A file-name-safe version of a model name."""
    return re.sub(r"[^A-Za-z0-9._-]+", "_", name).strip("._") or "run"


def _unique_slugs(names: list[str]) -> list[str]:
    """One distinct file stem per name (a stem repeated after slugging gets -2, -3, ...)."""
    seen: dict[str, int] = {}
    stems = []
    for name in names:
        stem = _slug(name)
        seen[stem] = seen.get(stem, 0) + 1
        stems.append(stem if seen[stem] == 1 else f"{stem}-{seen[stem]}")
    return stems


def _record_file(record: RunRecord) -> Path:
    """The ``record.json`` a record was read from (for a warning)."""
    return (record.folder or Path("?")) / "record.json"


def _usable(record: RunRecord, what: str, check: Callable[..., Any], *args: Any) -> Any:
    """``check(*args)``: a section of ``record`` ready to draw, or None when it has none. A
    section that is not what the report needs (``check`` raises ValueError) is left out, with a
    warning naming the record's file and why; the rest of the report is still written."""
    try:
        return check(*args)
    except ValueError as error:
        log.warning("%s: %s left out of the report (%s).", _record_file(record), what, error)
        return None


def _short(value: object) -> str:
    """A value from a record as a short text, for a warning."""
    text = repr(value)
    return text if len(text) <= 60 else text[:59] + "…"


def _is_rate(value: float | None) -> bool:
    """A number within [0, 1] (an accuracy, a rate, an AUC)."""
    return value is not None and 0 <= value <= 1


def _accuracy_interval(test: TestResult) -> tuple[float, float] | None:
    """``test.ci.accuracy`` as (low, high); None when there is none or it is unknown (nulls)."""
    interval = test.ci.accuracy
    if interval is None or None in interval:
        return None
    low, high = interval
    if not (_is_rate(low) and _is_rate(high) and low <= high):
        raise ValueError(f"test.ci.accuracy is {_short(interval)}, not [low, high] within [0, 1]")
    return low, high


def _confusion(test: TestResult) -> list[list[int]] | None:
    """``test.confusion_matrix``: a k × k table of counts for the test set's k classes."""
    matrix, k = test.confusion_matrix, len(test.classes)
    if not matrix:
        return None
    if not (len(matrix) == k and all(len(row) == k and min(row) >= 0 for row in matrix)):
        raise ValueError(f"test.confusion_matrix is not a {k} x {k} table of counts: {_short(matrix)}")
    return matrix


def _roc(test: TestResult) -> dict | None:
    """``test.roc`` of a two-class run as one curve of :func:`cxrlib.plots.plot_roc`: rising false
    and true positive rates within [0, 1], as many of each; its AUC where one is recorded."""
    roc, classes = test.roc, test.classes
    if roc is None or len(classes) != 2:
        return None
    for key, rates in (("fpr", roc.fpr), ("tpr", roc.tpr)):
        if not (len(rates) >= 2 and all(map(_is_rate, rates))):
            raise ValueError(f"test.roc.{key} is {_short(rates)}, not a list of rates within [0, 1]")
        if any(later < earlier for earlier, later in zip(rates, rates[1:])):
            raise ValueError(f"test.roc.{key} falls somewhere; an ROC curve only rises")
    if len(roc.fpr) != len(roc.tpr):
        raise ValueError(f"test.roc has {len(roc.fpr)} false and {len(roc.tpr)} true positive rates")
    scores = test.per_class.get(classes[1])
    auc = scores.auc if scores is not None else None
    return {"fpr": roc.fpr, "tpr": roc.tpr, "auc": auc if _is_rate(auc) else None}


def _operating_point(test: TestResult) -> dict | None:
    """``test.operating_point``: a threshold with its sensitivity and specificity (rates; with
    either null there is no point to mark, and :func:`cxrlib.plots.plot_roc` marks none)."""
    point = test.operating_point
    if point is None:
        return None
    if point.sensitivity is None or point.specificity is None:
        return point.model_dump()
    if not (_is_rate(point.sensitivity) and _is_rate(point.specificity) and point.threshold is not None):
        raise ValueError(f"test.operating_point is {_short(point.model_dump())}, not a threshold "
                         "with its rates")
    return point.model_dump()


def _comparison_figure(records: list[RunRecord], table: pd.DataFrame, path: Path) -> Path | None:
    """Test accuracy per model with CIs (validation accuracy when no run was tested)."""
    metric = "Test Accuracy" if table["Test Accuracy"].notna().any() else "Validation Accuracy"
    if not table[metric].notna().any():
        log.warning("No accuracy to compare: comparison figure skipped.")
        return None
    ci = {}
    if metric == "Test Accuracy":
        for label, record in zip(table["Model"], records):
            interval = (_usable(record, "its accuracy interval", _accuracy_interval, record.test)
                        if record.test else None)
            if interval:
                ci[label] = interval
    n_classes = {len(record.dataset.classes) for record in records}
    chance = 1 / n_classes.pop() if len(n_classes) == 1 else None
    plots.plot_comparison(table, metric=metric, ci=ci or None, chance=chance, save=path)
    return path


def _run_figures(record: RunRecord, name: str, stem: str, figures: Path) -> list[Path]:
    """Training curves, confusion matrix and (two classes) ROC of one run, titled ``name``."""
    written: list[Path] = []
    history = record.training.history
    if history:
        written.append(plots.save_figure(plots.plot_history(history, title=name),
                                         figures / f"{stem}_curves.png"))
    test = record.test
    if test is None:
        return written
    matrix = _usable(record, "its confusion matrix", _confusion, test)
    if matrix:
        figure = plots.plot_confusion(matrix, test.classes, title=f"{name}: test set")
        written.append(plots.save_figure(figure, figures / f"{stem}_confusion.png"))
    curve = _usable(record, "its ROC curve", _roc, test)
    if curve:
        point = _usable(record, "its ROC operating point", _operating_point, test)
        figure = plots.plot_roc({test.classes[1]: curve}, operating_point=point,
                                title=f"{name}: test ROC")
        written.append(plots.save_figure(figure, figures / f"{stem}_roc.png"))
    return written


def write_report(runs_dir: str | os.PathLike, out_dir: str | os.PathLike | None = None
                 ) -> dict[str, Path]:
    """Table and figures of every run under runs_dir, written to out_dir (default runs_dir).

    Returns every path written, keyed by its path relative to out_dir ("table.md",
    "figures/comparison.png", ...). Raises FileNotFoundError when there is no valid record.
    """
    records = find_records(runs_dir)
    if not records:
        raise FileNotFoundError(f"No valid run records (record.json) under {runs_dir}: "
                                "train a model first, or check the directory.")
    out = Path(out_dir) if out_dir is not None else Path(runs_dir)
    figures = out / "figures"
    figures.mkdir(parents=True, exist_ok=True)
    table = comparison_table(records)
    paths = [write_text_atomic(out / "table.md", markdown_table(table)),
             write_csv_atomic(table, out / "table.csv")]
    comparison = _comparison_figure(records, table, figures / "comparison.png")
    if comparison is not None:
        paths.append(comparison)
    for record, name, stem in zip(records, table["Model"], _unique_slugs(list(table["Model"]))):
        paths += _run_figures(record, name, stem, figures)
    log.info("Report of %d runs written to %s.", len(records), out)
    return {path.relative_to(out).as_posix(): path for path in paths}
