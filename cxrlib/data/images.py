"""Robust decoding of radiograph files into uint8 grayscale arrays.

Every supported file, whatever its bit depth, colour model or container, is decoded
into the same thing: a 2-D ``uint8`` array of shape ``(H, W)``.

- 8-bit grayscale (``L``) is returned as is; ``1``-bit images become 0/255.
- 16/32-bit grayscale (``I;16``, ``I;16B``, ``I``, ``F``) is min-max scaled to 0..255
  (a constant image gives zeros).
- Colour (``RGB``, ``CMYK``, ``YCbCr``, palette ``P``) is converted to luminance
  (ITU-R 601-2 weights); images with alpha (``RGBA``, ``LA``, ``PA``) are first
  composited over black.
- DICOM (by suffix, or by the ``DICM`` magic at byte 128) goes through pydicom:
  pydicom's modality LUT (RescaleSlope/RescaleIntercept or a LUT sequence), then the VOI window
  (WindowCenter/WindowWidth, first value) or a VOI LUT sequence when present, otherwise
  min-max; MONOCHROME1 is inverted so that bone is bright; multi-frame gives the
  first frame; colour DICOM gives luminance.

Anything that cannot be read (missing, empty, truncated, not an image, DICOM without
pixel data) raises :class:`ImageReadError`, whose message names the path and reason.

One pixel limit, :data:`MAX_PIXELS`, holds for every file cxrlib opens, whichever decoder
reads it (PIL, pydicom, or TF's in :mod:`cxrlib.data.pipeline`): :func:`check_pixels` refuses
a larger image from its header, before a pixel is decoded. A 20000 × 20000 PNG of zeros is
431 KB on disk and 400 MB (several GB while decoding) in memory: a decompression bomb.
"""

from __future__ import annotations

import contextlib
import logging
import re
import threading
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageFile, ImageOps

from cxrlib.errors import InputError

logger = logging.getLogger(__name__)

IMAGE_SUFFIXES: frozenset[str] = frozenset(
    {".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".dcm", ".dicom"}
)
DICOM_SUFFIXES: frozenset[str] = frozenset({".dcm", ".dicom"})

_DICOM_MAGIC_OFFSET = 128
_DICOM_MAGIC = b"DICM"
LUMA_WEIGHTS = tuple(np.float32(w) for w in (0.299, 0.587, 0.114))  # ITU-R 601-2
_HIGH_DEPTH_MODES = frozenset({"I", "F", "I;16", "I;16L", "I;16B", "I;16N", "I;16S"})
_truncation_lock = threading.Lock()
_open_lock = threading.Lock()

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


def is_image_path(path: str | Path) -> bool:
    """True when the file suffix is a supported image suffix (case-insensitive)."""
    return Path(path).suffix.lower() in IMAGE_SUFFIXES


def check_pixels(path: str | Path, height: int, width: int, frames: int = 1) -> None:
    """ImageReadError when an image of ``height`` × ``width`` (× ``frames``) pixels is over
    :data:`MAX_PIXELS`: the one pixel limit, checked from the header before any decoding."""
    pixels = int(height) * int(width) * max(1, int(frames))
    if pixels > MAX_PIXELS:
        size = f"{width} × {height}" + (f" × {frames} frames" if frames > 1 else "")
        raise ImageReadError(path, _too_large(f"{size} = {pixels:,} pixels"))


def _too_large(size: str) -> str:
    """The reason for an image over the pixel limit; ``size`` says how large it is."""
    return (f"image too large ({size}; the limit is {MAX_PIXELS:,}): a decompression bomb or "
            "a far finer scan than needed; downscale it (4096 px on the long side is plenty) "
            "or remove it")


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
    if _is_dicom(p):
        return _probe_dicom(p)
    return _probe_pil(p)


def read_image_with_info(path: str | Path) -> tuple[np.ndarray, dict[str, Any]]:
    """Decode a file once and return ``(uint8 image, header info as in probe_image)``."""
    p = _check_file(path)
    if _is_dicom(p):
        return _read_dicom(p)
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


def _has_dicom_magic(path: Path) -> bool:
    """True when the file carries the 'DICM' magic after the 128-byte preamble."""
    try:
        with path.open("rb") as fh:
            head = fh.read(_DICOM_MAGIC_OFFSET + len(_DICOM_MAGIC))
    except OSError as exc:
        raise ImageReadError(path, f"cannot open file ({exc})") from exc
    return head[_DICOM_MAGIC_OFFSET:] == _DICOM_MAGIC


def _is_dicom(path: Path) -> bool:
    """DICOM by suffix or by magic bytes (files without suffix exist)."""
    return path.suffix.lower() in DICOM_SUFFIXES or _has_dicom_magic(path)


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
    return _validated(path, gray), info


def _pil_reason(exc: Exception) -> str:
    """A short human-readable reason for a PIL failure."""
    if isinstance(exc, Image.UnidentifiedImageError):
        return "not a recognised image format"
    if isinstance(exc, Image.DecompressionBombError):  # PIL's message: "Image size (N pixels) ..."
        pixels = re.search(r"\((\d+) pixels\)", str(exc))
        return _too_large(f"{int(pixels[1]):,} pixels" if pixels else "over PIL's own limit")
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
        return _to_uint8(la[..., 0] * (la[..., 1] / 255.0))
    if mode in {"RGBA", "RGBa", "PA"}:
        rgba = np.asarray(img.convert("RGBA"), dtype=np.float32)
        return _to_uint8(_luminance(rgba[..., :3]) * (rgba[..., 3] / 255.0))
    rgb = img if mode == "RGB" else img.convert("RGB")  # CMYK, YCbCr, LAB, HSV, ...
    return _to_uint8(_luminance(np.asarray(rgb, dtype=np.float32)))


def _pil_high_depth_array(img: Image.Image) -> np.ndarray:
    """The raw values of a 16/32-bit or float PIL image as a 2-D numeric array."""
    arr = np.asarray(img)
    if arr.ndim != 2 or arr.dtype == object:  # older Pillow: go through getdata()
        arr = np.array(img.getdata(), dtype=np.float64).reshape(img.height, img.width)
    return arr


# ----------------------------------------------------------------------------- DICOM


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


def _probe_dicom(path: Path) -> dict[str, Any]:
    """Read only the DICOM header (no pixel data)."""
    ds = _dcmread(path, stop_before_pixels=True)
    info = _dicom_info(path, ds)
    check_pixels(path, info["height"], info["width"], _frames(ds))
    return info


def _frames(ds: Any) -> int:
    """How many frames a DICOM dataset declares (1 when it does not say, or says nonsense)."""
    frames = _first_float(ds.get("NumberOfFrames"))
    return int(frames) if frames is not None and frames >= 1 else 1


def _read_dicom(path: Path) -> tuple[np.ndarray, dict[str, Any]]:
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
    return _validated(path, gray), info


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
        luma = _luminance(pixels.astype(np.float32))
        return _to_uint8(luma) if pixels.dtype == np.uint8 else scale_to_uint8(luma)
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
    return _to_uint8(np.clip(out, 0.0, 1.0) * 255.0)


# ---------------------------------------------------------------------------- helpers


def _luminance(rgb: np.ndarray) -> np.ndarray:
    """ITU-R 601-2 luma of an (..., 3) float32 array.

    Written as three float32 multiplies and two adds in this order, so that the in-graph
    decoder of :mod:`cxrlib.data.pipeline` (which computes the same expression) gives the
    same pixels bit for bit.
    """
    r, g, b = LUMA_WEIGHTS
    return rgb[..., 0] * r + rgb[..., 1] * g + rgb[..., 2] * b


def _to_uint8(values: np.ndarray) -> np.ndarray:
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
    return _to_uint8((arr - lo) * (255.0 / (hi - lo)))


def _validated(path: Path, gray: np.ndarray) -> np.ndarray:
    """Check that a decoded image is a non-empty 2-D uint8 array."""
    if gray.ndim != 2 or gray.size == 0:
        raise ImageReadError(path, f"decoded to an unexpected shape {gray.shape}")
    return np.ascontiguousarray(gray, dtype=np.uint8)
