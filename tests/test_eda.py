"""cxrlib.course.eda: per-image statistics, the burned-in text score, outliers and the EDA figures."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from helpers import png_manifest
from matplotlib.figure import Figure
from PIL import Image

from cxrlib.course.eda import (
    STAT_COLUMNS,
    TEXT_FLAG,
    augmentation_gallery,
    augmented_copies,
    border_text_score,
    brightness_outliers,
    class_summary,
    crop_box_overlay,
    duplicate_gallery,
    duplicate_pairs,
    equalization_figure,
    image_features,
    image_statistics,
    images_by_class,
    mask_overlay,
    plot_statistic_by_class,
    region_masks,
    source_table,
    text_like_pixels,
    value_ranges,
)
from cxrlib.data.quality import check_manifest, thumbnail
from cxrlib.data.splits import sample_per_class
from cxrlib.spec import LIBRARY_AUGMENT, NO_AUGMENT


def _film(seed: int = 0, size: int = 128, level: float = 100.0) -> np.ndarray:
    """A smooth, noisy grey 'radiograph' without text: a soft bright body on a dark background."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:size, 0:size] / size
    body = np.exp(-(((x - 0.5) / 0.35) ** 2 + ((y - 0.55) / 0.45) ** 2))
    image = 20 + (level - 20) * 1.6 * body + rng.normal(0, 3, (size, size))
    return np.clip(image, 0, 255).astype(np.uint8)


def _with_letter(image: np.ndarray, top: int = 4, left: int = 4, height: int = 12) -> np.ndarray:
    """Burn a white 'L' (2-px strokes) into the image at (top, left)."""
    out = image.copy()
    out[top:top + height, left:left + 2] = 250
    out[top + height - 2:top + height, left:left + height // 2 + 2] = 250
    return out


def _manifest(tmp_path: Path, means: dict[str, list[float]]) -> pd.DataFrame:
    """Flat films of the given grey levels, the i-th of a class 40 + i px high."""
    return png_manifest(tmp_path, {label: [np.full((40 + i, 50), level, np.uint8)
                                           for i, level in enumerate(levels)]
                                   for label, levels in means.items()})


# ------------------------------------------------------------------------- the text score


def test_region_masks_are_disjoint_and_sized() -> None:
    border, centre = region_masks((100, 200), band=0.1, rim=0.02)
    assert border.shape == centre.shape == (100, 200)
    assert not (border & centre).any()
    assert centre.sum() == 50 * 100
    assert not border[0].any() and not border[:, 0].any()   # the rim is left out
    assert border[5, 100] and border[50, 10] and not border[50, 100]
    with pytest.raises(ValueError, match="band"):
        region_masks((10, 10), band=0.6)


def test_text_like_pixels_find_thin_strokes_not_wide_bright_areas() -> None:
    image = _film()
    image[60:120, 30:100] = 250                     # a wide bright area (abdomen, overexposure)
    lettered = _with_letter(image)
    assert not text_like_pixels(image).any()
    found = text_like_pixels(lettered)
    assert found[4:16, 4:6].all() and found.sum() == (lettered == 250).sum() - (image == 250).sum()


def test_border_text_scores_a_corner_letter_above_a_clean_film() -> None:
    clean = _film(1)
    assert abs(border_text_score(clean)) < TEXT_FLAG
    assert border_text_score(_with_letter(clean)) > TEXT_FLAG
    assert border_text_score(_with_letter(clean, top=58, left=58)) < 0   # text in the centre


def test_image_features_values() -> None:
    image = np.zeros((50, 80), np.uint8)
    image[:, 40:] = 200
    features = image_features(image)
    assert features["width"] == 80 and features["height"] == 50
    assert features["mean"] == pytest.approx(100) and features["std"] == pytest.approx(100)
    assert features["dark_share"] == pytest.approx(0.5)
    assert features["border_bright_share"] == 0 and features["text_score"] == 0


# ------------------------------------------------------------------------------ manifests


def test_image_statistics_shape_values_and_bad_files(tmp_path, caplog) -> None:
    clean = _manifest(tmp_path, {"A": [100, 110, 120], "B": [30, 40]})
    assert image_statistics(clean, sample=1, progress=False)["label"].tolist() == ["A", "B"]
    broken = tmp_path / "B" / "broken.png"
    broken.write_bytes(b"not an image")
    manifest = pd.concat([clean, clean.iloc[[3]].assign(path=str(broken))], ignore_index=True)
    with caplog.at_level(logging.WARNING):
        stats = image_statistics(manifest, progress=False)
    assert list(stats.columns) == list(STAT_COLUMNS) + ["source"]
    assert len(stats) == 5 and stats["label"].tolist() == ["A"] * 3 + ["B"] * 2
    assert stats["mean"].tolist() == [100, 110, 120, 30, 40]
    assert stats["height"].tolist() == [40, 41, 42, 40, 41] and set(stats["width"]) == {50}
    assert [s["path"] for s in stats.attrs["skipped"]] == [str(broken)]
    assert "broken.png" in caplog.text


def test_class_summary_counts_images_with_border_text(tmp_path) -> None:
    stats = pd.DataFrame({
        "path": list("abcd"), "label": ["A", "A", "B", "B"], "width": 10, "height": 10,
        "mean": [1.0, 3.0, 5.0, 5.0], "std": 1.0, "dark_share": 0.0, "border_bright_share": 0.0,
        "centre_bright_share": 0.0, "border_text_share": [0.02, 0.0, 0.0, 0.0],
        "centre_text_share": 0.0, "text_score": [0.02, 0.0, 0.0, 0.0]})
    table = class_summary(stats)
    assert table.loc["A", "with border text %"] == 50 and table.loc["B", "with border text %"] == 0
    assert table.loc["A", "mean intensity"] == 2 and table.loc["A", "images"] == 2


def test_brightness_outliers_are_found_per_class() -> None:
    rng = np.random.default_rng(0)
    a = list(100 + rng.normal(0, 2, 30)) + [160.0]        # one far too bright for class A
    b = list(160 + rng.normal(0, 2, 30))                   # the same value is normal in B
    stats = pd.DataFrame({"label": ["A"] * 31 + ["B"] * 30, "mean": a + b,
                          "path": [f"p{i}" for i in range(61)]})
    out = brightness_outliers(stats, z=4)
    assert out["path"].tolist() == ["p30"] and out["z"].iloc[0] > 4
    flat = pd.DataFrame({"label": ["A"] * 4, "mean": [5.0] * 4, "path": list("abcd")})
    assert brightness_outliers(flat).empty


def test_sample_per_class_quiet_ordered_and_seeded(caplog) -> None:
    frame = pd.DataFrame({"path": [f"{i}" for i in range(13)], "label": ["B"] * 10 + ["A"] * 3})
    with caplog.at_level(logging.WARNING):
        picked = sample_per_class(frame, 5, seed=1, classes=["B", "A"], warn=False)
    assert picked["label"].tolist() == ["B"] * 5 + ["A"] * 3 and not caplog.text
    assert picked.equals(sample_per_class(frame, 5, seed=1, classes=["B", "A"], warn=False))
    assert sample_per_class(frame, 2)["label"].tolist() == ["A", "A", "B", "B"]
    with caplog.at_level(logging.WARNING):
        sample_per_class(frame, 5)
    assert "only 3 images" in caplog.text


def test_images_by_class(tmp_path) -> None:
    images = images_by_class(_manifest(tmp_path, {"A": [10, 20, 30], "B": [40]}), n=2)
    assert {k: len(v) for k, v in images.items()} == {"A": 2, "B": 1}
    assert images["B"][0].dtype == np.uint8 and int(images["B"][0][0, 0]) == 40


def test_duplicate_pairs_from_a_report() -> None:
    report = {"exact_duplicates": [["a", "b", "c"]],
              "near_duplicates": [{"a": "d", "b": "e", "distance": 3, "similarity": 0.995}],
              "cross_split_duplicates": [{"kind": "near", "paths": ["d", "e"], "distance": 3,
                                          "similarity": 0.995, "labels": ["X", "X"],
                                          "splits": ["train", "test"]}]}
    pairs = duplicate_pairs(report)
    assert pairs.values.tolist() == [["exact", 0, 1.0, "a", "b"], ["exact", 0, 1.0, "a", "c"],
                                     ["near", 3, 0.995, "d", "e"]]
    crossing = duplicate_pairs(report, "cross_split_duplicates")
    assert crossing.values.tolist() == [["near", 3, 0.995, "d", "e"]]
    empty = duplicate_pairs({})
    assert empty.empty and list(empty.columns) == ["kind", "distance", "similarity", "a", "b"]
    with pytest.raises(ValueError, match="section"):
        duplicate_pairs(report, "near")


def test_thumbnail_similarity_tells_copies_from_look_alikes() -> None:
    film = _with_letter(_film(3, size=160))
    copy = np.asarray(Image.fromarray(np.clip(film.astype(int) + 12, 0, 255).astype(np.uint8))
                      .resize((120, 140)))
    other = _film(4, size=160)          # the same 'anatomy', other noise: a look-alike
    other[40:70, 90:130] = 30            # ... with a different dark patch
    assert thumbnail(film) @ thumbnail(copy) > 0.98
    assert thumbnail(film) @ thumbnail(other) < 0.95


def test_report_pairs_keep_real_copies_only(tmp_path) -> None:
    film = _film(5, size=96)
    film[30:60, 20:40] = 20
    look_alike = _film(6, size=96)
    look_alike[40:70, 50:80] = 230
    paths = {}
    for name, image in {"a.png": film, "copy.png": film, "look.png": look_alike}.items():
        Image.fromarray(image).save(tmp_path / name)
        paths[name] = str(tmp_path / name)
    Image.fromarray(film).resize((80, 70)).save(tmp_path / "copy.jpg", quality=85)
    paths["copy.jpg"] = str(tmp_path / "copy.jpg")
    manifest = pd.DataFrame({"path": list(paths.values()), "label": "A",
                             "split": ["train", "test", "test", "test"]})
    report = check_manifest(manifest, near_threshold=64, progress=False)   # every pair a candidate
    crossing = duplicate_pairs(report, "cross_split_duplicates")
    found = {tuple(sorted(Path(p).name for p in pair)) for pair in crossing[["a", "b"]].values}
    assert found == {("a.png", "copy.png"), ("a.png", "copy.jpg")}
    assert crossing.loc[crossing["kind"] == "exact", "similarity"].tolist() == [1.0]
    assert (crossing["similarity"] >= 0.99).all()
    assert len(duplicate_pairs(report)) == 3               # + copy.png ~ copy.jpg (both test)
    assert report["near_candidates_rejected"] == 3         # the look-alike against each copy


def test_source_table_reads_hosts() -> None:
    frame = pd.DataFrame({"label": ["COVID", "COVID", "Normal"],
                          "source": ["https://www.bimcv.es/x", "https://github.com/y", ""]})
    table = source_table(frame)
    assert table.loc["COVID", "bimcv.es"] == 1 and table.loc["Normal", "unknown"] == 1
    assert source_table(frame.assign(source="")) is None


# -------------------------------------------------------------------------------- figures


def test_mask_and_crop_overlays() -> None:
    image = np.full((40, 60), 100, np.uint8)
    mask = np.zeros((40, 60), np.uint8)
    mask[10:20, 10:20] = 255
    rgb = mask_overlay(image, mask, color=(255, 0, 0), alpha=0.5)
    assert rgb.shape == (40, 60, 3) and rgb.dtype == np.uint8
    assert (rgb[0, 0] == 100).all() and tuple(rgb[15, 15]) == (178, 50, 50)
    with pytest.raises(ValueError, match="size"):
        mask_overlay(image, mask[:10])
    boxed = crop_box_overlay(image, reference=(60, 40), color=(255, 200, 0))
    assert boxed.shape == (40, 60, 3) and (boxed == [255, 200, 0]).all(axis=-1).any()
    assert (boxed[20, 30] == 100).all()    # the inside is untouched


def test_plots_return_figures_and_save(tmp_path) -> None:
    stats = pd.DataFrame({"label": ["A", "A", "B", "B"], "text_score": [0, 0.01, 0.0, 0.002]})
    figure = plot_statistic_by_class({"x": stats, "y": stats}, "text_score",
                                     save=tmp_path / "box.png")
    assert isinstance(figure, Figure) and (tmp_path / "box.png").is_file()
    figure = equalization_figure(_film(), save=tmp_path / "eq.png")
    assert isinstance(figure, Figure) and len(figure.axes) == 6 and (tmp_path / "eq.png").is_file()
    for name in ("a.png", "b.png"):
        Image.fromarray(_film()).save(tmp_path / name)
    pairs = pd.DataFrame([{"kind": "exact", "distance": 0, "a": str(tmp_path / "a.png"),
                           "b": str(tmp_path / "b.png")}])
    figure = duplicate_gallery(pairs)
    assert isinstance(figure, Figure) and "exact (0 bits) a" in figure.axes[0].get_title()
    figure = duplicate_gallery(duplicate_pairs({"exact_duplicates": [list(pairs.iloc[0, 2:])]}))
    assert "r = 1.000" in figure.axes[0].get_title()
    with pytest.raises(ValueError, match="No duplicate"):
        duplicate_gallery(pairs.iloc[0:0])


def test_value_ranges_per_backbone(tmp_path) -> None:
    manifest = _manifest(tmp_path, {"A": [0, 255], "B": [128]})
    table = value_ranges(manifest, ["A", "B"], 32, ["densenet121", "inceptionv3", "vgg16"])
    assert list(table.index) == ["densenet121", "inceptionv3", "vgg16"]
    assert table.loc["inceptionv3", "min"] == -1 and table.loc["inceptionv3", "max"] == 1
    assert table.loc["vgg16", "min"] < -100 and table.loc["vgg16", "max"] > 100
    assert -2.2 < table.loc["densenet121", "min"] < -1.5


def test_augmented_copies_differ_and_no_augment_is_identity() -> None:
    image = _with_letter(_film(2, size=48))
    copies = augmented_copies(image, LIBRARY_AUGMENT, n=4, seed=0)
    assert copies.shape == (4, 48, 48) and copies.dtype == np.uint8
    assert len({c.tobytes() for c in copies}) == 4
    same = augmented_copies(image, NO_AUGMENT, n=2)
    assert (same == image).all()
    figure = augmentation_gallery(image, LIBRARY_AUGMENT, n=3)
    assert isinstance(figure, Figure)
