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

The backbone, without its head, is saved as ``<cache>/<backbone>-<size>px-<task>-<recipe>-seed<seed>
.weights.h5`` with a JSON beside it saying how it was made, the weights file's size and its
sha256. That name is the standard budget's (:data:`PRETRAIN_IMAGES` films, :data:`PRETRAIN_EPOCHS`
epochs, batch :data:`PRETRAIN_BATCH`), the one ``weights="synthetic"`` loads; other settings add
``-n<films>-e<epochs>-b<batch>`` to it. The cache folder is
``$CXR_PRETRAINED_DIR``, else ``$XDG_CACHE_HOME/cxrlib/pretrained`` (``~/.cache/...``).

Nothing in the cache is trusted as it is: an entry is used only when its JSON states the
settings asked for and the weights file's size and sha256 match it (:func:`entry_problem`).
``cxr pretrain`` rebuilds an entry that fails, saying why; ``train`` refuses it with the
command that rebuilds it. Each entry (and each films file) is locked while it is checked and
written (``.<name>.lock``: a second process waits, then finds it cached), every file goes
through a temporary file beside it (:func:`cxrlib.files.replacing`), and the temporary files a
killed run left behind are removed by the next run that holds the lock. A full disk is one
line naming the folder, and leaves no entry behind.
These weights are **not** ImageNet weights: they know synthetic films, nothing about real
radiographs or natural images (the README reports what they do on the real sample).
"""

from __future__ import annotations

import contextlib
import errno
import glob
import json
import logging
import os
import shutil
import time
import zipfile
import zlib
from pathlib import Path
from typing import Iterator

import numpy as np

from cxrlib.backbones import (
    SCRATCH,
    SYNTHETIC,
    check_size,
    default_size,
    get_backbone,
    resolve_weights,
)
from cxrlib.errors import InputError, UserError
from cxrlib.files import read_json, replacing, sha256_file, write_json_atomic, write_npz_atomic
from cxrlib.text import one_line

log = logging.getLogger(__name__)

#: Default pretraining budget (timings on 2 CPU cores: see the README).
PRETRAIN_IMAGES = 1200
PRETRAIN_EPOCHS = 3
PRETRAIN_BATCH = 16   # more, smaller steps in the same budget: at 64 px a linear probe of
                      # DenseNet121's features scored 0.87 (batch 32), 0.92 (16), 0.94 (8; 1.25x time)
#: Adam's rate, constant. A warm-up and cosine decay to 0 (tried, 2026-12-02) left the linear
#: probe of DenseNet121 as it was (0.923 against 0.920) but made its weights fragile: the
#: course's V3 fine-tuning from them collapsed (0.517 against 0.967, demo settings).
PRETRAIN_LR = 1e-3
#: The saved weights are the exponential moving average of the last ~50 steps' weights (Adam's
#: ``use_ema``), not the last step's: at a constant rate and batch 16 the last step is a noisy
#: draw (VGG16's validation loss went 0.577, 0.533, 0.620 over its three epochs).
PRETRAIN_EMA = 0.98
RECALIBRATION_BATCHES = 8    # precise-BN batches of 64 films after training (recalibrate_batchnorm)
#: Part of the cache key: bumped whenever pretraining changes what it saves (r2: precise BN,
#: batch 16; r3: weight averaging, VGG16 trained with BatchNorm, folded in afterwards),
#: so that weights made the old way are not reused.
PRETRAIN_RECIPE = "r3"
#: The fewest source films: one in ten is held out for validation, the rest train.
MIN_IMAGES = 10
_TIMING_STEPS = 2   # steps timed before the estimate is printed


def cache_dir() -> Path:
    """Where pretrained weights live: ``$CXR_PRETRAINED_DIR`` or the user's cache folder."""
    from cxrlib.environment import user_folder

    return user_folder("CXR_PRETRAINED_DIR", "pretrained")


def is_standard(n_images: int, epochs: int, batch_size: int) -> bool:
    """Whether these are the standard budget's settings (those ``weights="synthetic"`` loads)."""
    return (n_images, epochs, batch_size) == (PRETRAIN_IMAGES, PRETRAIN_EPOCHS, PRETRAIN_BATCH)


def weights_path(backbone: str, image_size: int, seed: int = 0, cache: str | Path | None = None,
                 n_images: int = PRETRAIN_IMAGES, epochs: int = PRETRAIN_EPOCHS,
                 batch_size: int = PRETRAIN_BATCH) -> Path:
    """The cache file of one pretrained backbone (the key: backbone, size, task version, seed;
    settings other than the standard budget's add ``-n<films>-e<epochs>-b<batch>``)."""
    from cxrlib.data.source_task import SOURCE_TASK

    name = get_backbone(backbone).name
    budget = "" if is_standard(n_images, epochs, batch_size) else f"-n{n_images}-e{epochs}-b{batch_size}"
    return Path(cache or cache_dir()) / (f"{name}-{int(image_size)}px-{SOURCE_TASK}-{PRETRAIN_RECIPE}"
                                         f"-seed{seed}{budget}.weights.h5")


def info_path(weights_file: str | Path) -> Path:
    """The JSON that describes a weights file (``x.weights.h5`` → ``x.json``)."""
    path = Path(weights_file)
    return path.with_name(path.name.removesuffix(".weights.h5") + ".json")


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


def entry_info(backbone: str, image_size: int, seed: int = 0, n_images: int = PRETRAIN_IMAGES,
               epochs: int = PRETRAIN_EPOCHS, batch_size: int = PRETRAIN_BATCH) -> dict:
    """What the JSON of a cache entry states about how it was made: each of these is checked
    on load (:func:`entry_problem`)."""
    from cxrlib.data.source_task import SOURCE_LABELS, SOURCE_TASK

    return {"backbone": get_backbone(backbone).name, "image_size": int(image_size),
            "source_task": {"name": SOURCE_TASK, "labels": list(SOURCE_LABELS),
                            # the name it was first recorded under (now cxrlib.data.source_task):
                            # part of every cache entry's key, kept so that cached weights stay valid
                            "generator": "cxrlib.data.synthetic.render_source_film",
                            "loss": "binary cross-entropy (multi-label)"},
            "images": int(n_images), "epochs": int(epochs), "batch_size": int(batch_size),
            "seed": int(seed), "recipe": PRETRAIN_RECIPE}


def _short(value: object) -> str:
    """A value of a JSON as a short text, for a message."""
    return one_line(repr(value), 40)


def entry_problem(weights_file: str | Path, expected: dict) -> str | None:
    """Why the cache entry ``weights_file`` cannot be used, or None when it can: both files
    there, the JSON readable, stating what ``expected`` states (:func:`entry_info`; ``{}``
    checks only the files), and the weights file of the size and sha256 the JSON records."""
    path = Path(weights_file)
    info_file = info_path(path)
    if not path.is_file():
        return f"its weights file {path.name} is missing"
    if not info_file.is_file():
        return f"its JSON {info_file.name} is missing (an interrupted pretraining?)"
    try:
        info = json.loads(info_file.read_text())
    except (OSError, ValueError):
        return f"its JSON {info_file.name} is not readable JSON"
    if not isinstance(info, dict):
        return f"its JSON {info_file.name} is not a JSON object"
    wrong = [f"{key} {_short(info.get(key))} (not {_short(value)})" for key, value in expected.items()
             if type(info.get(key)) is not type(value) or info.get(key) != value]
    if wrong:
        return f"its JSON {info_file.name} says {', '.join(wrong)}"
    if info.get("weights_file") != path.name or not isinstance(info.get("sha256"), str):
        return (f"its JSON {info_file.name} does not record this weights file's name and sha256 "
                "(made by another or an older cxrlib?)")
    size = path.stat().st_size
    if info.get("weights_bytes") != size:
        return (f"its weights file has {size} bytes, its JSON records {info.get('weights_bytes')!r} "
                "(truncated or replaced)")
    if sha256_file(path) != info["sha256"]:
        return "its weights file's sha256 is not the one its JSON records (damaged or replaced)"
    return None


def _stem(path: Path) -> str:
    """A cache file's name without its extension (``x.weights.h5`` → ``x``, ``x.npz`` → ``x``)."""
    return path.name.removesuffix(".weights.h5").removesuffix(".npz")


def _lock_file(path: Path) -> Path:
    """The lock of one cache file: ``.<stem>.lock`` beside it."""
    return path.with_name(f".{_stem(path)}.lock")


@contextlib.contextmanager
def _locked(path: Path) -> Iterator[None]:
    """Hold the lock of the cache file ``path`` while the block runs; when another process
    holds it, say so and wait for it (the lock goes with its process, even on ``kill -9``)."""
    from filelock import FileLock, Timeout

    path.parent.mkdir(parents=True, exist_ok=True)
    lock = FileLock(str(_lock_file(path)))
    try:
        lock.acquire(timeout=0)
    except Timeout:
        print(f"Another process is writing {path.name} in {path.parent}: waiting for it.", flush=True)
        lock.acquire()
    try:
        yield
    finally:
        lock.release()


def _remove_stale_temporaries(path: Path) -> None:
    """Remove the temporary files (``.<stem>.*``) that an interrupted write of the cache file
    ``path`` or its JSON left; called with its lock held, so no live process is writing them."""
    for leftover in path.parent.glob(f".{glob.escape(_stem(path))}.*"):
        if leftover != _lock_file(path) and leftover.is_file():
            leftover.unlink(missing_ok=True)
            print(f"Removed {leftover}, a partial file left by an interrupted pretraining.", flush=True)


@contextlib.contextmanager
def _no_space_is_one_line(folder: Path) -> Iterator[None]:
    """Turn a full disk (ENOSPC, EDQUOT) inside the block into one UserError naming ``folder``."""
    try:
        yield
    except OSError as error:
        if error.errno not in (errno.ENOSPC, errno.EDQUOT):
            raise
        raise UserError(f"No space left on the disk of {folder}: nothing was cached. Free some "
                        "space there, or point --cache (CXR_PRETRAINED_DIR) at a folder on "
                        "another disk.") from None


def _check_space(folder: Path, needed: int, what: str) -> None:
    """Refuse, before the work, to write ``needed`` bytes in ``folder`` when it has less free."""
    free = shutil.disk_usage(folder).free
    if free < needed:
        raise UserError(f"Not enough space in {folder} for {what}: about {needed / 1e6:.0f} MB "
                        f"needed, {free / 1e6:.0f} MB free. Free some space there, or point "
                        "--cache (CXR_PRETRAINED_DIR) at a folder on another disk.")


def films_path(n: int, image_size: int, seed: int, cache: Path) -> Path:
    """The cache file of the source-task films of one (size, seed, n)."""
    from cxrlib.data.source_task import SOURCE_TASK

    return cache / f"films-{SOURCE_TASK}-{image_size}px-seed{seed}-n{n}.npz"


def _read_films(path: Path, n: int, image_size: int) -> tuple[np.ndarray, np.ndarray] | None:
    """The films cached in ``path``; None when there is no such file, or (said) when it cannot
    be read or holds other films than ``n`` at ``image_size``."""
    from cxrlib.data.source_task import SOURCE_LABELS

    if not path.is_file():
        return None
    try:
        with np.load(path) as data:
            images, labels = data["images"], data["labels"]
    except (OSError, ValueError, EOFError, KeyError, zipfile.BadZipFile, zlib.error) as error:
        reason = f"{type(error).__name__}: {one_line(error, 120, first_line=True)}"
    else:
        if (images.shape == (n, image_size, image_size) and images.dtype == np.uint8
                and labels.shape == (n, len(SOURCE_LABELS))):
            return images, labels
        reason = f"it holds images {images.shape} and labels {labels.shape}"
    print(f"The cached films file {path} cannot be used ({reason}): generating the films again.",
          flush=True)
    return None


def source_films(n: int, image_size: int, seed: int, cache: Path, progress: bool
                 ) -> tuple[np.ndarray, np.ndarray]:
    """The source-task films, generated once per (size, seed, n) and kept in the cache (a file
    that cannot be read is generated again)."""
    from cxrlib.data.source_task import SOURCE_LABELS, source_task_arrays

    path = films_path(n, image_size, seed, cache)
    with _locked(path):
        _remove_stale_temporaries(path)
        films = _read_films(path, n, image_size)
        if films is not None:
            return films
        _check_space(cache, n * (image_size ** 2 + 4 * len(SOURCE_LABELS)) + 2**20, f"{n} films")
        images, labels = source_task_arrays(n, image_size, seed=seed, progress=progress)
        write_npz_atomic(path, {"images": images, "labels": labels}, compressed=True)
    return images, labels


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
    _check_space(target.parent, 4 * base.count_params() + 2**20, f"the {backbone} weights")
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


def save_entry(base, target: Path, info: dict) -> Path:
    """Save ``base``'s weights as the cache entry ``target`` with its JSON (``info`` plus the
    weights file's name, size and sha256), each through a temporary file beside it.

    The JSON is renamed into place first, then the weights: a crash between the two leaves a
    JSON whose sha256 no weights file matches, which :func:`entry_problem` refuses.
    """
    with replacing(target, suffix=".tmp.weights.h5") as tmp:
        try:
            base.save_weights(tmp)
        except OSError:
            # a full disk: h5py still holds the file open and flushes it when it lets go;
            # without the room this frees, that flush fails again and the process segfaults
            os.truncate(tmp, 0)
            raise
        write_json_atomic(info_path(target), {**info, "weights_file": target.name,
                                              "weights_bytes": tmp.stat().st_size,
                                              "sha256": sha256_file(tmp)})
    return target


def rebuild_command(backbone: str, image_size: int, seed: int = 0) -> str:
    """The command that pretrains a standard cache entry again."""
    return (f"cxr pretrain --backbone {get_backbone(backbone).name} --image-size {image_size}"
            + (f" --seed {seed}" if seed else "") + " --force")


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
    with _no_space_is_one_line(target.parent), _locked(target):
        _remove_stale_temporaries(target)
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


def describe(weights_file: str | Path) -> dict:
    """The JSON written beside a pretrained weights file ({} when there is none)."""
    return read_json(info_path(weights_file))


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
