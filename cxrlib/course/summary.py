"""What a run of the series showed, from its run records: the last screen of ``make demo``.

- :func:`trained_on`: what a set of runs was trained on, in a few words (the synthetic
  stand-in or the real data, films, input size, epochs, weights), for a chart that sets our
  number beside a course's.
- :func:`lesson_table`: the DenseNet121 course's lesson, V0 to V3 and the five frozen
  backbones, with test accuracy and its 95 % bootstrap interval.
- :func:`lesson_verdicts`: whether each lesson held, against its bar (:data:`BARS`).
- :func:`demo_summary`: all of it as text, with how long it took and what to open next.
"""

from __future__ import annotations

import math
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping, Sequence

import pandas as pd

from cxrlib.files import read_json
from cxrlib.runs.records import RunRecord, record_float
from cxrlib.variants import canonical_variant

LESSON_PRESET = "radiography"
# (row, run key in the preset, backbone, variant): DenseNet121's frozen run is V2-reg
LESSON_ROWS: tuple[tuple[str, str, str, str], ...] = (
    ("DN-V0 (untrained head)", "v0", "densenet121", "v0"),
    ("DN-V1", "v1", "densenet121", "v1"),
    ("DN-V2", "v2", "densenet121", "v2"),
    ("DN-V2-reg", "v2reg", "densenet121", "v2reg"),
    ("DN-V3 (fine-tuned)", "v3", "densenet121", "v3"),
    ("DenseNet121 frozen (= DN-V2-reg)", "v2reg", "densenet121", "v2reg"),
    ("ResNet50 frozen", "resnet50-frozen", "resnet50", "v2reg"),
    ("VGG16 frozen", "vgg16-frozen", "vgg16", "v2reg"),
    ("InceptionV3 frozen", "inceptionv3-frozen", "inceptionv3", "v2reg"),
    ("Xception frozen", "xception-frozen", "xception", "v2reg"),
)
FROZEN_ROWS = tuple(row for row, *_ in LESSON_ROWS if row.endswith(("frozen", "(= DN-V2-reg)")))
# The lesson's bars at the demo's settings (test accuracy; three classes, chance 0.333)
BARS: dict[str, float] = {"v0_max": 0.45, "v1_min": 0.80, "v3_below_v1": 0.05, "frozen_min": 0.70}


def lesson_records(records: Sequence[RunRecord], preset: str = LESSON_PRESET) -> dict[str, RunRecord]:
    """Run key (``v0`` … ``xception-frozen``) → the latest record of that run of ``preset``.

    A record names its preset and run (``record.dataset.preset``, ``.run``); one without a
    preset counts by its backbone and variant (a run trained outside the notebooks).
    """
    wanted = {(backbone, variant): key for _, key, backbone, variant in LESSON_ROWS}
    found: dict[str, RunRecord] = {}
    for record in records:   # oldest first: a later run of the same key wins
        data, model = record.dataset, record.model
        if data.preset is not None:
            if data.preset == preset and data.run in wanted.values():
                found[str(data.run)] = record
            continue
        key = wanted.get((model.backbone, canonical_variant(model.variant)))
        if key:
            found[key] = record
    return found


def lesson_table(records: Sequence[RunRecord], preset: str = LESSON_PRESET) -> pd.DataFrame:
    """One row per :data:`LESSON_ROWS` entry: ``run``, ``test accuracy``, ``low``, ``high``
    (the 95 % bootstrap interval) and ``test films``; NaN where the run is missing."""
    runs = lesson_records(records, preset)
    rows = []
    for row, key, _, _ in LESSON_ROWS:
        record = runs.get(key)
        test = record.test if record else None
        interval = (test.ci.accuracy if test else None) or (None, None)
        films = test.n if test else record.dataset.n_test if record else None
        rows.append({"run": row, "test accuracy": record_float(record, "test", "accuracy"),
                     "low": math.nan if interval[0] is None else float(interval[0]),
                     "high": math.nan if interval[1] is None else float(interval[1]),
                     "test films": films})
    return pd.DataFrame(rows)


@dataclass(frozen=True)
class Verdict:
    """One lesson: whether it held (None: a run it needs is missing), and the numbers."""

    lesson: str
    held: bool | None
    detail: str


def lesson_verdicts(table: pd.DataFrame, bars: Mapping[str, float] = BARS) -> list[Verdict]:
    """The three lessons of :func:`lesson_table`, each against its bar."""
    acc = dict(zip(table["run"], table["test accuracy"]))

    def missing(*rows: str) -> list[str]:
        return [r for r in rows if math.isnan(acc.get(r, math.nan))]

    verdicts = []
    gone = missing(*FROZEN_ROWS)
    if gone:
        verdicts.append(Verdict("Frozen features beat chance", None, "not measured: " + ", ".join(gone)))
    else:
        low = min(FROZEN_ROWS, key=lambda r: acc[r])
        short = [r for r in FROZEN_ROWS if acc[r] < bars["frozen_min"]]
        verdicts.append(Verdict(
            "Frozen features beat chance", not short,
            f"every frozen backbone ≥ {bars['frozen_min']:.2f}: lowest {low} {acc[low]:.3f}"
            + (f"; below: {', '.join(short)}" if short else "")))
    v0, v1, v3 = "DN-V0 (untrained head)", "DN-V1", "DN-V3 (fine-tuned)"
    gone = missing(v0, v1)
    if gone:
        verdicts.append(Verdict("Training the head helps", None, "not measured: " + ", ".join(gone)))
    else:
        held = acc[v0] <= bars["v0_max"] and acc[v1] >= bars["v1_min"]
        verdicts.append(Verdict("Training the head helps", held,
                                f"DN-V0 {acc[v0]:.3f} (bar ≤ {bars['v0_max']:.2f}), "
                                f"DN-V1 {acc[v1]:.3f} (bar ≥ {bars['v1_min']:.2f})"))
    gone = missing(v1, v3)
    if gone:
        verdicts.append(Verdict("Fine-tuning keeps or improves", None, "not measured: " + ", ".join(gone)))
    else:
        bar = acc[v1] - bars["v3_below_v1"]
        verdicts.append(Verdict("Fine-tuning keeps or improves", acc[v3] >= bar - 1e-9,
                                f"DN-V3 {acc[v3]:.3f} (bar ≥ DN-V1 − {bars['v3_below_v1']:.2f} = {bar:.3f})"))
    return verdicts


def _span(values: Sequence[Any], unit: str = "") -> str:
    known = sorted({v for v in values if isinstance(v, (int, float)) and not isinstance(v, bool)})
    if not known:
        return ""
    text = f"{known[0]:g}" if len(known) == 1 else f"{known[0]:g}–{known[-1]:g}"
    return text + unit


def _synthetic(record: RunRecord) -> bool | None:
    """Whether a run trained on synthetic films (a ``synthetic.json`` in its data's root, or
    above its first training film); None when neither can be read."""
    root = record.dataset.root
    if not root:
        try:
            with open(record.dataset.split_file, encoding="utf-8") as split:
                header, first = split.readline(), split.readline()
            root = str(Path(first.split(",")[header.strip().split(",").index("path")]).parent)
        except (OSError, ValueError, IndexError):
            return None
    folder = Path(root)
    return any((parent / "synthetic.json").is_file() for parent in [folder, *folder.parents][:5])


def trained_on(records: Sequence[RunRecord | None]) -> str:
    """What ``records`` were trained on, in a few words: "the synthetic stand-in, 300 films,
    64 px, 10 epochs, weights synthetic" (or "the real data, …")."""
    records = [r for r in records if r]
    if not records:
        return "no runs"
    kinds = {_synthetic(r) for r in records}
    data = {frozenset([True]): "the synthetic stand-in", frozenset([False]): "the real data"}.get(
        frozenset(kinds), "real and synthetic data" if {True, False} <= kinds else "")
    films = _span([r.dataset.n_train + r.dataset.n_val + r.dataset.n_test for r in records], " films")
    size = _span([r.model.image_size for r in records], " px")
    trained = [r.spec.epochs for r in records]   # V0 is not trained: its 0 epochs say nothing of the others
    epochs = _span([e for e in trained if e], " epoch" if {e for e in trained if e} == {1} else " epochs")
    weights = sorted({str(r.model.weights).lower() for r in records})
    parts = [data, films, size, epochs, "weights " + "/".join(weights)]
    return ", ".join(p for p in parts if p)


def _duration(seconds: float) -> str:
    minutes, rest = divmod(int(round(seconds)), 60)
    return f"{minutes} min {rest} s" if minutes else f"{rest} s"


def _notebook_seconds(folder: Path) -> float | None:
    """The executed notebooks' run time together (papermill's ``duration``, or what
    ``notebooks/conftest.py`` records under nbval)."""
    total, found = 0.0, False
    for path in sorted(folder.glob("*.ipynb")):
        meta = read_json(path).get("metadata", {})
        seconds = (meta.get("papermill") or {}).get("duration", (meta.get("cxrlib") or {}).get("seconds"))
        if isinstance(seconds, (int, float)):
            total, found = total + seconds, True
    return total if found else None


def _shown(path: str | os.PathLike) -> str:
    """``path`` relative to the working directory when it lies inside it."""
    path = Path(path).resolve()
    try:
        return str(path.relative_to(Path.cwd()))
    except ValueError:
        return str(path)


def demo_summary(records: Sequence[RunRecord], report_dir: str | os.PathLike | None = None,
                 notebooks_dir: str | os.PathLike | None = None,
                 figures_dir: str | os.PathLike | None = None, started: float | None = None,
                 files_written: int | None = None, preset: str = LESSON_PRESET) -> str:
    """The demo's last screen: the lesson's table, whether each lesson held, how long it
    took (since ``started``, a Unix time; else the executed notebooks' run time), and what
    to open next."""
    runs = lesson_records(records, preset)
    table = lesson_table(records, preset)
    shown = table.assign(**{
        "test accuracy": table["test accuracy"].map(lambda v: "—" if math.isnan(v) else f"{v:.3f}"),
        "95 % interval": [("—" if math.isnan(lo) else f"{lo:.3f}–{hi:.3f}")
                          for lo, hi in zip(table["low"], table["high"])],
        "test films": table["test films"].map(lambda v: "—" if v is None or v != v else str(int(v)))})
    shown = shown[["run", "test accuracy", "95 % interval", "test films"]]
    widths = [max(len(str(v)) for v in [column, *shown[column]]) for column in shown.columns]
    text_table = ["  ".join(str(v).ljust(w) for v, w in zip(row, widths)).rstrip()
                  for row in [list(shown.columns), *shown.itertuples(index=False)]]
    text_table.insert(1, "  ".join("─" * w for w in widths))
    classes = next((r.dataset.classes for r in runs.values()), None)
    lines = ["", "━━ What the demo showed " + "━" * 56,
             f"The DenseNet121 course's lesson ({len(runs)} of {len(set(k for _, k, _, _ in LESSON_ROWS))} runs), "
             f"trained on {trained_on(list(runs.values()))}:", "",
             *text_table, ""]
    chance = f" (chance {1 / len(classes):.3f})" if classes else ""
    lines.append(f"Did each lesson hold{chance}?")
    for verdict in lesson_verdicts(table):
        mark = {True: "✓ held", False: "✗ did not hold", None: "· not measured"}[verdict.held]
        lines.append(f"  {mark:<14}  {verdict.lesson}: {verdict.detail}")
    lines.append("")
    notebook_time = _notebook_seconds(Path(notebooks_dir)) if notebooks_dir else None
    if started is not None:
        took = f"Took {_duration(time.time() - started)}"
        lines.append(took + (f" (the notebooks {_duration(notebook_time)})." if notebook_time else "."))
    elif notebook_time:
        lines.append(f"The notebooks took {_duration(notebook_time)}.")
    lines.append("Open next:")
    if notebooks_dir:
        lines.append(f"  jupyter lab {_shown(notebooks_dir):<24} the executed notebooks, with their outputs")
    if report_dir:
        report = Path(report_dir)
        lines.append(f"  {_shown(report / 'table.md'):<36} every run's numbers ({len(records)} runs); "
                     f"plots in {_shown(report / 'figures')}/")
    if figures_dir:
        lines.append(f"  {_shown(figures_dir) + '/':<36} the notebooks' figures")
    if report_dir and files_written is not None:
        lines.append(f"  {_shown(Path(report_dir) / 'files.txt'):<36} the {files_written} files the report wrote")
    return "\n".join(lines) + "\n"
