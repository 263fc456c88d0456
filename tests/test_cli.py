"""The command line: synth, data check, train, evaluate and report, end to end, with the exit
statuses and files that scripts outside the project rely on."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from cxrlib.apps.cli import main
from cxrlib.runs.records import read_record


def test_synth_then_data_check(tmp_path: Path, capsys) -> None:
    out = tmp_path / "synthetic"
    assert main(["synth", str(out), "--per-class", "5", "--size", "48", "--classes", "COVID",
                 "Normal", "--quiet"]) == 0
    assert len(list((out / "COVID" / "images").glob("*.png"))) == 5
    (out / "Normal" / "images" / "Normal-99.png").write_bytes(b"")  # a zero-byte file
    capsys.readouterr()
    assert main(["data", "check", str(out), "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["layout"] == "covid19-radiography"
    assert report["classes"] == {"COVID": 5, "Normal": 5}
    assert [u["path"] for u in report["unreadable"]] == [str((out / "Normal/images/Normal-99.png").resolve())]
    assert main(["data", "check", str(out)]) == 0
    assert "Normal-99.png" in capsys.readouterr().out


def test_user_errors_exit_2_with_one_clear_line(tmp_path: Path, capsys) -> None:
    assert main(["data", "check", str(tmp_path / "absent")]) == 2
    error = capsys.readouterr().err
    assert error.startswith("error:") and "does not exist" in error and "kaggle" in error.lower()
    assert main(["evaluate", "--model", str(tmp_path / "nope.keras"), "--data", str(tmp_path),
                 "--out", str(tmp_path / "o")]) == 2
    with pytest.raises(SystemExit):
        main(["train", "--data", str(tmp_path), "--backbone", "alexnet", "--variant", "v1",
              "--out", str(tmp_path)])


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> tuple[Path, Path]:
    """A tiny from-scratch run through the CLI."""
    root = tmp_path_factory.mktemp("cli")
    data = root / "data"
    assert main(["synth", str(data), "--per-class", "12", "--size", "48", "--seed", "3",
                 "--classes", "COVID", "Normal", "Viral Pneumonia", "--quiet"]) == 0
    run = root / "runs" / "cnn"
    assert main(["train", "--data", str(data), "--backbone", "scratch", "--variant", "scratch",
                 "--weights", "none", "--image-size", "32", "--epochs", "2", "--batch-size", "8",
                 "--samples-per-class", "10", "--seed", "0", "--out", str(run)]) == 0
    return data, run


def test_train_writes_record_and_model(trained) -> None:
    _, run = trained
    assert (run / "model.keras").is_file() and (run / "split.csv").is_file()
    record = read_record(run)
    assert record.model.backbone == "scratch" and record.model.image_size == 32
    assert record.spec.seed == 0 and record.training.epochs_run == 2
    assert record.dataset.n_train + record.dataset.n_val + record.dataset.n_test == 30
    assert record.dataset.samples_per_class == 10


def test_evaluate_on_own_test_split_and_on_a_foreign_folder(trained, tmp_path: Path) -> None:
    data, run = trained
    assert main(["evaluate", "--model", str(run / "model.keras"), "--data", str(data),
                 "--split", "test", "--out", str(tmp_path / "own")]) == 0
    own = json.loads((tmp_path / "own" / "metrics.json").read_text())
    assert own["n"] == read_record(run).dataset.n_test
    for key in ("accuracy", "auc_macro", "confusion_matrix", "classes", "per_class"):
        assert key in own
    # a folder the model never saw, with other spellings of the class names and an extra class
    foreign = tmp_path / "foreign"
    for source, target in [("COVID", "covid-19"), ("Normal", "NORMAL"), ("Viral Pneumonia", "viral pneumonia")]:
        shutil.copytree(data / source / "images", foreign / target)
    shutil.copytree(data / "Normal" / "images", foreign / "Cardiomegaly")
    assert main(["evaluate", "--model", str(run / "model.keras"), "--data", str(foreign),
                 "--split", "all", "--out", str(tmp_path / "foreign-eval")]) == 0
    metrics = json.loads((tmp_path / "foreign-eval" / "metrics.json").read_text())
    assert metrics["classes"] == read_record(run).dataset.classes
    assert metrics["n"] == 36  # every image of the three known classes; Cardiomegaly left out
    assert sum(map(sum, metrics["confusion_matrix"])) == 36


def test_report_from_records(trained, capsys) -> None:
    _, run = trained
    capsys.readouterr()
    assert main(["report", str(run.parent)]) == 0
    printed = capsys.readouterr().out
    assert "scratch-scratch" in printed and "Test Accuracy" in printed
    assert (run.parent / "table.md").is_file() and (run.parent / "table.csv").is_file()


@pytest.mark.realdata
@pytest.mark.slow
def test_from_scratch_on_real_radiographs_beats_chance(covid_sample: Path, tmp_path: Path) -> None:
    run = tmp_path / "real"
    assert main(["train", "--data", str(covid_sample), "--backbone", "scratch", "--variant", "scratch",
                 "--weights", "none", "--image-size", "64", "--epochs", "8", "--batch-size", "32",
                 "--samples-per-class", "150", "--seed", "0", "--out", str(run)]) == 0
    test = read_record(run).test
    assert test.n >= 60
    assert test.accuracy >= 0.6 and test.ci.accuracy[0] > 1 / 3  # chance is 1/3


def test_train_flags_map_onto_the_spec_in_one_place() -> None:
    """Every flag of TRAIN_FLAGS sets its field; a flag not given keeps the spec's value; a
    preset run is the starting point with --preset/--run."""
    from cxrlib.apps.cli import build_parser, spec_from_args
    from cxrlib.apps.train_flags import TRAIN_FLAGS
    from cxrlib.course.presets import get_preset
    from cxrlib.spec import flat_items, variant_spec

    def spec_of(*flags: str):
        return spec_from_args(build_parser().parse_args(["train", "--data", "d", "--out", "o", *flags]))

    plain = spec_of("--backbone", "densenet121", "--variant", "v3")
    assert plain == variant_spec("densenet121", "v3")   # the library's v3, documented as such
    course = spec_of("--preset", "radiography", "--run", "v3")
    want = get_preset("radiography").run("v3").spec
    assert (course.learning_rate, course.epochs, course.normalization) == \
        (want.learning_rate, want.epochs, "featurewise")
    tuned = spec_of("--preset", "radiography", "--run", "v2", "--zoom", "0.9,1.1", "--val", "0.2",
                    "--head-norm", "yes", "--early-stopping", "3", "--equalize", "none",
                    "--official-test", "yes")
    items = flat_items(tuned)
    assert items["augment.zoom"] == [0.9, 1.1] and items["split.val"] == 0.2
    assert items["split.official_test"] is True
    assert items["head_norm"] is True and items["early_stopping"] == 3
    assert items["augment.brightness"] == [0.8, 1.25]   # not given: the preset's
    assert set(field for field, _ in TRAIN_FLAGS.values()) <= set(items)   # every flag names a field
    with pytest.raises(ValueError, match="--run"):
        spec_of("--preset", "radiography")


def test_presets_command_prints_every_runs_full_spec(capsys) -> None:
    assert main(["presets", "siim"]) == 0
    out = capsys.readouterr().out
    assert "phase3-finetune-competition  (starts from phase1-frozen-union)" in out
    assert "augment.shear = 0.05" in out and "learning_rate = 0.2" in out
