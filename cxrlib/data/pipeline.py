"""The ``tf.data`` input pipeline, built from a manifest.

The order of the steps matters, and each has a reason:

1. **decode** every file in parallel with :func:`cxrlib.data.images.read_image` (any format, 8/16
   bit, DICOM); a file that cannot be read is skipped with a warning and listed in a skip
   log, never a crash mid-epoch;
2. **prepare** (optional proportional border crop, optional histogram equalisation or CLAHE,
   resize to the backbone's size) while the image is still a small uint8 array;
3. **cache** the prepared uint8 images (in memory or on disk): decoding is by far the most
   expensive step, and after the first epoch it is never repeated;
4. **shuffle** (training only) after the cache, so each epoch sees a new order;
5. **batch**, then **augment** (training only) with Keras preprocessing layers: augmenting
   validation or test data would only blur the measurement;
6. the backbone's own **preprocess_input**, the normalisation its ImageNet weights expect
   (applied to the grey batch as one multiply-add per channel, see :func:`input_affine`);
7. **prefetch**, so the accelerator never waits for the CPU.

:func:`prepare_image` is the single definition of steps 1–2: the pipeline, :func:`load_arrays`
(numpy arrays for small sets and plots) and the heat-map and diagnosis code all use it, so a
model always sees its images prepared the same way.
"""

from __future__ import annotations

import logging
import warnings
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from typing import Callable, Sequence

import numpy as np
import pandas as pd
from PIL import Image

from cxrlib.models.backbones import preprocess_function
from cxrlib.data.images import ImageReadError, read_image

log = logging.getLogger(__name__)
# Filtering out unreadable files leaves a dataset of unknown length, and Keras then warns at
# the end of every pass that the input "ran out of data". That end is expected here.
warnings.filterwarnings("ignore", message="Your input ran out of data")

EQUALIZE_METHODS = (None, "hist", "clahe")


@dataclass(frozen=True)
class Augment:
    """Which train-time augmentations are on, and how strong (the course's defaults)."""

    flip: bool = True
    brightness: tuple[float, float] | None = (0.8, 1.25)   # multiplicative
    contrast: float | None = 0.1                           # ±10 %
    zoom: tuple[float, float] | None = (1.0, 1.2)          # zoom in by up to 20 %
    rotation: float | None = 5.0                            # degrees, either way


NO_AUGMENT = Augment(flip=False, brightness=None, contrast=None, zoom=None, rotation=None)


@dataclass(frozen=True)
class Prep:
    """How files become model inputs; recorded with every run so inference repeats it."""

    image_size: int
    backbone: str = "densenet121"
    channels: int = 3
    crop: bool = False
    crop_reference: tuple[int, int] | None = None   # (w_max, h_max) of the training data
    equalize: str | None = None
    interpolation: str = "bilinear"

    def to_dict(self) -> dict:
        return asdict(self)


def prep_from_record(record: dict) -> Prep:
    """The :class:`Prep` a run recorded (JSON turns the crop reference tuple into a list)."""
    fields = dict(record["prep"])
    if fields.get("crop_reference") is not None:
        fields["crop_reference"] = tuple(int(v) for v in fields["crop_reference"])
    return Prep(**fields)


def border_crop(image: np.ndarray, reference: tuple[int, int]) -> np.ndarray:
    """Proportional central crop from the pneumonia course.

    Keeps a fraction α_w = 1 − 0.35·w/w_max of the width and α_h = 1 − 0.20·h/h_max of the
    height, where (w_max, h_max) is the largest image size in the training data: the larger
    the film, the more border (text, markers, collimation) it carries and the more is cut.
    """
    h, w = image.shape[:2]
    w_max, h_max = reference
    keep_w = max(1, round(w * (1 - 0.35 * min(w / w_max, 1.0))))
    keep_h = max(1, round(h * (1 - 0.20 * min(h / h_max, 1.0))))
    top, left = (h - keep_h) // 2, (w - keep_w) // 2
    return image[top:top + keep_h, left:left + keep_w]


def equalize(image: np.ndarray, method: str | None) -> np.ndarray:
    """Histogram equalisation (``"hist"``) or CLAHE (``"clahe"``) of a uint8 image."""
    if method is None:
        return image
    from skimage import exposure

    if method == "hist":
        out = exposure.equalize_hist(image)
    elif method == "clahe":
        out = exposure.equalize_adapthist(image, clip_limit=0.01)
    else:
        raise ValueError(f"equalize must be one of {EQUALIZE_METHODS}, not {method!r}")
    return np.clip(out * 255.0 + 0.5, 0, 255).astype(np.uint8)


_RESAMPLE = {"bilinear": Image.BILINEAR, "bicubic": Image.BICUBIC, "nearest": Image.NEAREST,
             "area": Image.BOX, "lanczos": Image.LANCZOS}


def resize(image: np.ndarray, size: int, interpolation: str = "bilinear") -> np.ndarray:
    """Resize a uint8 image to ``size``×``size``."""
    if image.shape[:2] == (size, size):
        return image
    return np.asarray(Image.fromarray(image).resize((size, size), _RESAMPLE[interpolation]))


def prepare_image(path: str, prep: Prep) -> np.ndarray:
    """Decode, crop, equalise and resize one file → uint8 (size, size). Raises ImageReadError."""
    image = read_image(path)
    if prep.crop:
        if prep.crop_reference is None:
            raise ValueError("crop=True needs crop_reference=(w_max, h_max); see crop_reference_of().")
        image = border_crop(image, prep.crop_reference)
    return resize(equalize(image, prep.equalize), prep.image_size, prep.interpolation)


def crop_reference_of(manifest: pd.DataFrame) -> tuple[int, int]:
    """(w_max, h_max) over a manifest's images, read from the file headers only."""
    from cxrlib.data.images import probe_image

    widths, heights = [0], [0]
    for path in manifest["path"]:
        try:
            info = probe_image(path)
        except ImageReadError:
            continue
        widths.append(int(info["width"]))
        heights.append(int(info["height"]))
    return max(widths), max(heights)


def with_crop_reference(prep: Prep, manifest: pd.DataFrame) -> Prep:
    """``prep`` with its crop reference filled in from ``manifest`` when cropping needs one."""
    if prep.crop and prep.crop_reference is None:
        return Prep(**{**prep.to_dict(), "crop_reference": crop_reference_of(manifest)})
    return prep


def label_indices(labels: Sequence[str], classes: Sequence[str]) -> np.ndarray:
    """Class names → integer indices into ``classes`` (a clear error for an unknown one)."""
    lookup = {c: i for i, c in enumerate(classes)}
    unknown = sorted(set(labels) - set(lookup))
    if unknown:
        raise ValueError(f"Labels {unknown} are not among the classes {list(classes)}.")
    return np.array([lookup[label] for label in labels], dtype=np.int32)


def _encode(y, n_classes: int, label_mode: str):
    import tensorflow as tf

    if label_mode == "categorical":
        return tf.one_hot(y, n_classes)
    if label_mode == "binary":
        return tf.cast(tf.expand_dims(y, -1), tf.float32)
    return y


def augmentation_layers(augment: Augment, seed: int = 0):
    """A Keras ``Sequential`` of preprocessing layers for batches of 0–255 float images."""
    import keras

    layers = []
    if augment.flip:
        layers.append(keras.layers.RandomFlip("horizontal", seed=seed))
    if augment.rotation:
        layers.append(keras.layers.RandomRotation(augment.rotation / 360.0, fill_mode="constant", seed=seed + 1))
    if augment.zoom:
        low, high = augment.zoom  # a zoom-in by factor z keeps 1/z of the field: height_factor < 0
        layers.append(keras.layers.RandomZoom((1 / high - 1, 1 / low - 1), fill_mode="constant", seed=seed + 2))
    if augment.contrast:
        layers.append(keras.layers.RandomContrast(augment.contrast, value_range=(0, 255), seed=seed + 3))
    return keras.Sequential(layers, name="augmentation")


def augment_batch(x, augment: Augment, seed: int = 0, layers=None):
    """Training augmentation of a float batch (N, S, S, C) at 0–255: the Keras layers of
    :func:`augmentation_layers`, then the multiplicative brightness. ``layers`` reuses
    layers already built (the pipeline builds them once)."""
    layers = augmentation_layers(augment, seed) if layers is None else layers
    if layers.layers:
        x = layers(x, training=True)
    if augment.brightness:
        x = _brightness(x, augment.brightness, seed)
    return x


def _brightness(images, factors: tuple[float, float], seed: int):
    """Multiply each image by a random factor in ``factors`` (keras' RandomBrightness is additive)."""
    import tensorflow as tf

    shape = tf.stack([tf.shape(images)[0], 1, 1, 1])
    scale = tf.random.uniform(shape, factors[0], factors[1], seed=seed)
    return tf.clip_by_value(images * scale, 0.0, 255.0)


def normaliser(prep: Prep) -> Callable:
    """The backbone's ``preprocess_input`` for 0–255 images (numpy or tensors), resolved once.

    ImageNet normalisations are per RGB channel; a 1-channel input (for the grayscale adapter)
    is normalised as its RGB copy would be, then averaged back to one channel.
    """
    function = preprocess_function(prep.backbone)
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
    y = np.asarray(preprocess_function(prep.backbone)(x.copy()), dtype=np.float64)[:, 0, 0, :]
    offset, scale = y[0], (y[1] - y[0]) / 255.0
    if not np.allclose(grey[:, None] * scale + offset, y, rtol=1e-6, atol=1e-6):
        return None
    if prep.channels == 1:
        scale, offset = scale.mean(keepdims=True), offset.mean(keepdims=True)
    return scale.astype(np.float32), offset.astype(np.float32)


def make_dataset(manifest: pd.DataFrame, classes: Sequence[str], prep: Prep, batch_size: int = 32,
                 training: bool = False, augment: Augment | None = None, cache: bool | str = True,
                 seed: int = 0, label_mode: str = "categorical", skip_log: list | None = None,
                 preprocess: bool = True):
    """A batched, prefetched ``tf.data.Dataset`` of ``(images, labels)`` from a manifest.

    ``training`` shuffles and, with ``augment``, augments; otherwise the order is the
    manifest's. ``cache`` is True (memory), a file path (disk) or False. Unreadable files are
    dropped, logged and appended to ``skip_log`` as ``{"path", "error"}``.
    ``label_mode`` is ``"categorical"`` (one-hot), ``"binary"`` (float 0/1, for a sigmoid
    head with two classes) or ``"int"``. ``preprocess=False`` leaves pixels at 0–255.
    """
    import tensorflow as tf

    if len(manifest) == 0:
        raise ValueError("The manifest is empty: no images to build a dataset from.")
    if label_mode == "binary" and len(classes) != 2:
        raise ValueError(f"label_mode='binary' needs two classes, not {len(classes)}.")
    prep = with_crop_reference(prep, manifest)
    paths = manifest["path"].astype(str).to_numpy()
    labels = label_indices(manifest["label"].tolist(), classes)
    size = prep.image_size

    def load(path: bytes) -> tuple[np.ndarray, bool]:
        image, _ = _prepare_or_skip(path.decode(), prep, skip_log)
        return (np.zeros((size, size), np.uint8), False) if image is None else (image, True)

    def decode(path, label):
        image, ok = tf.numpy_function(load, [path], [tf.uint8, tf.bool], name="prepare_image")
        image.set_shape((size, size))
        ok.set_shape(())
        return image, label, ok

    def readable(image, label, ok):
        return ok

    def drop_flag(image, label, ok):
        return image, label

    ds = tf.data.Dataset.from_tensor_slices((paths, labels))
    ds = ds.map(decode, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
    ds = ds.filter(readable).map(drop_flag)
    if cache:
        ds = ds.cache("" if cache is True else str(cache))
    if training:
        ds = ds.shuffle(len(paths), seed=seed, reshuffle_each_iteration=True)

    normalise = normaliser(prep)
    affine = input_affine(prep) if preprocess else None
    layers = (augmentation_layers(augment, seed)
              if training and augment is not None and augment != NO_AUGMENT else None)

    def finish(images, labels):
        """One vectorised step per batch (per-image maps cost more than the work they do).

        Augmentation works on the grey channel (every transform treats the channels alike,
        so copying them afterwards gives the same images at a third of the work).
        """
        x = tf.cast(tf.expand_dims(images, -1), tf.float32)
        if layers is not None:
            x = augment_batch(x, augment, seed, layers)
        if affine is not None:
            return x * affine[0] + affine[1], _encode(labels, len(classes), label_mode)
        if prep.channels == 3:
            x = tf.image.grayscale_to_rgb(x)
        if preprocess:
            x = normalise(x)
        return x, _encode(labels, len(classes), label_mode)

    ds = ds.batch(batch_size).map(finish, num_parallel_calls=tf.data.AUTOTUNE)
    return ds.prefetch(tf.data.AUTOTUNE)


def _prepare_or_skip(path: str, prep: Prep, skip_log: list | None = None
                     ) -> tuple[np.ndarray | None, str]:
    """(prepared uint8 image, "") or (None, the error), logged and added to ``skip_log``."""
    try:
        return prepare_image(path, prep), ""
    except (ImageReadError, OSError, ValueError) as error:
        log.warning("Skipping %s: %s", path, error)
        if skip_log is not None:
            skip_log.append({"path": path, "error": str(error)})
        return None, str(error)


def read_prepared(paths: Sequence[str], prep: Prep, workers: int = 8, progress: bool = False,
                  skip_log: list | None = None) -> tuple[list[np.ndarray | None], list[str]]:
    """Each file prepared as the model sees it (uint8 (S, S)) or None, with its error text
    ('' when readable), in order; decoded by ``workers`` threads."""
    def one(path: str) -> tuple[np.ndarray | None, str]:
        return _prepare_or_skip(str(path), prep, skip_log)

    with ThreadPoolExecutor(max_workers=workers) as pool:
        results = pool.map(one, paths)
        if progress:
            from tqdm.auto import tqdm

            results = tqdm(results, total=len(paths), desc="Loading images", unit="img")
        pairs = list(results)
    return [image for image, _ in pairs], [error for _, error in pairs]


def model_inputs(images: np.ndarray | Sequence[np.ndarray], prep: Prep,
                 preprocess: bool = True) -> np.ndarray:
    """Prepared uint8 images (N, S, S) → model input (N, S, S, C): channels as the model
    expects, and with ``preprocess`` the backbone's normalisation (float32)."""
    x = np.asarray(images)
    if x.ndim == 2:
        x = x[None]
    x = x[..., None]
    if prep.channels == 3:
        x = np.repeat(x, 3, axis=-1)
    if preprocess:
        x = np.asarray(normaliser(prep)(x.astype(np.float32)), dtype=np.float32)
    return x


def load_arrays(manifest: pd.DataFrame, classes: Sequence[str], prep: Prep, preprocess: bool = False,
                progress: bool = False, workers: int = 8, skip_log: list | None = None
                ) -> tuple[np.ndarray, np.ndarray]:
    """Small sets as numpy: images (N, S, S, C) and integer labels (N,), bad files skipped.

    Pixels stay uint8 unless ``preprocess``, which applies the backbone's preprocess_input
    (float32).
    """
    prep = with_crop_reference(prep, manifest)
    labels = label_indices(manifest["label"].tolist(), classes)
    images, _ = read_prepared(manifest["path"].astype(str).tolist(), prep, workers, progress,
                              skip_log)
    keep = [i for i, image in enumerate(images) if image is not None]
    size = prep.image_size
    x = np.stack([images[i] for i in keep]) if keep else np.zeros((0, size, size), np.uint8)
    return model_inputs(x, prep, preprocess), labels[keep]
