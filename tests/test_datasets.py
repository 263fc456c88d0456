"""Each dataset layout parses into the same manifest, with the right counts and fields."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from cxrlib.data.datasets import (
    DatasetError,
    canonical_class,
    detect_layout,
    download,
    kermany_patient_id,
    kermany_subtype,
    load_manifest,
    relabel,
)


def _png(path: Path, value: int = 100, size: tuple[int, int] = (40, 32)) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.full(size[::-1], value, np.uint8)).save(path)
    return path


def test_canonical_class_names() -> None:
    assert canonical_class("NORMAL") == canonical_class("normal") == "Normal"
    assert canonical_class("Covid-19") == canonical_class("COVID") == "COVID"
    assert canonical_class("ViralPneumonia") == canonical_class("Viral Pneumonia") == "Viral Pneumonia"
    assert canonical_class("Lung_Opacity") == "Lung Opacity"
    assert canonical_class("Cardiomegaly") == "Cardiomegaly"


def test_covid_v4_layout_with_masks_and_wrapper_folder(tmp_path: Path) -> None:
    root = tmp_path / "download" / "COVID-19_Radiography_Dataset"
    for cls, n in [("COVID", 3), ("Normal", 4), ("Lung_Opacity", 2), ("Viral Pneumonia", 1)]:
        for i in range(1, n + 1):
            _png(root / cls / "images" / f"{cls}-{i}.png")
            _png(root / cls / "masks" / f"{cls}-{i}.png", 255)
    (root / "COVID" / "images" / "._COVID-1.png").write_bytes(b"macos debris")
    assert detect_layout(tmp_path / "download") == "covid19-radiography"
    m = load_manifest(tmp_path / "download")
    assert m["label"].value_counts().to_dict() == {"Normal": 4, "COVID": 3, "Lung Opacity": 2,
                                                   "Viral Pneumonia": 1}
    assert (m["mask_path"] != "").all() and set(m["mask_kind"]) == {"lung"}
    assert all(Path(p).is_file() for p in m["mask_path"])
    kept = load_manifest(tmp_path / "download", classes=["covid", "NORMAL", "viral pneumonia"])
    assert sorted(kept["label"].unique()) == ["COVID", "Normal", "Viral Pneumonia"]
    assert len(kept) == 8


def test_covid_v1_flat_layout(tmp_path: Path) -> None:
    for cls in ["COVID", "NORMAL", "Viral Pneumonia"]:
        for i in range(1, 3):
            _png(tmp_path / cls / f"{cls} ({i}).png")
    assert detect_layout(tmp_path) == "covid19-radiography"
    m = load_manifest(tmp_path)
    assert sorted(m["label"].unique()) == ["COVID", "Normal", "Viral Pneumonia"]
    assert (m["mask_path"] == "").all() and len(m) == 6


def test_kermany_layout_split_subtype_patient(tmp_path: Path) -> None:
    base = tmp_path / "chest_xray"
    files = {
        ("train", "NORMAL"): ["IM-0115-0001.jpeg", "NORMAL2-IM-1427-0001.jpeg"],
        ("train", "PNEUMONIA"): ["person1000_bacteria_2931.jpeg", "person1000_virus_1681.jpeg",
                                 "person1001_bacteria_2932.jpeg"],
        ("val", "NORMAL"): ["NORMAL2-IM-1430-0001.jpeg"],
        ("test", "PNEUMONIA"): ["person1_virus_6.jpeg"],
    }
    for (split, cls), names in files.items():
        for name in names:
            _png(base / split / cls / name)
    assert detect_layout(tmp_path) == "kermany"
    m = load_manifest(tmp_path)
    by_name = {Path(row["path"]).name: row for _, row in m.iterrows()}
    assert by_name["person1000_bacteria_2931.jpeg"]["subtype"] == "Bacterial Pneumonia"
    assert by_name["person1000_virus_1681.jpeg"]["subtype"] == "Viral Pneumonia"
    assert by_name["person1000_virus_1681.jpeg"]["patient_id"] == "person1000"
    assert by_name["IM-0115-0001.jpeg"]["patient_id"] == "IM-0115"
    assert by_name["NORMAL2-IM-1427-0001.jpeg"]["patient_id"] == "NORMAL2-IM-1427"
    assert by_name["NORMAL2-IM-1430-0001.jpeg"]["split"] == "val"
    assert by_name["person1_virus_6.jpeg"]["split"] == "test"
    assert set(m["label"]) == {"Normal", "Pneumonia"} and len(m) == 7


def test_kermany_name_parsers() -> None:
    assert kermany_patient_id("person23_bacteria_87.jpeg") == "person23"
    assert kermany_patient_id("N.jpeg") == ""
    assert kermany_subtype("IM-0001-0001.jpeg") == ""


def test_siim_layout_joins_study_labels_and_boxes(tmp_path: Path) -> None:
    pd.DataFrame({
        "id": ["s1_study", "s2_study"],
        "Negative for Pneumonia": [0, 1], "Typical Appearance": [1, 0],
        "Indeterminate Appearance": [0, 0], "Atypical Appearance": [0, 0],
    }).to_csv(tmp_path / "train_study_level.csv", index=False)
    pd.DataFrame({
        "id": ["a1_image", "a2_image", "b1_image", "zz_image"],
        "boxes": ["[{'x': 10.5, 'y': 20, 'width': 30, 'height': 40}]", "nan", "nan", "nan"],
        "label": ["opacity 1 10.5 20 40.5 60", "none 1 0 0 1 1", "none 1 0 0 1 1", "none 1 0 0 1 1"],
        "StudyInstanceUID": ["s1", "s1", "s2", "s2"],
    }).to_csv(tmp_path / "train_image_level.csv", index=False)
    _png(tmp_path / "train" / "a1.png")
    _png(tmp_path / "train" / "a2.png")
    _png(tmp_path / "train" / "b1.png")
    assert detect_layout(tmp_path) == "siim"
    study = load_manifest(tmp_path)
    assert len(study) == 3  # zz has no file: logged, not fatal
    labels = dict(zip(study["path"].map(lambda p: Path(p).stem), study["label"]))
    assert labels == {"a1": "Typical", "a2": "Typical", "b1": "Negative"}
    opacity = load_manifest(tmp_path, target="opacity")
    o = dict(zip(opacity["path"].map(lambda p: Path(p).stem), opacity["label"]))
    assert o == {"a1": "Opacity", "a2": "No Opacity", "b1": "No Opacity"}
    boxes = json.loads(opacity.loc[opacity["path"].str.endswith("a1.png"), "boxes"].iloc[0])
    assert boxes == [{"x": 10.5, "y": 20.0, "width": 30.0, "height": 40.0}]
    assert set(opacity["patient_id"]) == {"s1", "s2"}


def test_siim_boxes_follow_a_resized_copy(tmp_path: Path, caplog) -> None:
    """Boxes are listed in the original DICOM's pixels; a half-size copy gets half-size boxes."""
    pd.DataFrame({"id": ["s1_study"], "Negative for Pneumonia": [0], "Typical Appearance": [1],
                  "Indeterminate Appearance": [0], "Atypical Appearance": [0]}
                 ).to_csv(tmp_path / "train_study_level.csv", index=False)
    pd.DataFrame({"id": ["a1_image", "a2_image"],
                  "boxes": ["[{'x': 100, 'y': 40, 'width': 60, 'height': 80}]"] * 2,
                  "label": ["opacity 1 100 40 160 120"] * 2, "StudyInstanceUID": ["s1", "s1"]}
                 ).to_csv(tmp_path / "train_image_level.csv", index=False)
    for name in ("a1", "a2"):
        _png(tmp_path / "train" / f"{name}.png", size=(32, 64))  # 32 wide, 64 high
    with caplog.at_level("WARNING"):
        unscaled = load_manifest(tmp_path, layout="siim")
    assert "2 resized images have boxes in the original DICOM's pixels" in caplog.text
    assert json.loads(unscaled["boxes"].iloc[0]) == [{"x": 100.0, "y": 40.0, "width": 60.0,
                                                      "height": 80.0}]
    # a1's original was 128 rows x 64 columns (2x each way); a2 is not in the table
    pd.DataFrame({"image_id": ["a1"], "dim0": [128], "dim1": [64], "split": ["train"]}
                 ).to_csv(tmp_path / "meta.csv", index=False)
    manifest = load_manifest(tmp_path, layout="siim")
    boxes = {Path(p).stem: json.loads(b) for p, b in zip(manifest["path"], manifest["boxes"])}
    assert boxes["a1"] == [{"x": 50.0, "y": 20.0, "width": 30.0, "height": 40.0}]
    assert boxes["a2"] == [{"x": 100.0, "y": 40.0, "width": 60.0, "height": 80.0}]


def test_plain_folders_and_relabel(tmp_path: Path) -> None:
    for cls in ["Normal", "BacterialPneumonia", "ViralPneumonia"]:
        for i in range(2):
            _png(tmp_path / cls / f"{i}.jpeg")
    (tmp_path / "Normal" / "notes.txt").write_text("not an image")
    m = load_manifest(tmp_path, layout="folders")
    assert sorted(m["label"].unique()) == ["Bacterial Pneumonia", "Normal", "Viral Pneumonia"]
    binary = relabel(m, {"Bacterial Pneumonia": "Pneumonia", "Viral Pneumonia": "Pneumonia"})
    assert binary["label"].value_counts().to_dict() == {"Pneumonia": 4, "Normal": 2}
    assert set(binary.loc[binary["label"] == "Pneumonia", "subtype"]) == {"Bacterial Pneumonia",
                                                                         "Viral Pneumonia"}
    assert len(m) == 6


@pytest.mark.parametrize("make", ["missing", "empty", "unrecognised", "file"])
def test_bad_directories_say_what_was_expected(tmp_path: Path, make: str) -> None:
    target = tmp_path / "data"
    if make == "empty":
        target.mkdir()
    elif make == "unrecognised":
        (target / "stuff").mkdir(parents=True)
        (target / "stuff" / "readme.txt").write_text("x")
    elif make == "file":
        target.write_text("x")
    with pytest.raises(DatasetError) as info:
        load_manifest(target)
    message = str(info.value)
    assert str(target) in message
    if make != "file":
        assert "kaggle" in message.lower()


def test_unknown_class_request_is_an_error(tmp_path: Path) -> None:
    _png(tmp_path / "Normal" / "a.png")
    _png(tmp_path / "COVID" / "b.png")
    with pytest.raises(DatasetError, match="Viral Pneumonia"):
        load_manifest(tmp_path, classes=["Normal", "Viral Pneumonia"])


def test_download_without_credentials_says_what_to_do(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("KAGGLE_CONFIG_DIR", str(tmp_path / "nowhere"))
    monkeypatch.delenv("KAGGLE_USERNAME", raising=False)
    monkeypatch.delenv("KAGGLE_KEY", raising=False)
    with pytest.raises(DatasetError, match="kaggle.json"):
        download("kermany", tmp_path / "out")
    assert not (tmp_path / "out").exists()


@pytest.mark.realdata
def test_real_covid_sample(covid_sample: Path) -> None:
    m = load_manifest(covid_sample)
    assert m.attrs["layout"] == "covid19-radiography"
    assert m["label"].value_counts().to_dict() == {"COVID": 300, "Normal": 300, "Viral Pneumonia": 300}
    assert (m["mask_path"] == "").all()


@pytest.mark.realdata
def test_real_pneumonia_sample(pneumonia_sample: Path) -> None:
    m = load_manifest(pneumonia_sample)
    assert m.attrs["layout"] == "folders"
    assert m["label"].value_counts().to_dict() == {"Normal": 200, "Bacterial Pneumonia": 200,
                                                   "Viral Pneumonia": 200}
