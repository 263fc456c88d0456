"""The normalisation of model inputs (step 6 of :mod:`cxrlib.data.pipeline`): the backbone's own
``preprocess_input``, the training set's statistics, or none, and, for a grey image, the
same map as one fused multiply-add per channel (:func:`input_affine`).
"""

from __future__ import annotations

import functools
from typing import Callable

import numpy as np

from cxrlib.backbones import preprocess_function
from cxrlib.data.prepare import Prep
from cxrlib.spec import NORMALIZATIONS


def pixel_normalisation(prep: Prep) -> Callable:
    """The normalisation of 0–255 RGB pixels that ``prep`` says: the backbone's own
    ``preprocess_input`` (``"backbone"``), the training set's mean and standard deviation
    (``"featurewise"``, as ``ImageDataGenerator(featurewise_center=True,
    featurewise_std_normalization=True)`` did), or none (raw 0–255 pixels)."""
    if prep.normalization not in NORMALIZATIONS:
        raise ValueError(f"Unknown normalization {prep.normalization!r}; choose one of "
                         f"{', '.join(NORMALIZATIONS)}.")
    if prep.normalization == "backbone":
        return preprocess_function(prep.backbone)
    if prep.normalization == "none":
        return lambda x: x
    if prep.norm_stats is None:
        raise ValueError("Featurewise normalisation needs the training set's statistics "
                         "(with_norm_stats).")
    mean, std = prep.norm_stats
    return lambda x: (x - mean) / max(std, 1e-6)


def normaliser(prep: Prep) -> Callable:
    """The backbone's ``preprocess_input`` for 0–255 images (numpy or tensors), resolved once.

    ImageNet normalisations are per RGB channel; a 1-channel input (for the grayscale adapter)
    is normalised as its RGB copy would be, then averaged back to one channel.
    """
    function = pixel_normalisation(prep)
    if prep.channels == 3:
        return function

    def one_channel(x):
        import tensorflow as tf

        rgb = tf.image.grayscale_to_rgb(tf.convert_to_tensor(x, tf.float32))
        return tf.reduce_mean(function(rgb), axis=-1, keepdims=True)

    return one_channel


def input_affine(prep: Prep) -> tuple[np.ndarray, np.ndarray] | None:
    """The backbone's preprocessing of a grey image as one map: ``grey · scale + offset``.

    Every ``preprocess_input`` of the course is per channel affine (scale, shift, channel
    order), and a grey image has equal channels, so it becomes one multiply-add from the
    grey (…, 1) image straight to the model's (…, channels) input: one pass over the batch
    instead of a cast, a channel copy and four arithmetic passes. ``scale`` and ``offset``
    (float32, one per model channel) are measured on :func:`normaliser` itself; None when
    it is not affine (then the pipeline applies it as it is).
    """
    grey = np.array([0.0, 255.0, 100.0, 37.0])
    x = np.repeat(grey[:, None, None, None], 3, axis=-1)
    y = np.asarray(pixel_normalisation(prep)(x.copy()), dtype=np.float64)[:, 0, 0, :]
    offset, scale = y[0], (y[1] - y[0]) / 255.0
    if not np.allclose(grey[:, None] * scale + offset, y, rtol=1e-6, atol=1e-6):
        return None
    if prep.channels == 1:
        scale, offset = scale.mean(keepdims=True), offset.mean(keepdims=True)
    return scale.astype(np.float32), offset.astype(np.float32)


@functools.lru_cache(maxsize=32)
def _affine_input(prep: Prep):
    """(N, S, S) grey batch (uint8 or float) → model input, :func:`input_affine` as one fused
    XLA loop: the cast, the channel copy and the multiply-add write the float batch once
    (unfused, the broadcast alone costs more CPU than decoding the files)."""
    import tensorflow as tf

    scale, offset = input_affine(prep)  # numpy: each trace makes its own constants
    return tf.function(lambda x: tf.cast(x, tf.float32)[..., None] * scale + offset,
                       jit_compile=True, autograph=False)
