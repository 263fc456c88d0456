"""Run records: validation, atomic writes, round trips, discovery of every run."""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import sys
from pathlib import Path

import numpy as np
import pytest
from helpers import make_record, record_data, scored

from cxrlib.data.prepare import Prep
from cxrlib.environment import environment_info
from cxrlib.errors import InputError
from cxrlib.files import jsonable
from cxrlib.runs.metrics import compute_metrics
from cxrlib.runs.records import (
    SCHEMA,
    PrepInfo,
    RunRecord,
    TestResult,
    find_records,
    read_record,
    record_float,
    record_json,
    to_record,
    validate_record,
    write_record,
)
from cxrlib.spec import NO_AUGMENT, RunSpec, make_spec


def test_valid_record_round_trips(tmp_path: Path) -> None:
    data = record_data(test=scored(0.8))
    assert validate_record(data) == []
    record = to_record(data)
    path = write_record(tmp_path / "run", record)
    assert path == tmp_path / "run" / "record.json"
    assert read_record(path) == read_record(tmp_path / "run")  # a run directory works too
    back = read_record(path)
    assert record_json(back) == record_json(record) and back.folder == tmp_path / "run"
    assert record.folder is None   # made in memory, never read from a folder
    written = json.loads(path.read_text())
    assert written["schema"] == SCHEMA and set(data) <= set(written)
    assert {k: written[k] for k in ("name", "created", "final", "training")} == \
        {k: data[k] for k in ("name", "created", "final", "training")}


def test_the_record_is_read_by_attribute_with_typed_test_and_prep() -> None:
    classes = ["normal", "pneumonia"]
    metrics = compute_metrics(np.array([0, 1] * 10), np.tile([[0.3, 0.7]], (20, 1)), classes, bootstrap=20)
    test = {**metrics, "skipped": [{"path": "bad.png", "error": "truncated"}], "non_finite_outputs": 0}
    record = make_record(classes=classes, test=test,
                         prep={"image_size": 64, "crop": True, "crop_reference": [640, 480],
                               "normalization": "featurewise", "norm_stats": [0.5, 0.25]})
    assert isinstance(record.test, TestResult) and isinstance(record.prep, PrepInfo)
    assert record.test.accuracy == 0.5 and record.test.per_class["pneumonia"].support == 10
    assert record.test.ci.accuracy is not None and record.test.operating_point.target == 0.99
    assert record.test.roc is not None and record.test.skipped[0].path == "bad.png"
    assert record.prep.to_prep() == Prep(image_size=64, crop=True, crop_reference=(640, 480),
                                         normalization="featurewise", norm_stats=(0.5, 0.25))
    assert record_float(record, "test", "auc_macro") == record.test.auc_macro
    assert math.isnan(record_float(make_record(), "test", "accuracy"))   # no test set
    assert math.isnan(record_float(None, "final", "loss"))


def test_the_prep_section_is_the_prep() -> None:
    """Every field of :class:`Prep` is a field of the record's prep section, and back."""
    assert set(PrepInfo.model_fields) == {f.name for f in dataclasses.fields(Prep)}
    prep = Prep(image_size=32, backbone="scratch", channels=1, crop=True, crop_reference=(9, 7),
                equalize="clahe", interpolation="area")
    assert PrepInfo.model_validate(jsonable(prep.to_dict())).to_prep() == prep


def test_an_old_record_on_disk_still_reads(tmp_path: Path) -> None:
    """A record written before the test loss, the non-finite count, the config key, the split
    artifact, featurewise normalisation and the preset fields existed."""
    data = record_data(test=scored(0.7))
    for key in ("loss", "skipped", "non_finite_outputs"):
        data["test"].pop(key, None)
    del data["test"]["ci"]["auc_macro"]
    data["prep"] = {"image_size": 224, "backbone": "densenet121", "channels": 3, "crop": False,
                    "crop_reference": None, "equalize": None, "interpolation": "bilinear"}
    (tmp_path / "record.json").write_text(json.dumps(data))
    record = read_record(tmp_path)
    assert record.test.loss is None and record.test.non_finite_outputs == 0 and record.test.skipped == []
    assert record.test.ci.auc_macro is None and record.config_key is None
    assert record.prep.to_prep() == Prep(image_size=224)
    assert record.artifacts.split == "split.csv" and record.dataset.preset is None


def test_an_invalid_test_section_is_refused_in_one_line_per_problem(tmp_path: Path) -> None:
    data = record_data(test=scored(0.7, ci="garbage", confusion_matrix=[["a", 1]], n=2.5))
    (tmp_path / "record.json").write_text(json.dumps(data))
    with pytest.raises(InputError) as caught:
        read_record(tmp_path)
    lines = str(caught.value).splitlines()
    assert lines[0] == f"{tmp_path / 'record.json'} is not a valid run record:"
    assert "- test.ci: Input should be a valid dictionary or instance of Intervals" in lines
    assert "- test.confusion_matrix.0.0: Input should be a valid integer" in lines
    assert any(line.startswith("- test.n: ") for line in lines) and len(lines) == 4
    assert find_records(tmp_path) == []


def test_numpy_values_and_nan_become_plain_json(tmp_path: Path) -> None:
    data = record_data()
    data["training"]["epochs_run"] = np.int64(3)
    data["training"]["history"]["loss"] = np.array([1.0, np.nan, 0.5], dtype=np.float32)
    data["final"]["loss"] = float("nan")  # a diverged run must still be recorded
    assert validate_record(data) == []
    back = read_record(write_record(tmp_path, to_record(data)))
    assert back.training.epochs_run == 3
    assert back.training.history["loss"] == [1.0, None, 0.5]
    assert back.final.loss is None


@pytest.mark.parametrize("damage, message", [
    (lambda r: r.pop("model"), "model: Field required"),
    (lambda r: r["dataset"].pop("n_test"), "dataset.n_test: Field required"),
    (lambda r: r.update(schema="cxrlib.run/0"), "schema: Input should be 'cxrlib.run/2'"),
    (lambda r: r["training"]["history"]["val_loss"].pop(), "val_loss has 2 entries"),
    (lambda r: r["training"].update(epochs_run=2), "epochs_run is 2"),
    (lambda r: r["model"].update(image_size="224"), "model.image_size: Input should be a valid integer"),
    (lambda r: r["training"].update(resumed=1), "training.resumed: Input should be a valid boolean"),
    (lambda r: r.update(created="yesterday"), "not an ISO-8601 time"),
    (lambda r: r.update(test=[]), "test: Input should be a valid dictionary"),
    (lambda r: r.update(test=scored(0.5, n="30")), "test.n: Input should be a valid integer"),
    (lambda r: r.update(test={**scored(0.5), "accuracy": "high"}), "test.accuracy: Input should be a valid number"),
    (lambda r: r.update(test={"accuracy": 0.5}), "test.classes: Field required"),
    (lambda r: r.update(prep={"crop": True}), "prep.image_size: Field required"),
    (lambda r: r["dataset"].update(classes=[]), "dataset.classes: List should have at least 1 item"),
    (lambda r: r["spec"].update(batch_size=0), "spec.batch_size: Input should be greater than or equal to 1"),
    (lambda r: r["spec"].update(optimiser="sgd"), "spec.optimiser: Extra inputs are not permitted"),
])
def test_validation_names_the_problem(damage, message: str) -> None:
    record = record_data()
    damage(record)
    problems = validate_record(record)
    assert any(message in problem for problem in problems), problems


def test_the_schema_is_one_typed_definition() -> None:
    """The record's sections and the run spec are the typed classes, nothing else."""
    assert {"dataset", "model", "spec", "runtime", "environment", "training", "final",
            "artifacts"} <= set(RunRecord.model_fields)
    assert RunRecord.model_fields["spec"].annotation is RunSpec
    assert RunRecord.model_fields["prep"].annotation is PrepInfo
    assert RunRecord.model_fields["test"].annotation == TestResult | None
    assert "epochs_run" in RunRecord.model_fields["training"].annotation.model_fields


def test_the_spec_refuses_impossible_settings_in_one_line() -> None:
    good = dict(backbone="scratch", variant="scratch", epochs=2, batch_size=8, weights=None)
    assert make_spec(**good).decay == 0.0 and make_spec(**good).augment == NO_AUGMENT
    for bad, where in [({"epochs": -1}, "epochs"), ({"batch_size": 0}, "batch_size"),
                       ({"learning_rate": 0.0}, "learning_rate"), ({"early_stopping": 0}, "early_stopping"),
                       ({"augment": {"zoom": (1.2, 1.0)}}, "augment"), ({"head": "flat", "backbone": "vgg16"}, "flat"),
                       ({"learnig_rate": 0.1}, "learnig_rate")]:
        with pytest.raises(ValueError, match=where) as caught:
            make_spec(**{**good, **bad})
        assert "\n" not in str(caught.value)


def test_an_invalid_record_is_never_made(tmp_path: Path) -> None:
    data = record_data()
    del data["final"]
    with pytest.raises(ValueError, match="The run in x is not a valid run record:\n- final: Field required"):
        to_record(data, "The run in x")


def test_read_record_names_the_broken_file(tmp_path: Path) -> None:
    (tmp_path / "record.json").write_text("{not json")
    with pytest.raises(ValueError, match="record.json is not valid JSON"):
        read_record(tmp_path)
    (tmp_path / "record.json").write_text(json.dumps({"schema": SCHEMA}))
    with pytest.raises(ValueError, match="record.json is not a valid run record"):
        read_record(tmp_path)


def test_find_records_skips_a_corrupt_one(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    write_record(tmp_path / "late", make_record("late", "2024-05-03T00:00:00+00:00"))
    write_record(tmp_path / "nested" / "early", make_record("early", "2024-05-01T00:00:00Z"))
    (tmp_path / "broken").mkdir()
    (tmp_path / "broken" / "record.json").write_text('{"schema": "cxrlib.run/2", "na')
    with caplog.at_level(logging.WARNING, logger="cxrlib.runs.records"):
        found = find_records(tmp_path)
    assert [r.name for r in found] == ["early", "late"]  # sorted by created
    assert found[0].folder == tmp_path / "nested" / "early"
    assert "broken" in caplog.text and "not valid JSON" in caplog.text
    # the folder is bookkeeping, never written back
    before = (tmp_path / "nested" / "early" / "record.json").read_text()
    write_record(found[0].folder, found[0])
    assert (tmp_path / "nested" / "early" / "record.json").read_text() == before
    assert find_records(tmp_path / "missing") == []


def test_environment_info_without_tensorflow(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "tensorflow", None)  # import fails as if not installed
    monkeypatch.setitem(sys.modules, "keras", None)
    info = environment_info()
    assert set(info) == set(RunRecord.model_fields["environment"].annotation.model_fields)
    assert info["tensorflow"] == info["keras"] == "not installed"
    assert info["device"] == "CPU" and info["numpy"] == np.__version__
    record = record_data()
    record["environment"] = info
    assert validate_record(record) == []
