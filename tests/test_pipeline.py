"""The tf.data pipeline: shapes, dtypes and ranges per backbone; augmentation on training only;
bad files skipped and reported."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from helpers import png_manifest

from cxrlib.data.datasets import load_manifest
from cxrlib.data.pipeline import load_arrays, make_dataset
from cxrlib.data.prepare import Prep, border_crop, crop_reference_of, equalize, prepare_image
from cxrlib.spec import LIBRARY_AUGMENT, NO_AUGMENT

CLASSES = ["A", "B"]


@pytest.fixture()
def manifest(tmp_path: Path) -> pd.DataFrame:
    """Six noise films per class, each 40–80 px wide and high."""
    rng = np.random.default_rng(0)

    def film() -> np.ndarray:
        width, height = int(rng.integers(40, 80)), int(rng.integers(40, 80))
        return rng.integers(0, 256, (height, width), dtype=np.uint8)

    return png_manifest(tmp_path, {label: [film() for _ in range(6)] for label in CLASSES})


def _all(ds) -> tuple[np.ndarray, np.ndarray]:
    xs, ys = zip(*[(x.numpy(), y.numpy()) for x, y in ds])
    return np.concatenate(xs), np.concatenate(ys)


@pytest.mark.parametrize("backbone,low,high", [
    ("densenet121", -2.2, 2.7), ("resnet50", -124.0, 152.0), ("vgg16", -124.0, 152.0),
    ("inceptionv3", -1.0, 1.0), ("xception", -1.0, 1.0), ("scratch", 0.0, 1.0),
])
def test_shape_dtype_and_range_per_backbone(manifest, backbone, low, high) -> None:
    ds = make_dataset(manifest, CLASSES, Prep(image_size=32, backbone=backbone), batch_size=5)
    x, y = _all(ds)
    assert x.shape == (12, 32, 32, 3) and x.dtype == np.float32
    assert y.shape == (12, 2) and set(y.sum(axis=1)) == {1.0}
    assert low - 1e-3 <= x.min() < x.max() <= high + 1e-3
    assert x.max() - x.min() > 0.5 * (high - low)  # the range is used, not collapsed


def test_one_channel_and_label_modes(manifest) -> None:
    x, y = _all(make_dataset(manifest, CLASSES, Prep(32, "scratch", channels=1), label_mode="binary"))
    assert x.shape == (12, 32, 32, 1) and y.shape == (12, 1)
    assert sorted(y[:, 0].tolist()) == [0.0] * 6 + [1.0] * 6
    _, yi = _all(make_dataset(manifest, CLASSES, Prep(32, "scratch"), label_mode="int"))
    assert yi.tolist() == [0] * 6 + [1] * 6
    with pytest.raises(ValueError):
        make_dataset(manifest, ["A", "B", "C"], Prep(32), label_mode="binary")


def test_augmentation_touches_training_data_only(manifest) -> None:
    prep = Prep(32, "scratch")
    plain = _all(make_dataset(manifest, CLASSES, prep, training=False, augment=LIBRARY_AUGMENT))[0]
    again = _all(make_dataset(manifest, CLASSES, prep, training=False))[0]
    np.testing.assert_array_equal(plain, again)  # evaluation data: never augmented
    shuffled = _all(make_dataset(manifest, CLASSES, prep, training=True, augment=NO_AUGMENT, seed=1))[0]
    augmented = _all(make_dataset(manifest, CLASSES, prep, training=True, augment=LIBRARY_AUGMENT, seed=1))[0]
    assert sorted(map(float, shuffled.sum(axis=(1, 2, 3)))) == pytest.approx(
        sorted(map(float, plain.sum(axis=(1, 2, 3)))), rel=1e-5)  # shuffling alone keeps pixels
    assert np.abs(augmented - shuffled).mean() > 0.01


def test_training_order_is_shuffled_each_epoch(manifest) -> None:
    ds = make_dataset(manifest, CLASSES, Prep(16, "scratch"), training=True, batch_size=12, seed=0)
    first, second = (next(iter(ds))[1].numpy().argmax(1).tolist() for _ in range(2))
    assert sorted(first) == sorted(second) == [0] * 6 + [1] * 6
    evaluation = make_dataset(manifest, CLASSES, Prep(16, "scratch"), batch_size=12)
    assert next(iter(evaluation))[1].numpy().argmax(1).tolist() == [0] * 6 + [1] * 6


def test_bad_files_are_skipped_and_reported(manifest, tmp_path: Path, caplog) -> None:
    empty = tmp_path / "empty.png"
    empty.write_bytes(b"")
    text = tmp_path / "notes.png"
    text.write_text("this is not an image")
    bad = pd.concat([manifest, manifest.iloc[:2].assign(path=[str(empty), str(text)])], ignore_index=True)
    skipped: list = []
    x, _ = _all(make_dataset(bad, CLASSES, Prep(16, "scratch"), skip_log=skipped))
    assert len(x) == 12
    assert sorted(s["path"] for s in skipped) == sorted([str(empty), str(text)])
    assert "notes.png" in caplog.text
    skipped_arrays: list = []
    xa, ya = load_arrays(bad, CLASSES, Prep(16, "scratch"), skip_log=skipped_arrays)
    assert xa.shape == (12, 16, 16, 3) and len(ya) == 12 and len(skipped_arrays) == 2


def test_load_arrays_match_the_dataset(manifest) -> None:
    prep = Prep(24, "densenet121")
    x_ds, y_ds = _all(make_dataset(manifest, CLASSES, prep))
    x_np, y_np = load_arrays(manifest, CLASSES, prep, preprocess=True)
    np.testing.assert_allclose(x_np, x_ds, atol=1e-5)
    assert y_np.tolist() == y_ds.argmax(1).tolist()
    raw, _ = load_arrays(manifest, CLASSES, prep)
    assert raw.dtype == np.uint8


def test_border_crop_follows_the_course_formula() -> None:
    image = np.zeros((100, 200), np.uint8)
    assert border_crop(image, (200, 100)).shape == (80, 130)   # the largest film: most cut
    assert border_crop(image, (400, 200)).shape == (90, 165)   # half the largest: less cut


def test_crop_reference_and_cropped_pipeline(manifest) -> None:
    reference = crop_reference_of(manifest)
    assert 40 <= reference[0] < 80 and 40 <= reference[1] < 80
    x, _ = _all(make_dataset(manifest, CLASSES, Prep(16, "scratch", crop=True)))
    assert x.shape == (12, 16, 16, 3)
    with pytest.raises(ValueError, match="crop_reference"):
        prepare_image(manifest["path"][0], Prep(16, crop=True))


@pytest.mark.parametrize("method", ["hist", "clahe"])
def test_equalization_spreads_the_histogram(method) -> None:
    ramp = np.tile(np.linspace(100, 140, 64).astype(np.uint8), (64, 1))
    out = equalize(ramp, method)
    assert out.dtype == np.uint8 and out.shape == ramp.shape
    assert np.ptp(out) > 2 * np.ptp(ramp)
    with pytest.raises(ValueError):
        equalize(ramp, "gamma")


@pytest.mark.realdata
def test_real_sample_through_the_pipeline(pneumonia_sample: Path) -> None:
    m = load_manifest(pneumonia_sample).groupby("label").head(4)
    classes = sorted(m["label"].unique())
    x, y = _all(make_dataset(m, classes, Prep(64, "densenet121", equalize="clahe"), batch_size=8))
    assert x.shape == (12, 64, 64, 3) and np.isfinite(x).all()
    assert y.sum(0).tolist() == [4.0, 4.0, 4.0]
