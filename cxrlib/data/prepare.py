"""Files → pixels: :class:`Prep` (how files become model inputs, recorded with every run) and
steps 1–2 of the input pipeline (:mod:`cxrlib.data.pipeline`): decode, then the optional
proportional border crop, histogram equalisation or CLAHE, and the resize to the backbone's
size (:func:`resize_plan`), while the image is a small uint8 array.

:func:`prepare_files` is their single definition: the ``tf.data`` pipeline, ``model_inputs``
(files → model inputs in memory) and :func:`prepare_image` all use it, so a model always sees
its images prepared the same way. The plain PNG/JPEG files are decoded inside TF's graph
(:func:`cxrlib.data.images.plain_format` says which), every other file with
:func:`cxrlib.data.images.read_image`; both give the same pixels.
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

from cxrlib.data.images import plain_format, read_image
from cxrlib.data.pixels import ImageReadError

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


def resize_plan(height: int, width: int, size: int | tuple[int, int], interpolation: str) -> str:
    """How an (H, W) image reaches size×size: ``"same"`` (already there), ``"interpolate"``,
    or ``"reduce"``: first average whole k×k blocks (``area`` resize to H//k, W//k, k the
    integer part of the reduction, 2 or more), then interpolate the remaining factor (< 2).

    That is the antialiasing a large reduction needs (a plain bilinear from 1024 px to 224
    reads 4 pixels out of 21 per output pixel and aliases) at the cost of one pass over the
    image, where TF's antialiased kernels cost more than decoding the file. ``nearest``
    (masks) never averages. Decided in Python from the size, so that each traced
    function holds one plan and no per-image branch.
    """
    target = _target(size)
    if (height, width) == target:
        return "same"
    if interpolation != "nearest" and max(height // target[0], width // target[1]) >= 2:
        return "reduce"
    return "interpolate"


def _target(size: int | tuple[int, int]) -> tuple[int, int]:
    """(height, width) of a resize target given as one side or as (height, width)."""
    return (int(size), int(size)) if np.isscalar(size) else (int(size[0]), int(size[1]))


def _resize_graph(image, size: int | tuple[int, int], interpolation: str, plan: str):
    """uint8 (H, W) tensor → uint8 (size, size), or (height, width) when ``size`` is a pair,
    by ``plan`` (:func:`resize_plan`): the one resize of every image and mask."""
    import tensorflow as tf

    target = _target(size)
    if plan != "same":
        x = tf.cast(image[..., None], tf.float32)
        if plan == "reduce":
            shape = tf.shape(x)[:2]
            x = tf.image.resize(x, shape // tf.maximum(shape // target, 1), method="area")
        image = _to_uint8_graph(tf.image.resize(x, target,
                                                method=INTERPOLATIONS[interpolation]))[..., 0]
    image.set_shape(target)
    return image


def _luma_graph(rgb):
    """ITU-R 601-2 luma of a uint8 (H, W, 3) tensor, computed exactly as pixels.luminance."""
    import tensorflow as tf

    from cxrlib.data.pixels import LUMA_WEIGHTS

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


def resize(image: np.ndarray, size: int | tuple[int, int],
           interpolation: str = "bilinear") -> np.ndarray:
    """Resize a uint8 (H, W) image to ``size``×``size``, or to (height, width) when ``size``
    is a pair, exactly as the pipeline does: the one resize of images and masks alike."""
    if interpolation not in INTERPOLATIONS:
        raise ValueError(f"interpolation must be one of {sorted(INTERPOLATIONS)}, "
                         f"not {interpolation!r}")
    plan = resize_plan(*image.shape[:2], size, interpolation)
    if plan == "same":
        return image
    return _resizer(_target(size), interpolation, plan)(
        np.ascontiguousarray(image, np.uint8)).numpy()


@functools.lru_cache(maxsize=64)
def _resizer(target: tuple[int, int], interpolation: str, plan: str):
    """A TF function of :func:`_resize_graph` alone (no crop, no equalisation)."""
    import tensorflow as tf

    return tf.function(lambda image: _resize_graph(image, target, interpolation, plan),
                       input_signature=[tf.TensorSpec((None, None), tf.uint8)], autograph=False)


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
