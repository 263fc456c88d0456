"""Training: one function, :func:`train`, behind the notebooks and ``cxr train``.

A run directory holds everything a run produced::

    RUN_DIR/model.keras    the best model (lowest validation loss), loadable with safe_mode
    RUN_DIR/record.json    the machine-readable record: data, model, every hyper-parameter,
                           versions, device, per-epoch history, test metrics
    RUN_DIR/history.csv    the per-epoch log (CSVLogger; survives a crash)
    RUN_DIR/backup/        BackupAndRestore state while a run is in progress: an interrupted
                           run started again with the same arguments picks up where it stopped
    RUN_DIR/split.csv      the exact images of each split

A finished run with the same configuration is reused, not retrained, so notebooks can share
one results directory (``04`` and ``06`` reuse what ``03`` trained).
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import pandas as pd

from cxrlib.models.backbones import VARIANT_ALIASES, default_size
from cxrlib.data.pipeline import NO_AUGMENT, Augment, Prep, make_dataset, with_crop_reference
from cxrlib.data.splits import class_weights as balanced_weights
from cxrlib.data.splits import save_split, subset

log = logging.getLogger(__name__)

# The course's recipe per variant: optimiser, learning rate, old-style decay, augmentation.
RECIPES: dict[str, dict[str, Any]] = {
    "v0": {"optimizer": "sgd", "learning_rate": 0.01, "decay": 1e-6, "augment": False, "epochs": 0},
    "v1": {"optimizer": "sgd", "learning_rate": 0.01, "decay": 1e-6, "augment": False, "epochs": 20},
    "v2": {"optimizer": "sgd", "learning_rate": 0.01, "decay": 1e-6, "augment": True, "epochs": 20},
    "v2reg": {"optimizer": "sgd", "learning_rate": 0.01, "decay": 1e-6, "augment": True, "epochs": 20},
    "frozen": {"optimizer": "sgd", "learning_rate": 0.01, "decay": 1e-6, "augment": True, "epochs": 20},
    "v3": {"optimizer": "sgd", "learning_rate": 1e-3, "decay": 1e-6, "augment": True, "epochs": 10},
    "finetune": {"optimizer": "sgd", "learning_rate": 1e-3, "decay": 1e-6, "augment": True, "epochs": 10},
    "scratch": {"optimizer": "adam", "learning_rate": 1e-3, "decay": 0.0, "augment": True, "epochs": 30},
}


def run_dir(results_dir: str | Path, backbone: str, variant: str) -> Path:
    """Where a run lives in a shared results directory: ``RESULTS/<backbone>-<variant>``.

    Aliases share a directory (``frozen`` is ``v2reg``, ``finetune`` is ``v3``), so a
    notebook that asks for DenseNet121 ``frozen`` finds the V2-reg run another one trained.
    """
    return Path(results_dir) / f"{backbone}-{VARIANT_ALIASES.get(variant, variant)}"


def _epoch_bar(total: int, initial: int, desc: str):
    """A Keras callback showing one tqdm bar over epochs (tidy in notebooks and terminals)."""
    import keras
    from tqdm.auto import tqdm

    class EpochBar(keras.callbacks.Callback):
        def on_train_begin(self, logs=None):
            self.bar = tqdm(total=total, initial=initial, desc=desc, unit="epoch")

        def on_epoch_end(self, epoch, logs=None):
            self.bar.set_postfix({k: f"{v:.3f}" for k, v in (logs or {}).items()
                                  if k in ("loss", "accuracy", "val_loss", "val_accuracy")})
            self.bar.update(1)

        def on_train_end(self, logs=None):
            self.bar.close()

    return EpochBar()


def read_history(path: Path) -> dict[str, list[float]]:
    """The per-epoch history from a CSVLogger file (all epochs, across resumes)."""
    if not path.is_file() or path.stat().st_size == 0:
        return {}
    frame = pd.read_csv(path).drop_duplicates("epoch", keep="last").sort_values("epoch")
    return {c: [float(v) for v in frame[c]] for c in frame.columns if c not in ("epoch",)}


def data_fingerprint(manifest: pd.DataFrame) -> list:
    """(path, split, size, mtime) per image: a regenerated file changes the run's key."""
    def stat(path: str) -> tuple[int, int]:
        try:
            info = Path(path).stat()
            return info.st_size, info.st_mtime_ns
        except OSError:
            return -1, -1
    return sorted((p, s, *stat(p)) for p, s in zip(manifest["path"], manifest["split"]))


def _fingerprint_file(path: str | None) -> list | None:
    """Size and mtime of a file (``init_from``): a retrained source model changes the key."""
    return None if not path else data_fingerprint(pd.DataFrame({"path": [path], "split": [""]}))


def config_key(config: dict) -> str:
    """A short stable hash of a run's configuration (to reuse a finished identical run)."""
    return hashlib.sha256(json.dumps(config, sort_keys=True, default=str).encode()).hexdigest()[:16]


def _strategy(strategy):
    """None → the default strategy; "mirrored" → MirroredStrategy; or a strategy object."""
    import tensorflow as tf

    if strategy is None:
        return tf.distribute.get_strategy()
    if strategy == "mirrored":
        return tf.distribute.MirroredStrategy()
    if strategy == "multiworker":
        return tf.distribute.MultiWorkerMirroredStrategy()
    return strategy


def _predict(model, dataset) -> tuple[np.ndarray, np.ndarray]:
    """Probabilities (N, K) and integer labels (N,) over a labelled dataset, in order."""
    probs, labels = [], []
    for x, y in dataset:
        p = np.asarray(model(x, training=False), dtype=np.float64)
        probs.append(np.concatenate([1 - p, p], axis=1) if p.shape[-1] == 1 else p)
        y = np.asarray(y)
        labels.append(y[:, 0].astype(int) if y.ndim == 2 and y.shape[1] == 1
                      else (y.argmax(1) if y.ndim == 2 else y.astype(int)))
    if not probs:
        return np.zeros((0, 0)), np.zeros((0,), int)
    return np.concatenate(probs), np.concatenate(labels)


def evaluate(model, manifest: pd.DataFrame, classes: Sequence[str], prep: Prep,
             batch_size: int = 32, bootstrap: int = 1000, seed: int = 0,
             target_sensitivity: float = 0.99) -> dict:
    """Score a model on a manifest: the metrics of :func:`cxrlib.runs.metrics.compute_metrics`."""
    from cxrlib.runs.metrics import compute_metrics

    binary = model.output_shape[-1] == 1
    skipped: list = []
    ds = make_dataset(manifest, classes, prep, batch_size=batch_size, cache=False,
                      label_mode="binary" if binary else "categorical", skip_log=skipped)
    probs, labels = _predict(model, ds)
    if len(labels) == 0:
        raise ValueError("No readable images to evaluate.")
    metrics = compute_metrics(labels, probs, classes, bootstrap=bootstrap, seed=seed,
                              target_sensitivity=target_sensitivity)
    metrics["skipped"] = skipped
    return metrics


def train(manifest: pd.DataFrame, classes: Sequence[str], backbone: str, variant: str,
          out_dir: str | Path, weights: str | None = "imagenet", image_size: int | None = None,
          epochs: int | None = None, batch_size: int = 32, optimizer: str | None = None,
          learning_rate: float | None = None, decay: float | None = None, seed: int = 0,
          class_weight: bool = False, augment: Augment | bool | None = None, crop: bool = False,
          equalize: str | None = None, channels: int = 3, binary: bool = False,
          early_stopping: int | None = None, tensorboard: bool = False, strategy=None,
          mixed_precision: bool = False, xla: bool = False, init_from: str | None = None,
          name: str | None = None, dataset_info: dict | None = None, reuse: bool = True,
          progress: bool = True, callbacks: Sequence = (), bootstrap: int = 1000) -> dict:
    """Train ``backbone`` × ``variant`` on the ``train`` split of ``manifest``; return the record.

    The manifest must carry a ``split`` column (see :func:`cxrlib.data.splits.split_manifest`).
    Defaults not given (epochs, optimiser, learning rate, decay, augmentation) come from the
    course's recipe for the variant in :data:`RECIPES`. The run validates on ``val``, keeps
    the best model, and scores it on ``test``; everything lands in ``out_dir``.
    """
    import keras

    from cxrlib.models import build as models
    from cxrlib.runs import records

    out = Path(out_dir)
    recipe = RECIPES[variant] if variant in RECIPES else RECIPES["v2reg"]
    image_size = image_size or default_size(backbone)
    epochs = recipe["epochs"] if epochs is None else epochs
    if variant == "v0":
        epochs = 0
    optimizer = optimizer or recipe["optimizer"]
    learning_rate = recipe["learning_rate"] if learning_rate is None else learning_rate
    decay = recipe["decay"] if decay is None else decay
    if augment is None or augment is True:
        augment = Augment() if (recipe["augment"] or augment is True) else NO_AUGMENT
    elif augment is False:
        augment = NO_AUGMENT
    train_df, val_df, test_df = (subset(manifest, s) for s in ("train", "val", "test"))
    if train_df.empty:
        raise ValueError("The manifest has no 'train' rows; split it with split_manifest first.")
    prep = with_crop_reference(Prep(image_size=image_size, backbone=backbone, channels=channels,
                                    crop=crop, equalize=equalize), train_df)
    hyper = {"epochs": epochs, "batch_size": batch_size, "optimizer": optimizer,
             "learning_rate": learning_rate, "decay": decay, "seed": seed,
             "class_weight": class_weight, "augment": asdict(augment), "binary": binary,
             "early_stopping": early_stopping, "mixed_precision": mixed_precision, "xla": xla,
             "strategy": str(strategy) if strategy is not None else None,
             "init_from": init_from, "weights": None if weights is None else str(weights)}
    key = config_key({"backbone": backbone, "variant": VARIANT_ALIASES.get(variant, variant), "classes": list(classes),
                      "prep": prep.to_dict(), "hyper": hyper,
                      "data": sorted(zip(manifest["path"], manifest["split"]))})
    if reuse and (out / "record.json").is_file():
        try:
            existing = records.read_record(out)
        except ValueError:
            existing = {}
        if existing.get("config_key") == key and (out / "model.keras").is_file():
            log.info("Reusing the finished run in %s (same configuration).", out)
            if name and existing.get("name") != name:
                existing["name"] = name
                records.write_record(out, existing)
            return existing

    out.mkdir(parents=True, exist_ok=True)
    if not (out / "backup").is_dir():  # a fresh run, not a resumed one: no stale history
        for stale in ("history.csv", "record.json"):
            (out / stale).unlink(missing_ok=True)
    split_file = save_split(manifest, out / "split.csv")
    keras.utils.set_random_seed(seed)
    if mixed_precision:
        keras.mixed_precision.set_global_policy("mixed_float16")
    label_mode = "binary" if binary else "categorical"
    skipped: list = []
    try:
        with _strategy(strategy).scope():
            model = models.build_model(backbone, variant, len(classes), image_size, weights,
                                       channels=channels, binary=binary, seed=seed)
            if init_from:
                copied = models.copy_matching_weights(models.load_model(init_from), model)
                log.info("Initialised %d layers from %s.", copied, init_from)
            models.compile_model(model, models.make_optimizer(optimizer, learning_rate, decay),
                                 jit_compile=True if xla else False)
        weights_by_class = balanced_weights(train_df["label"], classes) if class_weight else None
        started = time.time()
        resumed = (out / "backup").is_dir()
        if variant == "v1":
            history = _train_v1(model, train_df, val_df, classes, prep, out, epochs, batch_size,
                                label_mode, weights_by_class, seed, progress, skipped)
        elif epochs > 0:
            history = _fit(model, train_df, val_df, classes, prep, out, epochs, batch_size,
                           label_mode, weights_by_class, augment, seed, early_stopping,
                           tensorboard, progress, callbacks, skipped)
        else:
            history = {}
            model.save(out / "model.keras")
        wall = time.time() - started
        best = models.load_model(str(out / "model.keras")) if (out / "model.keras").is_file() else model
        test = (evaluate(best, test_df, classes, prep, batch_size, bootstrap=bootstrap, seed=seed)
                if not test_df.empty else None)
        untrained = (_score_untrained(model, train_df, val_df, classes, prep, batch_size, label_mode)
                     if epochs == 0 else {})  # v0: what the untrained head scores, for the table
    finally:
        if mixed_precision:
            keras.mixed_precision.set_global_policy("float32")

    epochs_run = len(history.get("loss", []))
    final = {k: (history[k][-1] if history.get(k) else untrained.get(k))
             for k in ("loss", "accuracy", "val_loss", "val_accuracy")}
    record = {
        "schema": records.SCHEMA,
        "name": name or models.run_name(backbone, variant),
        "created": pd.Timestamp.now(tz="UTC").isoformat(),
        "config_key": key,
        "dataset": {"root": manifest.attrs.get("root", ""), "layout": manifest.attrs.get("layout", ""),
                    "split_file": str(split_file), "classes": list(classes),
                    "n_train": len(train_df), "n_val": len(val_df), "n_test": len(test_df),
                    **(dataset_info or {})},
        "model": {"backbone": backbone, "variant": variant, "weights": hyper["weights"],
                  "image_size": image_size, "channels": channels,
                  "trainable_params": int(sum(np.prod(w.shape) for w in model.trainable_weights)),
                  "total_params": int(model.count_params())},
        "prep": prep.to_dict(),
        "hyperparameters": hyper,
        "environment": records.environment_info(),
        "training": {"epochs_run": epochs_run, "wall_time_s": wall, "history": history,
                     "resumed": resumed},
        "final": {k: (None if v is None else float(v)) for k, v in final.items()},
        "test": test,
        "skipped": skipped + (test or {}).get("skipped", []),
        "artifacts": {"model": "model.keras", "history": "history.csv", "split": "split.csv"},
    }
    records.write_record(out, record)
    return record


def _fit(model, train_df, val_df, classes, prep, out: Path, epochs: int, batch_size: int,
         label_mode: str, weights_by_class, augment: Augment, seed: int, early_stopping,
         tensorboard: bool, progress: bool, extra_callbacks: Sequence, skipped: list) -> dict:
    """``model.fit`` with checkpoint, backup/restore, CSV log and optional early stopping."""
    import keras

    train_ds = make_dataset(train_df, classes, prep, batch_size, training=True, augment=augment,
                            seed=seed, label_mode=label_mode, skip_log=skipped)
    val_ds = (make_dataset(val_df, classes, prep, batch_size, label_mode=label_mode, skip_log=skipped)
              if not val_df.empty else None)
    monitor = "val_loss" if val_ds is not None else "loss"
    earlier = read_history(out / "history.csv")  # epochs logged before a resume
    done = len(earlier.get("loss", []))
    callbacks = [
        keras.callbacks.BackupAndRestore(str(out / "backup")),
        best_checkpoint(out / "model.keras", monitor, earlier),
        keras.callbacks.CSVLogger(str(out / "history.csv"), append=done > 0),
        *extra_callbacks,
    ]
    if early_stopping:
        callbacks.append(keras.callbacks.EarlyStopping(monitor=monitor, patience=early_stopping,
                                                       restore_best_weights=False))
    if tensorboard:
        callbacks.append(keras.callbacks.TensorBoard(str(out / "tensorboard")))
    if progress:
        callbacks.append(_epoch_bar(epochs, min(done, epochs), model.name))
    model.fit(train_ds, validation_data=val_ds, epochs=epochs, class_weight=weights_by_class,
              callbacks=callbacks, shuffle=False, verbose=0)
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


def extract_features(model, manifest: pd.DataFrame, classes, prep: Prep, batch_size: int,
                     label_mode: str, skipped: list | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Pooled backbone features (N, D) and encoded labels for a manifest, in one pass."""
    from cxrlib.models.build import feature_extractor

    extractor = feature_extractor(model)
    ds = make_dataset(manifest, classes, prep, batch_size, label_mode=label_mode, cache=False,
                      skip_log=skipped)
    feats, labels = [], []
    for x, y in ds:
        feats.append(np.asarray(extractor(x, training=False)))
        labels.append(np.asarray(y))
    return np.concatenate(feats), np.concatenate(labels)


def _train_v1(model, train_df, val_df, classes, prep, out: Path, epochs: int, batch_size: int,
              label_mode: str, weights_by_class, seed: int, progress: bool, skipped: list) -> dict:
    """V1: extract the frozen features once (cached in ``features.npz``), train the softmax on them."""
    import keras

    from cxrlib.models.build import classifier_head, feature_extractor

    cache = out / "features.npz"
    backbone_bytes = hashlib.sha256()
    for weight in feature_extractor(model).weights:
        backbone_bytes.update(np.asarray(weight).tobytes())
    key = config_key({"prep": prep.to_dict(), "data": data_fingerprint(pd.concat([train_df, val_df])),
                      "classes": list(classes), "label_mode": label_mode,
                      "backbone": backbone_bytes.hexdigest()})
    data = dict(np.load(cache)) if cache.is_file() else {}
    if data.get("key") is None or str(data["key"]) != key:
        xt, yt = extract_features(model, train_df, classes, prep, batch_size, label_mode, skipped)
        data = {"x_train": xt, "y_train": yt}
        if not val_df.empty:
            data["x_val"], data["y_val"] = extract_features(model, val_df, classes, prep, batch_size,
                                                            label_mode, skipped)
        np.savez(cache, key=np.array(key), **data)
    head = classifier_head(model)
    head.compile(optimizer=model.optimizer, loss=model.loss, metrics=["accuracy"])
    validation = (data["x_val"], data["y_val"]) if "x_val" in data else None
    callbacks = [keras.callbacks.CSVLogger(str(out / "history.csv"))]
    if progress:
        callbacks.append(_epoch_bar(epochs, 0, model.name))
    head.fit(data["x_train"], data["y_train"], validation_data=validation, epochs=epochs,
             batch_size=batch_size, class_weight=weights_by_class, callbacks=callbacks,
             shuffle=True, verbose=0)
    model.save(out / "model.keras")  # the head shares its layers with the full model
    return read_history(out / "history.csv")


def _score_untrained(model, train_df, val_df, classes, prep, batch_size: int, label_mode: str) -> dict:
    """Loss and accuracy of an untrained model on train and val (V0's row of the table)."""
    scores: dict[str, float] = {}
    for prefix, frame in (("", train_df), ("val_", val_df)):
        if frame.empty:
            continue
        ds = make_dataset(frame, classes, prep, batch_size, label_mode=label_mode, cache=False)
        loss, accuracy = model.evaluate(ds, verbose=0)[:2]
        scores[prefix + "loss"] = float(loss)
        scores[prefix + "accuracy"] = float(accuracy)
    return scores
