"""Bad input, one test per case of issue 9: the exit status, one line on stderr that says what
is wrong and what to do (never a traceback), and no file outside the command's own new output
changed or removed (the input trees are hashed before and after)."""

from __future__ import annotations

import errno
import json
import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path
from typing import Sequence

import numpy as np
import pytest
from helpers import assert_one_line_error, cli_run, tree_hash
from PIL import Image

from cxrlib.apps import cli
from cxrlib.apps.cli import main
from cxrlib.data.datasets import DatasetError
from cxrlib.errors import InputError
from cxrlib.runs import run_folder
from cxrlib.runs import train as training
from cxrlib.runs.records import find_records, read_record
from cxrlib.spec import variant_spec

CLASSES = ["COVID", "Normal", "Viral Pneumonia"]


# --------------------------------------------------------------------------- helpers

def changes_outside(root: Path, before: dict[str, str], *outputs: Path) -> list[str]:
    """What changed under ``root`` since ``before`` (its :func:`tree_hash`) outside ``outputs``:
    the relative paths added, removed or rewritten, sorted (empty when nothing was)."""
    after = tree_hash(root)
    own = [out.relative_to(root).as_posix() for out in outputs]

    def inside(rel: str) -> bool:
        return any(rel == o + "/" or rel.startswith(o + "/") or rel == o for o in own)

    return sorted(rel for rel in before.keys() | after.keys()
                  if before.get(rel) != after.get(rel) and not inside(rel))


@pytest.fixture
def victim(tmp_path: Path) -> Path:
    """Someone else's folder beside the command's output (``tmp_path/victim``): an image, a text
    file and a nested folder, which no command may change, remove or empty."""
    folder = tmp_path / "victim"
    write_png(folder / "victim.png", seed=7)
    write_png(folder / "abs.png", seed=8)
    (folder / "k.txt").write_text("keep me")
    (folder / "deep").mkdir()
    (folder / "deep" / "notes.txt").write_text("years of work")
    return folder


def write_png(path: Path, seed: int = 0, size: int = 40) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    pixels = np.random.default_rng(seed).integers(0, 255, (size, size), dtype=np.uint8)
    Image.fromarray(pixels).save(path)
    return path


def train_args(data: Path, out: Path, *extra: str) -> list[str]:
    return ["train", "--data", data, "--backbone", "scratch", "--variant", "scratch",
            "--weights", "none", "--image-size", "32", "--epochs", "1", "--batch-size", "4",
            "--seed", "0", "--out", out, *extra]


@pytest.fixture(scope="module")
def made(tmp_path_factory) -> tuple[Path, Path]:
    """A tiny synthetic set and ONE finished tiny scratch run on it (copied by the tests)."""
    root = tmp_path_factory.mktemp("bad-input")
    data = root / "data"
    assert main(["synth", str(data), "--per-class", "4", "--size", "40", "--seed", "1",
                 "--classes", *CLASSES, "--quiet"]) == 0
    run = root / "run"
    assert main([str(a) for a in train_args(data, run)]) == 0
    return data, run


@pytest.fixture
def run_copy(made, tmp_path: Path) -> Path:
    """A private copy of the finished run (its split still points at the module's data)."""
    return Path(shutil.copytree(made[1], tmp_path / "run"))


@pytest.fixture(autouse=True)
def _logs_in_tmp(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("CXR_LOG_DIR", str(tmp_path / "logs"))


@pytest.fixture(autouse=True)
def _shared_inputs_untouched(made):
    """Whatever a test does, the module's dataset and finished run stay byte for byte."""
    before = [tree_hash(path) for path in made]
    yield
    assert [tree_hash(path) for path in made] == before


# --------------------------------------------------------------------------- data and runs lost

def test_synth_never_touches_files_it_did_not_write(tmp_path: Path, capsys) -> None:
    real = tmp_path / "kaggle"
    for name in ("COVID", "Normal"):
        for i in range(1, 8):
            write_png(real / name / "images" / f"{name}-{i}.png", seed=i)
    before = tree_hash(real)
    code, _, err = cli_run(["synth", real, "--per-class", "2", "--quiet"], capsys)
    assert code == 2
    assert_one_line_error(err, "synthetic.json", "new or empty folder")
    assert tree_hash(real) == before
    # a folder synth wrote, with a file the user put where synth would write next
    own = tmp_path / "own"
    assert cli_run(["synth", own, "--per-class", "2", "--size", "32", "--classes", "COVID",
                    "--quiet"], capsys)[0] == 0
    write_png(own / "COVID" / "images" / "COVID-3.png", seed=99)
    before = tree_hash(own)
    code, _, err = cli_run(["synth", own, "--per-class", "4", "--size", "32", "--classes", "COVID",
                            "--quiet"], capsys)
    assert code == 2
    assert_one_line_error(err, "COVID-3.png", "did not write")
    assert tree_hash(own) == before
    # a smaller re-run removes only what synth wrote
    assert cli_run(["synth", own, "--per-class", "1", "--size", "32", "--classes", "COVID",
                    "--quiet"], capsys)[0] == 0
    assert sorted(p.name for p in (own / "COVID" / "images").iterdir()) == ["COVID-1.png", "COVID-3.png"]
    assert tree_hash(own)["COVID/images/COVID-3.png"] == before["COVID/images/COVID-3.png"]


def test_train_with_bad_arguments_leaves_a_finished_run_untouched(made, run_copy: Path, capsys) -> None:
    data, _ = made
    before, data_before = tree_hash(run_copy), tree_hash(data)
    code, _, err = cli_run(train_args(data, run_copy, "--learning-rate", "0.5", "--image-size", "10"),
                           capsys)
    assert code == 2
    assert_one_line_error(err, "at least 16 px", "--image-size")
    assert tree_hash(run_copy) == before and tree_hash(data) == data_before


def test_a_failed_new_run_never_replaces_the_finished_one(made, run_copy: Path, capsys,
                                                          monkeypatch) -> None:
    data, _ = made
    before = tree_hash(run_copy)

    def crash(*args, **kwargs):
        raise RuntimeError("simulated crash in the middle of training")

    monkeypatch.setattr(training, "fit_model", crash)
    code, _, err = cli_run(train_args(data, run_copy, "--learning-rate", "0.5"), capsys)
    assert code == 1
    line = assert_one_line_error(err, "internal error", "full traceback in")
    assert Path(line.split("full traceback in ")[1].split(". Please")[0]).is_file()
    # the finished run is whole; only the new run's own staging folder was added
    assert tree_hash(run_copy, skip=(run_folder.PARTIAL,)) == before
    assert not (run_copy / run_folder.LOCK_FILE).exists()
    shutil.copy(run_copy / "record.json", run_copy / run_folder.PARTIAL / "record.json")
    assert [r.folder for r in find_records(run_copy)] == [run_copy]  # not a half-moved one


def _hold_run_lock(out: Path) -> subprocess.Popen:
    """Another process holding ``out``'s run lock, as a running train does (until its stdin closes)."""
    holder = subprocess.Popen(
        [sys.executable, "-c", ("import sys; from pathlib import Path; "
                                "from cxrlib.runs.run_folder import run_lock\n"
                                f"with run_lock(Path({str(out)!r})):\n"
                                " print('held', flush=True); sys.stdin.read()")],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
        env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)})
    assert holder.stdout.readline().strip() == "held"
    return holder


def test_a_second_train_into_a_busy_folder_is_refused(made, run_copy: Path, capsys) -> None:
    data, _ = made
    holder = _hold_run_lock(run_copy)
    try:
        before = tree_hash(run_copy)
        code, _, err = cli_run(train_args(data, run_copy, "--force"), capsys)
        assert code == 2
        assert_one_line_error(err, "in use by another run", f"pid {holder.pid}")
        assert tree_hash(run_copy) == before
    finally:
        holder.communicate("", timeout=60)
    assert not (run_copy / run_folder.LOCK_FILE).exists()


def test_a_lock_left_by_a_killed_run_is_taken_over(tmp_path: Path) -> None:
    out = tmp_path / "run"
    holder = _hold_run_lock(out)
    with pytest.raises(run_folder.RunFolderError, match=f"pid {holder.pid}"), run_folder.run_lock(out):
        pass
    holder.kill()  # kill -9 leaves the lock file of a process that no longer exists
    holder.wait()
    assert json.loads((out / run_folder.LOCK_FILE).read_text())["pid"] == holder.pid
    with run_folder.run_lock(out) as lock:
        assert json.loads(lock.read_text())["pid"] == os.getpid()
    assert not lock.exists()


def test_resume_needs_the_same_configuration(made, run_copy: Path, capsys, monkeypatch) -> None:
    import keras

    data, _ = made

    class PowerCut(keras.callbacks.Callback):
        def on_epoch_end(self, epoch, logs=None):
            raise RuntimeError("simulated power cut")

    real_fit = training.fit_model
    monkeypatch.setattr(training, "fit_model",   # the state saved after every epoch
                        lambda *a, **k: real_fit(*a[:12], [PowerCut()], a[13], backup_every_s=0))
    code, _, err = cli_run(train_args(data, run_copy, "--learning-rate", "0.5", "--epochs", "3"),
                           capsys)
    assert code == 1 and "simulated power cut" in err
    monkeypatch.setattr(training, "fit_model", real_fit)
    partial = run_copy / run_folder.PARTIAL  # the interrupted run, beside the finished one
    assert (partial / "backup").is_dir()
    before = tree_hash(run_copy)
    # neither the interrupted run's settings nor the finished run's (the recipe's 0.002)
    code, _, err = cli_run(train_args(data, run_copy, "--learning-rate", "0.003"), capsys)
    assert code == 2
    assert_one_line_error(err, "interrupted run with another configuration",
                          "learning_rate 0.5 → 0.003", "epochs 3 → 1", "--force")
    assert tree_hash(run_copy) == before
    code, _, err = cli_run(train_args(data, run_copy, "--learning-rate", "0.003", "--force"), capsys)
    assert code == 0, err
    assert not partial.exists()  # the stale backup is gone with the finished run
    record = read_record(run_copy)
    assert record.spec.learning_rate == 0.003
    assert record.training.resumed is False


def test_evaluate_split_test_refuses_another_folder(made, run_copy: Path, tmp_path: Path,
                                                    capsys) -> None:
    data, _ = made
    other = tmp_path / "other"
    write_png(other / "COVID" / "x.png")
    write_png(other / "Normal" / "y.png")
    before = tree_hash(other)
    model = run_copy / "model.keras"
    for bad, fragments in [(other, ("--split all", "test split")),
                           (tmp_path / "missing", ("not a folder",))]:
        code, _, err = cli_run(["evaluate", "--model", model, "--data", bad, "--out",
                                tmp_path / "eval"], capsys)
        assert code == 2
        assert_one_line_error(err, *fragments)
    code, _, err = cli_run(["evaluate", "--model", model, "--split", "all", "--out",
                            tmp_path / "eval"], capsys)
    assert code == 2
    assert_one_line_error(err, "--data")
    assert not (tmp_path / "eval").exists() and tree_hash(other) == before
    # the honoured meanings: the run's own folder (or none) and --split all
    assert cli_run(["evaluate", "--model", model, "--out", tmp_path / "own"], capsys)[0] == 0
    assert json.loads((tmp_path / "own" / "metrics.json").read_text())["data"] == str(data.resolve())


def assert_train_flag_refused(made, tmp_path: Path, capsys, flag: str, value: str) -> None:
    """``train`` with ``flag value`` exits 2 with one line naming the flag, and writes nothing."""
    data, _ = made
    argv = train_args(data, tmp_path / "run")
    argv[argv.index(flag) + 1] = value
    code, _, err = cli_run(argv, capsys)
    assert code == 2
    assert_one_line_error(err, flag, "at least 1")
    assert not (tmp_path / "run").exists()


# --------------------------------------------------------------------------- silent wrong results

@pytest.mark.parametrize("epochs", ["0", "-3"])
def test_zero_or_negative_epochs_are_refused(made, tmp_path: Path, capsys, epochs: str) -> None:
    assert_train_flag_refused(made, tmp_path, capsys, "--epochs", epochs)
    with pytest.raises(ValueError, match="--variant v0"):
        training.check_arguments(variant_spec("scratch", "scratch"), CLASSES, _train_rows(), tmp_path,
                                 image_size=32, epochs=0)


def _train_rows():
    import pandas as pd

    return pd.DataFrame({"label": CLASSES, "split": "train", "path": ["a", "b", "c"]})


def test_image_size_zero_is_refused_not_the_default(made, tmp_path: Path, capsys) -> None:
    assert_train_flag_refused(made, tmp_path, capsys, "--image-size", "0")
    with pytest.raises(ValueError, match="at least 16 px"):
        training.check_arguments(variant_spec("scratch", "scratch"), CLASSES, _train_rows(), tmp_path,
                                 image_size=0, epochs=1)


def test_samples_per_class_zero_is_refused_not_all(made, tmp_path: Path, capsys) -> None:
    from cxrlib.data.datasets import load_manifest
    from cxrlib.data.splits import prepare_split, sample_per_class
    from cxrlib.spec import Split

    data, _ = made
    code, _, err = cli_run(train_args(data, tmp_path / "run", "--samples-per-class", "0"), capsys)
    assert code == 2
    assert_one_line_error(err, "--samples-per-class", "at least 1")
    assert not (tmp_path / "run").exists()
    with pytest.raises(ValueError, match="greater than or equal to 1"):
        prepare_split(data, Split(samples_per_class=0))
    with pytest.raises(ValueError, match="at least 1"):
        sample_per_class(load_manifest(data), 0)


def test_scratch_run_records_no_imagenet_weights(made) -> None:
    _, run = made
    assert read_record(run).model.weights is None
    with pytest.raises(ValueError, match="no pretrained weights"):
        training.train(_split_of(made), CLASSES,
                       variant_spec("scratch", "scratch", weights="some.h5", image_size=32, epochs=1),
                       run.parent / "never")
    assert not (run.parent / "never").exists()


def test_scratch_with_the_default_weights_records_none(made, tmp_path: Path, capsys) -> None:
    data, _ = made
    argv = train_args(data, tmp_path / "run")
    del argv[argv.index("--weights"):argv.index("--weights") + 2]
    assert cli_run(argv, capsys)[0] == 0
    assert read_record(tmp_path / "run").model.weights is None


def _split_of(made):
    from cxrlib.data.splits import prepare_split
    from cxrlib.spec import Split

    return prepare_split(made[0], Split())[0]


def test_diagnose_refuses_a_model_that_does_not_fit_its_record(run_copy: Path, made, tmp_path: Path,
                                                               capsys) -> None:
    from cxrlib.models.build import build_model

    build_model("scratch", "scratch", 2, image_size=32, weights=None, binary=True).save(
        run_copy / "model.keras")
    images = tmp_path / "images"
    write_png(images / "a.png")
    before = tree_hash(images)
    code, _, err = cli_run(["diagnose", images, "--model", run_copy / "model.keras", "--out",
                            tmp_path / "dx", "--quiet"], capsys)
    assert code == 2
    assert_one_line_error(err, "1 output(s)", "3 classes", "different runs")
    assert tree_hash(images) == before and not (tmp_path / "dx" / "summary.csv").exists()


def test_loose_images_beside_the_images_folder_are_reported(tmp_path: Path, caplog) -> None:
    from cxrlib.data.datasets import load_manifest

    for name in ("COVID", "Normal"):
        write_png(tmp_path / name / "images" / f"{name}-1.png")
    write_png(tmp_path / "COVID" / "stray.png")
    with caplog.at_level("WARNING"):
        manifest = load_manifest(tmp_path)
    assert len(manifest) == 2
    assert any("stray.png" in r.getMessage() and "images/" in r.getMessage() for r in caplog.records)


@pytest.mark.parametrize("inner", ["COVID/images", "Normal"])
def test_a_one_class_folder_is_read_and_training_says_why_not(tmp_path: Path, capsys,
                                                              inner: str) -> None:
    data = tmp_path / "one"
    for i in range(20):
        write_png(data / inner / f"x{i}.png", seed=i)
    before = tree_hash(data)
    code, out, err = cli_run(["data", "check", data, "--json"], capsys)
    assert code == 0, err
    assert sum(json.loads(out)["classes"].values()) == 20
    code, _, err = cli_run(train_args(data, tmp_path / "run"), capsys)
    assert code == 2
    assert_one_line_error(err, "at least two classes")
    assert not (tmp_path / "run").exists() and tree_hash(data) == before


def test_an_undefined_macro_auc_says_why() -> None:
    from cxrlib.runs.metrics import compute_metrics

    probs = np.array([[0.7, 0.2, 0.1], [0.2, 0.7, 0.1], [0.6, 0.3, 0.1]])
    metrics = compute_metrics(np.array([0, 1, 0]), probs, CLASSES, bootstrap=10)
    assert metrics["auc_macro"] is None
    assert "Viral Pneumonia" in metrics["auc_macro_note"]


# --------------------------------------------------------------------------- tracebacks

def test_diagnose_with_a_symlink_loop_reports_it_as_a_row(run_copy: Path, tmp_path: Path,
                                                          capsys) -> None:
    images = tmp_path / "images"
    write_png(images / "good.png")
    (images / "loop.png").symlink_to("loop.png")
    (images / "sub").mkdir()
    (images / "sub" / "self").symlink_to("self")
    before = tree_hash(images)
    code, _, err = cli_run(["diagnose", images, "--model", run_copy / "model.keras", "--out",
                            tmp_path / "dx", "--quiet"], capsys)
    assert code == 0, err
    import pandas as pd

    summary = pd.read_csv(tmp_path / "dx" / "summary.csv").fillna("")
    assert summary["file"].tolist() == ["good.png", "loop.png"]
    assert summary.loc[0, "error"] == "" and summary.loc[1, "error"] != ""
    assert tree_hash(images) == before


def test_out_that_is_a_file(made, run_copy: Path, tmp_path: Path, capsys) -> None:
    data, _ = made
    target = tmp_path / "a-file"
    target.write_text("keep me")
    for argv in (train_args(data, target),
                 ["evaluate", "--model", run_copy / "model.keras", "--out", target],
                 ["diagnose", data, "--model", run_copy / "model.keras", "--out", target, "--quiet"],
                 ["synth", target, "--per-class", "1", "--quiet"]):
        code, _, err = cli_run(argv, capsys)
        assert code == 2, argv
        assert_one_line_error(err, str(target), "file")
        assert target.read_text() == "keep me"


def test_a_garbage_weights_file(made, tmp_path: Path, capsys) -> None:
    data, _ = made
    garbage = tmp_path / "weights.h5"
    garbage.write_bytes(b"this is not an HDF5 file" * 100)
    code, _, err = cli_run(["train", "--data", data, "--backbone", "vgg16", "--variant", "frozen",
                            "--weights", garbage, "--image-size", "32", "--epochs", "1",
                            "--out", tmp_path / "run"], capsys)
    assert code == 2
    assert_one_line_error(err, "Cannot load the weights file", "--weights")
    assert not (tmp_path / "run").exists()


def test_batch_size_zero(made, tmp_path: Path, capsys) -> None:
    assert_train_flag_refused(made, tmp_path, capsys, "--batch-size", "0")


def test_synth_guard_is_one_line(tmp_path: Path, capsys) -> None:
    folder = tmp_path / "notes"
    folder.mkdir()
    (folder / "thesis.txt").write_text("years of work")
    code, _, err = cli_run(["synth", folder, "--per-class", "1", "--quiet"], capsys)
    assert code == 2
    assert_one_line_error(err, "not empty", "synthetic.json")
    assert (folder / "thesis.txt").read_text() == "years of work"
    assert sorted(p.name for p in folder.iterdir()) == ["thesis.txt"]


@pytest.mark.parametrize("backbone, variant, size, minimum", [
    ("scratch", "scratch", "10", "16"), ("densenet121", "frozen", "20", "32")])
def test_image_size_below_the_backbone_minimum(made, tmp_path: Path, capsys, backbone: str,
                                               variant: str, size: str, minimum: str) -> None:
    data, _ = made
    code, _, err = cli_run(["train", "--data", data, "--backbone", backbone, "--variant", variant,
                            "--weights", "none", "--image-size", size, "--out", tmp_path / "run"],
                           capsys)
    assert code == 2
    assert_one_line_error(err, f"at least {minimum} px", backbone)
    assert not (tmp_path / "run").exists()


def test_a_truncated_model_file(run_copy: Path, tmp_path: Path, capsys) -> None:
    model = run_copy / "model.keras"
    model.write_bytes(model.read_bytes()[: model.stat().st_size // 2])
    before = tree_hash(run_copy)
    code, _, err = cli_run(["evaluate", "--model", model, "--out", tmp_path / "eval"], capsys)
    assert code == 2
    line = assert_one_line_error(err, "truncated", str(model))
    assert "not found" not in line.lower()
    assert tree_hash(run_copy) == before and not (tmp_path / "eval").exists()


def test_a_wrong_architecture_model_file(run_copy: Path, tmp_path: Path, capsys) -> None:
    from cxrlib.models.build import build_model

    other = tmp_path / "other.keras"
    build_model("scratch", "scratch", 5, image_size=48, weights=None).save(other)
    model = run_copy / "model.keras"
    mixed = tmp_path / "mixed.keras"  # this run's architecture, another model's weights
    with zipfile.ZipFile(model) as mine, zipfile.ZipFile(other) as theirs, \
            zipfile.ZipFile(mixed, "w") as out:
        for name in mine.namelist():
            source = theirs if name.endswith(".h5") else mine
            out.writestr(name, source.read(name))
    shutil.copy(mixed, model)
    before = tree_hash(run_copy)
    code, _, err = cli_run(["evaluate", "--model", model, "--out", tmp_path / "eval"], capsys)
    assert code == 2
    assert_one_line_error(err, "Cannot load the model")
    assert tree_hash(run_copy) == before and not (tmp_path / "eval").exists()


def test_an_internal_error_is_one_line_and_logged(tmp_path: Path, capsys, monkeypatch) -> None:
    def broken(args):
        raise KeyError("a bug, not a user error")

    monkeypatch.setitem(cli.COMMANDS, "report", broken)
    (tmp_path / "runs").mkdir()
    code, _, err = cli_run(["report", tmp_path / "runs"], capsys)
    assert code == 1
    assert not any((tmp_path / "runs").iterdir())
    line = assert_one_line_error(err, "internal error", "KeyError", "full traceback in")
    logs = list((tmp_path / "logs").glob("cxr-*.log"))
    assert len(logs) == 1 and str(logs[0]) in line
    assert "Traceback" in logs[0].read_text() and "a bug, not a user error" in logs[0].read_text()


# --------------------------------------------------------------------------- nothing lost, round 2

IMAGE_CSV, STUDY_CSV = "train_image_level.csv", "train_study_level.csv"


def write_png_bomb(path: Path, side: int) -> Path:
    """A ``side`` × ``side`` grey PNG of zeros, written row by row (never held in memory): at
    20000 px it is about 400 KB on disk and 400 MB decoded, a decompression bomb."""
    import struct
    import zlib

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    pack = zlib.compressobj(9)
    rows = b"".join(pack.compress(bytes(side + 1)) for _ in range(side)) + pack.flush()
    header = struct.pack(">IIBBBBB", side, side, 8, 0, 0, 0, 0)  # 8-bit grey
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", rows)
                     + chunk(b"IEND", b""))
    return path


def one_warning(caplog, logger: str, *fragments: str) -> str:
    """The single one-line WARNING ``logger`` logged, mentioning every fragment."""
    found = [r.getMessage() for r in caplog.records
             if r.levelname == "WARNING" and r.name == logger]
    assert len(found) == 1, found
    assert "\n" not in found[0], found[0]
    for fragment in fragments:
        assert fragment.lower() in found[0].lower(), found[0]
    return found[0]


def hostile_synth_folder(host: Path, victim: Path) -> Path:
    """A folder whose ``synthetic.json`` claims files outside it, by a relative and an absolute path."""
    host.mkdir()
    (host / "synthetic.json").write_text(json.dumps({
        "per_class": 1, "classes": ["COVID"],
        "files": ["../victim/k.txt", "../victim/deep/notes.txt", str(victim / "abs.png")]}))
    return host


def test_synth_trusts_only_the_files_it_writes_inside_its_folder(tmp_path: Path, victim: Path,
                                                                 capsys, caplog) -> None:
    host = hostile_synth_folder(tmp_path / "host", victim)
    before = tree_hash(tmp_path)
    with caplog.at_level("WARNING"):
        code, _, err = cli_run(["synth", host, "--per-class", "2", "--size", "64", "--quiet"], capsys)
    assert code == 0, err
    one_warning(caplog, "cxrlib.data.synthetic", "synthetic.json", "3 file(s)", "../victim/",
                "left alone")
    assert changes_outside(tmp_path, before, host) == []
    listed = json.loads((host / "synthetic.json").read_text())["files"]
    assert not [f for f in listed if "victim" in f]
    # a class folder that is a link out of the folder: refused before anything is written
    linked = tmp_path / "linked"
    linked.mkdir()
    (linked / "synthetic.json").write_text(json.dumps({"per_class": 1, "classes": ["COVID"], "files": []}))
    (linked / "COVID").symlink_to(victim)
    before = tree_hash(tmp_path)
    code, _, err = cli_run(["synth", linked, "--per-class", "1", "--classes", "COVID", "--quiet"],
                           capsys)
    assert code == 2
    assert_one_line_error(err, "COVID", "symbolic link", "new or empty folder")
    assert changes_outside(tmp_path, before) == []


def siim_set(folder: Path) -> Path:
    """A small synthetic SIIM set (four studies at 32 px)."""
    from cxrlib.data.siim_synthetic import generate_siim_like

    return generate_siim_like(folder, n_studies=4, size=32, progress=False)


def hostile_siim_folder(host: Path, victim: Path) -> Path:
    """A synthetic SIIM set whose ``train_image_level.csv`` lists ids that lead out of it, by a
    relative and an absolute path."""
    siim_set(host)
    edit_csv(host / IMAGE_CSV, 0, "id", "../../victim/victim_image")
    edit_csv(host / IMAGE_CSV, 1, "id", str(victim / "abs") + "_image")
    return host


def test_the_siim_generator_trusts_only_the_ids_it_draws(tmp_path: Path, victim: Path,
                                                        caplog) -> None:
    from cxrlib.data.siim_synthetic import generate_siim_like

    host = hostile_siim_folder(tmp_path / "host", victim)
    before = tree_hash(tmp_path)
    with caplog.at_level("WARNING"):  # the same parameters, but not the set it wrote: redrawn
        assert generate_siim_like(host, n_studies=4, size=32, progress=False) == host
    one_warning(caplog, "cxrlib.data.siim_synthetic", "train_image_level.csv", "2 image id(s)",
                "left alone")
    assert changes_outside(tmp_path, before, host) == []
    listed = (host / IMAGE_CSV).read_text().splitlines()[1:]
    assert len(listed) == 4 and all((host / "train" / f"{row.split('_image')[0]}.png").is_file()
                                    for row in listed)


def test_diagnose_makes_an_overlong_output_name_a_row(run_copy: Path, tmp_path: Path,
                                                      victim: Path, capsys, caplog) -> None:
    import pandas as pd

    images = tmp_path / "images"
    write_png(images / "good.png")
    long_one = Path("a" * 200) / ("b" * 200 + ".png")  # each part fits; the flat name does not
    write_png(images / long_one, seed=1)
    out = tmp_path / "dx"
    before = tree_hash(tmp_path)
    with caplog.at_level("WARNING"):
        code, printed, err = cli_run(["diagnose", images, "--model", run_copy / "model.keras",
                                      "--out", out, "--quiet"], capsys)
    assert code == 0, err
    assert "1 images diagnosed, 1 unreadable" in printed
    summary = pd.read_csv(out / "summary.csv").fillna("").set_index("file")
    assert summary.loc["good.png", "error"] == "" and (out / summary.loc["good.png", "figure"]).is_file()
    error = summary.loc[long_one.as_posix(), "error"]
    assert "too long" in error and "shorten" in error and "\n" not in error
    one_warning(caplog, "cxrlib.apps.diagnose", "too long", "shorten")
    assert changes_outside(tmp_path, before, out) == []


def test_a_decompression_bomb_is_a_logged_skip_in_every_command(made, run_copy: Path,
                                                               tmp_path: Path, victim: Path,
                                                               capsys) -> None:
    import pandas as pd

    from cxrlib.data.pixels import MAX_PIXELS

    data = Path(shutil.copytree(made[0], tmp_path / "data"))
    bomb = write_png_bomb(data / "COVID" / "images" / "COVID-99.png", 20000)
    assert bomb.stat().st_size < 500_000 and 20000 ** 2 > MAX_PIXELS
    images = tmp_path / "images"
    write_png(images / "good.png")
    shutil.copy(bomb, images / "bomb.png")
    before = tree_hash(tmp_path)
    reason = ("too large", "400,000,000 pixels", f"{MAX_PIXELS:,}", "downscale it")

    code, printed, err = cli_run(["data", "check", data, "--json"], capsys)
    assert code == 0, err
    (unreadable,) = json.loads(printed)["unreadable"]
    assert unreadable["path"] == str(bomb.resolve())
    assert all(f.lower() in unreadable["error"].lower() for f in reason), unreadable

    code, _, err = cli_run(["diagnose", images, "--model", run_copy / "model.keras",
                            "--out", tmp_path / "dx", "--quiet"], capsys)
    assert code == 0, err
    summary = pd.read_csv(tmp_path / "dx" / "summary.csv").fillna("").set_index("file")
    assert summary.loc["good.png", "error"] == ""
    assert all(f.lower() in summary.loc["bomb.png", "error"].lower() for f in reason)

    code, _, err = cli_run(train_args(data, tmp_path / "run"), capsys)
    assert code == 0, err
    skipped = read_record(tmp_path / "run").skipped
    assert {s.path for s in skipped} == {str(bomb.resolve())}
    assert all(f.lower() in s.error.lower() for s in skipped for f in reason)
    assert changes_outside(tmp_path, before, tmp_path / "dx", tmp_path / "run") == []


def edit_csv(path: Path, row: int | None = None, column: str | None = None, value: str = "",
             drop: Sequence[str] = ()) -> None:
    """Set one cell of a CSV (``row`` counts data rows from 0) and/or drop some columns."""
    import pandas as pd

    table = pd.read_csv(path, dtype=str, keep_default_na=False)
    if row is not None:
        table.loc[row, column] = value
    table.drop(columns=list(drop)).to_csv(path, index=False)


def write_dim_table(root: Path, dim0: Sequence[str]) -> None:
    """A resized copy's metadata CSV (``image_id, dim0, dim1``) for every image of the set."""
    import pandas as pd

    ids = pd.read_csv(root / IMAGE_CSV)["id"]
    pd.DataFrame({"image_id": ids, "dim0": list(dim0), "dim1": "512"}).to_csv(root / "meta.csv",
                                                                               index=False)


@pytest.mark.parametrize("break_it, fragments", [
    (lambda root: edit_csv(root / IMAGE_CSV, drop=["StudyInstanceUID"]),
     (IMAGE_CSV, "no column 'StudyInstanceUID'", "restore")),
    (lambda root: edit_csv(root / IMAGE_CSV, 1, "boxes", "[1, 2]"),
     (f"{IMAGE_CSV} line 3", "boxes must be a list", "[1, 2]", "fix that row")),
    (lambda root: edit_csv(root / IMAGE_CSV, 1, "boxes", "[{'x': 'abc', 'y': 1, 'width': 5, 'height': 5}]"),
     (f"{IMAGE_CSV} line 3", "box 'x' must be a number", "'abc'", "fix that row")),
    (lambda root: write_dim_table(root, ["512", "0", "512", "512"]),
     ("meta.csv line 3", "dim0 must be a positive number", "fix that row")),
    (lambda root: edit_csv(root / STUDY_CSV, drop=["Negative for Pneumonia", "Typical Appearance",
                                                   "Indeterminate Appearance", "Atypical Appearance"]),
     (STUDY_CSV, "none of the study class columns", "restore")),
])
def test_siim_csv_problems_name_the_file_the_line_and_the_fix(tmp_path: Path, victim: Path, capsys,
                                                              break_it, fragments) -> None:
    root = siim_set(tmp_path / "siim")
    break_it(root)
    before = tree_hash(tmp_path)
    code, _, err = cli_run(["data", "check", root], capsys)
    assert code == 2
    assert_one_line_error(err, str(root), *fragments)
    assert changes_outside(tmp_path, before) == []


def test_a_layout_that_does_not_fit_the_folder_says_so(made, tmp_path: Path, victim: Path,
                                                      capsys) -> None:
    data, _ = made
    before = tree_hash(tmp_path)
    for layout, fragments in (("kermany", ("not in the kermany layout", "train/NORMAL")),
                              ("siim", ("not in the SIIM layout", "train_study_level.csv"))):
        code, _, err = cli_run(["data", "check", data, "--layout", layout], capsys)
        assert code == 2
        assert_one_line_error(err, str(data), *fragments, "--layout auto")
    assert changes_outside(tmp_path, before) == []


def test_the_commands_that_write_stay_inside_their_output(run_copy: Path, tmp_path: Path,
                                                          victim: Path, capsys) -> None:
    from cxrlib.data.siim_synthetic import generate_siim_like

    images = tmp_path / "images"
    write_png(images / "a.png")
    write_png(images / "sub" / "b.png", seed=2)
    host = hostile_synth_folder(tmp_path / "host", victim)
    siim = hostile_siim_folder(tmp_path / "siim", victim)
    model = run_copy / "model.keras"
    commands = [  # (its output, the command: True when it succeeded)
        (host, lambda: cli_run(["synth", host, "--per-class", "1", "--size", "32", "--quiet"],
                               capsys)[0] == 0),
        (siim, lambda: generate_siim_like(siim, n_studies=3, size=32, progress=False) == siim),
        (tmp_path / "dx", lambda: cli_run(["diagnose", images, "--model", model, "--out",
                                           tmp_path / "dx", "--quiet"], capsys)[0] == 0),
        (images / "dx", lambda: cli_run(["diagnose", images, "--model", model, "--out",
                                         images / "dx", "--quiet"], capsys)[0] == 0),
    ]
    for out, command in commands:
        before = tree_hash(tmp_path)
        assert command(), out
        assert changes_outside(tmp_path, before, out) == [], out
        assert len(tree_hash(out)) > 1, out  # it did write there


def _raise(error: BaseException) -> None:
    raise error


@pytest.mark.parametrize("failure, status, fragments", [
    (lambda tmp: np.stack([]), 1, ("internal error", "ValueError", "full traceback in")),
    (lambda tmp: open(tmp / ("x" * 300), "w"), 1, ("internal error", "OSError", "full traceback in")),
    (lambda tmp: _raise(OSError(errno.ENOSPC, "No space left on device", str(tmp / "runs" / "t.csv"))),
     2, ("the disk is full", "{tmp}/runs", "free some space")),
    (lambda tmp: _raise(InputError("bad value; give 3")), 2, ("bad value; give 3",)),
    (lambda tmp: _raise(DatasetError("no dataset; make one")), 2, ("no dataset; make one",)),
])
def test_only_cxrlibs_user_errors_exit_2(tmp_path: Path, capsys, monkeypatch, failure, status: int,
                                         fragments: tuple[str, ...]) -> None:
    """A numpy ValueError or an odd OSError is a bug (exit 1, logged); cxrlib's UserError and a
    full disk are the user's to fix (exit 2, one line, no log)."""
    monkeypatch.setitem(cli.COMMANDS, "report", lambda args: failure(tmp_path))
    (tmp_path / "runs").mkdir()
    code, _, err = cli_run(["report", tmp_path / "runs"], capsys)
    assert code == status
    line = assert_one_line_error(err, *(f.format(tmp=tmp_path) for f in fragments))
    logs = list((tmp_path / "logs").glob("cxr-*.log"))
    assert len(logs) == (1 if status == 1 else 0) and all(str(log) in line for log in logs)


# --------------------------------------------------------------------------- cxr notebooks

@pytest.fixture
def no_kernel(monkeypatch) -> list[str]:
    """papermill's execution replaced by a recorder (the checks run before any kernel would)."""
    import papermill

    ran: list[str] = []
    monkeypatch.setattr(papermill, "execute_notebook", lambda path, *a, **k: ran.append(Path(path).name))
    for variable in ("COVID_DIR", "KERMANY_DIR", "SIIM_DIR", "EXTERNAL_DIR"):
        monkeypatch.delenv(variable, raising=False)
    return ran


@pytest.mark.parametrize("parameters, fragments", [
    (["-p", "COVID_DIR", "/missing/covid"], ["-p COVID_DIR /missing/covid", "no such folder",
                                              "leave COVID_DIR out for synthetic data"]),
    (["-p", "EPOCH", "5"], ["parameter EPOCH", "did you mean EPOCHS?"]),
    (["-p", "EPOCHS", "abc"], ["-p EPOCHS 'abc'", "00_setup_and_data.ipynb", "EPOCHS = 20",
                               "give a whole number"]),
    (["-p", "SMOKE", "yes"], ["SMOKE = False", "give True or False"])])
def test_notebooks_refuse_bad_parameters_before_anything_runs(tmp_path: Path, victim: Path, no_kernel,
                                                              capsys, parameters, fragments) -> None:
    before = tree_hash(tmp_path)
    code, out, err = cli_run(["notebooks", "--out", tmp_path / "nb", "--only", "00", *parameters], capsys)
    assert code == 2
    assert_one_line_error(err, *fragments)
    assert no_kernel == [] and "▶" not in out
    assert changes_outside(tmp_path, before) == []


def test_notebooks_say_the_synthetic_fallback_on_the_terminal(tmp_path: Path, victim: Path, no_kernel,
                                                              capsys) -> None:
    before = tree_hash(victim)
    code, out, err = cli_run(["notebooks", "--out", tmp_path / "nb", "--only", "00", "06",
                              "-p", "EPOCHS", "1"], capsys)
    assert code == 0 and err == ""
    assert no_kernel == ["00_setup_and_data.ipynb", "06_pneumonia.ipynb"]
    lines = out.splitlines()
    assert lines[0].startswith("No COVID_DIR given: notebook 00 uses synthetic data")
    assert lines[1].startswith("No KERMANY_DIR given: notebook 06 uses synthetic data")
    assert tree_hash(victim) == before


def write_failing_notebook(path: Path) -> Path:
    """A two-cell notebook: its parameters cell, then a cell that raises with its own message."""
    import nbformat

    notebook = nbformat.v4.new_notebook(metadata={
        "kernelspec": {"name": "python3", "display_name": "Python 3", "language": "python"},
        "language_info": {"name": "python"}})
    notebook.cells = [nbformat.v4.new_code_cell("EPOCHS = 20", metadata={"tags": ["parameters"]}),
                      nbformat.v4.new_code_cell("if EPOCHS % 2:\n"
                                                "    raise ValueError(f'EPOCHS must be even, not {EPOCHS}')")]
    nbformat.write(notebook, path)
    return path


def test_a_failing_notebook_names_the_cell_its_error_and_the_executed_copy(
        tmp_path: Path, victim: Path, capsys, monkeypatch) -> None:
    from cxrlib.course import runner

    (tmp_path / "book").mkdir()
    notebook = write_failing_notebook(tmp_path / "book" / "99_fails.ipynb")
    monkeypatch.setattr(runner, "list_notebooks", lambda folder, only: [notebook])
    before = tree_hash(tmp_path)
    code, _, err = cli_run(["notebooks", "--out", tmp_path / "nb", "-p", "EPOCHS", "5"], capsys)
    assert code == 1
    copy = (tmp_path / "nb" / "99_fails.ipynb").resolve()
    line = assert_one_line_error(err, "99_fails.ipynb failed in cell 2",
                                 "ValueError: EPOCHS must be even, not 5", f"open {copy}")
    assert "internal error" not in line and copy.is_file()
    assert changes_outside(tmp_path, before, tmp_path / "nb") == []


# --------------------------------------------------------------------------- cxr report on garbage

def _two_classes(record: dict) -> None:
    """The test section of a two-class run, with a valid rising ROC curve."""
    scores = {"precision": 0.75, "recall": 0.75, "specificity": 0.75, "f1": 0.75, "support": 3, "auc": 0.8}
    record["test"].update(classes=["COVID", "Normal"], confusion_matrix=[[2, 1], [0, 3]],
                          roc={"fpr": [0.0, 0.25, 1.0], "tpr": [0.0, 0.75, 1.0], "thresholds": [1.0, 0.5, 0.0]},
                          per_class={"COVID": scores, "Normal": scores},
                          operating_point={"threshold": 0.5, "sensitivity": 0.75, "specificity": 0.75,
                                           "target": 0.99})


def _garbage(section: str, value, two_classes: bool = False):
    def change(record: dict) -> None:
        if two_classes:
            _two_classes(record)
        target = record["test"]
        *parents, key = section.split(".")
        for parent in parents:
            target = target[parent]
        target[key] = value
    return change


# a test section of the right types that cannot be drawn: the report leaves out that figure
REPORT_GARBAGE = {
    "ci backwards": (_garbage("ci.accuracy", [0.9, 0.1]), "accuracy interval", "not [low, high]",
                     "comparison"),
    "confusion of the wrong size": (_garbage("confusion_matrix", [[1, 2], [3, 4]]), "confusion matrix",
                                    "not a 3 x 3 table of counts", "confusion"),
    "confusion with a negative count": (_garbage("confusion_matrix", [[1, 0, 0], [0, -1, 0], [0, 0, 1]]),
                                        "confusion matrix", "not a 3 x 3 table of counts", "confusion"),
    "roc beyond 1": (_garbage("roc.fpr", [0.0, 0.5, 2.0], two_classes=True), "ROC curve",
                     "test.roc.fpr", "roc"),
    "roc falling": (_garbage("roc.tpr", [0.0, 0.9, 0.2], two_classes=True), "ROC curve",
                    "falls somewhere", "roc"),
    "operating point beyond 1": (_garbage("operating_point.sensitivity", 1.5, two_classes=True),
                                 "ROC operating point", "not a threshold", None),
}

# a test section of the wrong types: the record itself is refused, the report written without it
REFUSED_GARBAGE = {
    "ci a string": (_garbage("ci", "garbage"), "test.ci: Input should be a valid dictionary"),
    "confusion of text": (_garbage("confusion_matrix", [["a", "b", "c"]] * 3),
                          "test.confusion_matrix.0.0: Input should be a valid integer"),
    "roc of garbage": (_garbage("roc.fpr", [0.0, "x", 2.0], two_classes=True),
                       "test.roc.fpr.1: Input should be a valid number"),
    "operating point of text": (_garbage("operating_point", {"threshold": "high", "sensitivity": 0.7,
                                                            "specificity": 0.6, "target": 0.99},
                                         two_classes=True),
                                "test.operating_point.threshold: Input should be a valid number"),
}


def runs_with(made, tmp_path: Path, change) -> tuple[Path, Path]:
    """A runs folder with two copies of the finished run, the second's record changed on disk."""
    runs = tmp_path / "runs"
    good, bad = (Path(shutil.copytree(made[1], runs / name)) for name in ("good", "bad"))
    record = json.loads((bad / "record.json").read_text())
    change(record)
    (bad / "record.json").write_text(json.dumps(record))
    return runs, bad / "record.json"


@pytest.mark.parametrize("damage", REPORT_GARBAGE)
def test_report_leaves_out_a_bad_section_and_writes_the_rest(made, tmp_path: Path, victim: Path,
                                                             capsys, caplog, damage) -> None:
    change, section, reason, figure = REPORT_GARBAGE[damage]
    runs, bad_record = runs_with(made, tmp_path, change)
    before = tree_hash(tmp_path)
    caplog.set_level("WARNING")
    code, _, err = cli_run(["report", runs, "--out", tmp_path / "report"], capsys)
    assert code == 0 and "error" not in err.lower()
    one_warning(caplog, "cxrlib.runs.report", str(bad_record), section, reason)
    table = (tmp_path / "report" / "table.md").read_text()
    assert "[good]" in table and "[bad]" in table                      # both runs in the table
    figures = {p.name for p in (tmp_path / "report" / "figures").iterdir()}
    assert "comparison.png" in figures
    assert any("_good_" in n and n.endswith("_confusion.png") for n in figures)
    if figure == "confusion" or figure == "roc":                       # only that figure is left out
        assert not any("_bad_" in n and n.endswith(f"_{figure}.png") for n in figures), figures
    assert any("_bad_" in n and n.endswith("_curves.png") for n in figures)
    assert changes_outside(tmp_path, before, tmp_path / "report") == []


@pytest.mark.parametrize("damage", REFUSED_GARBAGE)
def test_report_refuses_a_record_of_the_wrong_types_and_writes_the_rest(made, tmp_path: Path, capsys,
                                                                       caplog, damage) -> None:
    change, problem = REFUSED_GARBAGE[damage]
    runs, bad_record = runs_with(made, tmp_path, change)
    caplog.set_level("WARNING")
    code, _, err = cli_run(["report", runs, "--out", tmp_path / "report"], capsys)
    assert code == 0 and "error" not in err.lower()
    warned = [r.getMessage() for r in caplog.records if r.name == "cxrlib.runs.records"]
    assert warned and all(str(bad_record) in w and any(line.startswith(f"- {problem}")
                                                       for line in w.splitlines()) for w in warned)
    table = (tmp_path / "report" / "table.md").read_text()
    assert "[good]" not in table and "[bad]" not in table    # one run: its name is not repeated
    figures = {p.name for p in (tmp_path / "report" / "figures").iterdir()}
    assert any(n.endswith("_confusion.png") for n in figures)


def test_report_draws_a_valid_two_class_roc(made, tmp_path: Path, capsys, caplog) -> None:
    """The control for the test above: the same two-class record, undamaged, has its ROC."""
    runs, _ = runs_with(made, tmp_path, _two_classes)
    caplog.set_level("WARNING")
    code, _, _ = cli_run(["report", runs, "--out", tmp_path / "report"], capsys)
    assert code == 0
    assert not [r for r in caplog.records if r.name == "cxrlib.runs.report"]
    figures = {p.name for p in (tmp_path / "report" / "figures").iterdir()}
    assert any("_bad_" in n and n.endswith("_roc.png") for n in figures), figures


def test_train_leaves_a_users_files_in_its_run_folder(made, tmp_path: Path, capsys) -> None:
    """Only what the run writes replaces anything in --out: a user's notes in RUN and in
    RUN/tensorboard, and a features.npz the run did not write, stay as they were."""
    data, _ = made
    run = tmp_path / "run"
    (run / "tensorboard").mkdir(parents=True)
    (run / "tensorboard" / "notes.txt").write_text("my notes")
    (run / "features.npz").write_bytes(b"not ours")
    (run / "notes.txt").write_text("also mine")
    before = tree_hash(run)
    code, _, err = cli_run(train_args(data, run), capsys)
    assert code == 0, err
    after = tree_hash(run)
    for mine in ("tensorboard/notes.txt", "features.npz", "notes.txt"):
        assert after[mine] == before[mine]
    assert "record.json" in after and "model.keras" in after


def test_a_class_given_twice_is_refused(made, tmp_path: Path, capsys, victim: Path) -> None:
    data, _ = made
    before = tree_hash(tmp_path)
    code, _, err = cli_run(train_args(data, tmp_path / "run", "--classes", "Normal", "NORMAL", "COVID"),
                           capsys)
    assert code == 2
    assert_one_line_error(err, "same class twice", "--classes")
    assert changes_outside(tmp_path, before) == []


def test_a_split_file_is_refused_with_the_flags_it_would_ignore_or_another_folder(
        made, tmp_path: Path, capsys, victim: Path) -> None:
    data, run = made
    split = run / "split.csv"
    before = tree_hash(tmp_path)
    code, _, err = cli_run(train_args(data, tmp_path / "a", "--split-file", split, "--val", "0.3"), capsys)
    assert code == 2
    assert_one_line_error(err, "--split-file", "--val", "ignored")
    other = tmp_path / "other"
    other.mkdir()
    code, _, err = cli_run(train_args(other, tmp_path / "b", "--split-file", split), capsys)
    assert code == 2
    assert_one_line_error(err, "outside --data", "the split was made from")
    assert changes_outside(tmp_path, before, other) == []
