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
              extra_callbacks: Sequence, skipped: list) -> dict:
    """``model.fit`` with checkpoint, backup/restore, CSV log and optional early stopping.

    The checkpoint keeps the epoch with the best validation loss (``spec.keep_best``), or
    every epoch's model in turn, so that the last one is scored (as the courses did)."""
    import keras

    train_ds = make_dataset(train_df, classes, prep, spec.batch_size, training=True,
                            augment=spec.augment, seed=spec.seed, label_mode=label_mode,
                            skip_log=skipped, progress=progress)
    val_ds = (make_dataset(val_df, classes, prep, spec.batch_size, label_mode=label_mode,
                           skip_log=skipped) if not val_df.empty else None)
    monitor = "val_loss" if val_ds is not None else "loss"
    earlier = read_history(out / "history.csv")  # epochs logged before a resume
    done = len(earlier.get("loss", []))
    checkpoint = (best_checkpoint(out / "model.keras", monitor, earlier) if spec.keep_best
                  else keras.callbacks.ModelCheckpoint(str(out / "model.keras")))
    callbacks = [
        keras.callbacks.BackupAndRestore(str(out / "backup")),
        checkpoint,
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


def best_checkpoint(path: Path, monitor: str, history: dict[str, list[float]]):
    """A save-best-only ModelCheckpoint that remembers the best value of a resumed run.

    Keras starts every checkpoint at +inf, so after a resume the first epoch would overwrite
    a better model saved before the stop. Seeded with the best ``monitor`` value in the
    history (when that model is on disk), only a better epoch replaces it.
    """
    import keras

    earlier = [v for v in history.get(monitor, []) if np.isfinite(v)]
    best = min(earlier) if earlier and path.is_file() else None
    return keras.callbacks.ModelCheckpoint(str(path), monitor=monitor, save_best_only=True,
                                           initial_value_threshold=best)


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
