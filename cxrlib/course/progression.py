"""Helpers for the model notebooks: ``03`` (the DenseNet121 progression) and ``04`` (five backbones).

- :func:`course_split`: the split every notebook shares (``RESULTS/split.csv``), loaded when
  it matches the notebook's settings, made and saved otherwise.
- :func:`train_or_reuse`: :func:`cxrlib.runs.train.train`, saying whether the run was trained
  now or a finished identical run was reused (``04`` reuses what ``03`` trained).
- :class:`RunEagerly`: a callback that makes ``fit`` skip graph tracing, for tiny CPU runs.
- :func:`input_size`, :func:`as_list`: parameter handling for the backbone loop.
- :func:`runs_table`, :func:`labelled_table`, :func:`accuracy_ci`, :func:`progression_notes`,
  :func:`backbone_notes`, :func:`plot_tradeoff`:
  summaries, sentences and a figure computed from run records only.
"""

from __future__ import annotations

import logging
import math
import os
from pathlib import Path
from typing import Any, Sequence

import keras
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from cxrlib.models.backbones import default_size, get_backbone
from cxrlib.models.variants import ALIASES

log = logging.getLogger(__name__)

SPLIT_FILE = "split.csv"


# --------------------------------------------------------------------------- the shared split

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


def course_split(data: str | os.PathLike, results: str | os.PathLike,
                 samples_per_class: int | None, seed: int = 0,
                 classes: Sequence[str] | None = None) -> tuple[pd.DataFrame, list[str], bool]:
    """(split manifest, classes, loaded) for ``data``, shared through ``results/split.csv``.

    A saved split (from notebook ``02`` or an earlier run) is loaded when it holds images of
    ``data`` only and ``samples_per_class`` per class (all of a smaller class); otherwise a
    new balanced split is made with :func:`cxrlib.runs.evaluate.prepare_split` and saved over
    it. ``loaded`` says which happened.
    """
    from cxrlib.data.datasets import class_names, load_manifest
    from cxrlib.data.splits import prepare_split
    from cxrlib.data.splits import load_split, save_split

    path = Path(results) / SPLIT_FILE
    if path.is_file():
        saved = load_split(path)
        if _split_matches(saved, load_manifest(data, classes=classes), samples_per_class):
            return saved, class_names(saved, classes), True
        log.warning("%s does not match this dataset and %s images per class: making a new split.",
                    path, samples_per_class)
    manifest, names = prepare_split(data, classes=classes, samples_per_class=samples_per_class,
                                    seed=seed)
    save_split(manifest, path)
    return manifest, names, False


# --------------------------------------------------------------------------- training

class RunEagerly(keras.callbacks.Callback):
    """Make ``model.fit`` run eagerly (no ``tf.function``), set as soon as Keras hands over the model.

    Tracing the training graph of a 400-layer network such as DenseNet121 takes tens of
    seconds on a CPU, longer than a smoke run's whole training. Eager execution skips the
    tracing; it is slower per step, so it only pays off for a handful of steps (smoke and
    small CPU demos), never for real training on a GPU.
    """

    def set_model(self, model) -> None:
        super().set_model(model)
        model.run_eagerly = True   # fit builds its train function after set_model


def input_size(backbone: str, image_size: int | None) -> int:
    """The input size for ``backbone``: its default when ``image_size`` is None, else
    ``image_size`` raised to the architecture's minimum (75 px for InceptionV3, 71 for Xception)."""
    if image_size is None:
        return default_size(backbone)
    return max(int(image_size), get_backbone(backbone).min_size)


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


def _canonical(variant: str) -> str:
    """A recorded variant name with its alias folded (frozen → v2reg, finetune → v3)."""
    return ALIASES.get(variant, variant)


def train_or_reuse(manifest: pd.DataFrame, classes: Sequence[str], backbone: str, variant: str,
                   out_dir: str | os.PathLike, **kwargs: Any) -> tuple[dict, str]:
    """:func:`cxrlib.runs.train.train`, plus ``"reused"`` or ``"trained"``.

    ``train`` returns a finished run with the same configuration as it is; the run's
    ``created`` time, unchanged by the call, is how the reuse shows.
    """
    from cxrlib.runs.records import read_record
    from cxrlib.runs.train import train

    before = None
    if (Path(out_dir) / "record.json").is_file():
        try:
            before = read_record(out_dir)["created"]
        except ValueError:
            before = None
    from cxrlib.course.setup import run_name

    kwargs.setdefault("name", run_name(backbone, variant))
    record = train(manifest, classes, backbone, variant, out_dir=out_dir, **kwargs)
    return record, ("reused" if before is not None and record["created"] == before else "trained")


# --------------------------------------------------------------------------- summaries

def runs_table(records: Sequence[dict], status: Sequence[str] | None = None) -> pd.DataFrame:
    """One row per run: what it is, how big, how long, when, and (optionally) its status."""
    rows = []
    for i, record in enumerate(records):
        model = record.get("model") or {}
        rows.append({
            "Model": record.get("name", ""),
            "Backbone": model.get("backbone", ""),
            "Variant": model.get("variant", ""),
            "Image size": model.get("image_size"),
            "Parameters (M)": (model.get("total_params") or math.nan) / 1e6,
            "Trainable (M)": (model.get("trainable_params") or math.nan) / 1e6,
            "Wall time (s)": (record.get("training") or {}).get("wall_time_s"),
            "Created": str(record.get("created", ""))[:19].replace("T", " "),
            **({"Status": status[i]} if status is not None else {}),
        })
    return pd.DataFrame(rows)


def accuracy_ci(records: Sequence[dict], names: Sequence[str] | None = None
                ) -> dict[str, tuple[float, float]]:
    """Model name → bootstrap 95 % interval of its test accuracy (for ``plot_comparison``).

    ``names`` replaces the records' own names (as in :func:`labelled_table`).
    """
    out = {}
    for i, record in enumerate(records):
        interval = ((record.get("test") or {}).get("ci") or {}).get("accuracy")
        if interval and None not in interval:
            name = names[i] if names is not None else str(record.get("name", ""))
            out[name] = (float(interval[0]), float(interval[1]))
    return out


def labelled_table(records: Sequence[dict], names: Sequence[str]) -> pd.DataFrame:
    """:func:`cxrlib.runs.report.comparison_table` with ``Model`` set to ``names``.

    A reused run keeps the name its first notebook gave it (``DN-V2-reg`` is ``DN-frozen``);
    this puts every row of a comparison under the name of the comparison.
    """
    from cxrlib.runs.report import comparison_table

    if len(names) != len(records):
        raise ValueError(f"{len(names)} names for {len(records)} records.")
    return comparison_table(list(records)).assign(Model=list(names))


def _by_variant(records: Sequence[dict]) -> dict[str, dict]:
    """The last record of each variant (aliases folded: frozen = v2reg, finetune = v3)."""
    found: dict[str, dict] = {}
    for record in records:
        variant = (record.get("model") or {}).get("variant", "")
        found[_canonical(variant)] = record
    return found


def _num(record: dict | None, section: str, key: str) -> float:
    value = ((record or {}).get(section) or {}).get(key)
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else math.nan


def progression_notes(records: Sequence[dict]) -> list[str]:
    """Sentences about the V0 → V3 progression, each computed from the records given.

    Every sentence states a comparison and its numbers as they came out, whichever way they
    came out, so the conclusions of a notebook stay true for any data, weights and settings.
    """
    runs = _by_variant(records)
    notes: list[str] = []
    names = {v: str(r.get("name", v)) for v, r in runs.items()}
    classes = next(((r.get("dataset") or {}).get("classes") for r in runs.values()), None) or []
    chance = 1 / len(classes) if classes else math.nan

    def test(v: str) -> float:
        return _num(runs.get(v), "test", "accuracy")

    if "v0" in runs:
        notes.append(f"{names['v0']} (untrained softmax) scores {test('v0'):.3f} on the test set; "
                     f"chance is {chance:.3f}.")
    for before, after in (("v0", "v1"), ("v1", "v2"), ("v2", "v2reg"), ("v2reg", "v3")):
        if before in runs and after in runs:
            delta = test(after) - test(before)
            if delta == 0:
                notes.append(f"{names[after]} tests at {test(after):.3f}, the same as {names[before]}.")
            else:
                word = "better" if delta > 0 else "worse"
                notes.append(f"{names[after]} tests at {test(after):.3f}: {abs(delta):.3f} {word} "
                             f"than {names[before]} ({test(before):.3f}).")
    gaps = {v: _num(runs.get(v), "final", "accuracy") - _num(runs.get(v), "final", "val_accuracy")
            for v in ("v2", "v2reg") if v in runs}
    if len(gaps) == 2 and not any(math.isnan(g) for g in gaps.values()):
        smaller = "smaller" if abs(gaps["v2reg"]) < abs(gaps["v2"]) else "not smaller"
        notes.append(f"Train − validation accuracy gap in the last epoch: {gaps['v2']:+.3f} for "
                     f"{names['v2']}, {gaps['v2reg']:+.3f} for {names['v2reg']} (dropout's gap "
                     f"is {smaller}). Dropout is active when the training accuracy is measured, "
                     "so it lowers that number too.")
    tested = {names[v]: test(v) for v in runs if not math.isnan(test(v))}
    if tested:
        best = max(tested, key=tested.get)
        notes.append(f"Best test accuracy: {best} with {tested[best]:.3f}.")
    return notes


def backbone_notes(records: Sequence[dict], names: Sequence[str]) -> list[str]:
    """Sentences comparing runs (best, those the test set cannot tell from it, what fine-tuning
    changed per backbone, fastest and slowest), each computed from the records given."""
    acc = {n: _num(r, "test", "accuracy") for n, r in zip(names, records)}
    acc = {n: a for n, a in acc.items() if not math.isnan(a)}
    if not acc:
        return ["No run has a test accuracy yet."]
    ci = accuracy_ci(records, names)
    best = max(acc, key=acc.get)
    notes = [f"Best test accuracy: {best} with {acc[best]:.3f}"
             + (f" (95 % bootstrap interval {ci[best][0]:.3f}–{ci[best][1]:.3f})." if best in ci else ".")]
    if best in ci:
        close = [n for n in acc if n != best and n in ci and ci[n][1] >= ci[best][0]]
        notes.append(("Intervals overlapping the best one's: " + ", ".join(close)
                      + ". This test set cannot rank these models reliably.") if close else
                     "No other model's interval reaches the best one's: the lead is larger than "
                     "the test set's uncertainty.")
    by_backbone: dict[str, dict[str, float]] = {}
    for name, record in zip(names, records):
        model = record.get("model") or {}
        variant = _canonical(model.get("variant", ""))
        if name in acc:
            by_backbone.setdefault(model.get("backbone", ""), {})[variant] = acc[name]
    for backbone, scores in by_backbone.items():
        if "v2reg" in scores and "v3" in scores:
            delta = scores["v3"] - scores["v2reg"]
            notes.append(f"{backbone}: fine-tuning moved test accuracy from {scores['v2reg']:.3f} "
                         f"to {scores['v3']:.3f} ({delta:+.3f}).")
    wall = {n: _num(r, "training", "wall_time_s") for n, r in zip(names, records)}
    wall = {n: w for n, w in wall.items() if not math.isnan(w)}
    if len(wall) > 1:
        fast, slow = min(wall, key=wall.get), max(wall, key=wall.get)
        notes.append(f"Fastest to train: {fast} ({wall[fast]:.0f} s); slowest: {slow} "
                     f"({wall[slow]:.0f} s), on this run's hardware.")
    return notes


def plot_tradeoff(table: pd.DataFrame, records: Sequence[dict],
                  save: str | os.PathLike | None = None) -> Figure:
    """Test accuracy against wall time and against parameter count, one labelled point per run.

    ``table`` is :func:`cxrlib.runs.report.comparison_table` of ``records`` (same order).
    """
    from cxrlib.plots import save_figure

    params = [((r.get("model") or {}).get("total_params") or math.nan) / 1e6 for r in records]
    variants = [_canonical(v) for v in ((r.get("model") or {}).get("variant", "") for r in records)]
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


__all__ = ["course_split", "RunEagerly", "input_size", "as_list", "train_or_reuse", "runs_table",
           "labelled_table", "accuracy_ci", "progression_notes", "backbone_notes", "plot_tradeoff"]
