"""The steps the notebooks and the CLI share, so both do them the same way.

- :func:`prepare_split`: dataset directory → manifest → balanced sample → saved split.
- :func:`evaluate_saved_model`: a saved run's model on its own test split or on a folder it
  never saw, with the folder's class names matched to the model's.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Sequence

import pandas as pd

from cxrlib.data.datasets import canonical_class, class_names, load_manifest
from cxrlib.data.splits import load_split, sample_per_class, split_manifest

log = logging.getLogger(__name__)


def prepare_split(data: str | Path, layout: str = "auto", classes: Sequence[str] | None = None,
                  samples_per_class: int | None = None, val: float = 0.15, test: float = 0.15,
                  seed: int = 0, split_file: str | Path | None = None
                  ) -> tuple[pd.DataFrame, list[str]]:
    """A split manifest and its class list, from a saved split or freshly from ``data``."""
    if split_file:
        manifest = load_split(split_file)
        return manifest, class_names(manifest, classes)
    manifest = load_manifest(data, layout=layout, classes=classes)
    if samples_per_class:
        manifest = sample_per_class(manifest, samples_per_class, seed=seed)
    manifest = split_manifest(manifest, val=val, test=test, seed=seed)
    return manifest, class_names(manifest, classes)


def match_classes(manifest: pd.DataFrame, model_classes: Sequence[str]) -> pd.DataFrame:
    """Keep the rows whose class is one of the model's, matching names by their canonical form
    (``Covid``/``COVID``/``COVID-19``; ``NORMAL``/``Normal``); rename them to the model's names."""
    lookup = {canonical_class(c): c for c in model_classes}
    labels = manifest["label"].map(lambda label: lookup.get(canonical_class(label)))
    dropped = sorted(set(manifest.loc[labels.isna(), "label"]))
    if dropped:
        log.warning("Classes %s are not among the model's %s; their images are left out.",
                    dropped, list(model_classes))
    if labels.isna().all():
        raise ValueError(f"None of the classes {sorted(set(manifest['label']))} match the model's "
                         f"classes {list(model_classes)}.")
    out = manifest[labels.notna()].assign(label=labels[labels.notna()]).reset_index(drop=True)
    out.attrs = dict(manifest.attrs)
    return out


def evaluate_saved_model(model_path: str | Path, data: str | Path, split: str = "test",
                         out_dir: str | Path | None = None, layout: str = "auto") -> dict:
    """Score ``RUN_DIR/model.keras`` and write ``out_dir/metrics.json`` (and a confusion plot).

    ``split="test"`` uses the run's saved test split; ``split="all"`` scores every image of
    ``data`` whose class the model knows.
    """
    from cxrlib.models.build import load_model
    from cxrlib.data.pipeline import prep_from_record
    from cxrlib.plots import plot_confusion
    from cxrlib.runs.records import read_record, write_json_atomic
    from cxrlib.runs.train import evaluate

    model_path = Path(model_path)
    if not model_path.is_file():
        raise FileNotFoundError(f"No model at {model_path}.")
    record = read_record(model_path.parent)
    classes = record["dataset"]["classes"]
    prep = prep_from_record(record)
    if split == "test":
        split_path = model_path.parent / record["artifacts"].get("split", "split.csv")
        manifest = load_split(split_path)
        manifest = manifest[manifest["split"] == "test"].reset_index(drop=True)
    elif split == "all":
        manifest = match_classes(load_manifest(data, layout=layout), classes)
    else:
        raise ValueError(f"split must be 'test' or 'all', not {split!r}")
    metrics = evaluate(load_model(str(model_path)), manifest, classes, prep,
                       seed=record["hyperparameters"].get("seed", 0))
    metrics.update({"model": str(model_path), "data": str(data), "split": split,
                    "run": record["name"]})
    if out_dir is not None:
        out = Path(out_dir)
        write_json_atomic(out / "metrics.json", metrics)
        plot_confusion(metrics["confusion_matrix"], classes, title=f"{record['name']} on {split}",
                       save=out / "confusion.png")
    return metrics
