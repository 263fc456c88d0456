"""Fitting a built model: ``model.fit`` with the checkpoint, backup/restore and CSV log of a
run (:func:`fit_model`), the best-epoch checkpoint of a resumed run, the per-epoch history, and
the scores of an untrained model (V0)."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Sequence

import numpy as np
import pandas as pd

from cxrlib.data.pipeline import make_dataset
from cxrlib.files import read_json
from cxrlib.runs.backup import run_saver
from cxrlib.spec import RunSpec

log = logging.getLogger(__name__)


def epoch_bar(epochs: int):
    """tqdm's Keras callback: one bar over epochs (a resumed run starts at its epoch)."""
    from tqdm.keras import TqdmCallback

    return TqdmCallback(epochs=epochs, verbose=0)


def read_history(path: Path) -> dict[str, list[float]]:
    """The per-epoch history from a CSVLogger file (all epochs, across resumes)."""
    if not path.is_file() or path.stat().st_size == 0:
        return {}
    frame = pd.read_csv(path).drop_duplicates("epoch", keep="last").sort_values("epoch")
    return {c: [float(v) for v in frame[c]] for c in frame.columns if c not in ("epoch",)}


def fit_model(model, train_df, val_df, classes, prep, out: Path, epochs: int, spec: RunSpec,
              label_mode: str, weights_by_class, tensorboard: bool, progress: bool,
              extra_callbacks: Sequence, skipped: list, backup_every_s: float | None = None) -> dict:
    """``model.fit`` with the run's saver (model, backup/restore), CSV log and optional early
    stopping.

    The saved model is the epoch with the best validation loss (``spec.keep_best``), or the
    last epoch's, as the courses scored it. Model and training state are written at most
    every ``backup_every_s`` seconds and when the fit ends (:func:`cxrlib.runs.backup.run_saver`).
    """
    import keras

    train_ds = make_dataset(train_df, classes, prep, spec.batch_size, training=True,
                            augment=spec.augment, seed=spec.seed, label_mode=label_mode,
                            skip_log=skipped, progress=progress)
    val_ds = (make_dataset(val_df, classes, prep, spec.batch_size, label_mode=label_mode,
                           skip_log=skipped) if not val_df.empty else None)
    monitor = "val_loss" if val_ds is not None else "loss"
    done = len(read_history(out / "history.csv").get("loss", []))  # epochs logged before a resume
    callbacks = [
        run_saver(out / "model.keras", out / "backup", monitor, spec.keep_best,
                  best=resumed_best(out, monitor), every_s=backup_every_s),
        keras.callbacks.CSVLogger(str(out / "history.csv"), append=done > 0),
        *extra_callbacks,
    ]
    if spec.early_stopping:
        callbacks.append(keras.callbacks.EarlyStopping(monitor=monitor, patience=spec.early_stopping,
                                                       restore_best_weights=False))
    if tensorboard:
        callbacks.append(keras.callbacks.TensorBoard(str(out / "tensorboard")))
    if progress:
        callbacks.append(epoch_bar(epochs))
    model.fit(train_ds, validation_data=val_ds, epochs=epochs, class_weight=weights_by_class,
              callbacks=callbacks, shuffle=False, verbose=0)
    if not (out / "model.keras").is_file():  # no epoch had a finite monitor value: diverged
        log.warning("No epoch of %s had a finite %s (the training diverged); keeping the last "
                    "epoch's model so that the run is still recorded.", out, monitor)
        model.save(out / "model.keras")
    return read_history(out / "history.csv")


def resumed_best(out: Path, monitor: str) -> float | None:
    """The best ``monitor`` value of the epochs an interrupted run's saved state covers, when
    their model is on disk (None otherwise: a fresh run).

    Keras would start a resumed run's best at +inf, and its first epoch would then replace a
    better model saved before the stop. Epochs logged after the last save are left out: they
    are trained again, and their model was never written.
    """
    covered = read_json(out / "backup" / "training_metadata.json").get("epoch")
    path = out / "history.csv"
    if not isinstance(covered, int) or not (out / "model.keras").is_file() or not path.is_file():
        return None
    try:
        frame = pd.read_csv(path)
    except (ValueError, OSError):
        return None
    if monitor not in frame or "epoch" not in frame:
        return None
    values = frame.loc[frame["epoch"] < covered, monitor].astype(float)
    values = values[np.isfinite(values)]
    return float(values.min()) if len(values) else None


def score_untrained(model, train_df, val_df, classes, prep, batch_size: int, label_mode: str) -> dict:
    """Loss and accuracy of an untrained model on train and val (V0's row of the table)."""
    scores: dict[str, float] = {}
    for prefix, frame in (("", train_df), ("val_", val_df)):
        if frame.empty:
            continue
        ds = make_dataset(frame, classes, prep, batch_size, label_mode=label_mode)
        loss, accuracy = model.evaluate(ds, verbose=0)[:2]
        scores[prefix + "loss"] = float(loss)
        scores[prefix + "accuracy"] = float(accuracy)
    return scores
