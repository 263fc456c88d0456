"""Course presets: every run's record carries exactly the preset's settings."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from cxrlib.backbones import min_input_size
from cxrlib.course import presets
from cxrlib.course.presets import COURSE_FAITHFUL, PRESETS, get_preset, run_spec, scaled
from cxrlib.course.progression import pin_version
from cxrlib.course.reports import REPORTS
from cxrlib.course.reproduce import comparison, preset_data, train_preset
from cxrlib.data.splits import make_split
from cxrlib.runs.records import RunRecord
from cxrlib.spec import flat_items
from cxrlib.variants import get_variant

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


def _same(ours, theirs) -> bool:
    """Equal as a record would store them (tuples as lists), variants by what they build."""
    if isinstance(ours, str) and isinstance(theirs, str) and ours != theirs:
        try:
            return get_variant(ours).name == get_variant(theirs).name
        except ValueError:
            return False
    as_list = lambda v: list(v) if isinstance(v, tuple) else v  # noqa: E731
    return as_list(ours) == as_list(theirs)


@pytest.mark.parametrize("name", list(PRESETS))
def test_every_preset_run_is_its_report_or_says_why_not(name: str) -> None:
    """Each setting the report states is the run's, unless the run names the difference and why;
    each number the report gives is the run's ``reported`` (never typed twice)."""
    preset, report = get_preset(name), REPORTS[name]
    assert set(report.settings) <= set(preset.keys()) and set(report.results) <= set(preset.keys())
    for run in preset.runs:
        ours = {**flat_items(run.spec), "init_from": run.init_from}
        stated = report.settings.get(run.key, {})
        wrong = {field: (ours[field], item.value, item.section) for field, item in stated.items()
                 if field not in run.differs and not _same(ours[field], item.value)}
        assert not wrong, f"{name}/{run.key} departs from its report without a reason: {wrong}"
        for field in run.differs:   # a stated difference really is one, and has a reason
            assert field in ours and run.differs[field].strip()
            if field in stated:
                assert not _same(ours[field], stated[field].value), f"{run.key}.{field} differs from nothing"
        assert dict(run.reported) == {k: v.value for k, v in report.results.get(run.key, {}).items()}
        assert dict(preset.findings) == {k: v.value for k, v in report.findings.items()}


@pytest.mark.parametrize("name", list(PRESETS))
def test_the_librarys_changes_are_off_in_every_preset_unless_it_says_why(name: str) -> None:
    for run in get_preset(name).runs:
        stated = REPORTS[name].settings.get(run.key, {})   # the report's own value wins (tested above)
        for field, course in COURSE_FAITHFUL.items():
            if field not in stated:
                assert getattr(run.spec, field) == course or field in run.differs, (run.key, field)
        finetuned = not get_variant(run.variant).frozen and run.backbone not in ("scratch", "vgg16")
        if finetuned:   # BatchNorm frozen in fine-tuning is the project's rule: said, with the reason
            assert run.spec.freeze_bn and "freeze_bn" in run.differs, run.key


def test_run_size_raises_a_small_size_to_the_networks_minimum_and_keeps_a_larger_one() -> None:
    course = get_preset("radiography")
    small = scaled(course, image_size=32)
    assert presets.run_size(course, course.run("xception-finetune")) == course.image_size
    assert presets.run_size(small, small.run("xception-finetune")) == min_input_size("xception") > 32
    assert presets.run_size(small, small.run("v2")) == 32 == min_input_size("densenet121")


@pytest.mark.parametrize("name", list(PRESETS))
def test_run_spec_is_the_run_with_its_size_and_the_model_it_starts_from(name: str) -> None:
    preset = scaled(get_preset(name), image_size=32, epochs=1, weights=None)
    folders = {key: f"/r/{key}" for key in preset.keys()}
    for run in preset.runs:
        spec = run_spec(preset, run.key, folders)
        assert spec.image_size == presets.run_size(preset, run)
        assert spec.init_from == (f"/r/{run.init_from}/model.keras" if run.init_from else run.spec.init_from)
        assert spec.model_copy(update={"image_size": run.spec.image_size,
                                       "init_from": run.spec.init_from}) == run.spec


def test_scaling_changes_the_epochs_of_trained_runs_only() -> None:
    for course in PRESETS.values():
        small = scaled(course, epochs=1)
        for run, old in zip(small.runs, course.runs):
            assert run.epochs == (1 if old.epochs else 0), run.key   # V0 stays untrained
            assert run.spec.early_stopping == old.spec.early_stopping


def test_scaling_switches_on_the_librarys_aids_only_without_imagenet_weights() -> None:
    course = get_preset("radiography")
    assert scaled(course, image_size=64, epochs=10).run("v2").spec.head_norm is False
    demo = scaled(course, image_size=64, epochs=10, weights="synthetic")
    assert all(r.spec.head_norm and r.spec.keep_best and r.spec.clipnorm == 1.0
               and r.spec.normalization == "backbone" for r in demo.runs)
    assert any("synthetic weights need" in line for line in demo.scaling)   # it says so
    scratch = scaled(get_preset("kermany-3class"), image_size=64, weights=None)
    assert scratch.run("cnn").spec.head_norm is False   # no pretrained backbone: nothing to aid


def test_the_fine_tuning_learning_rate_changes_only_the_fine_tuning_runs() -> None:
    course = get_preset("radiography")
    demo = scaled(course, image_size=64, epochs=10, finetune_learning_rate=1e-3)
    changed = {run.key for run, old in zip(demo.runs, course.runs)
               if run.spec.learning_rate != old.spec.learning_rate}
    assert changed == {"v3", "resnet50-finetune", "vgg16-finetune", "inceptionv3-finetune",
                       "xception-finetune"}
    assert all(demo.run(key).spec.learning_rate == 1e-3 for key in changed)
    assert demo.run("v2reg").spec.learning_rate == course.run("v2reg").spec.learning_rate == 0.01
    assert scaled(course, epochs=1).run("v3").spec.learning_rate == 0.01   # not given: the course's
    siim = scaled(get_preset("siim"), finetune_learning_rate=1e-4)
    assert siim.run("phase3-finetune-competition").spec.learning_rate == 1e-4
    assert siim.run("opacity-frozen").spec.learning_rate == 1e-3


def test_presets_json_has_the_documented_shape(capsys) -> None:
    from cxrlib.apps.cli import main

    assert main(["presets", "--json"]) == 0
    printed = json.loads(capsys.readouterr().out)
    assert [p["name"] for p in printed["presets"]] == list(PRESETS)
    first = next(iter(PRESETS.values()))
    run, ours = printed["presets"][0]["runs"][3], first.runs[3]
    assert run["name"] == ours.key and run["reported"] == dict(ours.reported)
    spec = run["spec"]
    for field in ("epochs", "optimizer", "learning_rate", "momentum", "nesterov", "decay",
                  "early_stopping", "class_weight", "init_from"):
        assert field in spec
    assert set(spec["augment"]) >= {"flip", "brightness", "contrast", "zoom", "shear", "rotation"}
    assert set(spec["split"]) >= {"samples_per_class", "test", "val", "official_test"}
    assert spec["augment"]["zoom"] == list(ours.spec.augment.zoom)


def test_split_shares_and_version_pin(tmp_path) -> None:
    manifest = pd.DataFrame({"path": [f"/d/{i}.png" for i in range(3000)],
                             "label": np.repeat(["COVID", "Normal", "Viral Pneumonia"], 1000),
                             "split": "", "patient_id": [str(i) for i in range(3000)]})
    split = make_split(manifest, get_preset("radiography").split.model_copy(update={"samples_per_class": None}))
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
    split = make_split(manifest, get_preset("kermany-transfer").split)
    assert (split["split"] == "test").sum() == 100
    assert (split["split"] == "val").sum() / 300 == pytest.approx(0.2, abs=0.02)


@pytest.mark.slow
@pytest.mark.parametrize("name", list(PRESETS))
def test_every_preset_in_smoke_mode(name: str, tmp_path, monkeypatch) -> None:
    """Tiny images, one epoch, synthetic data: each record says exactly what the preset says."""
    for variable in FOLDER_VARIABLES:
        monkeypatch.delenv(variable, raising=False)
    preset = scaled(get_preset(name), image_size=32, epochs=1, weights=None)
    data = preset_data(preset, tmp_path / "data", per_class=6, size=64)
    records = train_preset(preset, data, tmp_path / "results", weights=None, progress=False,
                           bootstrap=10, run_eagerly=True)
    assert list(records) == preset.keys()
    dirs = {key: tmp_path / "results" / name / key for key in preset.keys()}
    for key, record in records.items():
        assert isinstance(record, RunRecord)
        want = run_spec(preset, key, dirs).model_copy(update={"weights": None})
        assert record.spec == want, {k: (getattr(record.spec, k), v) for k, v in want
                                     if getattr(record.spec, k) != v}
        assert record.dataset.preset == name and record.dataset.run == key
    table = comparison(preset, records)
    assert list(table.index) == preset.keys()
    reported = {n for run in preset.runs for n in run.reported}
    for number in reported - {"epochs_run"}:   # every kind of number the report gives, ours beside it
        assert f"course: {number.replace('_', ' ')}" in table and f"ours: {number.replace('_', ' ')}" in table


def test_the_3class_cnn_is_the_reports_network() -> None:
    """The report's figure: 1,583,011 parameters at 256×256×1 with three classes, two Dropouts."""
    import keras

    from cxrlib.models.build import build_model

    spec = get_preset("kermany-3class").run("cnn").spec
    model = build_model(spec.backbone, spec.variant, 3, spec.image_size, None, channels=spec.channels,
                        head=spec.head)
    assert model.count_params() == REPORTS["kermany-3class"].findings["parameters"].value
    assert sum(isinstance(layer, keras.layers.Dropout) for layer in model.layers) == 2


def test_the_readme_shows_every_course_as_its_preset_and_report_give_it() -> None:
    """The README's course tables are generated (python -m cxrlib presets --markdown), never
    typed: the section holds exactly what the presets and reports give, every reported number."""
    from pathlib import Path

    from cxrlib.course.tables import README_END, README_START, readme_tables

    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text(encoding="utf-8")
    section = readme.split(README_START, 1)[1].split(README_END, 1)[0].strip()
    assert section == readme_tables(), "regenerate: python -m cxrlib presets --markdown"
    for report in REPORTS.values():
        for results in report.results.values():
            for item in results.values():
                assert f"{item.value:g}" in section
