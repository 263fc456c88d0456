"""Sampling, class weights and train/validation/test splits of a manifest.

Two ways to handle class imbalance, as the course teaches them:

- balanced sampling: take ``n`` images per class (the course takes 1200 per class from the
  COVID-19 Radiography Database), or
- every image, with class weights ``n_total / (n_classes * n_class)`` in the loss.

Splits are stratified by class and *grouped by patient* where the patient is known, so that
no patient's images appear on both sides of the train/test line (a classic leak). A dataset's
official test split is kept where the split asks for it (``Split.official_test``). One function
makes a split, :func:`make_split`. A split is saved as CSV and reloaded so that every notebook and every
run sees the same images.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np
import pandas as pd

from cxrlib.data.datasets import class_names, load_manifest
from cxrlib.data.manifest import MANIFEST_COLUMNS
from cxrlib.errors import InputError
from cxrlib.files import write_csv_atomic
from cxrlib.spec import Split
from cxrlib.text import one_line

log = logging.getLogger(__name__)

SPLITS: tuple[str, ...] = ("train", "val", "test")


def sample_per_class(manifest: pd.DataFrame, n: int | Mapping[str, int], seed: int = 0,
                     classes: Sequence[str] | None = None, warn: bool = True) -> pd.DataFrame:
    """``n`` random images per class, or ``n[label]`` of each class of a mapping (all of a
    class that has fewer, with a warning unless ``warn=False``), ordered by class then path.
    ``classes`` keeps only those classes, in that order (default: every class, sorted)."""
    if any(count < 1 for count in (n.values() if isinstance(n, Mapping) else [n])):
        raise InputError(f"samples per class must be at least 1, not {n}")
    order = list(classes) if classes is not None else sorted(manifest["label"].unique())
    parts = []
    for label in order:
        group = manifest[manifest["label"] == label]
        count = n[label] if isinstance(n, Mapping) else n
        if len(group) < count and warn:
            log.warning("Class %r has only %d images; taking all of them (asked for %d).",
                        label, len(group), count)
        parts.append(group.sample(n=min(count, len(group)), random_state=seed))
    if not parts:
        return manifest.iloc[0:0].copy()
    out = pd.concat(parts)
    rank = out["label"].map({label: i for i, label in enumerate(order)})
    out = out.assign(_rank=rank).sort_values(["_rank", "path"]).drop(columns="_rank")
    out = out.reset_index(drop=True)
    out.attrs = dict(manifest.attrs)
    return out


def class_weights(labels: Sequence[str] | pd.Series, classes: Sequence[str]) -> dict[int, float]:
    """Keras ``class_weight``: scikit-learn's "balanced", ``n_total / (n_classes * n_class)``
    per class index (labels outside ``classes`` are not counted)."""
    from sklearn.utils.class_weight import compute_class_weight

    labels = pd.Series(list(labels), dtype=object)
    missing = [c for c in classes if not (labels == c).any()]
    if missing:
        raise InputError(f"No training images for classes {missing}: cannot weight them.")
    kept = labels[labels.isin(list(classes))].to_numpy()
    weights = compute_class_weight("balanced", classes=np.array(list(classes), dtype=object), y=kept)
    return {i: float(w) for i, w in enumerate(weights)}


def _groups(manifest: pd.DataFrame) -> pd.Series:
    """The grouping key: the patient id where known, else the image itself."""
    patient = manifest["patient_id"].astype(str)
    return patient.where(patient != "", "image:" + manifest["path"].astype(str))


def _assign(manifest: pd.DataFrame, fractions: dict[str, float], seed: int) -> pd.Series:
    """Give each group a split, stratified by the group's majority label.

    Not scikit-learn's: ``StratifiedGroupKFold`` only cuts 1/n folds and ``GroupShuffleSplit``
    does not stratify, and the splits must hold the asked fractions of images (the courses' 15 %).

    Within each label, groups are shuffled and laid end to end on [0, 1] by image count;
    a group goes to the split whose fraction interval holds its midpoint, the rest to train.
    """
    groups = _groups(manifest)
    group_label = manifest.groupby(groups)["label"].agg(lambda s: s.value_counts().index[0])
    group_size = groups.value_counts()
    names = list(fractions) + ["train"]
    bounds = np.cumsum(list(fractions.values()))
    rng = np.random.default_rng(seed)
    assignment: dict[str, str] = {}
    for label in sorted(group_label.unique()):
        members = np.array(sorted(group_label.index[group_label == label]))
        members = members[rng.permutation(len(members))]
        sizes = group_size[members].to_numpy(dtype=float)
        midpoints = (np.cumsum(sizes) - sizes / 2) / sizes.sum()
        for member, position in zip(members, np.searchsorted(bounds, midpoints, side="right")):
            assignment[member] = names[position]
    return groups.map(assignment)


def split_manifest(manifest: pd.DataFrame, val: float = 0.15, test: float = 0.15,
                   seed: int = 0, keep_official: bool = True) -> pd.DataFrame:
    """Add a ``split`` column (train/val/test), stratified by label, grouped by patient.

    Where ``keep_official`` and the manifest already has a split (Kermany), it is kept; a
    missing validation or test part is carved out of the training part.
    """
    if not (0 <= val < 1 and 0 <= test < 1 and val + test < 1):
        raise InputError(f"val and test fractions must be in [0, 1) with val + test < 1, got {val}, {test}")
    out = manifest.copy()
    out.attrs = dict(manifest.attrs)
    official = keep_official and (out["split"] != "").all()
    if not official:
        out["split"] = _assign(out, {"test": test, "val": val}, seed)
    else:
        present = set(out["split"])
        train = out["split"] == "train"
        needed = {name: fraction for name, fraction in (("test", test), ("val", val))
                  if name not in present and fraction > 0}
        if needed:
            scale = 1.0 - sum(f for n, f in (("test", test), ("val", val)) if n in present)
            carved = _assign(out[train], {n: f / scale for n, f in needed.items()}, seed)
            out.loc[train, "split"] = carved
    _warn_if_leaky(out)
    return out


def _warn_if_leaky(manifest: pd.DataFrame) -> None:
    """Log a warning when a patient appears in more than one split."""
    leaky = patients_in_several_splits(manifest)
    if leaky:
        log.warning("%d patients appear in more than one split (e.g. %s).", len(leaky), leaky[:3])


def patients_in_several_splits(manifest: pd.DataFrame) -> list[str]:
    """Patient ids (known ones only) that appear in more than one split."""
    known = manifest[manifest["patient_id"] != ""]
    per_patient = known.groupby("patient_id")["split"].nunique()
    return sorted(per_patient.index[per_patient > 1])


def split_summary(manifest: pd.DataFrame) -> pd.DataFrame:
    """Counts per class (rows) and split (columns), with totals."""
    table = pd.crosstab(manifest["label"], manifest["split"], margins=True, margins_name="total")
    order = [s for s in SPLITS if s in table.columns] + ["total"]
    return table[order]


def save_split(manifest: pd.DataFrame, path: str | Path) -> Path:
    """Write a split manifest as CSV (atomically: a crash never leaves half a file)."""
    if "split" not in manifest or (manifest["split"] == "").any():
        raise ValueError("The manifest has no complete 'split' column; call split_manifest first.")
    return write_csv_atomic(manifest, path)


def load_split(path: str | Path) -> pd.DataFrame:
    """Read a split saved by :func:`save_split`; warns about files that have gone missing."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"No split file at {path}; make one with split_manifest + save_split.")
    try:
        manifest = pd.read_csv(path, dtype=str, keep_default_na=False)
    except (ValueError, pd.errors.EmptyDataError) as error:  # ParserError, UnicodeDecodeError
        raise InputError(f"Cannot read {path} as a split file ({one_line(error, 160)}); give the "
                         "split.csv a run saved (RUN_DIR/split.csv).") from error
    missing_columns = [c for c in ("path", "label", "split") if c not in manifest]
    if missing_columns:
        raise InputError(f"{path} is not a split file: it lacks columns {missing_columns}.")
    for column in MANIFEST_COLUMNS:
        if column not in manifest:
            manifest[column] = ""
    gone = [p for p in manifest["path"] if not Path(p).is_file()]
    if gone:
        log.warning("%d files listed in %s are missing (e.g. %s); they will be skipped.",
                    len(gone), path, gone[0])
    manifest.attrs["split_file"] = str(path.resolve())
    return manifest


def subset(manifest: pd.DataFrame, split: str) -> pd.DataFrame:
    """The rows of one split."""
    if split not in SPLITS:
        raise InputError(f"split must be one of {SPLITS}, not {split!r}")
    return manifest[manifest["split"] == split].reset_index(drop=True)


def make_split(manifest: pd.DataFrame, split: Split, seed: int = 0) -> pd.DataFrame:
    """The one split maker (``cxr train``, the notebooks' shared split, the course recipes).

    At most ``split.samples_per_class`` images of each class (:func:`sample_per_class`);
    then ``split.test`` of them held out for testing, or, with ``official_test``, the data's
    own test split (its validation folder then joins training); then ``split.val`` of the
    rest for validation. Stratified by class, grouped by patient (:func:`split_manifest`).
    """
    if split.samples_per_class:
        manifest = sample_per_class(manifest, split.samples_per_class, seed=seed)
    out = manifest.copy()
    out.attrs = dict(manifest.attrs)
    official = split.official_test and (out["split"] == "test").any()
    if official:
        out.loc[out["split"] == "val", "split"] = "train"
    else:
        out["split"] = ""
    test = 0.0 if official else split.test
    return split_manifest(out, val=split.val * (1 - test), test=test, seed=seed,
                          keep_official=official)


def prepare_split(data: str | Path, split: Split, layout: str = "auto",
                  classes: Sequence[str] | None = None, seed: int = 0,
                  split_file: str | Path | None = None) -> tuple[pd.DataFrame, list[str]]:
    """A split manifest and its class list: the saved ``split_file``, or :func:`make_split`
    of the images in ``data``."""
    manifest = (load_split(split_file) if split_file else
                make_split(load_manifest(data, layout=layout, classes=classes), split, seed))
    return manifest, class_names(manifest, classes)
