"""Decoding plain greyscale PNGs inside TensorFlow, pixel for pixel as :func:`prepare_image`.

Decoding is most of the cost of an epoch that reads files, and in the tf.data pipeline the
Python decoder (:func:`cxrlib.data.images.read_image`, through ``tf.numpy_function``) is
slower than TensorFlow's own and contends for the GIL. For the common case, an intact 8-bit
greyscale PNG (the COVID-19 Radiography Database, the synthetic default), there is
nothing for the Python decoder to do that ``tf.io.decode_png`` does not do identically, so
the pipeline decodes those natively:

- :func:`is_native_png` decides in the graph, from the bytes, whether a file is such a PNG:
  signature, ``IHDR`` with bit depth 8 and colour type 0, ``IEND`` at the end (so not
  truncated), no transparency (``tRNS``) and no EXIF (``eXIf``, or a "Raw profile type
  exif" text chunk, which PIL would use to turn the image). Anything else goes through
  :func:`read_image` as before, with its errors, warnings and skip log.
  :func:`native_png_size` is the same test in Python, with every chunk's CRC checked too.
- :func:`resize_taps` and :func:`resize_native` are PIL's bilinear resize (``Resample.c``:
  the same filter coefficients in double precision, the same 22-bit fixed point, horizontal
  pass then vertical pass, each rounded and clipped to uint8), so the result is *equal* to
  ``PIL.Image.resize``, not merely close (the tests compare them bit for bit).
"""

from __future__ import annotations

import math
import zlib
from functools import lru_cache

import numpy as np
from PIL import Image

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
_PRECISION_BITS = 32 - 8 - 2  # PIL's fixed point for 8-bit images
_EXIF_TEXT = b"Raw profile type exif"


def native_png_size(data: bytes) -> tuple[int, int] | None:
    """(width, height) when ``data`` is an intact 8-bit greyscale PNG TensorFlow may decode.

    None for anything else (other formats and modes, transparency, EXIF, a bad CRC, a
    missing IEND, an implausible size): those go through the Python decoder.
    """
    view = memoryview(data)
    if bytes(view[:8]) != PNG_SIGNATURE:
        return None
    position, size, seen_data = 8, None, False
    while position + 12 <= len(view):
        length = int.from_bytes(view[position:position + 4], "big")
        kind = bytes(view[position + 4:position + 8])
        end = position + 12 + length
        if end > len(view) or zlib.crc32(view[position + 4:end - 4]) != int.from_bytes(
                view[end - 4:end], "big"):
            return None
        body = view[position + 8:end - 4]
        if size is None:
            size = _grey8_size(kind, body)
            if size is None:
                return None
        elif kind in (b"tRNS", b"eXIf", b"IHDR"):
            return None
        elif kind in (b"tEXt", b"zTXt", b"iTXt") and bytes(body[:len(_EXIF_TEXT)]) == _EXIF_TEXT:
            return None
        seen_data = seen_data or kind == b"IDAT"
        if kind == b"IEND":
            return size if seen_data else None
        position = end
    return None


def _grey8_size(kind: bytes, body: memoryview) -> tuple[int, int] | None:
    """(width, height) from an IHDR of an 8-bit greyscale image of a size PIL accepts, else None."""
    if kind != b"IHDR" or len(body) != 13:
        return None
    width, height = int.from_bytes(body[0:4], "big"), int.from_bytes(body[4:8], "big")
    depth, colour = body[8], body[9]
    limit = Image.MAX_IMAGE_PIXELS or math.inf
    if depth != 8 or colour != 0 or not 0 < width * height <= limit:
        return None
    return width, height


def _bilinear(x: float) -> float:
    """PIL's bilinear (triangle) filter."""
    x = abs(x)
    return 1.0 - x if x < 1.0 else 0.0


@lru_cache(maxsize=256)
def _axis_taps(in_size: int, out_size: int) -> tuple[np.ndarray, np.ndarray]:
    """Source indices and fixed-point weights (out_size, K) of one axis, as PIL computes them."""
    scale = in_size / out_size
    filterscale = max(scale, 1.0)
    support = 1.0 * filterscale
    ss = 1.0 / filterscale
    rows = []
    for xx in range(out_size):
        center = (xx + 0.5) * scale
        xmin = max(int(center - support + 0.5), 0)
        xmax = min(int(center + support + 0.5), in_size) - xmin
        weights = [_bilinear((x + xmin - center + 0.5) * ss) for x in range(xmax)]
        total = 0.0
        for w in weights:
            total += w
        if total != 0.0:
            weights = [w / total for w in weights]
        fixed = [int(-0.5 + w * (1 << _PRECISION_BITS)) if w < 0 else
                 int(0.5 + w * (1 << _PRECISION_BITS)) for w in weights]
        rows.append((xmin, fixed))
    width = max(1, max(len(fixed) for _, fixed in rows))
    index = np.zeros((out_size, width), np.int32)
    weight = np.zeros((out_size, width), np.int32)
    for xx, (xmin, fixed) in enumerate(rows):
        index[xx, :len(fixed)] = np.arange(xmin, xmin + len(fixed))
        weight[xx, :len(fixed)] = fixed
    return index, weight


def resize_taps(width: int, height: int, size: int) -> np.ndarray:
    """PIL's bilinear resize of a (height, width) image to size×size as taps (2, 2, size, K).

    ``taps[0]`` is the horizontal pass, ``taps[1]`` the vertical one; ``[.., 0]`` source
    indices, ``[.., 1]`` weights in PIL's fixed point; K is the wider of the two passes
    (the narrower is padded with zero weights).
    """
    passes = [_axis_taps(width, size), _axis_taps(height, size)]
    k = max(index.shape[1] for index, _ in passes)
    taps = np.zeros((2, 2, size, k), np.int32)
    for axis, (index, weight) in enumerate(passes):
        taps[axis, 0, :, :index.shape[1]] = index
        taps[axis, 1, :, :weight.shape[1]] = weight
    return taps


def _resample_rows(x, index, weight):
    """One pass of PIL's resample along axis 0 of an int32 (A, B) tensor → (out, B), 8-bit."""
    import tensorflow as tf

    total = tf.reduce_sum(tf.gather(x, index) * weight[:, :, None], axis=1)
    total = tf.bitwise.right_shift(total + (1 << (_PRECISION_BITS - 1)), _PRECISION_BITS)
    return tf.clip_by_value(total, 0, 255)


def resize_native(image, taps):
    """Apply :func:`resize_taps` to a (H, W) uint8 tensor → (size, size) uint8, as PIL would.

    Each pass gathers whole rows (fast, contiguous) of the transposed image.
    """
    import tensorflow as tf

    x = tf.transpose(tf.cast(image, tf.int32))             # (W, H)
    x = _resample_rows(x, taps[0, 0], taps[0, 1])           # horizontal pass → (size, H)
    x = _resample_rows(tf.transpose(x), taps[1, 0], taps[1, 1])  # vertical → (size, size)
    return tf.cast(x, tf.uint8)


_IEND = b"\x00\x00\x00\x00IEND\xaeB`\x82"
_PAD = b"\x00" * 32
_EXCLUDED = (b"tRNS", b"eXIf", _EXIF_TEXT)


def is_native_png(contents):
    """Graph version of the checks of :func:`native_png_size` that need no Python: PNG
    signature, IHDR of an 8-bit greyscale image of a size PIL accepts, IEND at the end, no
    ``tRNS``/``eXIf``/EXIF text anywhere. (CRCs are not checked here: a broken stream is
    caught by the decoder, see :func:`cxrlib.data.pipeline.make_dataset`.)"""
    import tensorflow as tf

    head = tf.strings.substr(tf.strings.join([contents, _PAD]), 0, 26)
    tail = tf.strings.substr(tf.strings.join([_PAD, contents]), tf.strings.length(contents) + 20, 12)
    dims = tf.cast(tf.io.decode_raw(tf.strings.substr(head, 16, 8), tf.uint8), tf.int64)
    width = ((dims[0] * 256 + dims[1]) * 256 + dims[2]) * 256 + dims[3]
    height = ((dims[4] * 256 + dims[5]) * 256 + dims[6]) * 256 + dims[7]
    limit = int(Image.MAX_IMAGE_PIXELS or 2 ** 62)
    checks = [tf.equal(tf.strings.substr(head, 0, 8), PNG_SIGNATURE),
              tf.equal(tf.strings.substr(head, 12, 4), b"IHDR"),
              tf.equal(tf.strings.substr(head, 24, 2), b"\x08\x00"),
              tf.equal(tail, _IEND),
              tf.logical_and(width * height > 0, width * height <= limit)]
    checks += [tf.equal(tf.size(tf.strings.split(contents, sep=word)), 1) for word in _EXCLUDED]
    return tf.reduce_all(tf.stack(checks))


def decode_native(contents, size: int):
    """Decode an 8-bit greyscale PNG (bytes tensor) and resize it to size×size as PIL would."""
    import tensorflow as tf

    image = tf.io.decode_png(contents, channels=1, dtype=tf.uint8)[:, :, 0]
    shape = tf.shape(image)
    taps = tf.numpy_function(lambda w, h: resize_taps(int(w), int(h), size),
                             [shape[1], shape[0]], tf.int32, stateful=False, name="resize_taps")
    taps.set_shape((2, 2, size, None))
    return resize_native(image, taps)
