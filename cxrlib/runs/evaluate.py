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
    if samples_per_class is not None and samples_per_class < 1:
        raise ValueError(f"samples per class must be at least 1, not {samples_per_class} "
                         "(leave it out to use every image).")
    manifest = load_manifest(data, layout=layout, classes=classes)
    if samples_per_class is not None:
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


def check_outputs(model, classes: Sequence[str], path: str | Path) -> None:
    """ValueError unless the model has one output per recorded class (or one sigmoid for two)."""
    units = int(model.output_shape[-1])
    if units != len(classes) and not (units == 1 and len(classes) == 2):
        raise ValueError(f"The model {path} has {units} output(s) but its record.json lists "
                         f"{len(classes)} classes {list(classes)}: the model and the record come "
                         "from different runs; train the run again.")


def _test_split(model_path: Path, record: dict, data: str | Path | None) -> pd.DataFrame:
    """The run's own test split; ``data``, when given, must be the folder it was drawn from."""
    root = record["dataset"].get("root", "")
    if data is not None:
        if not Path(data).is_dir():
            raise FileNotFoundError(f"--data {data} is not a folder. With --split test the run's "
                                    "own test split is scored; leave --data out, or use --split "
                                    "all to score another folder.")
        if root and Path(data).resolve() != Path(root).resolve():
            raise ValueError(f"--split test scores the run's own test split, drawn from {root}, "
                             f"not {data}; use --split all --data {data} to score every image "
                             "there, or leave --data out.")
    split_path = model_path.parent / record["artifacts"].get("split", "split.csv")
    manifest = load_split(split_path)
    manifest = manifest[manifest["split"] == "test"].reset_index(drop=True)
    if manifest.empty:
        raise ValueError(f"The run's split {split_path} has no test images; use --split all --data DIR.")
    missing = [p for p in manifest["path"] if not Path(p).is_file()]
    if missing:
        raise FileNotFoundError(f"{len(missing)} of the run's {len(manifest)} test images are "
                                f"gone (first: {missing[0]}); the dataset moved or changed. "
                                "Use --split all --data DIR to score the folder where it is now.")
    return manifest


def evaluate_saved_model(model_path: str | Path, data: str | Path | None = None, split: str = "test",
                         out_dir: str | Path | None = None, layout: str = "auto") -> dict:
    """Score ``RUN_DIR/model.keras`` and write ``out_dir/metrics.json`` (and a confusion plot).

    ``split="test"`` scores the run's saved test split (``data``, if given, must be the
    folder the run was trained on); ``split="all"`` scores every image of ``data`` whose
    class the model knows. What cannot be honoured (a missing folder, another folder with
    ``split="test"``, test images that are gone) raises instead of scoring something else.
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
        manifest = _test_split(model_path, record, data)
        data = record["dataset"].get("root") or data
    elif split == "all":
        if data is None:
            raise ValueError("--split all scores every image of a folder: give it with --data DIR.")
        manifest = match_classes(load_manifest(data, layout=layout), classes)
    else:
        raise ValueError(f"split must be 'test' or 'all', not {split!r}")
    model = load_model(str(model_path))
    check_outputs(model, classes, model_path)
    metrics = evaluate(model, manifest, classes, prep, seed=record["hyperparameters"].get("seed", 0))
    metrics.update({"model": str(model_path), "data": str(data), "split": split,
                    "run": record["name"]})
    if out_dir is not None:
        out = Path(out_dir)
        write_json_atomic(out / "metrics.json", metrics)
        plot_confusion(metrics["confusion_matrix"], classes, title=f"{record['name']} on {split}",
                       save=out / "confusion.png")
    return metrics
