"""``cxr diagnose``: a folder of radiographs → heat-map PNGs and summary.csv, bad files included."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from helpers import TRAIN_CLASSES

from cxrlib.apps.cli import main
from cxrlib.apps.diagnose import find_images, is_pneumonia
from cxrlib.spec import NO_AUGMENT, variant_spec

pytestmark = [pytest.mark.slow, pytest.mark.filterwarnings("ignore:Your input ran out of data")]


@pytest.fixture(scope="session")
def stage1(scratch_run):
    """(model.keras path, split manifest) of the session's trained scratch CNN (conftest)."""
    run, manifest = scratch_run
    return run / "model.keras", manifest


@pytest.fixture(scope="session")
def stage2(tmp_path_factory):
    """A second-stage model (Bacterial vs Viral Pneumonia) with its own prep: 48 px, 1 channel."""
    from cxrlib.data.datasets import load_manifest
    from cxrlib.data.splits import split_manifest
    from cxrlib.data.synthetic import generate_synthetic
    from cxrlib.runs.train import train

    base = tmp_path_factory.mktemp("stage2")
    classes = ["Bacterial Pneumonia", "Viral Pneumonia"]
    generate_synthetic(base / "data", per_class=12, size=48, seed=5, classes=classes,
                       marker_prob=0.0, vary_size=False, progress=False)
    manifest = split_manifest(load_manifest(base / "data"), val=0.25, test=0.0, seed=0)
    spec = variant_spec("scratch", "scratch", image_size=48, channels=1, epochs=1, batch_size=8,
                        optimizer="adam", learning_rate=1e-3, seed=0, augment=NO_AUGMENT)
    train(manifest, classes, spec, base / "run", progress=False, bootstrap=0)
    return base / "run" / "model.keras"


@pytest.fixture()
def folder(tmp_path, stage1):
    """Test-split films (3 per class, one class in a sub-folder), a corrupt PNG, a zero-byte
    JPEG, and files that are not to be read: a hidden image, a text file."""
    _, manifest = stage1
    root = tmp_path / "incoming"
    (root / "ward b").mkdir(parents=True)
    test = manifest[manifest["split"] == "test"]
    good = []
    for name in TRAIN_CLASSES:
        for path in test.loc[test["label"] == name, "path"].head(3):
            target = root / ("ward b" if name == "Normal" else "") / Path(path).name
            shutil.copy(path, target)
            good.append(target.relative_to(root).as_posix())
    (root / "corrupt.png").write_bytes(b"\x89PNG\r\n\x1a\n" + np.random.default_rng(0).bytes(300))
    (root / "ward b" / "empty.jpg").write_bytes(b"")
    shutil.copy(test["path"].iloc[0], root / ".hidden.png")
    (root / "notes.txt").write_text("not an image")
    return root, sorted(good)


def _summary(out: Path) -> pd.DataFrame:
    return pd.read_csv(out / "summary.csv", keep_default_na=False)


def test_diagnose_folder_with_bad_files(folder, stage1, tmp_path, capsys):
    root, good = folder
    model, _ = stage1
    out = tmp_path / "out"
    status = main(["diagnose", str(root), "--model", str(model), "--out", str(out),
                   "--method", "gradcam", "--quiet"])
    assert status == 0
    assert "9 images diagnosed, 2 unreadable" in capsys.readouterr().out
    summary = _summary(out)
    assert sorted(summary["file"]) == sorted(good + ["corrupt.png", "ward b/empty.jpg"])
    assert list(summary.columns) == ["file", "predicted", "p_COVID", "p_Normal",
                                     "p_Bacterial Pneumonia", "border_share", "figure", "error"]
    bad = summary[summary["file"].isin(["corrupt.png", "ward b/empty.jpg"])]
    assert (bad["error"] != "").all() and "empty" in bad.set_index("file").loc["ward b/empty.jpg", "error"]
    assert (bad[["predicted", "p_COVID", "border_share", "figure"]] == "").all().all()
    ok = summary[summary["error"] == ""]
    assert len(ok) == 9 and ok["predicted"].isin(TRAIN_CLASSES).all()
    probabilities = ok[[f"p_{c}" for c in TRAIN_CLASSES]].astype(float)
    np.testing.assert_allclose(probabilities.sum(axis=1), 1.0, atol=1e-4)
    assert (ok["predicted"] == probabilities.idxmax(axis=1).str[2:]).all()
    assert ok["border_share"].astype(float).between(0, 1).all()
    # one PNG per readable image, none for the bad ones; no temporary files left behind
    pngs = sorted(p.name for p in out.glob("*.png"))
    assert pngs == sorted(ok["figure"]) and len(pngs) == 9
    assert {f"ward b__{Path(g).name}.png" for g in good if g.startswith("ward b/")} <= set(pngs)
    assert sorted(p.name for p in out.iterdir()) == sorted(pngs + ["summary.csv"])
    # most of the films are diagnosed right (the model reaches > 60 % on its test split)
    right = sum(Path(f).name.rsplit("-", 1)[0] == p for f, p in zip(ok["file"], ok["predicted"]))
    assert right >= 5


def test_diagnose_stage2_only_on_pneumonia(folder, stage1, stage2, tmp_path):
    from cxrlib.apps.diagnose import diagnose_folder

    root, good = folder
    model, _ = stage1
    out = tmp_path / "out2"
    status = main(["diagnose", str(root), "--model", str(model), "--stage2", str(stage2),
                   "--out", str(out), "--quiet"])
    assert status == 0
    summary = _summary(out)
    stage2_columns = ["stage2_predicted", "p2_Bacterial Pneumonia", "p2_Viral Pneumonia"]
    assert set(stage2_columns) <= set(summary.columns)
    ok = summary[summary["error"] == ""]
    pneumonia = ok["predicted"].map(is_pneumonia)
    assert pneumonia.any() and (~pneumonia).any()  # both kinds, or the test proves nothing
    assert (ok.loc[pneumonia, stage2_columns] != "").all().all()
    assert (ok.loc[~pneumonia, stage2_columns] == "").all().all()
    assert ok.loc[pneumonia, "stage2_predicted"].isin(["Bacterial Pneumonia", "Viral Pneumonia"]).all()
    p2 = ok.loc[pneumonia, stage2_columns[1:]].astype(float)
    np.testing.assert_allclose(p2.sum(axis=1), 1.0, atol=1e-4)
    assert (summary.loc[summary["error"] != "", stage2_columns] == "").all().all()
    # the function returns what it wrote
    again = diagnose_folder(root, model, tmp_path / "out3", stage2_path=stage2, method="gradcam",
                            progress=False)
    assert list(again["file"]) == list(summary["file"])
    assert list(again["stage2_predicted"].fillna("")) == list(summary["stage2_predicted"])


def test_diagnose_usage_errors(stage1, tmp_path, capsys):
    model, _ = stage1
    out = str(tmp_path / "out")
    assert main(["diagnose", str(tmp_path / "missing"), "--model", str(model), "--out", out]) == 2
    assert "No folder" in capsys.readouterr().err
    empty = tmp_path / "empty"
    (empty / "sub").mkdir(parents=True)
    (empty / "readme.txt").write_text("no images here")
    assert main(["diagnose", str(empty), "--model", str(model), "--out", out]) == 2
    assert "No image files" in capsys.readouterr().err
    images = tmp_path / "images"
    images.mkdir()
    (images / "x.png").write_bytes(b"not really")
    assert main(["diagnose", str(images), "--model", str(tmp_path / "none.keras"), "--out", out]) == 2
    assert "No model file" in capsys.readouterr().err
    assert main(["diagnose", str(images), "--model", str(model), "--stage2",
                 str(tmp_path / "none.keras"), "--out", out]) == 2
    assert not Path(out).exists()


def test_find_images_skips_hidden_and_output(tmp_path):
    (tmp_path / "a" / ".cache").mkdir(parents=True)
    (tmp_path / "out").mkdir()
    for name in ("a/x.png", "a/.cache/y.png", "a/._x.png", "b.JPG", "out/c.png", "d.txt"):
        (tmp_path / name).write_bytes(b"x")
    found = [p.relative_to(tmp_path).as_posix() for p in find_images(tmp_path, exclude=tmp_path / "out")]
    assert found == ["a/x.png", "b.JPG"]
