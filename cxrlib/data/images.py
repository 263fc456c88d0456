"""Robust decoding of radiograph files into uint8 grayscale arrays.

Every supported file, whatever its bit depth, colour model or container, is decoded
into the same thing: a 2-D ``uint8`` array of shape ``(H, W)``.

- 8-bit grayscale (``L``) is returned as is; ``1``-bit images become 0/255.
- 16/32-bit grayscale (``I;16``, ``I;16B``, ``I``, ``F``) is min-max scaled to 0..255
  (a constant image gives zeros).
- Colour (``RGB``, ``CMYK``, ``YCbCr``, palette ``P``) is converted to luminance
  (ITU-R 601-2 weights); images with alpha (``RGBA``, ``LA``, ``PA``) are first
  composited over black.
- DICOM (by suffix, or by the ``DICM`` magic at byte 128) goes through pydicom
  (:mod:`cxrlib.data.dicom`):
  pydicom's modality LUT (RescaleSlope/RescaleIntercept or a LUT sequence), then the VOI window
  (WindowCenter/WindowWidth, first value) or a VOI LUT sequence when present, otherwise
  min-max; MONOCHROME1 is inverted so that bone is bright; multi-frame gives the
  first frame; colour DICOM gives luminance.

Anything that cannot be read (missing, empty, truncated, not an image, DICOM without
pixel data) raises :class:`cxrlib.data.pixels.ImageReadError`, whose message names the path and reason.

One pixel limit, :data:`cxrlib.data.pixels.MAX_PIXELS`, holds for every file cxrlib opens, whichever
decoder reads it (PIL, pydicom, or TF's in :mod:`cxrlib.data.prepare`): ``check_pixels`` refuses
a larger image from its header, before a pixel is decoded. A 20000 × 20000 PNG of zeros is
431 KB on disk and 400 MB (several GB while decoding) in memory: a decompression bomb.
"""

from __future__ import annotations

import contextlib
import logging
import re
import threading
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageFile, ImageOps

from cxrlib.data.dicom import is_dicom, probe_dicom, read_dicom
from cxrlib.data.pixels import (
    MAX_PIXELS,
    ImageReadError,
    check_pixels,
    luminance,
    scale_to_uint8,
    to_uint8,
    too_large,
    validated,
)

logger = logging.getLogger(__name__)

IMAGE_SUFFIXES: frozenset[str] = frozenset(
    {".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".dcm", ".dicom"}
)
_HIGH_DEPTH_MODES = frozenset({"I", "F", "I;16", "I;16L", "I;16B", "I;16N", "I;16S"})
_truncation_lock = threading.Lock()
_open_lock = threading.Lock()


def is_image_path(path: str | Path) -> bool:
    """True when the file suffix is a supported image suffix (case-insensitive)."""
    return Path(path).suffix.lower() in IMAGE_SUFFIXES


def read_image(path: str | Path) -> np.ndarray:
    """Decode any supported file into a 2-D uint8 grayscale array (H, W). Raises ImageReadError."""
    image, _ = read_image_with_info(path)
    return image


def probe_image(path: str | Path) -> dict[str, Any]:
    """Cheap header read: {"width", "height", "mode", "format"}. Raises ImageReadError.

    ``mode`` is the PIL mode ('L', 'I;16', 'RGB', 'RGBA', 'P', ...) or
    ``'DICOM:<PhotometricInterpretation>'``. Pixel data are not decoded, so a truncated
    file may pass this check; use :func:`read_image` to be sure.
    """
    p = _check_file(path)
    if is_dicom(p):
        return probe_dicom(p)
    return _probe_pil(p)


def read_image_with_info(path: str | Path) -> tuple[np.ndarray, dict[str, Any]]:
    """Decode a file once and return ``(uint8 image, header info as in probe_image)``."""
    p = _check_file(path)
    if is_dicom(p):
        return read_dicom(p)
    return _read_pil(p)


# ----------------------------------------------------------------------------- files


def _check_file(path: str | Path) -> Path:
    """Return ``path`` as a Path, or raise ImageReadError if it is not a non-empty file."""
    p = Path(path)
    try:
        if not p.exists():
            raise ImageReadError(p, "file not found")
        if p.is_dir():
            raise ImageReadError(p, "is a directory, not a file")
        if p.stat().st_size == 0:
            raise ImageReadError(p, "empty file (0 bytes)")
    except OSError as exc:
        raise ImageReadError(p, f"cannot access file ({exc})") from exc
    return p


# ----------------------------------------------------------------------- plain files

PLAIN_FORMATS = ("grey-png", "rgb-png", "grey-jpeg", "rgb-jpeg")
_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
# Chunks before the image data that change no pixel for either decoder; any other (text,
# which may hold EXIF, eXIf, tRNS, gAMA, ...) leaves the file to read_image.
_NEUTRAL_PNG_CHUNKS = frozenset({b"IHDR", b"pHYs", b"sRGB", b"iCCP", b"tIME"})
_MAX_SEGMENTS = 256   # chunks / markers walked before the image data; more: read_image


def plain_format(path: str | Path) -> tuple[str, int, int] | None:
    """(which of :data:`PLAIN_FORMATS`, height, width) of a file, from its headers, or None.

    Plain files are those whose pixels any PNG/JPEG decoder gives exactly as
    :func:`read_image` does: 8-bit grey or RGB PNG with no chunk before the image data
    other than neutral ones, and 1- or 3-component JPEG with no APP1 (EXIF/XMP) segment,
    so no orientation to apply. The input pipeline decodes those in TF's threads and leaves
    every other file (and every file this cannot open, or over :data:`MAX_PIXELS`) to
    :func:`read_image`.

    Only the headers are read: the walk seeks from one chunk (PNG) or marker segment (JPEG)
    header to the next, a few hundred bytes per file. Reading a fixed 64 KB head instead read
    most of every course-sized file a second time, serially, before the parallel decode.
    """
    try:
        with open(path, "rb", buffering=0) as fh:   # unbuffered: each read is what it asks
            head = fh.read(8)
            if head.startswith(_PNG_SIGNATURE):
                return _plain_png(fh)
            if head.startswith(b"\xff\xd8\xff"):
                return _plain_jpeg(fh)
    except OSError:
        return None
    return None


def _read_at(fh, position: int, size: int) -> bytes:
    """``size`` bytes of an open file from ``position`` (fewer at its end)."""
    fh.seek(position)
    return fh.read(size)


def _plain_png(fh) -> tuple[str, int, int] | None:
    """('grey-png' / 'rgb-png', H, W) for an 8-bit grey/RGB PNG whose chunks before IDAT
    are neutral."""
    ihdr = _read_at(fh, 8, 25)   # length, "IHDR", width, height, depth, colour type, ...
    if len(ihdr) < 25 or ihdr[4:8] != b"IHDR" or ihdr[16] != 8 or ihdr[17] not in (0, 2):
        return None
    width, height = int.from_bytes(ihdr[8:12], "big"), int.from_bytes(ihdr[12:16], "big")
    if width * height > MAX_PIXELS:  # read_image refuses it, with the reason
        return None
    position = 8
    for _ in range(_MAX_SEGMENTS):
        header = _read_at(fh, position, 8)
        if len(header) < 8:
            return None
        kind = header[4:8]
        if kind == b"IDAT":
            return ("grey-png" if ihdr[17] == 0 else "rgb-png"), height, width
        if kind not in _NEUTRAL_PNG_CHUNKS:
            return None
        position += 12 + int.from_bytes(header[:4], "big")
    return None


def _plain_jpeg(fh) -> tuple[str, int, int] | None:
    """('grey-jpeg' / 'rgb-jpeg', H, W) for an 8-bit 1/3-component JPEG without APP1, from
    its frame header."""
    position = 2
    for _ in range(_MAX_SEGMENTS):
        segment = _read_at(fh, position, 10)
        if len(segment) < 4 or segment[0] != 0xFF:
            return None
        marker = segment[1]
        length = int.from_bytes(segment[2:4], "big")
        if marker == 0xE1:  # APP1: EXIF (an orientation) or XMP
            return None
        if 0xC0 <= marker <= 0xCF and marker not in (0xC4, 0xC8, 0xCC):  # a frame header
            if len(segment) < 10 or segment[4] != 8:  # 12-bit: read_image
                return None
            kind = {1: "grey-jpeg", 3: "rgb-jpeg"}.get(segment[9])
            height, width = (int.from_bytes(segment[o:o + 2], "big") for o in (5, 7))
            if kind is None or not height or not width or height * width > MAX_PIXELS:
                return None  # read_image reads it, or refuses it with the reason
            return kind, height, width
        if marker in (0xD9, 0xDA):  # end of image or start of scan before any frame
            return None
        position += 2 + length
    return None


# ------------------------------------------------------------------------------- PIL


@contextlib.contextmanager
def _strict_truncation() -> Iterator[None]:
    """Make sure PIL raises on truncated files instead of padding them silently."""
    if not ImageFile.LOAD_TRUNCATED_IMAGES:
        yield
        return
    logger.warning("PIL.ImageFile.LOAD_TRUNCATED_IMAGES is True; disabling it while decoding")
    with _truncation_lock:
        previous = ImageFile.LOAD_TRUNCATED_IMAGES
        ImageFile.LOAD_TRUNCATED_IMAGES = False
        try:
            yield
        finally:
            ImageFile.LOAD_TRUNCATED_IMAGES = previous


def _pil_info(img: Image.Image) -> dict[str, Any]:
    """Header fields of an opened PIL image."""
    return {
        "width": int(img.width),
        "height": int(img.height),
        "mode": str(img.mode),
        "format": str(img.format or "unknown"),
    }


_SWAPPED_ORIENTATIONS = {5, 6, 7, 8}  # EXIF orientations that turn the picture by 90°


def _orientation(img: Image.Image) -> int:
    """The EXIF orientation tag (1 = upright) of an opened image; 1 when absent or unreadable."""
    try:
        return int(img.getexif().get(0x0112, 1) or 1)
    except Exception:  # noqa: BLE001 - a broken EXIF block is no reason to drop the image
        return 1


@contextlib.contextmanager
def _open_pil(path: Path) -> Iterator[Image.Image]:
    """``Image.open`` (the header only) under cxrlib's pixel limit instead of PIL's own.

    PIL warns at 89 M pixels and refuses at twice that while opening; cxrlib refuses anything
    over :data:`MAX_PIXELS` right after, so PIL's warning is silenced (under a lock, as
    ``warnings.catch_warnings`` is process-wide) and its refusal given cxrlib's reason.
    """
    try:
        with _open_lock, warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            img = Image.open(path)
    except Image.DecompressionBombError as exc:
        raise ImageReadError(path, _pil_reason(exc)) from exc
    with img:
        check_pixels(path, img.height, img.width)  # read_image decodes the first frame only
        yield img


def _probe_pil(path: Path) -> dict[str, Any]:
    """Open the file lazily with PIL and return its header fields (as displayed: EXIF-upright)."""
    try:
        with _open_pil(path) as img:
            info = _pil_info(img)
            if _orientation(img) in _SWAPPED_ORIENTATIONS:
                info["width"], info["height"] = info["height"], info["width"]
            return info
    except ImageReadError:
        raise
    except Exception as exc:  # any decoder failure means "not readable"
        raise ImageReadError(path, _pil_reason(exc)) from exc


def _read_pil(path: Path) -> tuple[np.ndarray, dict[str, Any]]:
    """Fully decode a file with PIL (first frame), turn it upright (EXIF orientation, as a
    viewer would show it; phone photos of films carry one) and convert it to uint8 grayscale."""
    try:
        with _strict_truncation(), _open_pil(path) as img:
            img.load()
            upright = ImageOps.exif_transpose(img) if _orientation(img) != 1 else img
            info = _pil_info(upright)
            info["format"] = str(img.format or "unknown")
            gray = pil_to_gray(upright)
    except ImageReadError:
        raise
    except Exception as exc:  # OSError, SyntaxError, ValueError, DecompressionBombError, ...
        raise ImageReadError(path, _pil_reason(exc)) from exc
    return validated(path, gray), info


def _pil_reason(exc: Exception) -> str:
    """A short human-readable reason for a PIL failure."""
    if isinstance(exc, Image.UnidentifiedImageError):
        return "not a recognised image format"
    if isinstance(exc, Image.DecompressionBombError):  # PIL's message: "Image size (N pixels) ..."
        pixels = re.search(r"\((\d+) pixels\)", str(exc))
        return too_large(f"{int(pixels[1]):,} pixels" if pixels else "over PIL's own limit")
    text = str(exc) or type(exc).__name__
    if "truncated" in text.lower() or isinstance(exc, (EOFError, SyntaxError)):
        return f"truncated or corrupt image data ({text})"
    return f"cannot decode image ({type(exc).__name__}: {text})"


def pil_to_gray(img: Image.Image) -> np.ndarray:
    """Convert a loaded PIL image of any mode into a 2-D uint8 luminance array."""
    mode = img.mode
    if mode == "L":
        return np.array(img, dtype=np.uint8)
    if mode == "1":
        return np.array(img.convert("L"), dtype=np.uint8)
    if mode in _HIGH_DEPTH_MODES:
        return scale_to_uint8(_pil_high_depth_array(img))
    if mode == "P":
        has_alpha = "transparency" in img.info
        return pil_to_gray(img.convert("RGBA" if has_alpha else "RGB"))
    if mode in {"LA", "La"}:
        la = np.asarray(img.convert("LA"), dtype=np.float32)
        return to_uint8(la[..., 0] * (la[..., 1] / 255.0))
    if mode in {"RGBA", "RGBa", "PA"}:
        rgba = np.asarray(img.convert("RGBA"), dtype=np.float32)
        return to_uint8(luminance(rgba[..., :3]) * (rgba[..., 3] / 255.0))
    rgb = img if mode == "RGB" else img.convert("RGB")  # CMYK, YCbCr, LAB, HSV, ...
    return to_uint8(luminance(np.asarray(rgb, dtype=np.float32)))


def _pil_high_depth_array(img: Image.Image) -> np.ndarray:
    """The raw values of a 16/32-bit or float PIL image as a 2-D numeric array."""
    arr = np.asarray(img)
    if arr.ndim != 2 or arr.dtype == object:  # older Pillow: go through getdata()
        arr = np.array(img.getdata(), dtype=np.float64).reshape(img.height, img.width)
    return arr
