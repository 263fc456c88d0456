"""The ``tf.data`` input pipeline, built from a manifest.

The order of the steps matters, and each has a reason:

1. **decode** every file once, in parallel: the plain PNG/JPEG files inside TF's graph
   (:func:`cxrlib.data.images.plain_format` says which), every other file (16-bit, alpha,
   DICOM, an EXIF orientation) and any file the graph cannot decode with
   :func:`cxrlib.data.images.read_image`; both give the same pixels. A file that cannot be
   read is skipped with a warning and listed in a skip log, before the first step;
2. **prepare** (optional proportional border crop, optional histogram equalisation or CLAHE,
   resize to the backbone's size by :func:`resize_plan`) while the image is a small uint8 array;
3. **hold** the prepared uint8 images in memory: decoding is by far the most expensive step,
   and it is never repeated;
4. **shuffle** the order (training only), so each epoch sees a new one: the indices are
   shuffled and each batch is gathered from the held array, so no image is copied twice;
5. **batch**, then **augment** (training only) with Keras preprocessing layers: augmenting
   validation or test data would only blur the measurement;
6. the backbone's own **preprocess_input**, the normalisation its ImageNet weights expect
   (applied to the grey batch as one fused multiply-add per channel, see :func:`input_affine`);
7. **prefetch**, so the accelerator never waits for the CPU.

:func:`prepare_files` is the single definition of steps 1–2: the pipeline,
:func:`load_arrays` (numpy arrays for small sets and plots) and the heat-map and diagnosis
code all use it (through :func:`model_inputs`, files → model inputs in memory, and
:func:`prepare_image`), so a model always sees its images prepared the same way.
"""

from __future__ import annotations

import functools
import logging
import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from typing import Callable, Sequence

import numpy as np
import pandas as pd

from cxrlib.backbones import preprocess_function
from cxrlib.data.images import ImageReadError, plain_format, read_image
from cxrlib.spec import NORMALIZATIONS, Augment

log = logging.getLogger(__name__)

EQUALIZE_METHODS = (None, "hist", "clahe")


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
    normalization: str = "backbone"                 # "backbone", "featurewise" or "none"
    norm_stats: tuple[float, float] | None = None   # featurewise: (mean, std) of the training pixels

    def to_dict(self) -> dict:
        return asdict(self)


def prep_from_record(record: dict) -> Prep:
    """The :class:`Prep` a run recorded (JSON turns the crop reference tuple into a list)."""
    fields = dict(record["prep"])
    if fields.get("crop_reference") is not None:
        fields["crop_reference"] = tuple(int(v) for v in fields["crop_reference"])
    if fields.get("norm_stats") is not None:
        fields["norm_stats"] = tuple(float(v) for v in fields["norm_stats"])
    return Prep(**fields)


def border_crop_box(height: int, width: int, reference: tuple[int, int]) -> tuple[int, int, int, int]:
    """(top, left, kept height, kept width) of :func:`border_crop` for an image of that size."""
    w_max, h_max = reference
    keep_w = max(1, round(width * (1 - 0.35 * min(width / w_max, 1.0))))
    keep_h = max(1, round(height * (1 - 0.20 * min(height / h_max, 1.0))))
    return (height - keep_h) // 2, (width - keep_w) // 2, keep_h, keep_w


def border_crop(image: np.ndarray, reference: tuple[int, int]) -> np.ndarray:
    """Proportional central crop from the pneumonia course.

    Keeps a fraction α_w = 1 − 0.35·w/w_max of the width and α_h = 1 − 0.20·h/h_max of the
    height, where (w_max, h_max) is the largest image size in the training data: the larger
    the film, the more border (text, markers, collimation) it carries and the more is cut.
    """
    top, left, keep_h, keep_w = border_crop_box(*image.shape[:2], reference)
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


PARALLEL_FILES = 2
"""Files decoded at once per core: reading a file waits on the disk or page cache, and a
second file per core keeps the core busy meanwhile (2 cores: about 10 % faster than one)."""
INTERPOLATIONS = {"bilinear": "bilinear", "bicubic": "bicubic", "nearest": "nearest",
                  "area": "area", "lanczos": "lanczos3"}   # Prep's names → tf.image.resize's
_READ_ERRORS = (ImageReadError, OSError, ValueError)


def _check_prep(prep: Prep) -> None:
    """A clear error for a Prep that cannot be applied (before any file is read)."""
    if prep.crop and prep.crop_reference is None:
        raise ValueError("crop=True needs crop_reference=(w_max, h_max); see crop_reference_of().")
    if prep.interpolation not in INTERPOLATIONS:
        raise ValueError(f"interpolation must be one of {sorted(INTERPOLATIONS)}, "
                         f"not {prep.interpolation!r}")
    if prep.equalize not in EQUALIZE_METHODS:
        raise ValueError(f"equalize must be one of {EQUALIZE_METHODS}, not {prep.equalize!r}")


def _to_uint8_graph(x):
    """Round (half to even, as numpy's rint) and clip a float tensor to uint8."""
    import tensorflow as tf

    return tf.cast(tf.clip_by_value(tf.round(x), 0.0, 255.0), tf.uint8)


def resize_plan(height: int, width: int, size: int, interpolation: str) -> str:
    """How an (H, W) image reaches size×size: ``"same"`` (already there), ``"interpolate"``,
    or ``"reduce"``: first average whole k×k blocks (``area`` resize to H//k, W//k, k the
    integer part of the reduction, 2 or more), then interpolate the remaining factor (< 2).

    That is the antialiasing a large reduction needs (a plain bilinear from 1024 px to 224
    reads 4 pixels out of 21 per output pixel and aliases) at the cost of one pass over the
    image, where TF's antialiased kernels cost more than decoding the file. ``nearest``
    (masks) never averages. Decided in Python from the size, so that each traced
    function holds one plan and no per-image branch.
    """
    if (height, width) == (size, size):
        return "same"
    if interpolation != "nearest" and max(height, width) // size >= 2:
        return "reduce"
    return "interpolate"


def _resize_graph(image, size: int, interpolation: str, plan: str):
    """uint8 (H, W) tensor → uint8 (size, size) by ``plan`` (:func:`resize_plan`): the one
    resize of every image and mask."""
    import tensorflow as tf

    if plan != "same":
        x = tf.cast(image[..., None], tf.float32)
        if plan == "reduce":
            shape = tf.shape(x)[:2]
            x = tf.image.resize(x, shape // tf.maximum(shape // size, 1), method="area")
        image = _to_uint8_graph(tf.image.resize(x, (size, size),
                                                method=INTERPOLATIONS[interpolation]))[..., 0]
    image.set_shape((size, size))
    return image


def _luma_graph(rgb):
    """ITU-R 601-2 luma of a uint8 (H, W, 3) tensor, computed exactly as images._luminance."""
    import tensorflow as tf

    from cxrlib.data.images import LUMA_WEIGHTS

    x = tf.cast(rgb, tf.float32)
    r, g, b = (float(w) for w in LUMA_WEIGHTS)
    return _to_uint8_graph(x[..., 0] * r + x[..., 1] * g + x[..., 2] * b)


def _decode_graph(data, kind: str):
    """In-graph decoding of a plain file of ``kind`` (one of ``images.PLAIN_FORMATS``, as
    :func:`cxrlib.data.images.plain_format` found it) → uint8 (H, W), the same pixels as
    ``read_image`` (tests check it bit for bit). Runs in TF's threads, without the GIL;
    corrupt or truncated data raise an op error, and the caller gives the file to
    ``read_image``, which says why it cannot be read."""
    import tensorflow as tf

    if kind.endswith("png"):
        decoded = tf.io.decode_png(data, channels=1 if kind == "grey-png" else 3)
    else:
        decoded = tf.io.decode_jpeg(data, channels=1 if kind == "grey-jpeg" else 3,
                                    dct_method="INTEGER_ACCURATE")
    return decoded[..., 0] if kind.startswith("grey") else _luma_graph(decoded)


def _plan_for(height: int, width: int, prep: Prep) -> str:
    """The resize plan of an (H, W) image under ``prep`` (after its border crop)."""
    if prep.crop:
        height, width = border_crop_box(height, width, prep.crop_reference)[2:]
    return resize_plan(height, width, prep.image_size, prep.interpolation)


def _finish_graph(image, prep: Prep, plan: str):
    """Crop, equalise and resize a decoded uint8 (H, W) tensor as ``prep`` says."""
    import tensorflow as tf

    if prep.crop:
        image = tf.numpy_function(lambda a: np.ascontiguousarray(
            border_crop(a, prep.crop_reference)), [image], tf.uint8, name="border_crop")
        image.set_shape((None, None))
    if prep.equalize:
        image = tf.numpy_function(lambda a: equalize(a, prep.equalize), [image], tf.uint8,
                                  name="equalize")
        image.set_shape((None, None))
    return _resize_graph(image, prep.image_size, prep.interpolation, plan)


def _no_autograph(function: Callable) -> Callable:
    """``function`` traced as it is written. AutoGraph rewrites Python control flow on tensors,
    and these graph functions have none (every branch is on Python values: the prep, the
    plan); converting them cost about 0.2 s per pipeline, as long as decoding 400 films."""
    import tensorflow as tf

    return tf.autograph.experimental.do_not_convert(function)


def _path_graph(path, prep: Prep, kind: str, plan: str):
    """The path of a plain file of ``kind`` → its prepared uint8 (S, S), in a TF graph."""
    import tensorflow as tf

    return _finish_graph(_decode_graph(tf.io.read_file(path), kind), prep, plan)


@functools.lru_cache(maxsize=64)
def _from_path(prep: Prep, kind: str, plan: str):
    """A TF function of :func:`_path_graph` for one file at a time."""
    import tensorflow as tf

    return tf.function(lambda path: _path_graph(path, prep, kind, plan),
                       input_signature=[tf.TensorSpec((), tf.string)], autograph=False)


@functools.lru_cache(maxsize=64)
def _from_array(prep: Prep, plan: str):
    """A TF function: what ``read_image`` decoded → its prepared uint8 (S, S)."""
    import tensorflow as tf

    return tf.function(lambda image: _finish_graph(image, prep, plan),
                       input_signature=[tf.TensorSpec((None, None), tf.uint8)], autograph=False)


def resize(image: np.ndarray, size: int, interpolation: str = "bilinear") -> np.ndarray:
    """Resize a uint8 (H, W) image to ``size``×``size`` exactly as the pipeline does."""
    plan = resize_plan(*image.shape[:2], size, interpolation)
    if plan == "same":
        return image
    return _from_array(Prep(size, interpolation=interpolation), plan)(
        np.ascontiguousarray(image, np.uint8)).numpy()


def _prepare_robust(path: str, prep: Prep) -> np.ndarray:
    """A file that the in-graph decoder does not take: ``read_image``, then the same finish."""
    import tensorflow as tf

    image = read_image(path)
    try:
        return _from_array(prep, _plan_for(*image.shape, prep))(image).numpy()
    except tf.errors.OpError as error:  # the crop or equalisation failed on this image
        raise ImageReadError(path, f"cannot prepare the image ({error.message})") from error


def prepare_image(path: str, prep: Prep) -> np.ndarray:
    """Decode, crop, equalise and resize one file → uint8 (size, size). Raises ImageReadError."""
    import tensorflow as tf

    _check_prep(prep)
    plain = plain_format(path)
    if plain is not None:
        kind, height, width = plain
        try:
            return _from_path(prep, kind, _plan_for(height, width, prep))(str(path)).numpy()
        except tf.errors.OpError:
            pass  # read_image reads it or says why not
    return _prepare_robust(str(path), prep)


def prepare_files(paths: Sequence[str], prep: Prep, progress: bool = False,
                  skip_log: list | None = None) -> tuple[np.ndarray, list[str]]:
    """Every file as the model sees it: uint8 (N, S, S) in order, and per file ``""`` or why
    it was skipped (its image is then zeros; the reason is logged and added to ``skip_log``
    as ``{"path", "error"}``).

    The single path from files to pixels (training, evaluation, heat maps, diagnosis): the
    plain files (:func:`cxrlib.data.images.plain_format`) are decoded and resized in
    parallel in a ``tf.data`` pass per (format, resize plan), usually one; the others, and
    any file such a pass could not decode, go through :func:`read_image` and the same
    finish, which reads them or gives the reason. No file is dropped without one.
    """
    import tensorflow as tf
    from tqdm.auto import tqdm

    _check_prep(prep)
    paths = [str(p) for p in paths]
    n, size = len(paths), prep.image_size
    groups: dict[tuple[str, str], list[int]] = {}
    for i, path in enumerate(paths):
        plain = plain_format(path)
        if plain is not None:
            kind, height, width = plain
            groups.setdefault((kind, _plan_for(height, width, prep)), []).append(i)
    # A one-shot CPU-bound pass: PARALLEL_FILES per core, no autotuning (its probing held a
    # 2-core pass to one core in about a third of the runs on this project's 2-core machine).
    options = tf.data.Options()
    options.autotune.enabled = False
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    errors = [""] * n
    # Every image is written once, into its row of one numpy buffer, from small batches whose
    # memory is reused. (Collecting the batches and concatenating them touched twice the
    # memory, and fresh memory costs: the page faults of 180 MB take about 0.3 s on a VM.)
    held = np.empty((n, size, size), np.uint8)
    done = np.zeros(n, bool)
    with tqdm(total=n, desc="Loading images", unit="img", disable=not progress) as bar:
        for (kind, plan), members in groups.items():
            fast = (tf.data.Dataset.from_tensor_slices((
                        tf.constant(members, tf.int64),
                        tf.constant([paths[i] for i in members], tf.string)))
                    .map(_no_autograph(lambda i, path, kind=kind, plan=plan:
                                       (i, _path_graph(path, prep, kind, plan))),
                         num_parallel_calls=PARALLEL_FILES * (cores or 1))
                    .ignore_errors().batch(64).prefetch(1).with_options(options))
            for index, batch in fast:
                index = index.numpy()
                held[index] = batch.numpy()
                done[index] = True
                bar.update(len(index))

        def robust(i: int) -> np.ndarray | None:
            try:
                return _prepare_robust(paths[i], prep)
            except _READ_ERRORS as error:
                errors[i] = str(error)
                log.warning("Skipping %s: %s", paths[i], error)
                if skip_log is not None:
                    skip_log.append({"path": paths[i], "error": str(error)})
                return None

        rest = np.flatnonzero(~done)
        with ThreadPoolExecutor(max_workers=4) as pool:
            for i, image in zip(rest, pool.map(robust, rest)):
                bar.update(1)
                if image is not None:
                    held[i] = image
                    done[i] = True
    held[~done] = 0
    return held, errors


def prepare_readable(paths: Sequence[str], prep: Prep, progress: bool = False,
                     skip_log: list | None = None) -> tuple[np.ndarray, list[str]]:
    """The readable files as the model sees them, in order: uint8 (n_readable, S, S), and
    per file ``""`` or why it was skipped (logged, added to ``skip_log``). See
    :func:`prepare_files`."""
    images, errors = prepare_files(paths, prep, progress, skip_log)
    if any(errors):
        images = images[np.array([not error for error in errors], bool)]
    return images, errors


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


def with_norm_stats(prep: Prep, manifest: pd.DataFrame) -> Prep:
    """``prep`` with the training pixels' (mean, std) when it normalises featurewise (from the
    prepared images of ``manifest``, its training split); ``prep`` itself otherwise or when
    they are known already."""
    from dataclasses import replace

    if prep.normalization != "featurewise" or prep.norm_stats is not None:
        return prep
    images, _ = prepare_readable(manifest["path"].astype(str).tolist(), prep)
    if len(images) == 0:
        raise ValueError("No readable training image to measure the featurewise statistics on.")
    total = squares = 0.0
    for chunk in np.array_split(images, max(1, len(images) // 256)):   # no float copy of the set
        values = chunk.astype(np.float64)
        total, squares = total + values.sum(), squares + np.square(values).sum()
    mean = total / images.size
    return replace(prep, norm_stats=(mean, float(np.sqrt(max(squares / images.size - mean ** 2, 0.0)))))


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


def make_dataset(manifest: pd.DataFrame, classes: Sequence[str], prep: Prep, batch_size: int = 32,
                 training: bool = False, augment: Augment | None = None, seed: int = 0,
                 label_mode: str = "categorical", skip_log: list | None = None,
                 preprocess: bool = True, progress: bool = False):
    """A batched, prefetched ``tf.data.Dataset`` of ``(images, labels)`` from a manifest.

    Every file is prepared once, here (:func:`prepare_readable`, with a progress bar when
    ``progress``), and held as uint8 (N, S, S) in memory: a quarter of the float32 batches
    it becomes, and the skipped files are known (logged, appended to ``skip_log``) before
    the first step. ``training`` shuffles and, with ``augment``, augments; otherwise the
    order is the manifest's. ``label_mode`` is ``"categorical"`` (one-hot), ``"binary"``
    (float 0/1, for a sigmoid head with two classes) or ``"int"``. ``preprocess=False``
    leaves pixels at 0–255.

    The held array lives in this process (each batch is gathered from it by a
    ``numpy_function``), so the dataset runs here and cannot be shipped to a tf.data service.
    """
    import tensorflow as tf

    if len(manifest) == 0:
        raise ValueError("The manifest is empty: no images to build a dataset from.")
    if label_mode == "binary" and len(classes) != 2:
        raise ValueError(f"label_mode='binary' needs two classes, not {len(classes)}.")
    prep = with_crop_reference(prep, manifest)
    labels = label_indices(manifest["label"].tolist(), classes)
    images, errors = prepare_readable(manifest["path"].astype(str).tolist(), prep, progress,
                                      skip_log)
    labels = labels[np.array([not error for error in errors], bool)]
    # The order is shuffled, not the images: each batch is one gather from the held numpy
    # set. (A shuffle buffer of images copies each into it and out again; a TF copy of the
    # set would touch its memory a second time.)
    order = tf.data.Dataset.range(len(labels))
    if training:
        order = order.shuffle(len(labels), seed=seed, reshuffle_each_iteration=True)

    normalise = normaliser(prep)
    affine = input_affine(prep) if preprocess else None
    layers = (augmentation_layers(augment, seed)
              if training and augment is not None and augment.active else None)

    def finish(index):
        """One vectorised step per batch of indices (per-image maps cost more than the work
        they do).

        Augmentation works on the grey channel (every transform treats the channels alike,
        so copying them afterwards gives the same images at a third of the work).
        """
        x, y = tf.numpy_function(lambda i: (images[i], labels[i]), [index], (tf.uint8, tf.int32),
                                 stateful=False, name="gather_batch")
        x.set_shape((None, prep.image_size, prep.image_size))
        y.set_shape((None,))
        x = x if layers is None else augment_batch(tf.expand_dims(x, -1), augment, seed, layers)[..., 0]
        if affine is not None:
            return _affine_input(prep)(x), _encode(y, len(classes), label_mode)
        x = tf.cast(tf.expand_dims(x, -1), tf.float32)
        if prep.channels == 3:
            x = tf.image.grayscale_to_rgb(x)
        if preprocess:
            x = normalise(x)
        return x, _encode(y, len(classes), label_mode)

    # Augmentation draws from stateful random ops: batches mapped in parallel would take their
    # draws in whichever order the threads run, so the same seed gave other films each run.
    # Mapped one at a time they are the same every run (prefetch still overlaps the training).
    ds = order.batch(batch_size).map(_no_autograph(finish),
                                     num_parallel_calls=None if layers is not None else tf.data.AUTOTUNE)
    # Under a multi-worker strategy each worker must get its own share of every global batch.
    # FILE sharding (the AUTO default's first try) cannot work here: there are no files in the
    # graph, only the numpy gather from the held array. DATA sharding: each worker runs this
    # same pipeline (the same order: same seed, deterministic map) and keeps its part of each
    # batch, which tf.distribute first splits into one part per replica (batch_size is global).
    options = tf.data.Options()
    options.experimental_distribute.auto_shard_policy = tf.data.experimental.AutoShardPolicy.DATA
    return ds.prefetch(tf.data.AUTOTUNE).with_options(options)


@dataclass(frozen=True, eq=False)
class Inputs:
    """Files made model inputs by :func:`model_inputs`: the readable ones, in order."""

    x: np.ndarray             # (n, S, S, C): the model's input, one row per kept file
    images: np.ndarray        # (n, S, S) uint8: the same films as the model sees them (figures)
    kept: list[int]           # the position, among the files given, of each row's file
    dropped: dict[int, str]   # position → why that file was not read (logged, never a crash)


def model_inputs(paths: Sequence[str | os.PathLike], prep: Prep, preprocess: bool = True,
                 progress: bool = False, skip_log: list | None = None) -> Inputs:
    """Files → model inputs: the one way, for every caller that feeds files to a model in
    memory (heat maps, diagnosis, the lessons). Files are read by :func:`prepare_files`;
    an unreadable one is dropped with its reason (and added to ``skip_log``), not stacked."""
    images, errors = prepare_files(paths, prep, progress, skip_log)
    kept = [i for i, error in enumerate(errors) if not error]
    if len(kept) < len(errors):
        images = images[kept]
    return Inputs(input_array(images, prep, preprocess), images, kept,
                  {i: error for i, error in enumerate(errors) if error})


def input_array(images: np.ndarray | Sequence[np.ndarray], prep: Prep,
                preprocess: bool = True) -> np.ndarray:
    """Prepared uint8 images (N, S, S) → model input (N, S, S, C): channels as the model
    expects, and with ``preprocess`` the backbone's normalisation (float32). Files go through
    :func:`model_inputs`, which calls this."""
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
                progress: bool = False, skip_log: list | None = None
                ) -> tuple[np.ndarray, np.ndarray]:
    """Small sets as numpy: images (N, S, S, C) and integer labels (N,), bad files skipped.

    Pixels stay uint8 unless ``preprocess``, which applies the backbone's preprocess_input
    (float32).
    """
    prep = with_crop_reference(prep, manifest)
    labels = label_indices(manifest["label"].tolist(), classes)
    inputs = model_inputs(manifest["path"].astype(str).tolist(), prep, preprocess, progress,
                          skip_log)
    return inputs.x, labels[inputs.kept]
