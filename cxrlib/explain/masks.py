"""Masks on the model's grid: a mask file through its image's geometry (:func:`prepare_mask`),
the border band where burned-in text lives (:func:`border_mask`) and the central region where
the lungs of a centred film lie (:func:`central_mask`)."""

from __future__ import annotations

import os

import numpy as np

from cxrlib.data.images import read_image
from cxrlib.data.prepare import Prep, border_crop, resize

CENTRAL_REGION = (0.15, 0.85, 0.12, 0.88)
"""(top, bottom, left, right) fractions of the frame: where the lungs of a centred PA film
lie, used by :func:`cxrlib.explain.measures.lung_share` when no lung mask is given."""


def prepare_mask(mask_path: str | os.PathLike, prep: Prep,
                 image_path: str | os.PathLike | None = None) -> np.ndarray:
    """A mask file → bool (S, S), through the same geometry as its image.

    Same border crop (when ``prep.crop``) and resize to ``prep.image_size``, with nearest
    interpolation. The crop depends on the film's size, so a mask stored at another size
    than its image (the real v4 database: 256 px masks, 299 px images) is first scaled to
    the image's size, read from ``image_path``'s header.
    """
    mask = read_image(mask_path)
    if image_path is not None:
        from cxrlib.data.images import probe_image

        info = probe_image(image_path)
        mask = resize(mask, (int(info["height"]), int(info["width"])), "nearest")
    if prep.crop:
        if prep.crop_reference is None:
            raise ValueError("crop=True needs crop_reference=(w_max, h_max).")
        mask = border_crop(mask, prep.crop_reference)
    return resize(mask, prep.image_size, "nearest") > 127


def mask_like(mask: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    """A boolean mask resized (nearest, by the pipeline's :func:`~cxrlib.data.prepare.resize`)
    to ``shape``'s first two sides."""
    mask = np.asarray(mask).astype(bool)
    target = (int(shape[0]), int(shape[1]))
    if mask.shape != target:
        mask = resize(mask.astype(np.uint8) * 255, target, "nearest") > 127
    return mask


#: The border band, the outer 12 % of each side, where burned-in text and markers live: the
#: one band of the course (notebook 01 counts text in it, notebook 05 measures heat in it).
BORDER_BAND = 0.12


def border_mask(shape: tuple[int, int], band: float = BORDER_BAND, rim: float = 0.0) -> np.ndarray:
    """True in the border band of width ``band``·side on every edge, less its outermost
    ``rim``·side (at least one pixel when ``rim`` > 0: a film's frame line)."""
    h, w = int(shape[0]), int(shape[1])
    if not 0 < band < 0.5:
        raise ValueError(f"band must be in (0, 0.5), not {band}")
    bh, bw = max(1, round(band * h)), max(1, round(band * w))
    low = 1 if rim > 0 else 0
    rh, rw = min(bh - 1, max(low, round(h * rim))), min(bw - 1, max(low, round(w * rim)))
    mask = np.zeros((h, w), bool)
    mask[rh:h - rh, rw:w - rw] = True
    mask[bh:h - bh, bw:w - bw] = False
    return mask


def central_mask(shape: tuple[int, int]) -> np.ndarray:
    """True in :data:`CENTRAL_REGION`, where the lungs of a centred film lie."""
    h, w = shape
    top, bottom, left, right = CENTRAL_REGION
    region = np.zeros((h, w), bool)
    region[round(top * h):round(bottom * h), round(left * w):round(right * w)] = True
    return region
