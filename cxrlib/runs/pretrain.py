"""Backbones pretrained by cxrlib on a synthetic source task: the offline stand-in for ImageNet.

Without ImageNet weights every backbone is random, and the course's transfer-learning lessons
(V0 → V1 → V3, the five frozen backbones) teach nothing. ``weights="synthetic"`` gives each
backbone weights learnt on a *different* task from the same film renderer: multi-label findings
(a focal opacity in each of six lung zones, an interstitial pattern, a consolidation, a burned-in
marker; see :func:`cxrlib.data.source_task.render_source_film`). The target task (which of three
classes a film shows) is never seen in pretraining.

Every backbone trains the same way: Adam at a constant rate, the weights averaged over the
last steps, then precise-BN statistics for those weights. VGG16, which has no
BatchNormalization and does not train from random weights in so short a run, trains as a twin
with BatchNorm after each convolution, folded back into the plain VGG16 afterwards
(:func:`batchnorm_twin`, :func:`fold_batchnorm`).

The trained backbone is kept in a checked cache (:mod:`cxrlib.runs.pretrain_cache`: its names,
checks, locks and saving); :func:`ensure_pretrained` finds it there or pretrains it first.
These weights are **not** ImageNet weights: they know synthetic films, nothing about real
radiographs or natural images (the README reports what they do on the real sample).
"""

from __future__ import annotations

import logging
import time
from pathlib import Path

import numpy as np

from cxrlib.backbones import (
    SCRATCH,
    SYNTHETIC,
    check_size,
    default_size,
    get_backbone,
    resolve_weights,
)
from cxrlib.errors import InputError
from cxrlib.runs.pretrain_cache import (
    PRETRAIN_BATCH,
    PRETRAIN_EPOCHS,
    PRETRAIN_IMAGES,
    check_space,
    entry_info,
    entry_problem,
    info_path,
    locked,
    no_space_is_one_line,
    rebuild_command,
    remove_stale_temporaries,
    save_entry,
    source_films,
    weights_path,
)

log = logging.getLogger(__name__)

#: Adam's rate, constant. A warm-up and cosine decay to 0 (tried, 2026-12-02) left the linear
#: probe of DenseNet121 as it was (0.923 against 0.920) but made its weights fragile: the
#: course's V3 fine-tuning from them collapsed (0.517 against 0.967, demo settings).
PRETRAIN_LR = 1e-3
#: The saved weights are the exponential moving average of the last ~50 steps' weights (Adam's
#: ``use_ema``), not the last step's: at a constant rate and batch 16 the last step is a noisy
#: draw (VGG16's validation loss went 0.577, 0.533, 0.620 over its three epochs).
PRETRAIN_EMA = 0.98
RECALIBRATION_BATCHES = 8    # precise-BN batches of 64 films after training (recalibrate_batchnorm)
#: The fewest source films: one in ten is held out for validation, the rest train.
MIN_IMAGES = 10
_TIMING_STEPS = 2   # steps timed before the estimate is printed


def check_settings(backbone: str, image_size: int, n_images: int, epochs: int,
                   batch_size: int = PRETRAIN_BATCH, seed: int = 0) -> None:
    """Refuse settings that cannot pretrain (InputError naming the flag), before any work."""
    check_size(get_backbone(backbone).name, image_size)   # get_backbone: a known name
    if n_images < MIN_IMAGES:
        raise InputError(f"Pretraining needs at least {MIN_IMAGES} films (one in ten is held out "
                         f"for validation), not {n_images}: give --images {MIN_IMAGES} or more "
                         f"(default {PRETRAIN_IMAGES}).")
    if epochs < 1:
        raise InputError(f"Pretraining needs at least 1 epoch, not {epochs}: give --epochs 1 or "
                         f"more (default {PRETRAIN_EPOCHS}).")
    if batch_size < 1:
        raise InputError(f"The pretraining batch size must be at least 1, not {batch_size}.")
    if seed < 0:
        raise InputError(f"The pretraining seed must be 0 or more, not {seed} (--seed).")


def _model(backbone: str, image_size: int, n_labels: int):
    """(the backbone without top, random weights; the network that trains: backbone + a
    multi-label sigmoid head; the (plain conv, conv, BatchNorm) triples to fold afterwards).

    A backbone without BatchNormalization (VGG16) trains as its :func:`batchnorm_twin`, and
    :func:`fold_batchnorm` writes the result back into the plain backbone.
    """
    import keras

    from cxrlib.backbones import application

    base = application(backbone)(include_top=False, weights=None,
                                 input_shape=(image_size, image_size, 3))
    trunk, pairs = base, []
    if not any(isinstance(layer, keras.layers.BatchNormalization) for layer in base.layers):
        trunk, pairs = batchnorm_twin(base)
    for layer in trunk.layers:   # a short run: the statistics that get saved must catch up fast
        if isinstance(layer, keras.layers.BatchNormalization):
            layer.momentum = 0.9
    x = keras.layers.GlobalAveragePooling2D(name="source_pool")(trunk.output)
    out = keras.layers.Dense(n_labels, activation="sigmoid", name="source_findings")(x)
    return base, keras.Model(trunk.input, out, name=f"{backbone}_source_task"), pairs


def batchnorm_twin(base):
    """``base``, a plain chain of layers, with a BatchNormalization between every convolution
    and its activation; returns (the twin, [(plain conv, twin conv, its BatchNorm), ...]).

    VGG16 has no BatchNorm, and from random weights a short run does not train it: at Adam
    1e-3 its first steps overshoot and every ReLU dies (a linear probe of its features fell
    from 0.82 to 0.63), at 1e-4 it learnt nothing in the budget. Its twin trains like the
    other backbones; BatchNorm in inference mode is an affine map per channel, so
    :func:`fold_batchnorm` turns the trained twin back into the plain architecture exactly.
    """
    import keras

    x = inputs = keras.Input(base.input_shape[1:], name=base.layers[0].name)
    previous, pairs = base.layers[0], []
    for layer in base.layers[1:]:
        if layer.input is not previous.output:
            raise ValueError(f"{base.name} is not a plain chain of layers ({layer.name}); "
                             "its BatchNorm twin cannot be built.")
        if isinstance(layer, keras.layers.Conv2D):
            conv = keras.layers.Conv2D.from_config({**layer.get_config(), "activation": None})
            norm = keras.layers.BatchNormalization(name=f"{layer.name}_bn")
            activation = keras.layers.Activation(layer.get_config()["activation"],
                                                 name=f"{layer.name}_act")
            x = activation(norm(conv(x)))
            pairs.append((layer, conv, norm))
        else:
            x = type(layer).from_config(layer.get_config())(x)
        previous = layer
    return keras.Model(inputs, x, name=f"{base.name}_batchnorm_twin"), pairs


def fold_batchnorm(pairs) -> None:
    """Write each trained (conv → BatchNorm) of a :func:`batchnorm_twin` into its plain conv:
    kernel × γ/√(σ²+ε) per output channel, bias (b − μ)·γ/√(σ²+ε) + β (inference mode)."""
    for plain, conv, norm in pairs:
        kernel, bias = (np.asarray(w, dtype="float64") for w in (conv.kernel, conv.bias))
        gamma, beta, mean, variance = (np.asarray(w, dtype="float64") for w in (
            norm.gamma, norm.beta, norm.moving_mean, norm.moving_variance))
        scale = gamma / np.sqrt(variance + norm.epsilon)
        plain.set_weights([(kernel * scale).astype("float32"),
                           ((bias - mean) * scale + beta).astype("float32")])


def recalibrate_batchnorm(model, x: np.ndarray, batch_size: int = 64,
                          max_batches: int = RECALIBRATION_BATCHES) -> int:
    """Set every BatchNormalization layer's moving statistics to their average over batches of
    ``x`` ("precise BN"); returns the number of batches used.

    A short pretraining moves the weights faster than the moving averages follow, so in
    inference mode (how a frozen or fine-tuned backbone runs) each layer normalises with stale
    statistics and the error compounds with depth: InceptionV3's features reached ~1e6 and its
    head's loss 3e13. Forward passes in training mode with momentum k/(k+1) at batch k make
    the moving statistics the plain mean over the batches, for the final weights.
    """
    import keras

    layers = [layer for layer in model.layers if isinstance(layer, keras.layers.BatchNormalization)]
    if not layers or len(x) == 0:
        return 0
    saved = [layer.momentum for layer in layers]
    starts = range(0, len(x), batch_size)[:max_batches]
    try:
        for k, start in enumerate(starts):
            for layer in layers:
                layer.momentum = k / (k + 1)
            model(x[start:start + batch_size], training=True)
    finally:
        for layer, momentum in zip(layers, saved):
            layer.momentum = momentum
    return len(starts)


def _inputs(images: np.ndarray, backbone: str) -> np.ndarray:
    """uint8 grayscale films → the backbone's preprocessed 3-channel float inputs, as every
    model input is made (:func:`cxrlib.data.pipeline.input_array`)."""
    from cxrlib.data.pipeline import input_array
    from cxrlib.data.prepare import Prep

    return input_array(images, Prep(images.shape[-1], backbone))


def _progress(total_steps: int, backbone: str, image_size: int, n: int, epochs: int,
              target: Path, show: bool):
    """Keras callback: times the first steps, prints one line with the estimate, shows a bar.
    Not tqdm's ``TqdmCallback``: its bars are per epoch, this is one bar over every step."""
    import keras

    class Progress(keras.callbacks.Callback):
        def on_train_begin(self, logs=None):
            self.bar, self.step, self.start = None, 0, None

        def on_train_batch_end(self, batch, logs=None):
            self.step += 1
            if self.step == 1:
                self.start = time.time()     # the first step includes tracing: not timed
            elif self.step == 1 + _TIMING_STEPS:
                per_step = (time.time() - self.start) / _TIMING_STEPS
                left = per_step * (total_steps - self.step)
                print(f"Pretraining {backbone} at {image_size} px on {n} synthetic films "
                      f"(source task: lung-zone findings), {epochs} epochs: about "
                      f"{max(1, round(left / 60))} min more on this machine; it is cached in {target}.",
                      flush=True)
                if show:
                    from tqdm.auto import tqdm
                    self.bar = tqdm(total=total_steps, initial=self.step, desc=f"pretrain {backbone}",
                                    unit="step")
            elif self.bar is not None:
                self.bar.update(1)
                if logs and "loss" in logs:
                    self.bar.set_postfix(loss=f"{float(logs['loss']):.3f}")

        def on_train_end(self, logs=None):
            if self.bar is not None:
                self.bar.close()

    return Progress()


def _train(backbone: str, image_size: int, n_images: int, epochs: int, seed: int, batch_size: int,
           target: Path, progress: bool):
    """Pretrain ``backbone`` on the source task; returns (the backbone without top, its JSON
    without the file fields :func:`save_entry` adds). Refuses first when the cache folder has
    no room for the films and the weights."""
    import keras

    from cxrlib.data.source_task import SOURCE_LABELS
    from cxrlib.environment import environment_info

    keras.utils.set_random_seed(seed)
    base, model, folded = _model(backbone, image_size, len(SOURCE_LABELS))
    check_space(target.parent, 4 * base.count_params() + 2**20, f"the {backbone} weights")
    images, labels = source_films(n_images, image_size, seed, target.parent, progress)
    n_val = max(1, len(images) // 10)
    x, y = _inputs(images, backbone), labels
    steps = epochs * -(-(len(x) - n_val) // batch_size)
    optimizer = keras.optimizers.Adam(PRETRAIN_LR, use_ema=True, ema_momentum=PRETRAIN_EMA)
    model.compile(optimizer=optimizer,
                  loss="binary_crossentropy",
                  metrics=[keras.metrics.BinaryAccuracy(name="accuracy")])
    started = time.time()
    history = model.fit(x[n_val:], y[n_val:], validation_data=(x[:n_val], y[:n_val]),
                        epochs=epochs, batch_size=batch_size, shuffle=True, verbose=0,
                        callbacks=[_progress(steps, backbone, image_size, len(x), epochs,
                                             target, progress)])
    # fit() ends by writing the averaged weights into the model; the BatchNorm statistics are
    # then recomputed for them (an average of weights never produced the running statistics)
    recalibrated = recalibrate_batchnorm(model, x[n_val:])
    fold_batchnorm(folded)
    wall = time.time() - started
    probs = np.asarray(model.predict(x[:n_val], verbose=0))   # one pass: the loss and the accuracy
    val_loss = float(np.mean(keras.losses.binary_crossentropy(y[:n_val], probs)))
    val = probs > 0.5
    info = {
        "what": "a backbone pretrained by cxrlib on synthetic chest films, NOT ImageNet weights",
        **entry_info(backbone, image_size, seed, len(x), epochs, batch_size),
        "validation_images": int(n_val),
        "optimizer": f"adam lr={PRETRAIN_LR}, weights averaged (EMA {PRETRAIN_EMA})",
        "validation_loss": round(val_loss, 4),   # of the saved weights (the history's is not)
        "batchnorm_folded_convolutions": len(folded),
        "batchnorm_recalibration_batches": recalibrated,
        "wall_time_s": round(wall, 1),
        "history": {k: [float(v) for v in vals] for k, vals in history.history.items()},
        "validation_accuracy_per_label": dict(zip(SOURCE_LABELS, (val == (y[:n_val] > 0.5)).mean(0).round(3).tolist())),
        "environment": environment_info(),
    }
    log.info("Pretrained %s at %d px in %.0f s.", backbone, image_size, wall)
    return base, info


def ensure_pretrained(backbone: str, image_size: int, seed: int = 0, progress: bool = True,
                      cache: str | Path | None = None, n_images: int = PRETRAIN_IMAGES,
                      epochs: int = PRETRAIN_EPOCHS, batch_size: int = PRETRAIN_BATCH,
                      force: bool = False, rebuild: bool = True) -> Path:
    """The checked cache entry of ``backbone`` at ``image_size`` (these settings), pretrained
    first, with a message, when it is missing or ``force``.

    The entry is locked meanwhile: a second process waits, then finds it cached. One that fails
    :func:`entry_problem` is pretrained again, saying why; with ``rebuild=False`` (``train``'s
    look-up) it is refused instead, with the command that rebuilds it (:class:`InputError`).
    """
    check_settings(backbone, image_size, n_images, epochs, batch_size, seed)
    name = get_backbone(backbone).name
    target = weights_path(name, image_size, seed, cache, n_images, epochs, batch_size)
    with no_space_is_one_line(target.parent), locked(target):
        remove_stale_temporaries(target)
        present = target.exists() or info_path(target).exists()
        expected = entry_info(name, image_size, seed, n_images, epochs, batch_size)
        problem = entry_problem(target, expected) if present else None
        if present and problem is None and not force:
            return target
        what = f"synthetic-pretrained {name} at {image_size} px in {target.parent}"
        if problem and not rebuild:
            raise InputError(f"The cached {what} cannot be used: {problem}. Pretrain it again: "
                             f"{rebuild_command(name, image_size, seed)}")
        if problem:
            print(f"The cached {what} cannot be used ({problem}): pretraining it again.", flush=True)
        elif not present:
            print(f"No {what}: pretraining it now (once; later runs reuse it).", flush=True)
        base, info = _train(name, image_size, n_images, epochs, seed, batch_size, target, progress)
        return save_entry(base, target, info)


def pretrain(backbone: str, image_size: int, cache: str | Path | None = None,
             n_images: int = PRETRAIN_IMAGES, epochs: int = PRETRAIN_EPOCHS, seed: int = 0,
             batch_size: int = PRETRAIN_BATCH, progress: bool = True) -> Path:
    """Pretrain ``backbone`` on the synthetic source task now, even when it is cached, and save
    it (no head) with its JSON; returns the weights file (:func:`ensure_pretrained` with
    ``force``: the same lock, checks and atomic writes)."""
    return ensure_pretrained(backbone, image_size, seed, progress, cache, n_images, epochs,
                             batch_size, force=True)


def weights_source(name: str, weights: str | None, image_size: int | None = None) -> dict:
    """The weights file a model of ``name`` loads and the JSON that describes it (for run records).

    ``{"file": None, "info": None}`` for random weights, the scratch CNN, or ImageNet weights
    that Keras fetches itself; ``"synthetic"`` is the checked standard cache entry, pretrained
    first when missing (a damaged or mismatched one is refused: :func:`ensure_pretrained`). A
    weights file's JSON is recorded only when it describes that file (its sha256).
    """
    if name == SCRATCH or weights is None or str(weights).lower() == "none":
        return {"file": None, "info": None}
    if str(weights).lower() == SYNTHETIC:
        path = ensure_pretrained(name, image_size or default_size(name), rebuild=False)
        return {"file": str(path), "info": str(info_path(path))}
    resolved = resolve_weights(name, weights)
    if resolved is None or resolved == "imagenet":
        return {"file": None, "info": None}
    info = info_path(resolved)
    problem = entry_problem(resolved, {}) if info.is_file() else "it has no JSON"
    if info.is_file() and problem:
        log.warning("%s does not describe %s (%s): not recorded.", info, resolved, problem)
    return {"file": resolved, "info": None if problem else str(info)}
