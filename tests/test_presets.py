"""Course presets: every run's record carries exactly the preset's settings."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from cxrlib.course import presets
from cxrlib.course.presets import PRESETS, expected_settings, get_preset, scaled, train_kwargs
from cxrlib.course.reproduce import comparison, pin_version, preset_data, preset_split, train_preset
from cxrlib.runs.records import validate_record

FOLDER_VARIABLES = ("COVID_DIR", "KERMANY_DIR", "SIIM_DIR", "EXTERNAL_DIR")


def test_every_preset_is_complete() -> None:
    for name, preset in PRESETS.items():
        assert preset.name == name and preset.runs and preset.course
        assert len(set(preset.keys())) == len(preset.runs), name
        assert any(run.reported for run in preset.runs), f"{name} reports no number"
        for run in preset.runs:   # a run starts from an earlier run of the same preset
            if run.init_from:
                assert preset.keys().index(run.init_from) < preset.keys().index(run.key)
    with pytest.raises(ValueError, match="choose one of"):
        get_preset("nope")


def test_the_radiography_course_as_reported() -> None:
    preset = get_preset("radiography")
    assert preset.version == "v3" and preset.image_size == 224
    assert (preset.val, preset.test) == (0.1, 0.2)
    assert all(r.optimizer == "sgd" and r.learning_rate == 0.01 and r.decay == 1e-6 for r in preset.runs)
    assert all(r.epochs == 20 for r in preset.runs if r.key != "v0")
    v2 = preset.run("v2").augment
    assert v2.flip and v2.brightness == (0.8, 1.25) and v2.zoom == (1.0, 1.2) and not v2.rotation
    assert presets.run_size(preset, preset.run("xception-finetune")) == 224
    assert preset.run("vgg16-finetune").reported == {"accuracy": 0.3388}


def test_train_kwargs_are_the_preset() -> None:
    preset = get_preset("siim")
    kwargs = train_kwargs(preset, "phase3-finetune-competition", {"phase2-finetune-union": "/r/p2"})
    assert kwargs["optimizer"] == "nadam" and kwargs["learning_rate"] == 0.01 and kwargs["epochs"] == 15
    assert kwargs["init_from"] == "/r/p2/model.keras" and kwargs["head"] == "batchnorm"
    assert kwargs["equalize"] == "hist" and kwargs["dataset_info"]["preset"] == "siim"
    small = scaled(preset, image_size=32, epochs=1)
    assert small.run("study-sgd").epochs == 1 and small.run("study-sgd").early_stopping == 10
    assert presets.run_size(small, small.run("study-sgd")) == 71   # Xception's minimum
    assert scaled(get_preset("radiography"), epochs=1).run("v0").epochs == 0



def test_the_fine_tuning_learning_rate_changes_only_the_fine_tuning_runs() -> None:
    course = get_preset("radiography")
    demo = scaled(course, image_size=64, epochs=10, finetune_learning_rate=1e-3)
    changed = {run.key for run, old in zip(demo.runs, course.runs)
               if run.learning_rate != old.learning_rate}
    assert changed == {"v3", "resnet50-finetune", "vgg16-finetune", "inceptionv3-finetune",
                       "xception-finetune"}
    assert all(demo.run(key).learning_rate == 1e-3 for key in changed)
    assert demo.run("v2reg").learning_rate == course.run("v2reg").learning_rate == 0.01
    assert scaled(course, epochs=1).run("v3").learning_rate == 0.01   # not given: the course's
    siim = scaled(get_preset("siim"), finetune_learning_rate=1e-4)
    assert siim.run("phase3-finetune-competition").learning_rate == 1e-4
    assert siim.run("opacity-frozen").learning_rate == 1e-3

def test_split_shares_and_version_pin(tmp_path) -> None:
    manifest = pd.DataFrame({"path": [f"/d/{i}.png" for i in range(3000)],
                             "label": np.repeat(["COVID", "Normal", "Viral Pneumonia"], 1000),
                             "split": "", "patient_id": [str(i) for i in range(3000)]})
    split = preset_split(get_preset("radiography"), manifest)
    shares = split["split"].value_counts(normalize=True)
    assert shares["test"] == pytest.approx(0.2, abs=0.01)
    assert shares["val"] / (1 - shares["test"]) == pytest.approx(0.1, abs=0.01)
    v3 = pin_version(manifest, "v3")
    assert v3["label"].value_counts().to_dict() == {"COVID": 1000, "Normal": 1000, "Viral Pneumonia": 1000}
    big = pd.concat([manifest, manifest.assign(path=manifest["path"] + "b")], ignore_index=True)
    assert pin_version(big, "v3")["label"].value_counts().to_dict() == \
        {"COVID": 1200, "Normal": 1341, "Viral Pneumonia": 1345}
    listed = tmp_path / "files.txt"
    listed.write_text("1.png\n2.png\n")
    assert sorted(pin_version(manifest, str(listed))["path"]) == ["/d/1.png", "/d/2.png"]


def test_kermany_keeps_the_official_test_split() -> None:
    manifest = pd.DataFrame({"path": [f"/k/{i}.png" for i in range(400)],
                             "label": np.tile(["Normal", "Bacterial Pneumonia"], 200),
                             "split": ["test"] * 100 + ["val"] * 10 + ["train"] * 290,
                             "patient_id": [str(i) for i in range(400)]})
    split = preset_split(get_preset("kermany-transfer"), manifest)
    assert (split["split"] == "test").sum() == 100
    assert (split["split"] == "val").sum() / 300 == pytest.approx(0.2, abs=0.02)


@pytest.mark.slow
@pytest.mark.parametrize("name", list(PRESETS))
def test_every_preset_in_smoke_mode(name: str, tmp_path, monkeypatch) -> None:
    """Tiny images, one epoch, synthetic data: each record says exactly what the preset says."""
    for variable in FOLDER_VARIABLES:
        monkeypatch.delenv(variable, raising=False)
    preset = scaled(get_preset(name), image_size=32, epochs=1)
    data = preset_data(preset, tmp_path / "data", per_class=6, size=64)
    records = train_preset(preset, data, tmp_path / "results", weights=None, progress=False,
                           bootstrap=10, run_eagerly=True)
    assert list(records) == preset.keys()
    for key, record in records.items():
        assert validate_record(record) == []
        got, want = presets.recorded_settings(record), expected_settings(preset, key)
        assert got == want, {k: (got[k], want[k]) for k in want if got[k] != want[k]}
        run = preset.run(key)
        if run.init_from:
            assert record["hyperparameters"]["init_from"].endswith(f"{run.init_from}/model.keras")
    table = comparison(preset, records)
    assert list(table.index) == preset.keys()
    assert table["ours: test accuracy"].notna().all() and "course: test accuracy" in table
