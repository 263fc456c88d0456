"""Run records: validation, atomic writes, round trips, discovery of every run."""

from __future__ import annotations

import copy
import json
import logging
import sys
from pathlib import Path

import numpy as np
import pytest
from helpers import make_record

from cxrlib.environment import environment_info
from cxrlib.runs.records import SCHEMA, RunRecord, find_records, read_record, validate_record, write_record
from cxrlib.spec import NO_AUGMENT, RunSpec, make_spec


def test_valid_record_round_trips(tmp_path: Path) -> None:
    record = make_record()
    assert validate_record(record) == []
    path = write_record(tmp_path / "run", record)
    assert path == tmp_path / "run" / "record.json"
    assert read_record(path) == record
    assert read_record(tmp_path / "run") == record  # a run directory works too


def test_numpy_values_and_nan_become_plain_json(tmp_path: Path) -> None:
    record = make_record()
    record["training"]["epochs_run"] = np.int64(3)
    record["training"]["history"]["loss"] = np.array([1.0, np.nan, 0.5], dtype=np.float32)
    record["final"]["loss"] = float("nan")  # a diverged run must still be recorded
    assert validate_record(record) == []
    back = read_record(write_record(tmp_path, record))
    assert back["training"]["epochs_run"] == 3
    assert back["training"]["history"]["loss"] == [1.0, None, 0.5]
    assert back["final"]["loss"] is None


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
    (lambda r: r["dataset"].update(classes=[]), "dataset.classes: List should have at least 1 item"),
    (lambda r: r["spec"].update(batch_size=0), "spec.batch_size: Input should be greater than or equal to 1"),
    (lambda r: r["spec"].update(optimiser="sgd"), "spec.optimiser: Extra inputs are not permitted"),
])
def test_validation_names_the_problem(damage, message: str) -> None:
    record = make_record()
    damage(record)
    problems = validate_record(record)
    assert any(message in problem for problem in problems), problems


def test_the_schema_is_one_typed_definition() -> None:
    """The record's sections and the run spec are the typed classes, nothing else."""
    assert {"dataset", "model", "spec", "runtime", "environment", "training", "final",
            "artifacts"} <= set(RunRecord.model_fields)
    assert RunRecord.model_fields["spec"].annotation is RunSpec
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


def test_write_record_refuses_an_invalid_record(tmp_path: Path) -> None:
    record = make_record()
    del record["final"]
    with pytest.raises(ValueError, match="final: Field required"):
        write_record(tmp_path, record)
    assert not (tmp_path / "record.json").exists()


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
    assert [r["name"] for r in found] == ["early", "late"]  # sorted by created
    assert found[0]["_dir"] == str(tmp_path / "nested" / "early")
    assert "broken" in caplog.text and "not valid JSON" in caplog.text
    # "_dir" is bookkeeping, never written back
    write_record(found[0]["_dir"], copy.deepcopy(found[0]))
    assert "_dir" not in json.loads((tmp_path / "nested" / "early" / "record.json").read_text())
    assert find_records(tmp_path / "missing") == []


def test_environment_info_without_tensorflow(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "tensorflow", None)  # import fails as if not installed
    monkeypatch.setitem(sys.modules, "keras", None)
    info = environment_info()
    assert set(info) == set(RunRecord.model_fields["environment"].annotation.model_fields)
    assert info["tensorflow"] == info["keras"] == "not installed"
    assert info["device"] == "CPU" and info["numpy"] == np.__version__
    record = make_record()
    record["environment"] = info
    assert validate_record(record) == []
