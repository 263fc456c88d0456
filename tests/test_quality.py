"""Tests for cxrlib.data.quality: the integrity report behind ``cxr data check``."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

import cxrlib.data.quality as quality
from cxrlib.data.check_report import format_check_report
from cxrlib.data.quality import check_manifest, hamming_pairs, perceptual_hash, thumbnail


def _smooth(seed: int, size: int = 64) -> np.ndarray:
    """A smooth random 'radiograph': 8x8 noise upscaled, distinct dHash per seed."""
    small = np.random.default_rng(seed).integers(0, 256, (8, 8), dtype=np.uint8)
    return np.asarray(Image.fromarray(small).resize((size, size), Image.Resampling.BICUBIC))


def _brighter_resized(image: np.ndarray, size: int = 80, delta: int = 8) -> np.ndarray:
    """A slightly brightened, resized copy (a near duplicate)."""
    bright = np.clip(image.astype(int) + delta, 0, 255).astype(np.uint8)
    return np.asarray(Image.fromarray(bright).resize((size, size), Image.Resampling.BILINEAR))


def _look_alike(rows: int, size: int = 64) -> np.ndarray:
    """A smooth image falling from left to right (every dHash bit set, whatever ``rows``) with
    a vertical profile of its own: ``rows`` picks the profile, so two differ a lot."""
    y, x = np.mgrid[0:size, 0:size] / size
    profile = 60 * np.sin(2 * np.pi * rows * y)
    return np.clip(150 - 40 * x + profile, 0, 255).astype(np.uint8)


def _bits(x: int) -> int:
    """Population count of a Python int."""
    return bin(x).count("1")


# ----------------------------------------------------------------------------- hashes


def test_perceptual_hash_is_robust_to_resize_and_brightness() -> None:
    image = _smooth(1)
    h = perceptual_hash(image)
    assert isinstance(h, int) and 0 <= h < 2**64
    assert _bits(h ^ perceptual_hash(_brighter_resized(image))) <= 2
    assert _bits(h ^ perceptual_hash(_smooth(2))) > 12
    assert perceptual_hash(image) == h  # deterministic
    assert perceptual_hash(np.zeros((10, 10), dtype=np.uint8)) == 0
    assert perceptual_hash(image, hash_size=4) < 2**16
    with pytest.raises(ValueError):
        perceptual_hash(np.zeros((4, 4, 3), dtype=np.uint8))


def test_thumbnail_is_normalised_and_tells_copies_from_look_alikes() -> None:
    image = _smooth(1)
    t = thumbnail(image)
    assert t.shape == (32 * 32,) and t.dtype == np.float32
    assert abs(float(t.mean())) < 1e-5 and abs(float(np.linalg.norm(t)) - 1) < 1e-4
    assert thumbnail(image, size=8).shape == (64,)
    assert not thumbnail(np.full((20, 30), 7, np.uint8)).any()        # no pattern: zeros
    assert thumbnail(image) @ thumbnail(image) == pytest.approx(1.0, abs=1e-5)
    assert thumbnail(image) @ thumbnail(_brighter_resized(image)) >= 0.99
    assert perceptual_hash(_look_alike(1)) == perceptual_hash(_look_alike(2))  # same dHash ...
    assert thumbnail(_look_alike(1)) @ thumbnail(_look_alike(2)) < 0.5        # ... other image
    with pytest.raises(ValueError):
        thumbnail(np.zeros((4, 4, 3), dtype=np.uint8))


def test_hamming_pairs_matches_brute_force() -> None:
    rng = np.random.default_rng(0)
    base = [int(x) for x in rng.integers(0, 2**63, 40)] + [2**64 - 1]
    hashes = base + [base[3] ^ 0b1011, base[7] ^ (1 << 63), base[40] ^ 1]
    expected = sorted(
        (i, j, _bits(hashes[i] ^ hashes[j]))
        for i in range(len(hashes))
        for j in range(i + 1, len(hashes))
        if _bits(hashes[i] ^ hashes[j]) <= 3
    )
    assert sorted(hamming_pairs(hashes, 3)) == expected
    assert (3, 41, 3) in expected and (7, 42, 1) in expected and (40, 43, 1) in expected


# --------------------------------------------------------------------------- manifest


@pytest.fixture(scope="module")
def dataset(tmp_path_factory: pytest.TempPathFactory) -> pd.DataFrame:
    """A small 3-class manifest with one corrupt file, one empty file and duplicates."""
    root = tmp_path_factory.mktemp("cxr")
    rows = []

    def add(name: str, label: str, split: str, image: np.ndarray | None = None) -> None:
        path = root / split / label / name
        path.parent.mkdir(parents=True, exist_ok=True)
        if image is not None:
            Image.fromarray(image).save(path)
        patient = name.split(".")[0]
        rows.append({"path": str(path), "label": label, "split": split, "patient_id": patient})

    a, b, g = _smooth(10), _smooth(11), _smooth(12)
    add("normal_a.png", "normal", "train", a)
    add("normal_a_bright.png", "normal", "val", _brighter_resized(a))  # near duplicate, other split
    add("normal_f.png", "normal", "test", _smooth(13))
    add("pneu_b.png", "pneumonia", "train", b)
    add("pneu_b_copy.tif", "pneumonia", "test", b)  # exact duplicate, re-encoded, other split
    add("pneu_e.png", "pneumonia", "val", _smooth(14))
    add("covid_c.png", "covid", "train", _smooth(15))
    add("covid_d.png", "covid", "test", (_smooth(16).astype(np.uint16) * 200 + 1000))  # 16-bit
    add("covid_g.png", "covid", "train", g)
    add("pneu_g.jpg", "pneumonia", "train", None)  # the same pixels as covid_g, another label
    Image.fromarray(g).save(rows[-1]["path"], format="PNG")  # PNG content under a .jpg name
    add("covid_bad.png", "covid", "val")
    Path(rows[-1]["path"]).write_text("not an image at all\n" * 10)
    add("normal_empty.png", "normal", "train")
    Path(rows[-1]["path"]).write_bytes(b"")
    return pd.DataFrame(rows)


@pytest.fixture(scope="module")
def report(dataset: pd.DataFrame) -> dict:
    """The report of the fixture manifest."""
    return check_manifest(dataset, progress=False)


def _path(dataset: pd.DataFrame, name: str) -> str:
    """The manifest path of a file by its file name."""
    return next(p for p in dataset["path"] if Path(p).name == name)


def test_counts_classes_and_splits(report: dict) -> None:
    assert report["n_images"] == 12
    assert report["n_readable"] == 10
    assert report["classes"] == {"covid": 3, "normal": 3, "pneumonia": 4}
    assert report["splits"] == {
        "test": {"covid": 1, "normal": 1, "pneumonia": 1},
        "train": {"covid": 2, "normal": 1, "pneumonia": 2},
        "val": {"normal": 1, "pneumonia": 1},
    }


def test_sizes_and_modes(report: dict) -> None:
    assert report["sizes"]["width"] == {"min": 64, "max": 80, "mean": 65.6, "median": 64.0}
    assert report["sizes"]["height"]["max"] == 80
    assert report["size_counts"] == {"64x64": 9, "80x80": 1}
    assert report["modes"]["L"] == 9
    assert sum(report["modes"].values()) == 10
    assert [m for m in report["modes"] if m != "L"][0].startswith("I")


def test_unreadable_files_are_listed(report: dict, dataset: pd.DataFrame) -> None:
    errors = {e["path"]: e["error"] for e in report["unreadable"]}
    assert set(errors) == {_path(dataset, "covid_bad.png"), _path(dataset, "normal_empty.png")}
    assert "empty" in errors[_path(dataset, "normal_empty.png")]
    assert "not a recognised image" in errors[_path(dataset, "covid_bad.png")]


def test_exact_duplicates(report: dict, dataset: pd.DataFrame) -> None:
    groups = report["exact_duplicates"]
    assert {frozenset(g) for g in groups} == {
        frozenset({_path(dataset, "covid_g.png"), _path(dataset, "pneu_g.jpg")}),
        frozenset({_path(dataset, "pneu_b.png"), _path(dataset, "pneu_b_copy.tif")}),
    }
    assert all(g == sorted(g) for g in groups) and groups == sorted(groups)  # stable order


def test_near_duplicates(report: dict, dataset: pd.DataFrame) -> None:
    assert len(report["near_duplicates"]) == 1
    pair = report["near_duplicates"][0]
    expected = {_path(dataset, "normal_a.png"), _path(dataset, "normal_a_bright.png")}
    assert {pair["a"], pair["b"]} == expected
    assert 0 <= pair["distance"] <= 4
    assert 0.99 <= pair["similarity"] <= 1.0
    assert report["near_threshold"] == 4 and report["min_similarity"] == 0.99
    assert report["near_candidates_rejected"] == 0


def test_look_alikes_with_the_same_hash_are_rejected_and_counted(tmp_path: Path) -> None:
    images = {"a.png": _look_alike(1), "a_copy.png": _brighter_resized(_look_alike(1)),
              "other.png": _look_alike(2), "third.png": _look_alike(3)}
    rows = []
    for (name, image), label, split in zip(images.items(), "ABCD", ["train", "test"] * 2):
        Image.fromarray(image).save(tmp_path / name)
        rows.append({"path": str(tmp_path / name), "label": label, "split": split})
    manifest = pd.DataFrame(rows)
    hashes = [perceptual_hash(image) for image in images.values()]
    assert max(_bits(hashes[0] ^ h) for h in hashes) <= 1       # all four are hash candidates

    rep = check_manifest(manifest, progress=False)
    assert [(Path(p["a"]).name, Path(p["b"]).name) for p in rep["near_duplicates"]] == [
        ("a.png", "a_copy.png")
    ]
    assert rep["near_duplicates"][0]["similarity"] >= 0.99
    assert rep["near_candidates_rejected"] == 5                 # 6 candidate pairs, 1 copy
    for section in ("cross_split_duplicates", "cross_label_duplicates"):
        assert [sorted(Path(p).name for p in e["paths"]) for e in rep[section]] == [
            ["a.png", "a_copy.png"]
        ]
        assert rep[section][0]["similarity"] >= 0.99
    text = format_check_report(rep)
    assert "Near duplicate pairs (dHash within 4 bits, thumbnail r >= 0.99): 1" in text
    assert "hash candidates rejected (thumbnail r below the threshold): 5" in text
    assert "other.png" not in text and "r = 0.99" in text

    everything = check_manifest(manifest, progress=False, min_similarity=-1.0)
    assert len(everything["near_duplicates"]) == 6 and everything["near_candidates_rejected"] == 0
    with pytest.raises(ValueError, match="min_similarity"):
        check_manifest(manifest, progress=False, min_similarity=1.5)


def test_cross_split_leakage(report: dict, dataset: pd.DataFrame) -> None:
    entries = {(e["kind"], frozenset(e["paths"])): e for e in report["cross_split_duplicates"]}
    exact = ("exact", frozenset({_path(dataset, "pneu_b.png"), _path(dataset, "pneu_b_copy.tif")}))
    near_paths = {_path(dataset, "normal_a.png"), _path(dataset, "normal_a_bright.png")}
    near = ("near", frozenset(near_paths))
    assert set(entries) == {exact, near}  # covid_g / pneu_g share the train split: no leakage
    assert sorted(entries[exact]["splits"]) == ["test", "train"]
    assert sorted(entries[near]["splits"]) == ["train", "val"]
    assert entries[near]["distance"] <= 4


def test_cross_label_duplicates(report: dict, dataset: pd.DataFrame) -> None:
    assert len(report["cross_label_duplicates"]) == 1
    entry = report["cross_label_duplicates"][0]
    assert entry["kind"] == "exact"
    assert entry["paths"] == [_path(dataset, "covid_g.png"), _path(dataset, "pneu_g.jpg")]
    assert entry["labels"] == ["covid", "pneumonia"]
    assert entry["splits"] == ["train", "train"]


def test_report_is_json_serialisable(report: dict) -> None:
    assert json.loads(json.dumps(report)) == report


def test_each_file_is_read_once(dataset: pd.DataFrame, monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[str] = []
    original = quality.read_image_with_info

    def counting(path: str):
        calls.append(path)
        return original(path)

    monkeypatch.setattr(quality, "read_image_with_info", counting)
    check_manifest(dataset, progress=False)
    assert sorted(calls) == sorted(dataset["path"])


def test_near_threshold_zero_and_no_split_column(dataset: pd.DataFrame) -> None:
    rep = check_manifest(dataset.drop(columns=["split"]), near_threshold=0, progress=False)
    assert rep["splits"] == {} and rep["cross_split_duplicates"] == []
    assert all(p["distance"] == 0 for p in rep["near_duplicates"])
    assert len(rep["cross_label_duplicates"]) == 1
    assert rep["cross_label_duplicates"][0]["splits"] == [None, None]
    json.dumps(rep)


def test_all_empty_split_column_is_no_split(dataset: pd.DataFrame) -> None:
    for empty in ("", None):
        rep = check_manifest(dataset.assign(split=empty), progress=False)
        assert rep["splits"] == {} and rep["cross_split_duplicates"] == []
        assert rep["cross_label_duplicates"][0]["splits"] == [None, None]
        assert "Splits" not in format_check_report(rep)
    mixed = dataset.assign(split=["train"] + [""] * (len(dataset) - 1))
    text = format_check_report(check_manifest(mixed, progress=False))
    assert "Splits" in text and "(none)" in text


def test_missing_columns_and_missing_paths(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="label"):
        check_manifest(pd.DataFrame({"path": []}), progress=False)
    rep = check_manifest(pd.DataFrame({"path": [None], "label": ["x"]}), progress=False)
    assert rep["n_readable"] == 0 and len(rep["unreadable"]) == 1
    assert rep["sizes"]["width"]["min"] is None
    assert "0 readable" in format_check_report(rep)


# ----------------------------------------------------------------------------- format


def test_format_check_report_mentions_findings(report: dict, dataset: pd.DataFrame) -> None:
    text = format_check_report(report)
    assert _path(dataset, "covid_bad.png") in text
    assert _path(dataset, "normal_empty.png") in text
    assert "12 listed, 10 readable, 2 unreadable" in text
    assert "Cross-split duplicates (data leakage): 2" in text
    assert "Cross-label duplicates (conflicting labels): 1" in text
    assert "64x64" in text and "pneumonia" in text


def test_format_check_report_truncates_long_lists() -> None:
    rep = {
        "n_images": 30,
        "n_readable": 5,
        "classes": {"a": 5},
        "splits": {},
        "sizes": {},
        "size_counts": {},
        "modes": {},
        "unreadable": [{"path": f"/d/img{i:02d}.png", "error": "empty file"} for i in range(25)],
        "exact_duplicates": [],
        "near_duplicates": [],
        "cross_split_duplicates": [],
        "cross_label_duplicates": [],
    }
    text = format_check_report(rep)
    assert "/d/img19.png" in text and "/d/img20.png" not in text
    assert "... and 5 more" in text
