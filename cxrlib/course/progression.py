"""Helpers for the model notebooks: ``03`` (the DenseNet121 progression) and ``04`` (five backbones).

- :func:`course_split`: the split every notebook shares (``RESULTS/split.csv``), loaded when
  it matches the notebook's settings, made (:func:`cxrlib.data.splits.make_split`) and saved
  otherwise.
- :func:`pin_version`: the COVID-19 Radiography Database as a given version had it (class
  sizes of :data:`~cxrlib.course.presets.RADIOGRAPHY_VERSIONS`, or a file list).
- :func:`train_or_reuse`: :func:`cxrlib.runs.train.train`, saying whether the run was trained
  now or a finished identical run was reused (``04`` reuses what ``03`` trained).
- :func:`as_list`: parameter handling for the backbone loop.
- :func:`runs_table`, :func:`labelled_table`, :func:`accuracy_ci`, :func:`plot_tradeoff`:
  summaries and a figure computed from run records only (the conclusions: ``conclusions.py``).
"""

from __future__ import annotations

import logging
import math
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any, Sequence

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from cxrlib.course.presets import RADIOGRAPHY_VERSIONS
from cxrlib.data.splits import load_split, make_split, sample_per_class, save_split
from cxrlib.files import read_json, write_json_atomic
from cxrlib.runs.records import RunRecord
from cxrlib.spec import RunSpec, Split
from cxrlib.variants import canonical_variant

if TYPE_CHECKING:
    from cxrlib.course.presets import Preset

log = logging.getLogger(__name__)

SPLIT_FILE = "split.csv"
KEEP = object()   # preset_run: keep the spec's weights
SETTINGS_FILE = "split.json"


# --------------------------------------------------------------------------- the shared split

def pin_version(manifest: pd.DataFrame, version: str | None, seed: int = 0) -> pd.DataFrame:
    """The images a database version had.

    ``version`` is a key of :data:`RADIOGRAPHY_VERSIONS` (a seeded sample of that version's
    class sizes from a later copy, said so), a file with one image file name per line (the
    version's own files), or ``None`` (everything).
    """
    if not version:
        return manifest
    if version in RADIOGRAPHY_VERSIONS:
        sizes = RADIOGRAPHY_VERSIONS[version]
        out = sample_per_class(manifest, sizes, seed, classes=sorted(sizes), warn=False)
        short = {c: n for c, n in sizes.items() if (out["label"] == c).sum() < n}
        print(f"Database pinned to {version}: " + ", ".join(f"{c} {n}" for c, n in sizes.items())
              + (f" (fewer here: {', '.join(short)})" if short else "")
              + ". A same-size sample, not necessarily that version's own files: pass a file "
              "list for those.")
    else:
        names = {line.strip() for line in Path(version).read_text().splitlines() if line.strip()}
        out = manifest[manifest["path"].map(lambda p: Path(p).name in names)]
        print(f"Database pinned to the {len(out)} of {len(names)} files listed in {version}.")
    out = out.copy()
    out.attrs = dict(manifest.attrs)
    return out.reset_index(drop=True)


def _split_matches(saved: pd.DataFrame, available: pd.DataFrame, samples_per_class: int | None) -> bool:
    """True when a saved split holds exactly the images this notebook would sample."""
    absolute = lambda paths: {os.path.abspath(p) for p in paths}  # noqa: E731
    if not absolute(saved["path"]) <= absolute(available["path"]):
        return False  # another dataset, or files gone
    have = saved["label"].value_counts()
    there = available["label"].value_counts()
    if set(have.index) != set(there.index):
        return False
    want = there if not samples_per_class else there.clip(upper=samples_per_class)
    return bool((have.reindex(want.index) == want).all())


def split_settings(preset: "Preset | None", samples_per_class: int | None, seed: int) -> dict:
    """What a shared split was made with (saved beside it as ``split.json``)."""
    return {"preset": preset.name if preset else None,
            "split": preset.split.model_dump(mode="json") if preset else None,
            "version": preset.version if preset else None, "samples_per_class": samples_per_class,
            "seed": seed}


def save_course_split(manifest: pd.DataFrame, results: str | os.PathLike, settings: dict) -> Path:
    """Save the shared split (``split.csv``) and what it was made with (``split.json``)."""
    path = save_split(manifest, Path(results) / SPLIT_FILE)
    write_json_atomic(Path(results) / SETTINGS_FILE, settings)
    return path


def course_split(data: str | os.PathLike, results: str | os.PathLike,
                 samples_per_class: int | None, seed: int = 0,
                 classes: Sequence[str] | None = None, preset: "Preset | None" = None
                 ) -> tuple[pd.DataFrame, list[str], bool]:
    """(split manifest, classes, loaded) for ``data``, shared through ``results/split.csv``.

    The images are the preset's database version (:func:`pin_version`),
    ``samples_per_class`` of each class at most, split with the preset's fractions. A saved
    split made with the same settings and holding exactly those images is loaded (``02``
    saves one); otherwise a new one is made and saved over it. ``loaded`` says which.
    """
    from cxrlib.data.datasets import class_names, load_manifest

    if preset is not None and samples_per_class is None:
        samples_per_class = preset.split.samples_per_class   # the course's balanced sample
    settings = split_settings(preset, samples_per_class, seed)
    available = load_manifest(data, classes=classes)
    if preset is not None and (available["source"] != "synthetic").any():
        available = pin_version(available, preset.version, seed)
    path, saved_settings = Path(results) / SPLIT_FILE, Path(results) / SETTINGS_FILE
    if path.is_file() and read_json(saved_settings) == settings:
        saved = load_split(path)
        if _split_matches(saved, available, samples_per_class):
            return saved, class_names(saved, classes), True
    if path.is_file():
        log.warning("%s was made from other images or settings: making a new split.", path)
    split = preset.split if preset is not None else Split()
    manifest = make_split(available, split.model_copy(update={"samples_per_class": samples_per_class}),
                          seed)
    save_course_split(manifest, results, settings)
    return manifest, class_names(manifest, classes), False


def preset_run(manifest: pd.DataFrame, classes: Sequence[str], preset: "Preset", key: str,
               results: str | os.PathLike, weights: Any = KEEP, seed: int | None = None,
               **options: Any) -> tuple[RunRecord, str]:
    """:func:`train_or_reuse` of the preset's run ``key``, in the shared results directory
    (``RESULTS/<backbone>-<variant>``, so ``03``, ``04`` and ``05`` share their runs).

    ``weights`` (None included: random weights) and ``seed``, when given, replace the spec's
    (a scratch CNN keeps none)."""
    from cxrlib.course.presets import run_info, run_spec
    from cxrlib.runs.train import run_dir

    dirs = {r.key: run_dir(results, r.backbone, r.variant) for r in preset.runs}
    spec = run_spec(preset, key, dirs)
    changes = {"seed": seed} if seed is not None else {}
    if weights is not KEEP and spec.backbone != "scratch":
        changes["weights"] = weights
    spec = spec.model_copy(update=changes)
    return train_or_reuse(manifest, classes, spec, dirs[key], dataset_info=run_info(preset, key),
                          **options)


# --------------------------------------------------------------------------- training

def as_list(value: str | Sequence[str] | None, everything: Sequence[str]) -> list[str]:
    """A list of names from a parameter: a list, a comma-separated string, ``"all"``/None
    (→ ``everything``) or ``"none"``/``""`` (→ nothing). Unknown names raise ValueError."""
    if value is None or (isinstance(value, str) and value.strip().lower() == "all"):
        return list(everything)
    if isinstance(value, str):
        value = [] if value.strip().lower() == "none" else value.split(",")
    names = [str(v).strip().lower() for v in value if str(v).strip()]
    unknown = [n for n in names if n not in everything]
    if unknown:
        raise ValueError(f"Unknown names {unknown}; choose from {', '.join(everything)}.")
    return names


def train_or_reuse(manifest: pd.DataFrame, classes: Sequence[str], spec: RunSpec,
                   out_dir: str | os.PathLike, **kwargs: Any) -> tuple[RunRecord, str]:
    """:func:`cxrlib.runs.train.train`, plus ``"reused"`` or ``"trained"``.

    ``train`` returns a finished run with the same configuration as it is; the run's
    ``created`` time, unchanged by the call, is how the reuse shows.
    """
    from cxrlib.runs.records import read_record
    from cxrlib.runs.train import train

    before = None
    if (Path(out_dir) / "record.json").is_file():
        try:
            before = read_record(out_dir).created
        except ValueError:
            before = None
    from cxrlib.course.setup import run_name

    kwargs.setdefault("name", run_name(spec.backbone, spec.variant))
    record = train(manifest, classes, spec, out_dir, **kwargs)
    return record, ("reused" if before is not None and record.created == before else "trained")


# --------------------------------------------------------------------------- summaries

def runs_table(records: Sequence[RunRecord], status: Sequence[str] | None = None) -> pd.DataFrame:
    """One row per run: what it is, how big, how long, when, and (optionally) its status."""
    rows = []
    for i, record in enumerate(records):
        model = record.model
        rows.append({
            "Model": record.name,
            "Backbone": model.backbone,
            "Variant": model.variant,
            "Image size": model.image_size,
            "Parameters (M)": (model.total_params or math.nan) / 1e6,
            "Trainable (M)": (model.trainable_params or math.nan) / 1e6,
            "Wall time (s)": record.training.wall_time_s,
            "Created": record.created[:19].replace("T", " "),
            **({"Status": status[i]} if status is not None else {}),
        })
    return pd.DataFrame(rows)


def accuracy_ci(records: Sequence[RunRecord], names: Sequence[str] | None = None
                ) -> dict[str, tuple[float, float]]:
    """Model name → bootstrap 95 % interval of its test accuracy (for ``plot_comparison``).

    ``names`` replaces the records' own names (as in :func:`labelled_table`).
    """
    out = {}
    for i, record in enumerate(records):
        interval = record.test.ci.accuracy if record.test else None
        if interval and None not in interval:
            name = names[i] if names is not None else record.name
            out[name] = (float(interval[0]), float(interval[1]))
    return out


def labelled_table(records: Sequence[RunRecord], names: Sequence[str]) -> pd.DataFrame:
    """:func:`cxrlib.runs.report.comparison_table` with ``Model`` set to ``names``.

    A reused run keeps the name its first notebook gave it (``DN-V2-reg`` is ``DN-frozen``);
    this puts every row of a comparison under the name of the comparison.
    """
    from cxrlib.runs.report import comparison_table

    if len(names) != len(records):
        raise ValueError(f"{len(names)} names for {len(records)} records.")
    return comparison_table(list(records)).assign(Model=list(names))


def plot_tradeoff(table: pd.DataFrame, records: Sequence[RunRecord],
                  save: str | os.PathLike | None = None) -> Figure:
    """Test accuracy against wall time and against parameter count, one labelled point per run.

    ``table`` is :func:`cxrlib.runs.report.comparison_table` of ``records`` (same order).
    """
    from cxrlib.plots import save_figure

    params = [(r.model.total_params or math.nan) / 1e6 for r in records]
    variants = [canonical_variant(r.model.variant) for r in records]
    frozen = np.array([v != "v3" for v in variants], dtype=bool)
    accuracy = table["Test Accuracy"].to_numpy(dtype=float)
    figure = plt.figure(figsize=(11, 4.2), layout="constrained")
    plt.close(figure)  # handed back unshown, like cxrlib.plots figures
    axes = figure.subplots(1, 2, sharey=True)
    for ax, x, label in ((axes[0], table["Wall time (s)"].to_numpy(dtype=float), "training wall time (s)"),
                         (axes[1], np.asarray(params, dtype=float), "parameters (millions)")):
        for mask, marker, name in ((frozen, "o", "frozen backbone"), (~frozen, "s", "fine-tuned")):
            ax.scatter(x[mask], accuracy[mask], marker=marker, s=45, label=name)
        for xi, yi, model in zip(x, accuracy, table["Model"]):
            if not (math.isnan(xi) or math.isnan(yi)):
                ax.annotate(str(model), (xi, yi), fontsize="x-small", xytext=(4, 3),
                            textcoords="offset points")
        ax.set(xlabel=label, title=f"Test accuracy vs {label.split(' (')[0]}")
        ax.grid(alpha=0.3)
    axes[0].set_ylabel("test accuracy")
    axes[0].legend(loc="lower right", fontsize="small")
    if save is not None:
        save_figure(figure, save)
    return figure


