"""Models: an ImageNet backbone plus a head, built as one *flat* functional graph.

Flat means the backbone's layers sit directly in the model (input → backbone layers →
head), rather than the backbone being called as a nested sub-model. Heat-map tools such as
tf-keras-vis need that: they look the last convolution up by name in ``model.layers``.

The course's progression, as named variants:

======== =====================================================================================
``v0``    frozen backbone → global average pooling → softmax, never trained (chance level:
          the point is that ImageNet features alone do not know our classes)
``v1``    v0 with the softmax trained, on standardised features extracted once and cached
``v2``    frozen backbone, augmentation, deeper head Dense(500) → Dense(200) → softmax
``v2reg`` v2 with Dropout(0.5) after the first dense layer (= ``frozen`` for every backbone)
``v3``    the whole network fine-tuned from its pretrained weights (= ``finetune``)
``scratch`` a from-scratch CNN (five conv/pool blocks, a dense head with dropout)
======== =====================================================================================

When a pretrained backbone is frozen *or* fine-tuned, its BatchNormalization layers stay in
inference mode (``trainable = False``, which in Keras 3 also means inference mode): updating
their ImageNet statistics with a few small batches of radiographs would wreck the features.
With ``weights=None`` there are no statistics to protect, and a network trained from random
weights needs its BatchNormalization to learn, so then (and only then) it trains.

``channels=1`` puts a trainable 1→3 channel 1×1 convolution in front of an RGB backbone, so
grayscale radiographs go in as they are and the network learns its own colour mapping.
"""

from __future__ import annotations

import logging
import zipfile
from pathlib import Path
from typing import Sequence

import keras
import numpy as np

from cxrlib.backbones import (
    SCRATCH,
    WeightsUnavailableError,
    application,
    check_size,
    default_size,
    missing_weights_message,
    resolve_weights,
)
from cxrlib.errors import InputError
from cxrlib.spec import HEADS
from cxrlib.text import one_line
from cxrlib.variants import get_variant

log = logging.getLogger(__name__)

HEAD_PREFIX = "head_"
HEAD_NORM = HEAD_PREFIX + "norm"
VARIANCE_FLOOR = 0.01   # × the median feature variance: the smallest variance the head divides by
SCRATCH_LAST_CONV = "scratch_conv5"


def model_name(backbone: str, variant: str) -> str:
    """The default name of a model and its run: ``densenet121-v2reg`` (aliases resolved)."""
    return f"{backbone}-{get_variant(variant).name}"


def _head(x, n_classes: int, variant: str, dropout: float, binary: bool, seed: int,
          head: str = "course", head_norm: bool = True):
    """The classification head on a feature map (see :data:`HEADS`): the variant's own
    (``head="course"``, from its registry entry); pooling → output (``"linear"``); pooling →
    BatchNorm → output (``"batchnorm"``, the SIIM course's opacity runs); or VGG16's own
    classifier (``"vgg"``: flatten, two Dense(4096), then the output).

    With ``head_norm`` (a library change; off in the course presets) every trained head that
    has no BatchNorm standardises the pooled features (:data:`HEAD_NORM`, adapted on the
    training features by :func:`adapt_head_norm`): pooled features of a frozen backbone can
    have tiny means and spreads (random weights: about 0.03 ± 0.002), on which a softmax
    trained with SGD barely moves. ``v0`` stays the untrained head on raw features.
    """
    entry = get_variant(variant)
    layout = entry.head if head == "course" else head
    if layout == "vgg":
        x = keras.layers.Flatten(name=HEAD_PREFIX + "flatten")(x)
        for index in (1, 2):
            x = keras.layers.Dense(4096, activation="relu", name=f"{HEAD_PREFIX}fc{index}")(x)
        return _output(x, n_classes, binary)
    x = keras.layers.GlobalAveragePooling2D(name=HEAD_PREFIX + "pool")(x)
    if layout == "batchnorm":
        x = keras.layers.BatchNormalization(name=HEAD_PREFIX + "bn")(x)
    elif head_norm and entry.training != "none":
        # float32 even under mixed precision: the features' spreads (variances near 1e-8 with
        # random weights) are below float16's range, and dividing by them gave inf
        x = keras.layers.Normalization(axis=-1, name=HEAD_NORM, dtype="float32")(x)
    if layout not in ("linear", "batchnorm"):
        x = keras.layers.Dense(500, activation="relu", name=HEAD_PREFIX + "dense500")(x)
        if layout == "deep-dropout":
            x = keras.layers.Dropout(dropout, seed=seed, name=HEAD_PREFIX + "dropout")(x)
        x = keras.layers.Dense(200, activation="relu", name=HEAD_PREFIX + "dense200")(x)
    return _output(x, n_classes, binary)


def _output(x, n_classes: int, binary: bool):
    """Logits, then a float32 softmax/sigmoid (float32 even under mixed precision)."""
    units = 1 if binary else n_classes
    x = keras.layers.Dense(units, name=HEAD_PREFIX + "logits")(x)
    return keras.layers.Activation("sigmoid" if binary else "softmax", dtype="float32",
                                   name="predictions")(x)


def _application(backbone: str, weights: str | None, input_tensor=None, input_shape=None) -> keras.Model:
    """Instantiate a Keras application, turning a failed download into a clear error
    (with neither an input tensor nor a shape: the whole network with its ImageNet top)."""
    top = input_tensor is None and input_shape is None
    try:
        return application(backbone)(include_top=top, weights=weights,
                                     input_tensor=input_tensor, input_shape=input_shape)
    except WeightsUnavailableError:
        raise
    except Exception as error:
        if weights == "imagenet" and ("URL fetch failure" in str(error) or "HTTP" in str(error)
                                      or isinstance(error, OSError)):
            raise WeightsUnavailableError(missing_weights_message(backbone)) from error
        if weights not in (None, "imagenet"):
            raise InputError(f"Cannot load the weights file {weights} into {backbone} "
                             f"({type(error).__name__}: {one_line(error, 160, first_line=True)}); give a Keras .h5 "
                             f"weights file saved from {backbone} without its top, or "
                             "--weights imagenet / none.") from error
        raise


def _backbone_features(inputs, backbone: str, weights: str | None, image_size: int, channels: int):
    """Backbone layers applied to ``inputs`` in the same (flat) graph; returns the feature map.

    Weight files load by layer order, so with the 1-channel adapter, or with a Keras 3
    ``.weights.h5`` file (cxrlib's synthetic pretraining), they are loaded into a plain copy
    of the backbone and copied into the flat graph layer by layer.
    """
    keras3_file = weights is not None and str(weights).endswith(".weights.h5")
    if channels == 3 and not keras3_file:
        return _application(backbone, weights, input_tensor=inputs).output
    x = inputs if channels == 3 else keras.layers.Conv2D(3, 1, name="adapter_conv")(inputs)
    flat = _application(backbone, None, input_tensor=x)
    if weights is not None:
        pretrained = _application(backbone, weights, input_shape=(image_size, image_size, 3))
        _copy_in_order(pretrained, flat)
    return flat.output


def _copy_in_order(source: keras.Model, target: keras.Model) -> None:
    """Copy a plain backbone's weights into the same backbone inside the flat graph.

    By layer order, not name: some applications (InceptionV3) name their layers ``conv2d_94``
    with a global counter, so a second copy gets other names. The shapes are checked.
    """
    sources = [layer for layer in source.layers if layer.weights]
    targets = [layer for layer in target.layers if layer.weights and layer.name != "adapter_conv"]
    if len(sources) != len(targets):
        raise ValueError(f"Backbone copies differ: {len(sources)} and {len(targets)} weighted layers.")
    for src, dst in zip(sources, targets):
        if [w.shape for w in src.weights] != [w.shape for w in dst.weights]:
            raise ValueError(f"Layer {src.name} does not match {dst.name}.")
        dst.set_weights(src.get_weights())


def scratch_features(inputs, seed: int = 0):
    """The from-scratch CNN: five conv/BN/ReLU/pool blocks (32 → 256 filters)."""
    x = inputs
    for block, filters in enumerate((32, 64, 128, 128, 256), start=1):
        x = keras.layers.Conv2D(filters, 3, padding="same", use_bias=False,
                                kernel_initializer=keras.initializers.HeNormal(seed + block),
                                name=f"scratch_conv{block}")(x)
        x = keras.layers.BatchNormalization(momentum=0.9, name=f"scratch_bn{block}")(x)
        x = keras.layers.Activation("relu", name=f"scratch_relu{block}")(x)
        if block < 5:
            x = keras.layers.MaxPooling2D(name=f"scratch_pool{block}")(x)
    return x


def flat_cnn(inputs, n_classes: int, binary: bool, seed: int = 0, dropout: float = 0.5):
    """The 3-class Kermany course's CNN: Conv 16…256 (valid padding) with pooling, Dropout,
    then Flatten, Dense 128-64-32-16, Dropout and the output (1,583,011 parameters at 256×256×1
    and three classes; its report lists the two Dropout layers without their rate)."""
    x = inputs
    for block, filters in enumerate((16, 32, 64, 128, 256), start=1):
        x = keras.layers.Conv2D(filters, 3, activation="relu",
                                kernel_initializer=keras.initializers.GlorotUniform(seed + block),
                                name=f"scratch_conv{block}")(x)
        x = keras.layers.MaxPooling2D(name=f"scratch_pool{block}")(x)
    x = keras.layers.Dropout(dropout, seed=seed, name=HEAD_PREFIX + "dropout_conv")(x)
    x = keras.layers.Flatten(name=HEAD_PREFIX + "flatten")(x)
    for units in (128, 64, 32, 16):
        x = keras.layers.Dense(units, activation="relu", name=f"{HEAD_PREFIX}dense{units}")(x)
    x = keras.layers.Dropout(dropout, seed=seed + 1, name=HEAD_PREFIX + "dropout")(x)
    return _output(x, n_classes, binary)




def build_model(backbone: str, variant: str, n_classes: int, image_size: int | None = None,
                weights: str | None = "imagenet", channels: int = 3, dropout: float = 0.5,
                binary: bool = False, seed: int = 0, head: str = "course", head_norm: bool = True,
                freeze_bn: bool = True) -> keras.Model:
    """Build a flat model for ``backbone`` × ``variant`` with its layers frozen as the variant says.

    ``weights`` is ``"imagenet"``, ``None`` or a local weights file. ``binary=True`` (two
    classes only) ends in one sigmoid unit instead of a softmax. ``head`` is the course's
    head (``"course"``), pooling + BatchNorm + output (``"batchnorm"``, SIIM course), or for the
    scratch backbone the 3-class Kermany course's flat CNN (``"flat"``); ``"linear"`` and
    ``"vgg"`` are in :func:`_head`. ``seed`` seeds the head's and the scratch CNN's
    initialisers and dropout; the caller seeds the rest (``keras.utils.set_random_seed``, as
    :func:`cxrlib.runs.train.train` does), so building a model changes no global state. ``head_norm`` and ``freeze_bn`` are the library's changes
    (:mod:`cxrlib.spec`): standardised head features, and pretrained BatchNormalization kept
    in inference mode.
    """
    if head not in HEADS or (head == "flat" and backbone != SCRATCH) or (head == "vgg" and backbone != "vgg16"):
        raise InputError(f"Unknown head {head!r} for {backbone}; choose one of {', '.join(HEADS)} "
                         "('flat' with the scratch backbone only, 'vgg' with vgg16 only).")
    if (backbone == SCRATCH) != (get_variant(variant).head == "scratch"):
        raise InputError("The 'scratch' backbone goes with the 'scratch' variant and only with it.")
    if binary and n_classes != 2:
        raise InputError(f"binary=True needs two classes, not {n_classes}.")
    if channels not in (1, 3):
        raise InputError(f"channels must be 1 or 3, not {channels}.")
    image_size = image_size or default_size(backbone)
    check_size(backbone, image_size, head)
    inputs = keras.Input((image_size, image_size, channels), name="image")
    if backbone == SCRATCH and head == "flat":
        return keras.Model(inputs, flat_cnn(inputs, n_classes, binary, seed), name="scratch-flat")
    if backbone == SCRATCH:
        x = scratch_features(inputs, seed)
        x = keras.layers.GlobalAveragePooling2D(name=HEAD_PREFIX + "pool")(x)
        x = keras.layers.Dense(256, activation="relu", name=HEAD_PREFIX + "dense256")(x)
        x = keras.layers.Dropout(dropout, seed=seed, name=HEAD_PREFIX + "dropout")(x)
        model = keras.Model(inputs, _output(x, n_classes, binary), name=model_name(backbone, variant))
        return model
    features = _backbone_features(inputs, backbone, resolve_weights(backbone, weights),
                                  image_size, channels)
    model = keras.Model(inputs, _head(features, n_classes, variant, dropout, binary, seed, head,
                                      head_norm), name=model_name(backbone, variant))
    set_trainable(model, variant, pretrained=weights is not None, freeze_bn=freeze_bn)
    if head == "vgg" and weights == "imagenet":
        _copy_vgg_classifier(model, image_size)
    return model


def _copy_vgg_classifier(model: keras.Model, image_size: int) -> None:
    """VGG16's ImageNet classifier (fc1, fc2) into the ``"vgg"`` head, as the two-stage
    course kept it; only at 224 px, the size its first dense layer was trained for (at any
    other size it starts from random weights, said in the log)."""
    if image_size != 224:
        log.warning("VGG16's own classifier was trained at 224 px; at %d px its dense layers "
                    "start from random weights.", image_size)
        return
    full = _application("vgg16", "imagenet")  # include_top=True is needed for fc1/fc2
    for index in (1, 2):
        model.get_layer(f"{HEAD_PREFIX}fc{index}").set_weights(full.get_layer(f"fc{index}").get_weights())


def is_head(layer: keras.layers.Layer) -> bool:
    """True for the classification head (and the 1-channel adapter), which always trains."""
    return layer.name.startswith(HEAD_PREFIX) or layer.name in ("predictions", "adapter_conv")


def set_trainable(model: keras.Model, variant: str, pretrained: bool = True,
                  freeze_bn: bool = True) -> None:
    """Freeze the backbone for the frozen variants; when fine-tuning, train all but BatchNorm.

    BatchNormalization of a pretrained backbone stays frozen (inference mode) either way,
    unless ``freeze_bn`` is False: then it trains with the rest when fine-tuning, updating
    its statistics on the new data's batches (what ``trainable = True`` on a whole Keras
    application does).
    """
    frozen = get_variant(variant).frozen
    for layer in model.layers:
        if is_head(layer):
            layer.trainable = True
        elif isinstance(layer, keras.layers.BatchNormalization) and pretrained and freeze_bn:
            layer.trainable = False        # inference mode, frozen or fine-tuned alike
        elif isinstance(layer, keras.layers.BatchNormalization):
            layer.trainable = not frozen
            layer.momentum = 0.9           # from scratch: running statistics must catch up fast
        else:
            layer.trainable = not frozen


def adapt_head_norm(model: keras.Model, features) -> bool:
    """Standardise the head's input: adapt its Normalization layer on pooled training features
    (N, D). Returns False (and does nothing) for a model without one (``v0``, scratch)."""
    names = {layer.name for layer in model.layers}
    if HEAD_NORM not in names:
        return False
    norm = model.get_layer(HEAD_NORM)
    norm.adapt(features)
    # A feature that never varied on the training images (a dead ReLU: exactly 0) would be
    # divided by ~1e-7 and blow up on any test image where it is not 0: floor its variance.
    variance = np.asarray(norm.adapt_variance)
    live = variance[variance > 0]
    floor = VARIANCE_FLOOR * float(np.median(live)) if live.size else 1.0
    norm.adapt_variance.assign(np.maximum(variance, floor).astype(variance.dtype))
    norm.finalize_state()
    return True


def feature_extractor(model: keras.Model) -> keras.Model:
    """The model up to the pooled features (for v1's extract-once training)."""
    return keras.Model(model.inputs, model.get_layer(HEAD_PREFIX + "pool").output)


def classifier_head(model: keras.Model) -> keras.Model:
    """A stand-alone copy of the head after the pooling layer, sharing the model's layers."""
    pooled = model.get_layer(HEAD_PREFIX + "pool").output
    inputs = keras.Input(pooled.shape[1:], name="features")
    x = inputs
    started = False
    for layer in model.layers:
        if layer.name == HEAD_PREFIX + "pool":
            started = True
            continue
        if started:
            x = layer(x)
    return keras.Model(inputs, x, name="head")


#: Each gradient's norm is clipped to this (per variable) by every optimiser. The course's SGD
#: (lr 0.01, Nesterov momentum 0.9) fine-tuning DenseNet121 whole from synthetic weights blew up
#: in its first epoch (loss 3e6, then chance) and reached 0.93 with clipping (demo data, 64 px);
#: a step whose gradient norm is under 1 is not changed.
CLIPNORM = 1.0


def make_optimizer(name: str = "sgd", learning_rate: float = 0.01, decay: float = 1e-6,
                   momentum: float = 0.9, clipnorm: float | None = CLIPNORM,
                   nesterov: bool = True, schedule: str = "inverse-time",
                   total_steps: int | None = None,
                   weight_decay: float = 0.0) -> keras.optimizers.Optimizer:
    """The courses' optimisers in Keras 3 form, with optional gradient clipping (:data:`CLIPNORM`).

    The old ``SGD(lr=0.01, decay=1e-6, momentum=0.9, nesterov=True)`` becomes SGD with an
    ``InverseTimeDecay`` schedule: lr / (1 + decay · step), exactly what ``decay=`` did.
    ``schedule="cosine"`` decays the rate from ``learning_rate`` to 0 over ``total_steps``
    instead. ``momentum`` and ``nesterov`` are SGD's; ``weight_decay`` is decoupled (Keras'
    for every optimiser; ``adamw`` is AdamW with it).
    """
    if schedule == "cosine":
        if not total_steps:
            raise InputError("The cosine schedule needs the run's number of steps (total_steps).")
        rate = keras.optimizers.schedules.CosineDecay(learning_rate, decay_steps=total_steps)
    elif schedule == "inverse-time":
        rate = (keras.optimizers.schedules.InverseTimeDecay(learning_rate, decay_steps=1,
                                                             decay_rate=decay)
                if decay else learning_rate)
    else:
        raise InputError(f"Unknown schedule {schedule!r}; choose inverse-time or cosine.")
    decoupled = {"weight_decay": weight_decay} if weight_decay else {}
    name = name.lower()
    if name == "sgd":
        return keras.optimizers.SGD(learning_rate=rate, momentum=momentum, nesterov=nesterov,
                                    clipnorm=clipnorm, **decoupled)
    kinds = {"adam": keras.optimizers.Adam, "adamw": keras.optimizers.AdamW,
             "nadam": keras.optimizers.Nadam, "rmsprop": keras.optimizers.RMSprop}
    if name in kinds:
        return kinds[name](learning_rate=rate, clipnorm=clipnorm,
                           **({"weight_decay": weight_decay} if name == "adamw" else decoupled))
    raise InputError(f"Unknown optimizer {name!r}; choose sgd, adam, adamw, nadam or rmsprop.")


def compile_model(model: keras.Model, optimizer: keras.optimizers.Optimizer,
                  jit_compile: bool | str = "auto", run_eagerly: bool = False,
                  label_smoothing: float = 0.0) -> keras.Model:
    """Compile with the loss that matches the output: categorical or binary cross-entropy
    (with ``label_smoothing``, the targets pulled that far towards uniform)."""
    binary = model.output_shape[-1] == 1
    kind = keras.losses.BinaryCrossentropy if binary else keras.losses.CategoricalCrossentropy
    loss = (kind(label_smoothing=label_smoothing) if label_smoothing else
            "binary_crossentropy" if binary else "categorical_crossentropy")
    model.compile(optimizer=optimizer, loss=loss,
                  metrics=["accuracy"], jit_compile=False if run_eagerly else jit_compile,
                  run_eagerly=run_eagerly)
    return model


def load_model(path: str) -> keras.Model:
    """Load a ``.keras`` model with ``safe_mode`` on (no arbitrary code from the file).

    Raises FileNotFoundError for a missing file and ValueError (one line) for a file that is
    not a loadable model: truncated, corrupt, or weights that do not fit its architecture.
    """
    if not Path(path).is_file():
        raise FileNotFoundError(f"No model file at {path}.")
    if str(path).endswith(".keras") and not zipfile.is_zipfile(path):
        raise InputError(f"The model file {path} is truncated or corrupt (not a complete .keras "
                         "archive); train the run again or restore the file.")
    try:
        return keras.models.load_model(path, safe_mode=True, compile=False)
    except Exception as error:
        raise InputError(f"Cannot load the model {path}: {type(error).__name__}: "
                         f"{one_line(error, 160, first_line=True)}. The file is truncated, corrupt, or not a model "
                         "saved by cxrlib; train the run again or point to its model.keras.") from error


def copy_matching_weights(source: keras.Model, target: keras.Model,
                          skip: Sequence[str] = ()) -> int:
    """Copy weights between same-named, same-shaped layers; returns how many layers matched."""
    copied = 0
    names = {layer.name for layer in target.layers}
    for layer in source.layers:
        if layer.name in names and layer.weights and layer.name not in skip:
            dest = target.get_layer(layer.name)
            if [w.shape for w in dest.weights] == [w.shape for w in layer.weights]:
                dest.set_weights(layer.get_weights())
                if hasattr(dest, "finalize_state"):   # Normalization: refresh its mean/variance
                    dest.finalize_state()
                copied += 1
    return copied
