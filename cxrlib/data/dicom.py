"""DICOM files through pydicom: recognised by suffix or by the ``DICM`` magic at byte 128, then
pydicom's modality LUT (RescaleSlope/RescaleIntercept or a LUT sequence), the VOI window
(WindowCenter/WindowWidth, first value) or a VOI LUT sequence when present, otherwise min-max;
MONOCHROME1 inverted so that bone is bright; padding shown black; the first frame of a
multi-frame file; colour DICOM as luminance. :mod:`cxrlib.data.images` reads every file
through here or PIL.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from cxrlib.data.pixels import ImageReadError, check_pixels, luminance, scale_to_uint8, to_uint8, validated

logger = logging.getLogger(__name__)

DICOM_SUFFIXES: frozenset[str] = frozenset({".dcm", ".dicom"})

_DICOM_MAGIC_OFFSET = 128
_DICOM_MAGIC = b"DICM"


def _has_dicom_magic(path: Path) -> bool:
    """True when the file carries the 'DICM' magic after the 128-byte preamble."""
    try:
        with path.open("rb") as fh:
            head = fh.read(_DICOM_MAGIC_OFFSET + len(_DICOM_MAGIC))
    except OSError as exc:
        raise ImageReadError(path, f"cannot open file ({exc})") from exc
    return head[_DICOM_MAGIC_OFFSET:] == _DICOM_MAGIC


def is_dicom(path: Path) -> bool:
    """DICOM by suffix or by magic bytes (files without suffix exist)."""
    return path.suffix.lower() in DICOM_SUFFIXES or _has_dicom_magic(path)


def _dcmread(path: Path, stop_before_pixels: bool) -> Any:
    """pydicom.dcmread with errors turned into ImageReadError."""
    import pydicom  # local import: pydicom is only needed for DICOM files

    try:
        return pydicom.dcmread(str(path), force=True, stop_before_pixels=stop_before_pixels)
    except Exception as exc:
        reason = f"not a readable DICOM file ({type(exc).__name__}: {exc})"
        raise ImageReadError(path, reason) from exc


def _dicom_info(path: Path, ds: Any) -> dict[str, Any]:
    """Header fields of a DICOM dataset, in the probe_image format."""
    rows, cols = ds.get("Rows"), ds.get("Columns")
    if rows is None or cols is None:
        raise ImageReadError(path, "DICOM has no Rows/Columns (not an image)")
    photometric = str(ds.get("PhotometricInterpretation", "MONOCHROME2")).strip().upper()
    mode = f"DICOM:{photometric}"
    return {"width": int(cols), "height": int(rows), "mode": mode, "format": "DICOM"}


def probe_dicom(path: Path) -> dict[str, Any]:
    """Read only the DICOM header (no pixel data)."""
    ds = _dcmread(path, stop_before_pixels=True)
    info = _dicom_info(path, ds)
    check_pixels(path, info["height"], info["width"], _frames(ds))
    return info


def _frames(ds: Any) -> int:
    """How many frames a DICOM dataset declares (1 when it does not say, or says nonsense)."""
    frames = _first_float(ds.get("NumberOfFrames"))
    return int(frames) if frames is not None and frames >= 1 else 1


def read_dicom(path: Path) -> tuple[np.ndarray, dict[str, Any]]:
    """Decode a DICOM file into uint8 grayscale with modality LUT, VOI window and polarity."""
    ds = _dcmread(path, stop_before_pixels=False)
    if not any(tag in ds for tag in ("PixelData", "FloatPixelData", "DoubleFloatPixelData")):
        if "Rows" not in ds and "SOPClassUID" not in ds:
            raise ImageReadError(path, "not a valid DICOM file (no image attributes)")
        raise ImageReadError(path, "DICOM has no pixel data")
    info = _dicom_info(path, ds)
    check_pixels(path, info["height"], info["width"], _frames(ds))
    try:
        pixels = np.asarray(ds.pixel_array)
    except Exception as exc:  # missing decoder plugin, corrupt or truncated pixel data
        raise ImageReadError(
            path, f"cannot decode DICOM pixel data ({type(exc).__name__}: {exc})"
        ) from exc
    try:
        gray = dicom_to_gray(ds, pixels)
    except ImageReadError:
        raise
    except Exception as exc:
        reason = f"cannot convert DICOM pixels ({type(exc).__name__}: {exc})"
        raise ImageReadError(path, reason) from exc
    return validated(path, gray), info


def _first_frame(ds: Any, pixels: np.ndarray) -> np.ndarray:
    """Drop the frame axis of a multi-frame pixel array (keep the first frame)."""
    n_frames = int(ds.get("NumberOfFrames", 1) or 1)
    samples = int(ds.get("SamplesPerPixel", 1) or 1)
    if n_frames > 1 or pixels.ndim == (4 if samples > 1 else 3):
        return pixels[0]
    return pixels


def dicom_to_gray(ds: Any, pixels: np.ndarray) -> np.ndarray:
    """Turn decoded DICOM pixels (from ``ds.pixel_array``) into uint8 grayscale."""
    pixels = _first_frame(ds, pixels)
    photometric = str(ds.get("PhotometricInterpretation", "MONOCHROME2")).strip().upper()
    if pixels.ndim == 3:  # colour (RGB; pydicom>=3 also converts YBR to RGB)
        luma = luminance(pixels.astype(np.float32))
        return to_uint8(luma) if pixels.dtype == np.uint8 else scale_to_uint8(luma)
    values = np.asarray(_pydicom_luts()[0](pixels, ds), dtype=np.float32)
    padding = _padding_mask(ds, pixels)
    if padding is not None:  # scale the picture only: padding would stretch the range
        values = np.where(padding, values[~padding].min(), values)
    gray = _apply_voi(ds, values)
    if photometric == "MONOCHROME1":
        gray = 255 - gray
    if padding is not None:
        gray[padding] = 0  # shown as black background, as viewers do
    return gray


def _padding_mask(ds: Any, pixels: np.ndarray) -> np.ndarray | None:
    """Pixels outside the acquired image (PixelPaddingValue, up to PixelPaddingRangeLimit).

    None when the file declares no padding, or when every pixel would be padding.
    """
    value = _first_float(ds.get("PixelPaddingValue"))
    if value is None:
        return None
    limit = _first_float(ds.get("PixelPaddingRangeLimit"))
    low, high = (value, value) if limit is None else sorted((value, limit))
    mask = (pixels >= low) & (pixels <= high)
    return mask if mask.any() and not mask.all() else None


def _first_float(value: Any) -> float | None:
    """First value of a (possibly multi-valued) DICOM numeric element, or None."""
    if value is None or value == "":
        return None
    if not isinstance(value, (str, bytes, int, float)) and hasattr(value, "__len__"):
        if len(value) == 0:
            return None
        value = value[0]
    try:
        return float(value)
    except (TypeError, ValueError):
        return None


def _pydicom_luts() -> tuple[Callable, Callable]:
    """pydicom's ``apply_modality_lut`` and ``apply_voi_lut`` (pydicom 3, or 2.x's location)."""
    try:
        from pydicom.pixels import apply_modality_lut, apply_voi_lut  # pydicom >= 3
    except ImportError:  # pragma: no cover - pydicom 2.x
        from pydicom.pixel_data_handlers.util import apply_modality_lut, apply_voi_lut
    return apply_modality_lut, apply_voi_lut


def _apply_voi(ds: Any, values: np.ndarray) -> np.ndarray:
    """Apply the VOI window (or VOI LUT sequence) to modality values; min-max otherwise.

    The window is :func:`window_to_uint8`, not pydicom's ``apply_voi_lut``, which maps it onto
    the stored bit depth's range (then re-scaled to 0..255 here) and prefers a LUT sequence."""
    center = _first_float(ds.get("WindowCenter"))
    width = _first_float(ds.get("WindowWidth"))
    if center is not None and width is not None and width > 0:
        function = str(ds.get("VOILUTFunction", "LINEAR")).strip().upper()
        return window_to_uint8(values, center, width, function)
    if "VOILUTSequence" in ds:
        try:
            return scale_to_uint8(_pydicom_luts()[1](values, ds))
        except Exception as exc:
            logger.debug("VOI LUT sequence could not be applied (%s); using min-max", exc)
    return scale_to_uint8(values)


def window_to_uint8(
    values: np.ndarray, center: float, width: float, function: str = "LINEAR"
) -> np.ndarray:
    """DICOM VOI windowing (PS3.3 C.11.2.1.2) of modality values onto 0..255."""
    x = values.astype(np.float32)
    if function == "LINEAR_EXACT":
        out = (x - center) / width + 0.5
    elif function == "SIGMOID":
        out = 1.0 / (1.0 + np.exp(-4.0 * (x - center) / width))
    else:  # LINEAR (default); width 1 is a hard threshold
        if width <= 1.0:
            out = (x > center - 0.5).astype(np.float32)
        else:
            out = (x - (center - 0.5)) / (width - 1.0) + 0.5
    return to_uint8(np.clip(out, 0.0, 1.0) * 255.0)
