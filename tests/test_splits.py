"""Sampling, class weights and splits: stratified, reproducible, patient-disjoint."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from helpers import manifest_frame

from cxrlib.data.datasets import load_manifest
from cxrlib.data.manifest import MANIFEST_COLUMNS
from cxrlib.data.splits import (
    class_weights,
    load_split,
    make_split,
    patients_in_several_splits,
    sample_per_class,
    save_split,
    split_manifest,
    split_summary,
    subset,
)


def _manifest(counts: dict[str, int], patients_per_class: int | None = None) -> pd.DataFrame:
    rows = []
    for label, n in counts.items():
        for i in range(n):
            patient = f"{label}-p{i % patients_per_class}" if patients_per_class else ""
            rows.append({"path": f"/data/{label}/{i}.png", "label": label, "patient_id": patient})
    return manifest_frame(rows)


def test_sample_per_class_is_balanced_and_seeded() -> None:
    m = _manifest({"A": 50, "B": 30, "C": 8})
    s = sample_per_class(m, 10, seed=1)
    assert s["label"].value_counts().to_dict() == {"A": 10, "B": 10, "C": 8}
    assert s.equals(sample_per_class(m, 10, seed=1))
    assert not s["path"].equals(sample_per_class(m, 10, seed=2)["path"])


def test_class_weights_formula() -> None:
    weights = class_weights(["A"] * 30 + ["B"] * 10, ["A", "B"])
    assert weights == pytest.approx({0: 40 / (2 * 30), 1: 40 / (2 * 10)})
    with pytest.raises(ValueError, match="C"):
        class_weights(["A", "B"], ["A", "B", "C"])


def test_split_is_stratified_and_reproducible() -> None:
    m = _manifest({"A": 200, "B": 100, "C": 100})
    s = split_manifest(m, val=0.15, test=0.2, seed=3)
    table = split_summary(s)
    for label, n in [("A", 200), ("B", 100), ("C", 100)]:
        assert table.loc[label, "test"] == pytest.approx(0.2 * n, abs=1)
        assert table.loc[label, "val"] == pytest.approx(0.15 * n, abs=1)
    assert s["split"].equals(split_manifest(m, val=0.15, test=0.2, seed=3)["split"])
    assert not s["split"].equals(split_manifest(m, val=0.15, test=0.2, seed=4)["split"])


def test_split_keeps_each_patient_on_one_side() -> None:
    m = _manifest({"A": 300, "B": 300}, patients_per_class=40)
    s = split_manifest(m, val=0.2, test=0.2, seed=0)
    assert patients_in_several_splits(s) == []
    assert set(s["split"]) == {"train", "val", "test"}
    fractions = s["split"].value_counts(normalize=True)
    assert 0.1 < fractions["test"] < 0.3 and 0.1 < fractions["val"] < 0.3


def test_official_split_is_kept_and_missing_val_carved_from_train() -> None:
    m = _manifest({"A": 100, "B": 100})
    m["split"] = np.where(np.arange(200) % 5 == 0, "test", "train")
    s = split_manifest(m, val=0.1, test=0.2, seed=0)
    assert (s.loc[m["split"] == "test", "split"] == "test").all()
    assert (s["split"] == "val").sum() == pytest.approx(20, abs=2)



def test_make_split_samples_then_splits_as_the_spec_says() -> None:
    from cxrlib.spec import Split

    m = _manifest({"A": 150, "B": 120})
    m["split"] = np.where(np.arange(270) % 3 == 0, "test", np.where(np.arange(270) % 3 == 1, "val", "train"))
    own = make_split(m, Split(official_test=True, val=0.25), seed=0)
    assert (own.loc[m["split"] == "test", "split"] == "test").all()   # the data's own test split
    assert (own["split"] == "val").sum() == pytest.approx(0.25 * 180, abs=3)   # its val folder joined train
    fresh = make_split(m, Split(samples_per_class=100, test=0.2, val=0.25), seed=0)
    assert fresh["label"].value_counts().to_dict() == {"A": 100, "B": 100}
    shares = fresh["split"].value_counts(normalize=True)
    assert shares["test"] == pytest.approx(0.2, abs=0.02)            # a share of all images
    assert shares["val"] == pytest.approx(0.25 * 0.8, abs=0.02)      # a share of what test leaves
    assert make_split(m, Split(), seed=0)["split"].equals(make_split(m, Split(), seed=0)["split"])


def test_sample_per_class_takes_a_size_per_class() -> None:
    m = _manifest({"A": 30, "B": 30, "C": 5})
    picked = sample_per_class(m, {"A": 10, "B": 3}, seed=0, classes=["A", "B"])
    assert picked["label"].value_counts().to_dict() == {"A": 10, "B": 3}
    with pytest.raises(ValueError, match="at least 1"):
        sample_per_class(m, {"A": 0})

def test_bad_fractions_raise() -> None:
    with pytest.raises(ValueError):
        split_manifest(_manifest({"A": 10}), val=0.6, test=0.5)


def test_save_and_reload_round_trip(tmp_path: Path) -> None:
    m = split_manifest(_manifest({"A": 20, "B": 20}, patients_per_class=5), seed=0)
    path = save_split(m, tmp_path / "runs" / "split.csv")
    back = load_split(path)
    pd.testing.assert_frame_equal(back[list(MANIFEST_COLUMNS)], m[list(MANIFEST_COLUMNS)].astype(str))
    assert len(subset(back, "train")) + len(subset(back, "val")) + len(subset(back, "test")) == 40
    with pytest.raises(ValueError):
        save_split(m.assign(split=""), tmp_path / "bad.csv")
    with pytest.raises(FileNotFoundError):
        load_split(tmp_path / "absent.csv")


@pytest.mark.realdata
def test_real_sample_split_is_balanced(covid_sample: Path) -> None:
    m = sample_per_class(load_manifest(covid_sample), 100, seed=0)
    s = split_manifest(m, val=0.15, test=0.15, seed=0)
    table = split_summary(s)
    assert (table.loc[["COVID", "Normal", "Viral Pneumonia"], "test"] == 15).all()
