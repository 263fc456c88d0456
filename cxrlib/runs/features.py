"""Training on frozen features (V1): the pooled backbone features extracted once and cached in
``features.npz``, the softmax head trained on them (:func:`train_features`), and the frozen
heads' feature standardisation (:func:`standardise`)."""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Sequence

import numpy as np
import pandas as pd

from cxrlib.data.pipeline import make_dataset
from cxrlib.data.prepare import Prep
from cxrlib.files import write_npz_atomic
from cxrlib.runs.fitting import epoch_bar, read_history
from cxrlib.runs.run_folder import config_key, data_fingerprint
from cxrlib.spec import RunSpec


def extract_features(model, frames: Sequence[pd.DataFrame], classes, prep: Prep, batch_size: int,
                     label_mode: str, skipped: list | None = None
                     ) -> list[tuple[np.ndarray, np.ndarray]]:
    """Pooled backbone features (N, D) and encoded labels for each manifest in ``frames``.

    The frozen forward pass is one traced graph for all of them: its batch dimension is left
    free, so neither the last, smaller batch nor the next manifest traces it again. (Eager
    calls cost DenseNet121 about 2.5x more per batch; a trace per batch shape doubled the
    cost of a small set.)
    """
    import tensorflow as tf

    from cxrlib.models.build import feature_extractor

    extractor = feature_extractor(model)
    forward = None
    out = []
    for frame in frames:
        ds = make_dataset(frame, classes, prep, batch_size, label_mode=label_mode, skip_log=skipped)
        if forward is None:
            forward = tf.function(lambda x: extractor(x, training=False),
                                  input_signature=[ds.element_spec[0]])
        feats, labels = [], []
        for x, y in ds:
            feats.append(np.asarray(forward(x), dtype=np.float32))   # float16 under mixed precision
            labels.append(np.asarray(y))
        out.append((np.concatenate(feats), np.concatenate(labels)))
    return out


def train_features(model, train_df, val_df, classes, prep, out: Path, epochs: int, spec: RunSpec,
                   label_mode: str, weights_by_class, progress: bool, skipped: list) -> dict:
    """V1: extract the frozen features once (cached in ``features.npz``), train the softmax on
    them, and keep the epoch with the best validation loss when ``spec.keep_best``, as every
    other variant does (a softmax on ~1000 features and a few hundred films fits the training
    set within a few epochs; what it does after that is fit noise). Without it, the last
    epoch is kept, as the course did."""
    import keras

    from cxrlib.models.build import adapt_head_norm, classifier_head, feature_extractor

    cache = out / "features.npz"
    backbone_bytes = hashlib.sha256()
    for weight in feature_extractor(model).weights:
        backbone_bytes.update(np.asarray(weight).tobytes())
    key = config_key({"prep": prep.to_dict(), "data": data_fingerprint(pd.concat([train_df, val_df])),
                      "classes": list(classes), "label_mode": label_mode,
                      "backbone": backbone_bytes.hexdigest()})
    data = dict(np.load(cache)) if cache.is_file() else {}
    if data.get("key") is None or str(data["key"]) != key:
        frames = [train_df] + ([val_df] if not val_df.empty else [])
        extracted = extract_features(model, frames, classes, prep, spec.batch_size, label_mode, skipped)
        data = {"x_train": extracted[0][0], "y_train": extracted[0][1]}
        if len(extracted) > 1:
            data["x_val"], data["y_val"] = extracted[1]
        write_npz_atomic(cache, {"key": np.array(key), **data})
    adapt_head_norm(model, data["x_train"])
    with model.distribute_strategy.scope():   # the head's fit runs as the model's would
        head = classifier_head(model)
        head.compile(optimizer=model.optimizer, loss=model.loss, metrics=["accuracy"],
                     jit_compile=model.jit_compile, run_eagerly=model.run_eagerly)
    validation = (data["x_val"], data["y_val"]) if "x_val" in data else None
    callbacks = [keras.callbacks.CSVLogger(str(out / "history.csv"))]
    if validation is not None and (spec.keep_best or spec.early_stopping):
        # restores the best epoch's weights when the fit ends (keep_best)
        callbacks.append(keras.callbacks.EarlyStopping(
            monitor="val_loss", patience=spec.early_stopping or epochs,
            restore_best_weights=spec.keep_best))
    if progress:
        callbacks.append(epoch_bar(epochs))
    head.fit(data["x_train"], data["y_train"], validation_data=validation, epochs=epochs,
             batch_size=spec.batch_size, class_weight=weights_by_class, callbacks=callbacks,
             shuffle=True, verbose=0)
    model.save(out / "model.keras")  # the head shares its layers with the full model
    return read_history(out / "history.csv")


def standardise(model, train_df: pd.DataFrame, classes, prep: Prep, batch_size: int) -> None:
    """Adapt the head's Normalization (when it has one) on the training split's pooled features."""
    from cxrlib.models.build import HEAD_NORM, adapt_head_norm

    if HEAD_NORM in {layer.name for layer in model.layers}:
        [(features, _)] = extract_features(model, [train_df], classes, prep, batch_size, "categorical")
        adapt_head_norm(model, features)
