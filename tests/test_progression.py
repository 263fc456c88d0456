"""Helpers of the model notebooks: the shared split, reuse detection, tables and notes from records."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
from helpers import CLASSES, make_record, scored
from matplotlib.figure import Figure

from cxrlib.course import progression
from cxrlib.data.splits import save_split
from cxrlib.data.synthetic import generate_synthetic
from cxrlib.runs.records import read_record, write_record
from cxrlib.spec import variant_spec


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    return generate_synthetic(tmp_path_factory.mktemp("syn"), per_class=8, size=40, seed=0,
                              classes=CLASSES, progress=False)


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
        record = make_record("DN-V2", f"2024-01-0{len(calls)}T00:00:00+00:00", test=scored(0.5))
        write_record(out_dir, record)
        return record

    monkeypatch.setattr("cxrlib.runs.train.train", fake_train)
    out = tmp_path / "densenet121-v2"
    spec = variant_spec("densenet121", "v2", epochs=2)
    first, status = progression.train_or_reuse(None, CLASSES, spec, out, progress=False)
    assert status == "trained" and calls[-1] == {"progress": False, "name": "DN-V2"}  # the course label
    second, status = progression.train_or_reuse(None, CLASSES, spec, out)
    assert status == "reused" and second.created == first.created


def test_train_or_reuse_a_retrained_run_is_trained(monkeypatch: pytest.MonkeyPatch,
                                                   tmp_path: Path) -> None:
    out = tmp_path / "run"
    write_record(out, make_record("old", "2024-01-01T00:00:00+00:00", test=scored(0.5)))

    def fake_train(manifest, classes, spec, out_dir, **kwargs):
        record = make_record("new", "2024-02-01T00:00:00+00:00", test=scored(0.6))
        write_record(out_dir, record)
        return record

    monkeypatch.setattr("cxrlib.runs.train.train", fake_train)
    _, status = progression.train_or_reuse(None, CLASSES, variant_spec("densenet121", "v2"), out)
    assert status == "trained"


def test_runs_table_and_labelled_table() -> None:
    records = [make_record("DN-V2-reg", variant="v2reg", test=scored(0.7), wall=12.5,
                           model={"total_params": 7_000_000}),
               make_record("VGG16-frozen", backbone="vgg16", variant="frozen")]
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
    records = [make_record("A", test=scored(0.7)), make_record("B")]
    assert progression.accuracy_ci(records) == {"A": pytest.approx((0.6, 0.75))}
    assert set(progression.accuracy_ci(records, ["X", "Y"])) == {"X"}


def test_plot_tradeoff(tmp_path: Path) -> None:
    records = [make_record("A", variant="frozen", test=scored(0.7)),
               make_record("B", variant="finetune", test=scored(0.8), wall=50.0),
               make_record("C", variant="frozen")]
    table = progression.labelled_table(records, ["A", "B", "C"])
    figure = progression.plot_tradeoff(table, records, save=tmp_path / "t.png")
    assert isinstance(figure, Figure) and (tmp_path / "t.png").stat().st_size > 0
