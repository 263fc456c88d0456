"""A run's saved training state under faults: a half-written backup is discarded with a message
(not resumed), and a full disk during training is one line naming the folder, on a real full
file system (a 3 MB tmpfs, where the machine lets the tests mount one) and a simulated one."""

from __future__ import annotations

import errno
import logging
import os
import subprocess
import sys
import uuid
from pathlib import Path

import h5py
import pytest

from cxrlib.apps.cli import main
from cxrlib.data.datasets import load_manifest
from cxrlib.data.splits import split_manifest
from cxrlib.data.synthetic import generate_synthetic
from cxrlib.runs import run_folder
from cxrlib.runs import train as training
from cxrlib.runs.backup import _close_open_files, backup_problem
from cxrlib.runs.records import read_record
from cxrlib.spec import variant_spec

CLASSES = ["COVID", "Normal"]
KW = dict(progress=False, bootstrap=20)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    out = tmp_path_factory.mktemp("faults")
    generate_synthetic(out, per_class=8, size=48, seed=3, classes=CLASSES, vary_size=False,
                       progress=False)
    return split_manifest(load_manifest(out), val=0.25, test=0.25, seed=0)


def _spec(epochs: int = 3):
    return variant_spec("scratch", "scratch", image_size=32, epochs=epochs, batch_size=8)


def _interrupted(tiny, out: Path) -> Path:
    """A run stopped after its second epoch; its ``.partial`` folder."""
    import keras

    class Cut(keras.callbacks.Callback):
        def on_epoch_end(self, epoch, logs=None):
            if epoch == 1:
                raise RuntimeError("power cut")

    with pytest.raises(RuntimeError, match="power cut"):
        training.train(tiny, CLASSES, _spec(), out, callbacks=[Cut()], backup_every_s=0, **KW)
    backup = out / run_folder.PARTIAL / "backup"
    assert (backup / "latest.weights.h5").is_file()
    return out / run_folder.PARTIAL


def _truncate(backup: Path) -> None:
    weights = backup / "latest.weights.h5"
    os.truncate(weights, weights.stat().st_size // 2)


def _drop_optimizer(backup: Path) -> None:   # a save that stopped before the optimizer state
    with h5py.File(backup / "latest.weights.h5", "a") as f:
        del f["optimizer"]


def _drop_metadata(backup: Path) -> None:    # weights written, the epoch number not yet
    (backup / "training_metadata.json").unlink()


@pytest.mark.parametrize("damage", [_truncate, _drop_optimizer, _drop_metadata],
                         ids=["truncated", "no-optimizer-state", "no-epoch"])
def test_a_backup_that_does_not_load_whole_is_discarded_with_a_message(tiny, tmp_path, caplog,
                                                                        damage) -> None:
    out = tmp_path / "run"
    partial = _interrupted(tiny, out)
    damage(partial / "backup")
    with caplog.at_level(logging.WARNING, logger="cxrlib.runs.backup"):
        record = training.train(tiny, CLASSES, _spec(), out, **KW)
    warned = [r.getMessage() for r in caplog.records if "Discarded the saved training state" in r.getMessage()]
    assert len(warned) == 1 and str(partial / "backup") in warned[0], caplog.text
    assert record.training.resumed is False
    assert record.training.epochs_run == 3      # started again: three epochs, not one
    assert len(read_record(out).training.history["loss"]) == 3


def test_a_whole_backup_passes_the_check_and_a_damaged_one_leaves_the_model_as_it_was(tiny, tmp_path) -> None:
    import keras
    import numpy as np

    from cxrlib.models.build import build_model, compile_model, make_optimizer

    partial = _interrupted(tiny, tmp_path / "run")
    spec = _spec()      # the model and optimizer the run trained (the scratch recipe's)
    channels = spec.channels

    def optimizer():
        return make_optimizer(spec.optimizer, spec.learning_rate, spec.decay, momentum=spec.momentum,
                              nesterov=spec.nesterov, clipnorm=spec.clipnorm, schedule=spec.schedule,
                              total_steps=10, weight_decay=spec.weight_decay)

    model = build_model("scratch", "scratch", 2, image_size=32, weights=None, channels=channels)
    compile_model(model, optimizer())
    assert backup_problem(model, partial / "backup") is None   # the epoch-2 state loads whole
    before = [w.copy() for w in model.get_weights()]
    _drop_optimizer(partial / "backup")
    keras.utils.set_random_seed(1)
    fresh = build_model("scratch", "scratch", 2, image_size=32, weights=None, channels=channels)
    compile_model(fresh, optimizer())
    start = [w.copy() for w in fresh.get_weights()]
    assert "does not load whole" in backup_problem(fresh, partial / "backup")
    assert all(np.array_equal(a, b) for a, b in zip(start, fresh.get_weights()))  # put back
    assert not all(np.array_equal(a, b) for a, b in zip(before, start))


def test_open_half_written_files_are_closed_and_removed(tmp_path) -> None:
    ours, theirs = tmp_path / "run" / "a.h5", tmp_path / "elsewhere.h5"
    ours.parent.mkdir()
    handles = [h5py.File(ours, "w"), h5py.File(theirs, "w")]
    handles[0]["x"] = list(range(100))
    assert _close_open_files(tmp_path / "run") == [ours.resolve()]
    assert not ours.exists() and theirs.exists() and bool(handles[1])   # only ours
    handles[1].close()


def test_a_simulated_full_disk_while_training_is_one_line_naming_the_folder(tiny, tmp_path, capsys,
                                                                           monkeypatch) -> None:
    data = tmp_path / "data"
    assert main(["synth", str(data), "--per-class", "4", "--size", "40", "--quiet"]) == 0

    def full(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(training, "fit_model", full)
    out = tmp_path / "run"
    code = main(["train", "--data", str(data), "--backbone", "scratch", "--variant", "scratch",
                 "--weights", "none", "--image-size", "32", "--epochs", "1", "--out", str(out)])
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.startswith("error:")]
    assert code == 2 and len(lines) == 1, err
    assert f"No space left on the disk of {out}" in lines[0] and "run the same command again" in lines[0]
    assert "Traceback" not in err


def _mount_tmpfs(folder: Path, size: str) -> bool:
    folder.mkdir(parents=True, exist_ok=True)
    if sys.platform != "linux" or os.geteuid() != 0:
        return False
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", f"cxr-{uuid.uuid4().hex[:6]}",
                           str(folder)], capture_output=True)
    return done.returncode == 0


def test_a_real_full_disk_while_training_is_one_line_and_the_rerun_starts_clean(tmp_path) -> None:
    disk = tmp_path / "disk"
    if not _mount_tmpfs(disk, "3m"):
        pytest.skip("cannot mount a tmpfs here (needs root on Linux); the simulated test covers the message")
    try:
        data = tmp_path / "data"
        assert main(["synth", str(data), "--per-class", "20", "--size", "64", "--quiet"]) == 0
        command = [sys.executable, "-m", "cxrlib", "train", "--data", str(data), "--backbone", "scratch",
                   "--variant", "scratch", "--weights", "none", "--image-size", "64", "--epochs", "2",
                   "--backup-every", "0",
                   "--out", str(disk / "run")]
        env = {**os.environ, "CXR_LOG_DIR": str(tmp_path / "logs")}
        full = subprocess.run(command, capture_output=True, text=True, env=env, timeout=600)
        assert full.returncode == 2, full.stderr[-3000:]   # not 139 (a segfault), not 1 (a bug)
        errors = [line for line in full.stderr.splitlines() if "error" in line.lower()]
        assert len(errors) == 1 and f"No space left on the disk of {disk / 'run'}" in errors[0], full.stderr
        assert "Traceback" not in full.stderr and "Exception ignored" not in full.stderr
        # more room, the same command: the half-written state is not resumed
        subprocess.run(["mount", "-o", "remount,size=64m", str(disk)], check=True)
        again = subprocess.run(command, capture_output=True, text=True, env=env, timeout=600)
        assert again.returncode == 0, again.stderr[-3000:]
        record = read_record(disk / "run")
        assert record.training.resumed is False and record.training.epochs_run == 2
    finally:
        subprocess.run(["umount", "-l", str(disk)], capture_output=True)
