"""A run's saved training state (Keras' ``BackupAndRestore``) and the full disk that can cut it.

``RUN/.partial/backup`` holds the weights and optimizer state of the last finished epoch
(``latest.weights.h5``) and that epoch's number (``training_metadata.json``). An interrupted
run resumes from it. Two faults can leave it half written: the disk filling up while it is
saved, and a kill during the save. Keras then restores what it can read and skips the rest
(often the whole optimizer state) with a warning, and the run would say that it resumed.

So a saved state is used only when it loads whole (:func:`backup_problem`); otherwise it is
discarded with a message and the run starts again (:func:`discard_broken_backup`).

Saving costs: a DenseNet121's weights and optimizer state take about as long to write as a
few hundred small films take to train on, so a run that saved after every short epoch spent
a third of its time writing. :func:`run_saver` writes the state and the run's model at most
every :data:`BACKUP_EVERY_S` seconds of training (an interrupt loses at most that much), and
the model once more when the fit ends; the best epoch is held in memory meanwhile. A full
disk during training ends in one line naming the folder (:func:`disk_full_is_one_line`),
after the files that were being written when it struck are closed and removed, so that
h5py's clean-up does not fail again (a traceback per file, then a segfault).
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import shutil
import time
import warnings
from pathlib import Path
from typing import Iterator

import numpy as np

from cxrlib.errors import UserError
from cxrlib.files import read_json

log = logging.getLogger(__name__)

WEIGHTS = "latest.weights.h5"
METADATA = "training_metadata.json"
DISK_FULL = frozenset({errno.ENOSPC, errno.EDQUOT})
#: Seconds of training between two saves of a run's state (0: after every epoch). A group of
#: workers saves after every epoch, so that all of them hold the same epoch's state.
BACKUP_EVERY_S = 60.0


class DiskFullError(UserError):
    """No space was left on the disk of a run folder; the message names the folder."""


def build_optimizer(model):
    """``model``'s optimizer with its variables made, as ``fit`` (and Keras' restore) makes them.

    Every worker of a group builds it at the same point, so that the variables are created
    together (a multi-worker strategy creates them collectively)."""
    optimizer = model.optimizer
    if optimizer is not None and not optimizer.built:
        with model.distribute_strategy.scope():
            optimizer.build(model.trainable_variables)
    return optimizer


def backup_problem(model, backup: Path) -> str | None:
    """Why the saved state in ``backup`` would not restore ``model`` whole; None when it would.

    The state is loaded into ``model`` (its optimizer built first, as ``fit`` does), with
    every Keras warning about skipped variables taken as a failure. When it fails, the
    model's weights and optimizer variables are put back as they were.
    """
    weights = backup / WEIGHTS
    epoch = read_json(backup / METADATA).get("epoch")
    if not weights.is_file():
        return f"it has no {WEIGHTS}"
    if not isinstance(epoch, int) or epoch < 1:
        return f"its {METADATA} is missing or names no finished epoch"
    optimizer = build_optimizer(model)
    before = [v.numpy() for v in model.weights]
    before_optimizer = [v.numpy() for v in optimizer.variables] if optimizer is not None else []
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error")   # "Skipping variable loading ..." and the like
            model.load_weights(weights)
    except Exception as error:  # noqa: BLE001 - whatever stops a whole load makes it unusable
        for variable, value in zip(model.weights, before):
            variable.assign(value)
        for variable, value in zip(optimizer.variables if optimizer is not None else [], before_optimizer):
            variable.assign(value)
        first = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        return f"it does not load whole ({first[:160]})"
    return None


def discard_broken_backup(model, work: Path) -> bool:
    """Remove ``work/backup`` when :func:`backup_problem` finds it unusable, with the epochs
    logged after it (``history.csv``) and their checkpoint (``model.keras``), so that the run
    starts again from its first epoch; say so. True when a saved state was discarded."""
    build_optimizer(model)   # whether or not there is a state to check (see build_optimizer)
    backup = work / "backup"
    if not backup.is_dir():
        return False
    problem = backup_problem(model, backup)
    if problem is None:
        return False
    shutil.rmtree(backup)
    for name in ("history.csv", "model.keras"):
        (work / name).unlink(missing_ok=True)
    log.warning("Discarded the saved training state in %s: %s (an interrupted save, e.g. a full "
                "disk). The run starts again from its first epoch.", backup, problem)
    return True


def _close_open_files(folder: Path) -> list[Path]:
    """Truncate, close and remove every HDF5 file h5py still holds open under ``folder``.

    They were being written when the disk filled up: their content is incomplete, and
    truncating them first frees the room that h5py's final flush needs."""
    try:
        import h5py
    except ImportError:  # pragma: no cover - Keras requires h5py
        return []
    removed = []
    folder = folder.resolve()
    for file_id in h5py.h5f.get_obj_ids(types=h5py.h5f.OBJ_FILE):
        try:
            path = Path(file_id.name.decode()).resolve()
        except Exception:  # noqa: BLE001 - an id h5py can no longer name is not ours
            continue
        if folder not in path.parents:
            continue
        with contextlib.suppress(OSError):
            os.truncate(path, 0)   # frees the blocks; the flush below then has room
        with contextlib.suppress(Exception):
            h5py.File(file_id).close()
        path.unlink(missing_ok=True)
        removed.append(path)
    return removed


@contextlib.contextmanager
def disk_full_is_one_line(work: Path, out: Path) -> Iterator[None]:
    """Turn a full disk (ENOSPC, EDQUOT) while training in ``work`` into one
    :class:`DiskFullError` naming ``out``, the half-written files closed and removed first."""
    try:
        yield
    except OSError as error:
        if error.errno not in DISK_FULL:
            raise
        removed = _close_open_files(work)
        log.debug("Removed the half-written %s", [str(p) for p in removed])
        raise DiskFullError(
            f"No space left on the disk of {out}: the run stopped, and what it had finished is "
            f"kept in {work}. Free some space there and run the same command again to resume, "
            "or give --out a folder on another disk.") from None


def run_saver(model_file: Path, backup: Path, monitor: str, keep_best: bool,
              best: float | None = None, every_s: float | None = None):
    """The callback that saves a run as it trains (Keras' ``BackupAndRestore``, throttled).

    At most every ``every_s`` seconds (default :data:`BACKUP_EVERY_S`; 0 after every epoch)
    it writes ``model_file`` and then the training state in ``backup``, so that the model on
    disk is always the best (``keep_best``: the lowest finite ``monitor``; ``best`` is the
    lowest value of the epochs before a resume) or the latest of the epochs the state covers.
    When the fit ends it writes ``model_file`` once more; an interrupted fit does not.
    """
    import keras

    interval = BACKUP_EVERY_S if every_s is None else float(every_s)

    class RunSaver(keras.callbacks.BackupAndRestore):
        def __init__(self) -> None:
            super().__init__(str(backup))
            self.best, self.kept, self.pending, self.saved_at = best, None, False, 0.0

        def on_train_begin(self, logs=None) -> None:
            super().on_train_begin(logs)
            self.saved_at = time.monotonic()

        def on_epoch_end(self, epoch, logs=None) -> None:
            value = (logs or {}).get(monitor)
            if not keep_best:
                self.kept, self.pending = None, True        # the latest: the model as it is
            elif value is not None and np.isfinite(value) and (self.best is None or value < self.best):
                self.best, self.kept, self.pending = float(value), self.model.get_weights(), True
            self._current_epoch, self._last_batch_seen = epoch + 1, 0
            if time.monotonic() - self.saved_at >= interval:
                self.write_model()
                self._save_model()
                self.saved_at = time.monotonic()

        def on_train_end(self, logs=None) -> None:
            self.write_model()
            super().on_train_end(logs)

        def write_model(self) -> None:
            if not self.pending:
                return
            if self.kept is None:
                self.model.save(model_file)
            else:   # the best epoch's weights, then back to the current ones
                current = self.model.get_weights()
                self.model.set_weights(self.kept)
                try:
                    self.model.save(model_file)
                finally:
                    self.model.set_weights(current)
            self.pending = False

    return RunSaver()
