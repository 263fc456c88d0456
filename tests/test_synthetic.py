"""Tests for cxrlib.data.synthetic: layout, determinism, lesion masks, class signal, shortcut markers."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from scipy.ndimage import binary_dilation

import cxrlib
from cxrlib.data.render import SHORTCUT_MARKER, SYNTH_CLASSES, render_layers, render_radiograph
from cxrlib.data.synthetic import generate_synthetic

LESION_CLASSES = ("COVID", "Viral Pneumonia", "Bacterial Pneumonia")


def _files(root: Path) -> dict[str, bytes]:
    """Every file under root, by relative path, with its bytes."""
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def _rows(root: Path) -> list[dict[str, str]]:
    with open(root / "markers.csv", newline="") as f:
        return list(csv.DictReader(f))


def _load(root: Path, rel: str) -> np.ndarray:
    return np.asarray(Image.open(root / rel))


@pytest.fixture(scope="module")
def small_set(tmp_path_factory) -> Path:
    """3 images per class at 64 px, sizes varying."""
    return generate_synthetic(tmp_path_factory.mktemp("synth") / "data", per_class=3, size=64,
                              seed=0, progress=False)


# --------------------------------------------------------------------------- layout


def test_layout_counts_and_formats(small_set: Path) -> None:
    assert sorted(p.name for p in small_set.iterdir() if p.is_dir()) == sorted(SYNTH_CLASSES)
    for name in SYNTH_CLASSES:
        images = sorted(p.name for p in (small_set / name / "images").iterdir())
        masks = sorted(p.name for p in (small_set / name / "masks").iterdir())
        assert images == masks == sorted(f"{name}-{i}.png" for i in (1, 2, 3))
        for fname in images:
            with Image.open(small_set / name / "images" / fname) as img:
                assert img.format == "PNG" and img.mode == "L"
                size = img.size
            with Image.open(small_set / name / "masks" / fname) as mask:
                assert mask.format == "PNG" and mask.mode == "L" and mask.size == size
                assert set(np.unique(np.asarray(mask))) <= {0, 255}


def test_metadata_and_markers_csv(small_set: Path) -> None:
    meta = json.loads((small_set / "synthetic.json").read_text())
    assert meta["seed"] == 0 and meta["per_class"] == 3 and meta["size"] == 64
    assert meta["classes"] == list(SYNTH_CLASSES)
    assert meta["cxrlib_version"] == cxrlib.__version__
    for key in ("vary_size", "severity", "marker_prob", "shortcut_class", "shortcut_prob"):
        assert key in meta
    rows = _rows(small_set)
    assert list(rows[0]) == ["file", "label", "marker", "shortcut"]
    assert len(rows) == 3 * len(SYNTH_CLASSES)
    for row in rows:
        assert (small_set / row["file"]).is_file()
        assert row["file"].startswith(f"{row['label']}/images/{row['label']}-")
        assert row["shortcut"] == "False"


def test_sizes_vary_only_when_asked(small_set: Path, tmp_path: Path) -> None:
    shapes = {_load(small_set, r["file"]).shape for r in _rows(small_set)}
    assert len(shapes) > 3 and any(h != w for h, w in shapes)
    assert all(0.85 * 64 - 1 <= s <= 1.25 * 64 + 1 for shape in shapes for s in shape)
    fixed = generate_synthetic(tmp_path / "fixed", per_class=2, size=48, vary_size=False,
                               progress=False)
    for row in _rows(fixed):
        assert _load(fixed, row["file"]).shape == (48, 48)
        assert _load(fixed, row["file"].replace("/images/", "/masks/")).shape == (48, 48)


# --------------------------------------------------------------------------- determinism


def test_same_seed_same_bytes_other_seed_other_images(tmp_path: Path) -> None:
    kw = dict(per_class=2, size=48, classes=("COVID", "Normal"), marker_prob=0.5, progress=False)
    a = _files(generate_synthetic(tmp_path / "a", seed=3, **kw))
    b = _files(generate_synthetic(tmp_path / "b", seed=3, **kw))
    c = _files(generate_synthetic(tmp_path / "c", seed=4, **kw))
    assert a == b
    images = [k for k in a if "/images/" in k]
    assert all(a[k] != c[k] for k in images)


def test_image_depends_only_on_seed_class_and_index(tmp_path: Path) -> None:
    small = generate_synthetic(tmp_path / "s", per_class=1, size=48, seed=5,
                               classes=("Viral Pneumonia",), progress=False)
    big = generate_synthetic(tmp_path / "b", per_class=2, size=48, seed=5,
                             classes=("Normal", "Viral Pneumonia"), progress=False)
    rel = "Viral Pneumonia/images/Viral Pneumonia-1.png"
    assert (small / rel).read_bytes() == (big / rel).read_bytes()


def test_render_radiograph_shapes_and_types() -> None:
    img, mask = render_radiograph(np.random.default_rng(0), "COVID", 64)
    assert img.dtype == mask.dtype == np.uint8 and img.shape == mask.shape == (64, 64)
    img, mask = render_radiograph(np.random.default_rng(0), "Normal", (70, 50))
    assert img.shape == mask.shape == (70, 50)
    assert img.std() > 20  # a real picture, not a flat field
    again, _ = render_radiograph(np.random.default_rng(0), "Normal", (70, 50))
    assert np.array_equal(img, again)


# --------------------------------------------------------------------------- lesions


@pytest.mark.parametrize("label", SYNTH_CLASSES)
def test_masks_lie_inside_the_lungs(label: str) -> None:
    for seed in range(4):
        layers = render_layers(np.random.default_rng(seed), label, (72, 64), severity=0.8)
        lesion = layers["mask"] > 0
        if label == "Normal":
            assert not lesion.any()
            continue
        assert lesion.sum() > 20
        assert not (lesion & ~layers["lungs"]).any()
        outside = np.ones_like(lesion)
        outside[2:-2, 2:-2] = False  # a thin band round the edge
        for rows in (slice(0, 10), slice(-10, None)):  # the 15 % corner squares (markers)
            for cols in (slice(0, 9), slice(-9, None)):
                outside[rows, cols] = True
        assert not (lesion & outside).any()


def test_lesions_only_change_the_lungs_and_brighten_them() -> None:
    """Same rng state, other label: the same film with a lesion added to the lungs."""
    for seed in range(3):
        normal = render_layers(np.random.default_rng(seed), "Normal", 80)
        lungs = normal["lungs"]
        far = ~binary_dilation(lungs, iterations=3)
        for label in LESION_CLASSES:
            sick = render_layers(np.random.default_rng(seed), label, 80)
            assert np.array_equal(sick["lungs"], lungs)
            diff = sick["image"].astype(int) - normal["image"].astype(int)
            assert not diff[far].any()
            assert diff[lungs].mean() > 3
            assert diff[sick["mask"] > 0].mean() > 10


def test_lung_brightness_separates_classes_on_average() -> None:
    """Unpaired, with every nuisance: lesion classes have relatively brighter lungs."""
    means = {}
    for ci, label in enumerate(SYNTH_CLASSES):
        vals = []
        for i in range(10):
            rng = np.random.default_rng([9, ci, i])
            layers = render_layers(rng, label, 64, severity=rng.uniform(0.6, 1.0))
            img = layers["image"].astype(float)
            vals.append((img[layers["lungs"]].mean() - img.mean()) / img.std())
        means[label] = np.mean(vals)
    for label in LESION_CLASSES:
        assert means[label] > means["Normal"] + 0.03, means


def _side_mass(mask: np.ndarray) -> tuple[int, int]:
    half = mask.shape[1] // 2
    return int(mask[:, :half].sum()), int(mask[:, half:].sum())


def test_bacterial_is_one_sided_covid_and_viral_bilateral() -> None:
    for seed in range(6):
        rng = lambda seed=seed: np.random.default_rng(100 + seed)  # noqa: E731
        left, right = _side_mass(render_radiograph(rng(), "Bacterial Pneumonia", 64)[1] > 0)
        assert min(left, right) <= 0.05 * (left + right)
        for label in ("COVID", "Viral Pneumonia"):
            left, right = _side_mass(render_radiograph(rng(), label, 64)[1] > 0)
            assert min(left, right) >= 0.2 * (left + right), (label, left, right)


def test_covid_is_lower_and_peripheral_viral_is_central() -> None:
    """COVID sits low in the lungs and away from the midline; viral spreads round the hila."""
    for seed in range(4):
        covid = render_layers(np.random.default_rng(seed), "COVID", 96)
        viral = render_layers(np.random.default_rng(seed), "Viral Pneumonia", 96)
        rows, cols = np.nonzero(covid["lungs"])
        lung_mid_row, mid_col = rows.mean(), 48
        cr, cc = np.nonzero(covid["mask"])
        vr, vc = np.nonzero(viral["mask"])
        assert cr.mean() > lung_mid_row
        assert np.abs(cc - mid_col).mean() > np.abs(vc - mid_col).mean()


# --------------------------------------------------------------------------- markers and shortcut


def test_markers_never_in_the_lungs() -> None:
    for seed in range(12):
        rng = np.random.default_rng(seed)
        h, w = (int(round(64 * f)) for f in rng.uniform(0.85, 1.25, size=2))
        corner = ("tl", "tr", "bl", "br")[seed % 4]
        layers = render_layers(rng, "COVID", (h, w), marker=SHORTCUT_MARKER, marker_corner=corner)
        assert layers["marker"].any()
        assert not (layers["marker"] & layers["lungs"]).any()
        assert not (layers["marker"] & (layers["mask"] > 0)).any()


def test_shortcut_marker_only_on_the_shortcut_class(tmp_path: Path) -> None:
    root = generate_synthetic(tmp_path / "s", per_class=20, size=64, seed=2,
                              classes=("COVID", "Normal"), marker_prob=0.5,
                              shortcut_class="COVID", shortcut_prob=0.9, progress=False)
    rows = _rows(root)
    covid = [r for r in rows if r["label"] == "COVID"]
    normal = [r for r in rows if r["label"] == "Normal"]
    frac = np.mean([r["shortcut"] == "True" for r in covid])
    assert 0.7 <= frac <= 1.0
    assert all(r["marker"] == SHORTCUT_MARKER for r in covid if r["shortcut"] == "True")
    assert not any(r["shortcut"] == "True" or r["marker"] == SHORTCUT_MARKER for r in normal)
    assert any(r["marker"] for r in normal)  # other random markers still happen

    def corner_band(rel: str) -> float:
        img = _load(root, rel).astype(float)
        return img[: img.shape[0] // 8, : img.shape[1] // 2].mean()

    with_marker = [corner_band(r["file"]) for r in rows if r["shortcut"] == "True"]
    without = [corner_band(r["file"]) for r in rows if r["shortcut"] == "False"]
    assert np.mean(with_marker) > np.mean(without) + 5
    assert json.loads((root / "synthetic.json").read_text())["shortcut_class"] == "COVID"


def test_shortcut_changes_only_the_marker(tmp_path: Path) -> None:
    """The same patients with and without the shortcut: only the COVID corner band differs."""
    kw = dict(per_class=4, size=48, seed=6, classes=("COVID", "Normal"), marker_prob=0.0,
              progress=False)
    plain = generate_synthetic(tmp_path / "plain", **kw)
    short = generate_synthetic(tmp_path / "short", shortcut_class="COVID", shortcut_prob=1.0, **kw)
    for i in range(1, 5):
        rel = f"Normal/images/Normal-{i}.png"
        assert (plain / rel).read_bytes() == (short / rel).read_bytes()
        a = _load(plain, f"COVID/images/COVID-{i}.png").astype(int)
        b = _load(short, f"COVID/images/COVID-{i}.png").astype(int)
        changed = np.argwhere(a != b)
        assert len(changed) and changed[:, 0].max() < a.shape[0] // 4 and changed[:, 1].max() < a.shape[1]
        assert (b >= a).all()


def test_no_shortcut_by_default(small_set: Path, tmp_path: Path) -> None:
    assert not any(r["shortcut"] == "True" for r in _rows(small_set))
    root = generate_synthetic(tmp_path / "n", per_class=4, size=48, classes=("Normal",),
                              marker_prob=0.0, progress=False)
    assert not any(r["marker"] for r in _rows(root))


# --------------------------------------------------------------------------- re-runs and errors


def test_rerun_overwrites_synthetic_files_and_keeps_others(tmp_path: Path) -> None:
    out = tmp_path / "data"
    kw = dict(size=40, classes=("Normal",), progress=False)
    generate_synthetic(out, per_class=4, **kw)
    (out / "notes.txt").write_text("mine")
    (out / "Normal" / "images" / "extra.png").write_bytes(b"not ours")
    generate_synthetic(out, per_class=2, **kw)
    assert sorted(p.name for p in (out / "Normal" / "images").iterdir()) == [
        "Normal-1.png", "Normal-2.png", "extra.png"]
    assert sorted(p.name for p in (out / "Normal" / "masks").iterdir()) == ["Normal-1.png", "Normal-2.png"]
    assert (out / "notes.txt").read_text() == "mine"
    assert len(_rows(out)) == 2
    generate_synthetic(out, per_class=1, size=40, classes=("COVID",), progress=False)
    assert not (out / "Normal" / "masks").exists()  # the dropped class's synthetic files go
    assert sorted(p.name for p in (out / "Normal" / "images").iterdir()) == ["extra.png"]
    assert json.loads((out / "synthetic.json").read_text())["classes"] == ["COVID"]


def test_classes_none_means_all(tmp_path: Path) -> None:
    root = generate_synthetic(tmp_path / "all", per_class=1, size=32, classes=None, progress=False)
    assert {r["label"] for r in _rows(root)} == set(SYNTH_CLASSES)


def test_refuses_to_overwrite_a_real_dataset(tmp_path: Path) -> None:
    real = tmp_path / "kaggle" / "COVID" / "images"
    real.mkdir(parents=True)
    (real / "COVID-1.png").write_bytes(b"real image")
    with pytest.raises(FileExistsError):
        generate_synthetic(tmp_path / "kaggle", per_class=1, size=40, progress=False)
    assert (real / "COVID-1.png").read_bytes() == b"real image"


@pytest.mark.parametrize("kwargs, match", [
    (dict(classes=("COVID", "Tuberculosis")), "unknown class"),
    (dict(per_class=0), "per_class"),
    (dict(size=31), "size"),
    (dict(shortcut_class="Normal", classes=("COVID",)), "shortcut_class"),
    (dict(marker_prob=1.5), "marker_prob"),
    (dict(severity=(1.0, 0.5)), "severity"),
])
def test_bad_arguments(tmp_path: Path, kwargs: dict, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        generate_synthetic(tmp_path / "x", progress=False, **{"per_class": 1, "size": 40, **kwargs})
    assert not (tmp_path / "x").exists()


def test_render_bad_arguments() -> None:
    with pytest.raises(ValueError, match="unknown class"):
        render_radiograph(np.random.default_rng(0), "Pneumothorax", 64)
    with pytest.raises(ValueError, match="size"):
        render_radiograph(np.random.default_rng(0), "Normal", 20)
    with pytest.raises(ValueError, match="size"):
        render_radiograph(np.random.default_rng(0), "Normal", (64, 16))
