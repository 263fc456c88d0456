"""Training augmentation (step 5 of :mod:`cxrlib.data.pipeline`, training only): Keras
preprocessing layers (flip, rotation, zoom, shear), then the contrast, gamma and
multiplicative brightness that Keras has no layer for, on batches of 0–255 float images.
"""

from __future__ import annotations

from cxrlib.spec import Augment


def augmentation_layers(augment: Augment, seed: int = 0):
    """A Keras ``Sequential`` of preprocessing layers for batches of 0–255 float images.

    The layers compute in float32 whatever the global dtype policy (under mixed precision
    only the model computes in float16). The ranges mean what ``ImageDataGenerator``'s did
    (:class:`cxrlib.spec.Augment`): a zoom scale ``z`` shows ``z`` times the field (above 1
    zooms out), drawn for width and height independently; a shear of θ degrees moves each
    row by sin θ of its height from the centre, either way."""
    import math

    import keras

    f32 = {"dtype": "float32"}
    layers = []
    if augment.flip:
        layers.append(keras.layers.RandomFlip("horizontal", seed=seed, **f32))
    if augment.rotation:
        layers.append(keras.layers.RandomRotation(augment.rotation / 360.0, fill_mode="constant",
                                                  seed=seed + 1, **f32))
    if augment.zoom:
        low, high = (z - 1 for z in augment.zoom)   # RandomZoom: +0.2 shows 1.2 × the field
        layers.append(keras.layers.RandomZoom((low, high), (low, high), fill_mode="constant",
                                              seed=seed + 2, **f32))
    if augment.shear:
        layers.append(keras.layers.RandomShear(x_factor=math.sin(math.radians(augment.shear)),
                                               y_factor=0.0, fill_mode="constant", seed=seed + 4, **f32))
    return keras.Sequential(layers, name="augmentation")


def augment_batch(x, augment: Augment, seed: int = 0, layers=None):
    """Training augmentation of a float32 batch (N, S, S, C) at 0–255: the Keras layers of
    :func:`augmentation_layers`, then the contrast and the multiplicative brightness.
    ``layers`` reuses layers already built (the pipeline builds them once)."""
    import tensorflow as tf

    x = tf.cast(x, tf.float32)
    layers = augmentation_layers(augment, seed) if layers is None else layers
    if layers.layers:
        x = layers(x, training=True)
    if augment.contrast:
        x = _contrast(x, augment.contrast, seed + 3)
    if augment.gamma:
        x = _gamma(x, augment.gamma, seed + 5)
    if augment.brightness:
        x = _brightness(x, augment.brightness, seed)
    return x


def _factors(images, low_high: tuple[float, float], seed: int):
    """One random factor per image of the batch, uniform in ``low_high`` (float32, (N,1,1,1))."""
    import tensorflow as tf

    shape = tf.stack([tf.shape(images)[0], 1, 1, 1])
    return tf.random.uniform(shape, low_high[0], low_high[1], dtype=tf.float32, seed=seed)


def _brightness(images, factors: tuple[float, float], seed: int):
    """Multiply each image by a random factor in ``factors`` (keras' RandomBrightness is additive)."""
    import tensorflow as tf

    return tf.clip_by_value(images * _factors(images, factors, seed), 0.0, 255.0)


def _gamma(images, exponents: tuple[float, float], seed: int):
    """Raise each image (0–255) to a random power in ``exponents``: 255·(x/255)^γ."""
    import tensorflow as tf

    unit = tf.clip_by_value(images / 255.0, 0.0, 1.0)
    return 255.0 * tf.pow(unit, _factors(images, exponents, seed))


def _contrast(images, factors: tuple[float, float], seed: int):
    """Scale each image's spread around its own mean by a random factor in ``factors``
    (keras' RandomContrast draws from a symmetric range only)."""
    import tensorflow as tf

    mean = tf.reduce_mean(images, axis=(1, 2, 3), keepdims=True)
    return tf.clip_by_value((images - mean) * _factors(images, factors, seed) + mean, 0.0, 255.0)
