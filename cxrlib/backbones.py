"""The backbone registry: what the rest of cxrlib needs to know about each ImageNet network.

Each entry records the Keras application, its default input size, its own
``preprocess_input`` (the normalisation its ImageNet weights were trained with), the last
convolutional layer (the one heat maps read), and the weights file Keras downloads.

Weights come in three kinds: ``None`` (random), ``"imagenet"`` and ``"synthetic"`` (pretrained
by cxrlib on synthetic films, cached per backbone and size; see :mod:`cxrlib.runs.pretrain`),
or a local weights file. ImageNet weights come from one of three places, in this order:

1. ``$CXR_WEIGHTS_DIR/<weights_file>``: an offline cache for classrooms without internet;
2. Keras' own cache (``~/.keras/models``, or ``$KERAS_HOME/models``);
3. a download from Google's storage, unless ``CXR_OFFLINE=1``.

When none works, :class:`WeightsUnavailableError` says which file to fetch and where to put it.
"""

from __future__ import annotations

import importlib
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from cxrlib.environment import env_flag
from cxrlib.errors import InputError, UserError

_GCS = "https://storage.googleapis.com/tensorflow/keras-applications/"


@dataclass(frozen=True)
class Backbone:
    """One registry entry (data only)."""

    name: str
    application: str          # "module:function" under keras.applications
    size: int                 # default input size (pixels, square)
    min_size: int             # smallest input the architecture accepts
    preprocess: str           # "module:function" of its preprocess_input
    last_conv: str            # layer name for Grad-CAM
    weights_file: str         # ImageNet "notop" weights file name
    weights_url: str


BACKBONES: dict[str, Backbone] = {
    b.name: b for b in [
        Backbone("densenet121", "densenet:DenseNet121", 224, 32, "densenet:preprocess_input", "relu",
                 "densenet121_weights_tf_dim_ordering_tf_kernels_notop.h5", _GCS + "densenet/"),
        Backbone("resnet50", "resnet:ResNet50", 224, 32, "resnet:preprocess_input", "conv5_block3_out",
                 "resnet50_weights_tf_dim_ordering_tf_kernels_notop.h5", _GCS + "resnet/"),
        Backbone("vgg16", "vgg16:VGG16", 224, 32, "vgg16:preprocess_input", "block5_conv3",
                 "vgg16_weights_tf_dim_ordering_tf_kernels_notop.h5", _GCS + "vgg16/"),
        Backbone("inceptionv3", "inception_v3:InceptionV3", 299, 75, "inception_v3:preprocess_input",
                 "mixed10", "inception_v3_weights_tf_dim_ordering_tf_kernels_notop.h5",
                 _GCS + "inception_v3/"),
        Backbone("xception", "xception:Xception", 299, 71, "xception:preprocess_input",
                 "block14_sepconv2_act", "xception_weights_tf_dim_ordering_tf_kernels_notop.h5",
                 _GCS + "xception/"),
        Backbone("efficientnetv2b0", "efficientnet_v2:EfficientNetV2B0", 224, 32,
                 "efficientnet_v2:preprocess_input", "top_activation", "efficientnetv2-b0_notop.h5",
                 _GCS + "efficientnet_v2/"),
    ]
}
SCRATCH = "scratch"
SCRATCH_SIZE = 128
SCRATCH_MIN_SIZE = 16  # four 2x2 poolings leave one pixel


class WeightsUnavailableError(UserError, RuntimeError):
    """ImageNet weights that are neither cached nor downloadable."""


def get_backbone(name: str) -> Backbone:
    """The registry entry for ``name`` (case-insensitive), or a ValueError listing the choices."""
    key = name.lower().replace("-", "").replace("_", "")
    if key not in BACKBONES:
        raise InputError(f"Unknown backbone {name!r}; choose one of {', '.join(BACKBONES)} or 'scratch'.")
    return BACKBONES[key]


def default_size(name: str) -> int:
    """The default square input size of a backbone (or of the from-scratch CNN)."""
    return SCRATCH_SIZE if name == SCRATCH else get_backbone(name).size


FLAT_MIN_SIZE = 94
"""The flat CNN's (head ``"flat"``) five valid convolutions and poolings need 94 px."""


def min_input_size(name: str, head: str = "course") -> int:
    """The smallest square input a backbone (or the from-scratch CNN, with its head) accepts."""
    if name == SCRATCH:
        return FLAT_MIN_SIZE if head == "flat" else SCRATCH_MIN_SIZE
    return get_backbone(name).min_size


def fit_size(name: str, size: int, head: str = "course") -> int:
    """``size`` raised to the smallest input the network accepts (:func:`min_input_size`)."""
    return max(int(size), min_input_size(name, head))


def check_size(name: str, size: int, head: str = "course") -> None:
    """InputError, naming ``--image-size``, when ``size`` is below what the network accepts."""
    minimum = min_input_size(name, head)
    if size < minimum:
        raise InputError(f"{name} needs images of at least {minimum} px, not {size}; use a larger "
                         "--image-size.")


def _load(path: str) -> Callable:
    module, function = path.split(":")
    return getattr(importlib.import_module(f"keras.applications.{module}"), function)


def scale_unit(x):
    """The from-scratch CNN's preprocessing: pixels 0–255 → 0–1."""
    return x / 255.0


def preprocess_function(name: str) -> Callable:
    """The ``preprocess_input`` that goes with a backbone (``scratch``: divide by 255)."""
    return scale_unit if name == SCRATCH else _load(get_backbone(name).preprocess)


def application(name: str) -> Callable:
    """The Keras application constructor (e.g. ``keras.applications.DenseNet121``)."""
    return _load(get_backbone(name).application)


def _keras_cache() -> Path:
    return Path(os.environ.get("KERAS_HOME", Path.home() / ".keras")) / "models"


SYNTHETIC = "synthetic"


def resolve_weights(name: str, weights: str | None) -> str | None:
    """Turn ``"imagenet"``/``None``/a path into what a Keras application accepts.

    ``"synthetic"`` is not resolved here: it names a file that may have to be pretrained first,
    which :func:`cxrlib.runs.pretrain.weights_source` does (``train`` calls it). For ImageNet,
    prefers the offline cache directory; raises :class:`WeightsUnavailableError` when
    ``CXR_OFFLINE=1`` and the file is nowhere on disk, and ``FileNotFoundError`` for a
    local path that does not exist.
    """
    if weights is None or str(weights).lower() == "none":
        return None
    if str(weights).lower() == SYNTHETIC:
        raise ValueError("weights='synthetic' names cxrlib's pretrained cache: resolve it with "
                         "cxrlib.runs.pretrain.weights_source (train does), then pass the file.")
    if str(weights).lower() != "imagenet":
        path = Path(weights).expanduser()
        if not path.is_file():
            raise FileNotFoundError(f"Weights file {path} does not exist.")
        return str(path)
    entry = get_backbone(name)
    offline_dir = os.environ.get("CXR_WEIGHTS_DIR")
    if offline_dir and (Path(offline_dir) / entry.weights_file).is_file():
        return str(Path(offline_dir) / entry.weights_file)
    if (_keras_cache() / entry.weights_file).is_file():
        return "imagenet"
    if env_flag("CXR_OFFLINE"):
        raise WeightsUnavailableError(missing_weights_message(name))
    return "imagenet"


def missing_weights_message(name: str) -> str:
    """What to do when the ImageNet weights of ``name`` cannot be had."""
    entry = get_backbone(name)
    target = os.environ.get("CXR_WEIGHTS_DIR") or str(_keras_cache())
    return (f"ImageNet weights for {name} are not available offline and could not be downloaded. "
            f"Fetch {entry.weights_url}{entry.weights_file} on a machine with internet and put it "
            f"in {target}/ (or set CXR_WEIGHTS_DIR to the folder that holds it). "
            "Offline, use weights='synthetic' (--weights synthetic): a backbone pretrained by "
            "cxrlib on synthetic films, not ImageNet; or weights=None (--weights none): random "
            "weights, fine for smoke tests but not for transfer learning.")
