"""What every decoder of :mod:`cxrlib.data.images` shares (PIL's, pydicom's in
:mod:`cxrlib.data.dicom`, TF's in :mod:`cxrlib.data.prepare`): the error a file that cannot be
read raises, the one pixel limit (:data:`MAX_PIXELS`, checked from the header by
:func:`check_pixels`), and the conversions to uint8 grayscale (ITU-R 601-2 luma, rounding,
min-max scaling).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from cxrlib.errors import InputError

LUMA_WEIGHTS = tuple(np.float32(w) for w in (0.299, 0.587, 0.114))  # ITU-R 601-2

#: The most pixels (width × height × frames) cxrlib decodes from one file. The largest
#: radiographs (a 43 × 43 cm detector at 0.1 mm) are about 4300 × 4300 = 18.5 M pixels; a file
#: beyond this is a decompression bomb or a scan far finer than any model here needs.
MAX_PIXELS = 50_000_000


class ImageReadError(InputError):
    """A file that cannot be read as an image; str() names the path and the reason."""

    def __init__(self, path: str | Path, reason: str) -> None:
        super().__init__(str(path), reason)
        self.path = str(path)
        self.reason = reason

    def __str__(self) -> str:
        return f"cannot read image {self.path}: {self.reason}"


def check_pixels(path: str | Path, height: int, width: int, frames: int = 1) -> None:
    """ImageReadError when an image of ``height`` × ``width`` (× ``frames``) pixels is over
    :data:`MAX_PIXELS`: the one pixel limit, checked from the header before any decoding."""
    pixels = int(height) * int(width) * max(1, int(frames))
    if pixels > MAX_PIXELS:
        size = f"{width} × {height}" + (f" × {frames} frames" if frames > 1 else "")
        raise ImageReadError(path, too_large(f"{size} = {pixels:,} pixels"))


def too_large(size: str) -> str:
    """The reason for an image over the pixel limit; ``size`` says how large it is."""
    return (f"image too large ({size}; the limit is {MAX_PIXELS:,}): a decompression bomb or "
            "a far finer scan than needed; downscale it (4096 px on the long side is plenty) "
            "or remove it")


def luminance(rgb: np.ndarray) -> np.ndarray:
    """ITU-R 601-2 luma of an (..., 3) float32 array.

    Written as three float32 multiplies and two adds in this order, so that the in-graph
    decoder of :mod:`cxrlib.data.prepare` (which computes the same expression) gives the
    same pixels bit for bit.
    """
    r, g, b = LUMA_WEIGHTS
    return rgb[..., 0] * r + rgb[..., 1] * g + rgb[..., 2] * b


def to_uint8(values: np.ndarray) -> np.ndarray:
    """Round and clip float values in 0..255 to uint8."""
    return np.clip(np.rint(values), 0, 255).astype(np.uint8)


def scale_to_uint8(values: np.ndarray) -> np.ndarray:
    """Min-max scale any numeric array onto 0..255 (constant → zeros; NaN/inf → min)."""
    arr = np.asarray(values, dtype=np.float32)
    finite = np.isfinite(arr)
    if not finite.any():
        return np.zeros(arr.shape, dtype=np.uint8)
    lo, hi = float(arr[finite].min()), float(arr[finite].max())
    if not finite.all():
        arr = np.where(finite, arr, lo)
    if hi <= lo:
        return np.zeros(arr.shape, dtype=np.uint8)
    return to_uint8((arr - lo) * (255.0 / (hi - lo)))


def validated(path: Path, gray: np.ndarray) -> np.ndarray:
    """Check that a decoded image is a non-empty 2-D uint8 array."""
    if gray.ndim != 2 or gray.size == 0:
        raise ImageReadError(path, f"decoded to an unexpected shape {gray.shape}")
    return np.ascontiguousarray(gray, dtype=np.uint8)
