"""Helpers of the model notebooks: the shared split, reuse detection, tables and notes from records."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
from matplotlib.figure import Figure

from cxrlib.course import progression
from cxrlib.data.splits import save_split
from cxrlib.data.synthetic import generate_synthetic
from cxrlib.runs.records import SCHEMA, read_record, write_record
from cxrlib.spec import variant_spec

CLASSES = ["COVID", "Normal", "Viral Pneumonia"]


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    return generate_synthetic(tmp_path_factory.mktemp("syn"), per_class=8, size=40, seed=0,
                              classes=CLASSES, progress=False)


def _record(name: str, variant: str, test_acc: float | None, train_acc: float = 0.9,
            val_acc: float = 0.8, created: str = "2024-01-01T00:00:00+00:00",
            backbone: str = "densenet121", params: int = 8_000_000, wall: float = 10.0) -> dict:
    epochs = 0 if variant == "v0" else 2
    history = {} if epochs == 0 else {"loss": [1.0, 0.5], "accuracy": [0.5, train_acc],
                                      "val_loss": [1.0, 0.6], "val_accuracy": [0.5, val_acc]}
    test = None if test_acc is None else {"accuracy": test_acc, "auc_macro": 0.9,
                                          "ci": {"accuracy": [test_acc - 0.1, test_acc + 0.05]}}
    return {
        "schema": SCHEMA, "name": name, "created": created,
        "dataset": {"root": "/d", "layout": "x", "split_file": "split.csv", "classes": CLASSES,
                    "n_train": 10, "n_val": 3, "n_test": 3},
        "model": {"backbone": backbone, "variant": variant, "weights": None, "image_size": 64,
                  "channels": 3, "trainable_params": params // 2, "total_params": params},
        "prep": {}, "spec": variant_spec(backbone, variant, epochs=epochs).model_dump(mode="json"),
        "runtime": {},
        "environment": {k: "x" for k in ("python", "tensorflow", "keras", "cxrlib", "numpy",
                                         "device", "platform")},
        "training": {"epochs_run": epochs, "wall_time_s": wall, "history": history, "resumed": False},
        "final": {"loss": 0.5, "accuracy": train_acc, "val_loss": 0.6, "val_accuracy": val_acc},
        "test": test, "skipped": [], "artifacts": {"model": "model.keras", "history": "history.csv"},
    }


def test_course_split_makes_saves_then_loads(data: Path, tmp_path: Path) -> None:
    manifest, classes, loaded = progression.course_split(data, tmp_path, 6, seed=0)
    assert not loaded and classes == CLASSES
    assert (tmp_path / "split.csv").is_file()
    assert manifest["label"].value_counts().to_dict() == {c: 6 for c in CLASSES}
    again, classes2, loaded2 = progression.course_split(data, tmp_path, 6, seed=0)
    assert loaded2 and classes2 == CLASSES
    assert sorted(again["path"]) == sorted(manifest["path"])
    assert list(again.sort_values("path")["split"]) == list(manifest.sort_values("path")["split"])


def test_course_split_remakes_a_split_that_does_not_match(data: Path, tmp_path: Path) -> None:
    progression.course_split(data, tmp_path, 4, seed=0)
    manifest, _, loaded = progression.course_split(data, tmp_path, 6, seed=0)
    assert not loaded and len(manifest) == 18
    # a split of other files (another dataset) is not taken either
    foreign = manifest.assign(path=[f"/elsewhere/{i}.png" for i in range(len(manifest))])
    save_split(foreign, tmp_path / "split.csv")
    _, _, loaded = progression.course_split(data, tmp_path, 6, seed=0)
    assert not loaded


def test_course_split_takes_all_of_a_small_class(data: Path, tmp_path: Path) -> None:
    manifest, _, _ = progression.course_split(data, tmp_path, 1000, seed=0)
    assert len(manifest) == 24
    _, _, loaded = progression.course_split(data, tmp_path, 1000, seed=0)
    assert loaded


def test_as_list() -> None:
    every = ["densenet121", "vgg16", "xception"]
    assert progression.as_list(None, every) == every
    assert progression.as_list("all", every) == every
    assert progression.as_list("none", every) == []
    assert progression.as_list("", every) == []
    assert progression.as_list("VGG16, xception", every) == ["vgg16", "xception"]
    assert progression.as_list(["densenet121"], every) == ["densenet121"]
    with pytest.raises(ValueError, match="resnet"):
        progression.as_list("resnet50", every)


def test_train_or_reuse_tells_reused_from_trained(monkeypatch: pytest.MonkeyPatch,
                                                  tmp_path: Path) -> None:
    calls = []

    def fake_train(manifest, classes, spec, out_dir, **kwargs):
        calls.append(kwargs)
        if (Path(out_dir) / "record.json").is_file():
            return read_record(out_dir)  # what train does for a finished identical run
        record = _record("DN-V2", "v2", 0.5, created=f"2024-01-0{len(calls)}T00:00:00+00:00")
        write_record(out_dir, record)
        return record

    monkeypatch.setattr("cxrlib.runs.train.train", fake_train)
    out = tmp_path / "densenet121-v2"
    spec = variant_spec("densenet121", "v2", epochs=2)
    first, status = progression.train_or_reuse(None, CLASSES, spec, out, progress=False)
    assert status == "trained" and calls[-1] == {"progress": False, "name": "DN-V2"}  # the course label
    second, status = progression.train_or_reuse(None, CLASSES, spec, out)
    assert status == "reused" and second["created"] == first["created"]


def test_train_or_reuse_a_retrained_run_is_trained(monkeypatch: pytest.MonkeyPatch,
                                                   tmp_path: Path) -> None:
    out = tmp_path / "run"
    write_record(out, _record("old", "v2", 0.5, created="2024-01-01T00:00:00+00:00"))

    def fake_train(manifest, classes, spec, out_dir, **kwargs):
        record = _record("new", "v2", 0.6, created="2024-02-01T00:00:00+00:00")
        write_record(out_dir, record)
        return record

    monkeypatch.setattr("cxrlib.runs.train.train", fake_train)
    _, status = progression.train_or_reuse(None, CLASSES, variant_spec("densenet121", "v2"), out)
    assert status == "trained"


def test_runs_table_and_labelled_table() -> None:
    records = [_record("DN-V2-reg", "v2reg", 0.7, params=7_000_000, wall=12.5),
               _record("VGG16-frozen", "frozen", None, backbone="vgg16")]
    runs = progression.runs_table(records, status=["reused", "trained"])
    assert list(runs["Status"]) == ["reused", "trained"]
    assert runs.loc[0, "Parameters (M)"] == pytest.approx(7.0)
    assert runs.loc[0, "Wall time (s)"] == 12.5
    assert "Status" not in progression.runs_table(records).columns
    table = progression.labelled_table(records, ["DN-frozen", "VGG16-frozen"])
    assert list(table["Model"]) == ["DN-frozen", "VGG16-frozen"]
    assert table.loc[0, "Test Accuracy"] == pytest.approx(0.7)
    assert math.isnan(table.loc[1, "Test Accuracy"])
    with pytest.raises(ValueError):
        progression.labelled_table(records, ["one"])


def test_accuracy_ci() -> None:
    records = [_record("A", "v2", 0.7), _record("B", "v2", None)]
    assert progression.accuracy_ci(records) == {"A": pytest.approx((0.6, 0.75))}
    assert set(progression.accuracy_ci(records, ["X", "Y"])) == {"X"}


def test_plot_tradeoff(tmp_path: Path) -> None:
    records = [_record("A", "frozen", 0.7), _record("B", "finetune", 0.8, wall=50.0),
               _record("C", "frozen", None)]
    table = progression.labelled_table(records, ["A", "B", "C"])
    figure = progression.plot_tradeoff(table, records, save=tmp_path / "t.png")
    assert isinstance(figure, Figure) and (tmp_path / "t.png").stat().st_size > 0
