"""The ``tf.data`` input pipeline, built from a manifest.

The order of the steps matters, and each has a reason:

1. **decode** every file once, in parallel: the plain PNG/JPEG files inside TF's graph
   (:func:`cxrlib.data.images.plain_format` says which), every other file (16-bit, alpha,
   DICOM, an EXIF orientation) and any file the graph cannot decode with
   :func:`cxrlib.data.images.read_image`; both give the same pixels. A file that cannot be
   read is skipped with a warning and listed in a skip log, before the first step;
2. **prepare** (optional proportional border crop, optional histogram equalisation or CLAHE,
   resize to the backbone's size by :func:`cxrlib.data.prepare.resize_plan`) while the image
   is a small uint8 array;
3. **hold** the prepared uint8 images in memory: decoding is by far the most expensive step,
   and it is never repeated;
4. **shuffle** the order (training only), so each epoch sees a new one: the indices are
   shuffled and each batch is gathered from the held array, so no image is copied twice;
5. **batch**, then **augment** (training only) with Keras preprocessing layers
   (:mod:`cxrlib.data.augment`): augmenting validation or test data would only blur the
   measurement;
6. the backbone's own **preprocess_input**, the normalisation its ImageNet weights expect
   (applied to the grey batch as one fused multiply-add per channel, see
   :func:`cxrlib.data.normalise.input_affine`);
7. **prefetch**, so the accelerator never waits for the CPU.

:func:`cxrlib.data.prepare.prepare_files` is the single definition of steps 1–2: the pipeline,
:func:`load_arrays` (numpy arrays for small sets and plots) and the heat-map and diagnosis
code all use it (through :func:`model_inputs`, files → model inputs in memory, and
:func:`cxrlib.data.prepare.prepare_image`), so a model always sees its images prepared the same way.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Sequence

import numpy as np
import pandas as pd

from cxrlib.data.augment import augment_batch, augmentation_layers
from cxrlib.data.normalise import _affine_input, input_affine, normaliser
from cxrlib.data.prepare import Prep, _no_autograph, prepare_files, prepare_readable, with_crop_reference
from cxrlib.spec import Augment


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
