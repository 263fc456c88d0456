"""Tests for the SIIM-format synthetic writer: files, classes, boxes, and the reader round trip."""

from __future__ import annotations

import ast
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from cxrlib.data.datasets import detect_layout, load_manifest
from cxrlib.data.render import render_radiograph
from cxrlib.data.siim_synthetic import (
    SIIM_STUDY_COLUMNS,
    SIIM_SYNTHETIC_CLASSES,
    _siim_counts,
    generate_siim_like,
    lesion_boxes,
    siim_label_string,
)

READER_CLASSES = {"Negative for Pneumonia": "Negative", "Typical Appearance": "Typical",
                  "Indeterminate Appearance": "Indeterminate", "Atypical Appearance": "Atypical"}


@pytest.fixture(scope="module")
def siim(tmp_path_factory) -> Path:
    return generate_siim_like(tmp_path_factory.mktemp("siim") / "data", n_studies=24, size=64,
                              seed=1, progress=False)


def _tables(root: Path) -> tuple[pd.DataFrame, pd.DataFrame]:
    return pd.read_csv(root / "train_study_level.csv"), pd.read_csv(root / "train_image_level.csv")


def test_files_and_columns(siim: Path) -> None:
    study, image = _tables(siim)
    assert list(study.columns) == ["id", *SIIM_STUDY_COLUMNS]
    assert list(image.columns) == ["id", "boxes", "label", "StudyInstanceUID"]
    assert len(study) == len(image) == 24
    assert study["id"].str.fullmatch(r"[0-9a-f]{12}_study").all()
    assert image["id"].str.fullmatch(r"[0-9a-f]{12}_image").all()
    assert (study[list(SIIM_STUDY_COLUMNS)].sum(axis=1) == 1).all()  # one-hot
    assert set(image["StudyInstanceUID"] + "_study") == set(study["id"])
    for image_id in image["id"]:
        with Image.open(siim / "train" / f"{image_id.replace('_image', '')}.png") as img:
            assert img.mode == "L" and min(img.size) >= 0.85 * 64 - 1
    assert json.loads((siim / "synthetic.json").read_text())["classes"] == SIIM_SYNTHETIC_CLASSES
    assert detect_layout(siim) == "siim"


def test_class_shares_follow_the_competition(siim: Path) -> None:
    study, _ = _tables(siim)
    counts = study[list(SIIM_STUDY_COLUMNS)].sum().tolist()
    assert counts == _siim_counts(24, (0.277, 0.472, 0.173, 0.078)) == [7, 11, 4, 2]
    assert _siim_counts(10, (0.277, 0.472, 0.173, 0.078)) == [3, 4, 2, 1]  # no class left empty
    assert sum(_siim_counts(3, (1, 1, 1, 1))) == 3  # fewer studies than classes
    assert _siim_counts(5, (1, 1, 1, 0)) == [2, 2, 1, 0]


def test_boxes_and_labels_agree(siim: Path) -> None:
    study, image = _tables(siim)
    study = study.assign(StudyInstanceUID=study["id"].str.replace("_study", ""))
    merged = image.merge(study.drop(columns="id"), on="StudyInstanceUID")
    for _, row in merged.iterrows():
        boxes = ast.literal_eval(row["boxes"]) if isinstance(row["boxes"], str) else []
        assert row["label"] == siim_label_string(boxes)
        if row["Negative for Pneumonia"] == 1:
            assert boxes == [] and row["label"] == "none 1 0 0 1 1"
        for box in boxes:
            assert set(box) == {"x", "y", "width", "height"}
            with Image.open(siim / "train" / f"{row['id'].replace('_image', '')}.png") as img:
                w, h = img.size
            assert 0 <= box["x"] and box["x"] + box["width"] <= w
            assert 0 <= box["y"] and box["y"] + box["height"] <= h
    positives = merged[merged["Negative for Pneumonia"] == 0]
    assert positives["label"].str.startswith("opacity").mean() > 0.8


def test_reader_round_trip(siim: Path) -> None:
    study, image = _tables(siim)
    by_study = {sid.replace("_study", ""): READER_CLASSES[column] for sid, column in
                zip(study["id"], study[list(SIIM_STUDY_COLUMNS)].idxmax(axis=1))}
    manifest = load_manifest(siim, layout="siim", target="study")
    assert len(manifest) == 24 and set(manifest["source"]) == {"siim"}
    assert dict(zip(manifest["patient_id"], manifest["label"])) == by_study
    opacity = load_manifest(siim, layout="siim", target="opacity")
    expected = {Path(p).stem: lab.startswith("opacity") for p, lab in
                zip(image["id"].str.replace("_image", ""), image["label"])}
    for row in opacity.itertuples():
        assert (row.label == "Opacity") == expected[Path(row.path).stem]
        boxes = json.loads(row.boxes)
        listed = image.loc[image["id"] == Path(row.path).stem + "_image", "boxes"].iloc[0]
        assert boxes == (ast.literal_eval(listed) if isinstance(listed, str) else [])
    assert set(opacity["label"]) == {"Opacity", "No Opacity"}


def test_same_seed_same_files_and_reuse(tmp_path: Path) -> None:
    a = generate_siim_like(tmp_path / "a", n_studies=6, size=48, seed=3, progress=False)
    b = generate_siim_like(tmp_path / "b", n_studies=6, size=48, seed=3, progress=False)
    files = lambda root: {p.relative_to(root).as_posix(): p.read_bytes()  # noqa: E731
                          for p in root.rglob("*") if p.is_file() and p.name != "synthetic.json"}
    assert files(a) == files(b)
    stamp = (a / "train_study_level.csv").stat().st_mtime_ns
    generate_siim_like(a, n_studies=6, size=48, seed=3, progress=False)  # reused, not rewritten
    assert (a / "train_study_level.csv").stat().st_mtime_ns == stamp
    generate_siim_like(a, n_studies=4, size=48, seed=3, progress=False)  # other parameters: redone
    assert len(list((a / "train").glob("*.png"))) == 4  # the old images are gone


def test_refuses_the_real_competition_data(tmp_path: Path) -> None:
    (tmp_path / "real").mkdir()
    (tmp_path / "real" / "train_study_level.csv").write_text("id\n")
    with pytest.raises(FileExistsError):
        generate_siim_like(tmp_path / "real", n_studies=2, size=48, progress=False)


@pytest.mark.parametrize("kwargs, match", [
    (dict(n_studies=0), "n_studies"), (dict(size=16), "size"), (dict(shares=(1, 1)), "shares"),
    (dict(severity=(1, 0)), "severity"), (dict(marker_prob=2), "marker_prob"),
])
def test_bad_arguments(tmp_path: Path, kwargs: dict, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        generate_siim_like(tmp_path / "x", progress=False, **{"n_studies": 2, "size": 48, **kwargs})


def test_lesion_boxes_per_pattern() -> None:
    assert lesion_boxes(np.zeros((40, 40), np.uint8)) == []
    mask = np.zeros((50, 60), np.uint8)
    mask[10:20, 5:15] = 255
    mask[30:45, 40:55] = 255
    mask[0, 59] = 255  # a speck: too small to box
    assert lesion_boxes(mask) == [{"x": 5.0, "y": 10.0, "width": 10.0, "height": 10.0},
                                  {"x": 40.0, "y": 30.0, "width": 15.0, "height": 15.0}]
    for seed in range(3):
        rng = lambda seed=seed: np.random.default_rng(seed)  # noqa: E731
        assert len(lesion_boxes(render_radiograph(rng(), "Bacterial Pneumonia", 96)[1])) == 1
        assert len(lesion_boxes(render_radiograph(rng(), "COVID", 96)[1])) == 2  # bilateral
        assert len(lesion_boxes(render_radiograph(rng(), "Viral Pneumonia", 96)[1])) == 2


def test_label_string() -> None:
    assert siim_label_string([]) == "none 1 0 0 1 1"
    assert siim_label_string([{"x": 1.0, "y": 2.0, "width": 3.0, "height": 4.5},
                              {"x": 10.0, "y": 0.0, "width": 1.0, "height": 1.0}]) == \
        "opacity 1 1 2 4 6.5 opacity 1 10 0 11 1"


def test_plot_boxes_draws_every_box(siim: Path, tmp_path: Path) -> None:
    from matplotlib.patches import Rectangle

    from cxrlib.data.images import read_image
    from cxrlib.plots import plot_boxes

    manifest = load_manifest(siim, layout="siim", target="opacity")
    row = manifest[manifest["label"] == "Opacity"].iloc[0]
    image = read_image(row["path"])
    figure = plot_boxes(image, row["boxes"], title="opacity", save=tmp_path / "boxes.png")
    rectangles = [p for p in figure.axes[0].patches if isinstance(p, Rectangle)]
    assert len(rectangles) == len(json.loads(row["boxes"])) > 0
    assert (tmp_path / "boxes.png").stat().st_size > 0
    assert figure.axes[0].get_title().startswith("opacity (")
    empty = plot_boxes(image[..., None], None)
    assert not empty.axes[0].patches and empty.axes[0].get_title() == "0 boxes"
