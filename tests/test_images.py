"""Tests for cxrlib.data.images: every kind decodes to 2-D uint8; failures raise ImageReadError."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pydicom
import pytest
from PIL import Image, ImageFile
from pydicom.dataset import FileDataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, generate_uid

from cxrlib.data.images import IMAGE_SUFFIXES, is_image_path, probe_image, read_image, read_image_with_info
from cxrlib.data.pixels import ImageReadError

CR_IMAGE_STORAGE = "1.2.840.10008.5.1.4.1.1.1"
PYDICOM_3 = int(pydicom.__version__.split(".")[0]) >= 3
LUMA = np.array([0.299, 0.587, 0.114])


def _noise(shape: tuple[int, ...], seed: int = 0) -> np.ndarray:
    """Reproducible random uint8 pixels."""
    return np.random.default_rng(seed).integers(0, 256, size=shape, dtype=np.uint8)


def _save(img: Image.Image, path: Path, **kwargs) -> Path:
    """Save a PIL image and return the path."""
    img.save(path, **kwargs)
    return path


def _luma(rgb: np.ndarray) -> np.ndarray:
    """Expected uint8 luminance of an RGB array."""
    return np.clip(np.rint(rgb.astype(np.float64) @ LUMA), 0, 255).astype(np.uint8)


def _assert_gray(arr: np.ndarray, shape: tuple[int, int]) -> None:
    """The decoded result is a 2-D uint8 array of the given shape."""
    assert isinstance(arr, np.ndarray)
    assert arr.dtype == np.uint8
    assert arr.shape == shape


# ------------------------------------------------------------------------ DICOM files


def _write_dicom(
    path: Path,
    stored: np.ndarray,
    photometric: str = "MONOCHROME2",
    slope: str | None = "2",
    intercept: str | None = "-1000",
    window: tuple[str, str] | None = ("1000", "2000"),
    with_pixels: bool = True,
) -> Path:
    """Write a minimal valid uint16 DICOM file (explicit VR little endian) with pydicom."""
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = CR_IMAGE_STORAGE
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = FileDataset(str(path), {}, file_meta=meta, preamble=b"\0" * 128)
    ds.SOPClassUID = CR_IMAGE_STORAGE
    ds.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
    ds.Modality = "CR"
    frames = stored if stored.ndim == 3 else stored[None]
    ds.Rows, ds.Columns = frames.shape[1:]
    if stored.ndim == 3:
        ds.NumberOfFrames = frames.shape[0]
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = photometric
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 0
    if slope is not None:
        ds.RescaleSlope, ds.RescaleIntercept = slope, intercept
    if window is not None:
        ds.WindowCenter, ds.WindowWidth = window
    if with_pixels:
        ds.PixelData = frames.astype("<u2").tobytes()
    if PYDICOM_3:
        ds.save_as(path, enforce_file_format=True)
    else:  # pragma: no cover - pydicom 2.x
        ds.is_little_endian, ds.is_implicit_VR = True, False
        ds.save_as(path, write_like_original=False)
    return path


def _expected_window(
    stored: np.ndarray, slope: float, intercept: float, center: float, width: float
) -> np.ndarray:
    """DICOM linear VOI window of stored values after the modality LUT, on 0..255."""
    x = stored.astype(np.float64) * slope + intercept
    y = ((x - (center - 0.5)) / (width - 1) + 0.5).clip(0, 1) * 255
    return np.rint(y).astype(np.uint8)


STORED = np.array([[100, 500, 750, 1000], [1250, 1500, 1900, 600]], dtype=np.uint16)


# ---------------------------------------------------------------------------- suffixes


def test_image_suffixes_and_is_image_path() -> None:
    assert IMAGE_SUFFIXES == {".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".dcm", ".dicom"}
    assert all(s == s.lower() for s in IMAGE_SUFFIXES)
    assert is_image_path("a/b/IMG.PNG") and is_image_path(Path("x.Dcm")) and is_image_path("x.jpeg")
    assert not is_image_path("notes.txt") and not is_image_path("no_suffix")


# ------------------------------------------------------------------------- PIL kinds


def test_grayscale_png_is_returned_unchanged(tmp_path: Path) -> None:
    pixels = _noise((20, 30))
    out = read_image(_save(Image.fromarray(pixels), tmp_path / "gray.png"))
    _assert_gray(out, (20, 30))
    np.testing.assert_array_equal(out, pixels)


@pytest.mark.parametrize("suffix", [".png", ".tif"])
def test_16bit_values_are_min_max_scaled(tmp_path: Path, suffix: str) -> None:
    values = np.linspace(1000, 4000, 12 * 16).reshape(12, 16)
    values = np.random.default_rng(1).permutation(values.ravel()).reshape(12, 16).astype(np.uint16)
    img = Image.fromarray(values)
    assert img.mode.startswith("I")
    out = read_image(_save(img, tmp_path / f"deep{suffix}"))
    _assert_gray(out, (12, 16))
    assert out.min() == 0 and out.max() == 255
    assert out[values == values.min()].item() == 0 and out[values == values.max()].item() == 255
    expected = np.rint((values.astype(np.float64) - 1000) * 255 / 3000)
    assert np.abs(out.astype(int) - expected).max() <= 1
    order = np.argsort(values.ravel(), kind="stable")
    assert np.all(np.diff(out.ravel()[order].astype(int)) >= 0)  # order preserved


def test_constant_16bit_image_gives_zeros(tmp_path: Path) -> None:
    img = Image.fromarray(np.full((5, 7), 1234, dtype=np.uint16))
    out = read_image(_save(img, tmp_path / "flat16.png"))
    _assert_gray(out, (5, 7))
    assert not out.any()


def test_rgb_is_converted_to_luminance(tmp_path: Path) -> None:
    rgb = _noise((9, 11, 3), seed=2)
    rgb[0, 0] = (255, 0, 0)
    out = read_image(_save(Image.fromarray(rgb), tmp_path / "rgb.png"))
    _assert_gray(out, (9, 11))
    np.testing.assert_array_equal(out, _luma(rgb))
    assert out[0, 0] == 76  # 0.299 * 255


def test_rgba_is_composited_over_black(tmp_path: Path) -> None:
    rgb = _noise((8, 10, 3), seed=3)
    alpha = np.full((8, 10), 255, dtype=np.uint8)
    alpha[:, :5] = 0
    alpha[0, 9] = 128
    out = read_image(_save(Image.fromarray(np.dstack([rgb, alpha])), tmp_path / "rgba.png"))
    _assert_gray(out, (8, 10))
    assert not out[:, :5].any()  # transparent -> black
    np.testing.assert_array_equal(out[1:, 5:], _luma(rgb)[1:, 5:])
    assert abs(int(out[0, 9]) - round(int(_luma(rgb)[0, 9]) * 128 / 255)) <= 1


def test_opaque_rgba_equals_rgb(tmp_path: Path) -> None:
    rgb = _noise((8, 10, 3), seed=4)
    opaque = np.dstack([rgb, np.full((8, 10), 255, dtype=np.uint8)])
    a = read_image(_save(Image.fromarray(rgb), tmp_path / "rgb.png"))
    b = read_image(_save(Image.fromarray(opaque), tmp_path / "rgba.png"))
    np.testing.assert_array_equal(a, b)


def test_la_is_composited_over_black(tmp_path: Path) -> None:
    gray = _noise((6, 6), seed=5)
    alpha = np.where(np.arange(6)[None, :] < 3, 0, 255).repeat(6, axis=0).astype(np.uint8)
    img = Image.merge("LA", [Image.fromarray(gray), Image.fromarray(alpha)])
    out = read_image(_save(img, tmp_path / "la.png"))
    _assert_gray(out, (6, 6))
    assert not out[:, :3].any()
    np.testing.assert_array_equal(out[:, 3:], gray[:, 3:])


def test_palette_png(tmp_path: Path) -> None:
    rgb = _noise((10, 12, 3), seed=6)
    img = Image.fromarray(rgb).convert("P", palette=Image.Palette.ADAPTIVE, colors=16)
    path = _save(img, tmp_path / "palette.png")
    with Image.open(path) as check:
        assert check.mode == "P"
        expected = _luma(np.asarray(check.convert("RGB")))
    out = read_image(path)
    _assert_gray(out, (10, 12))
    np.testing.assert_array_equal(out, expected)


def test_palette_png_with_transparency(tmp_path: Path) -> None:
    img = Image.new("P", (4, 3))
    img.putpalette([0, 0, 0, 200, 200, 200] + [0] * (254 * 3))
    img.paste(1, (0, 0, 4, 3))
    img.putpixel((0, 0), 0)
    out = read_image(_save(img, tmp_path / "ptrans.png", transparency=1))  # colour 1 transparent
    _assert_gray(out, (3, 4))
    assert not out.any()


def test_one_bit_image(tmp_path: Path) -> None:
    bits = np.zeros((5, 8), dtype=bool)
    bits[:, 4:] = True
    out = read_image(_save(Image.fromarray(bits), tmp_path / "bits.png"))
    _assert_gray(out, (5, 8))
    assert set(np.unique(out)) == {0, 255} and out[0, 7] == 255 and out[0, 0] == 0


def test_jpeg_grayscale_and_rgb(tmp_path: Path) -> None:
    ramp = np.tile(np.linspace(0, 255, 32).astype(np.uint8), (24, 1))
    out = read_image(_save(Image.fromarray(ramp), tmp_path / "gray.jpg", quality=95))
    _assert_gray(out, (24, 32))
    assert np.abs(out.astype(int) - ramp).max() <= 8
    rgb = np.dstack([ramp] * 3)
    out_rgb = read_image(_save(Image.fromarray(rgb), tmp_path / "rgb.JPEG", quality=95))
    _assert_gray(out_rgb, (24, 32))
    assert np.abs(out_rgb.astype(int) - ramp).max() <= 8


def test_cmyk_jpeg(tmp_path: Path) -> None:
    img = Image.new("CMYK", (16, 10), (0, 0, 0, 0))  # no ink: white
    img.paste((0, 0, 0, 255), (0, 0, 8, 10))  # black ink on the left half
    path = _save(img, tmp_path / "cmyk.jpg", quality=95)
    assert probe_image(path)["mode"] == "CMYK"
    out = read_image(path)
    _assert_gray(out, (10, 16))
    assert out[:, :6].mean() < 30 and out[:, 10:].mean() > 225


def test_bmp_and_multiframe_tiff(tmp_path: Path) -> None:
    pixels = _noise((7, 9), seed=7)
    bmp = _save(Image.fromarray(pixels), tmp_path / "x.bmp")
    np.testing.assert_array_equal(read_image(bmp), pixels)
    frames = [Image.fromarray(pixels), Image.fromarray(255 - pixels)]
    path = tmp_path / "stack.tiff"
    frames[0].save(path, save_all=True, append_images=frames[1:])
    np.testing.assert_array_equal(read_image(path), pixels)  # first frame


def test_read_image_with_info_reports_original_mode(tmp_path: Path) -> None:
    img = Image.fromarray(np.arange(12, dtype=np.uint16).reshape(3, 4) * 100)
    image, info = read_image_with_info(_save(img, tmp_path / "deep.png"))
    _assert_gray(image, (3, 4))
    assert (info["width"], info["height"], info["format"]) == (4, 3, "PNG")
    assert info["mode"].startswith("I")


# ----------------------------------------------------------------------------- DICOM


def test_dicom_monochrome2_applies_rescale_and_window(tmp_path: Path) -> None:
    out = read_image(_write_dicom(tmp_path / "m2.dcm", STORED))
    _assert_gray(out, STORED.shape)
    expected = _expected_window(STORED, 2, -1000, 1000, 2000)
    assert np.abs(out.astype(int) - expected).max() <= 1
    assert out[0, 0] == 0 and out[1, 2] == 255  # clipped below / above the window
    assert abs(int(out[0, 3]) - 128) <= 1  # stored 1000 -> modality 1000 = window centre
    # without the modality LUT the same window would give a very different image
    assert not np.array_equal(out, _expected_window(STORED, 1, 0, 1000, 2000))


def test_dicom_monochrome1_is_inverse_of_monochrome2(tmp_path: Path) -> None:
    m2 = read_image(_write_dicom(tmp_path / "m2.dcm", STORED, "MONOCHROME2"))
    m1 = read_image(_write_dicom(tmp_path / "m1.dcm", STORED, "MONOCHROME1"))
    _assert_gray(m1, STORED.shape)
    np.testing.assert_array_equal(m1, 255 - m2)


def test_dicom_without_window_is_min_max_scaled(tmp_path: Path) -> None:
    out = read_image(_write_dicom(tmp_path / "nowin.dcm", STORED, slope=None, window=None))
    expected = np.rint((STORED - 100.0) * 255 / 1800)
    np.testing.assert_array_equal(out, expected.astype(np.uint8))
    path = _write_dicom(tmp_path / "nowin1.dicom", STORED, "MONOCHROME1", slope=None, window=None)
    m1 = read_image(path)
    np.testing.assert_array_equal(m1, 255 - out)


def test_dicom_multi_valued_window_uses_first_value(tmp_path: Path) -> None:
    first = read_image(_write_dicom(tmp_path / "a.dcm", STORED, window=("1000", "2000")))
    multi = read_image(_write_dicom(tmp_path / "b.dcm", STORED, window=("1000\\40", "2000\\400")))
    np.testing.assert_array_equal(first, multi)


def test_dicom_multiframe_gives_first_frame(tmp_path: Path) -> None:
    frames = np.stack([STORED, STORED[::-1]])
    out = read_image(_write_dicom(tmp_path / "multi.dcm", frames, slope=None, window=None))
    single = read_image(_write_dicom(tmp_path / "single.dcm", STORED, slope=None, window=None))
    _assert_gray(out, STORED.shape)
    np.testing.assert_array_equal(out, single)


def test_dicom_without_suffix_is_detected_by_magic(tmp_path: Path) -> None:
    with_suffix = read_image(_write_dicom(tmp_path / "img.dcm", STORED))
    bare = _write_dicom(tmp_path / "IM000001", STORED)
    np.testing.assert_array_equal(read_image(bare), with_suffix)
    expected = {"width": 4, "height": 2, "mode": "DICOM:MONOCHROME2", "format": "DICOM"}
    assert probe_image(bare) == expected


def test_dicom_without_pixel_data_raises(tmp_path: Path) -> None:
    path = _write_dicom(tmp_path / "nopix.dcm", STORED, with_pixels=False)
    with pytest.raises(ImageReadError, match="no pixel data") as info:
        read_image(path)
    assert str(path) in str(info.value)


# ---------------------------------------------------------------------------- failures


def _encoded(fmt: str) -> bytes:
    """A real encoded noise image (big enough that half of it is clearly truncated)."""
    buf = io.BytesIO()
    Image.fromarray(_noise((64, 64), seed=8)).save(buf, format=fmt)
    return buf.getvalue()


def _assert_read_error(path: Path, reason: str) -> ImageReadError:
    """read_image(path) raises ImageReadError naming the path and matching the reason."""
    with pytest.raises(ImageReadError, match=reason) as info:
        read_image(path)
    assert str(path) in str(info.value)
    assert info.value.path == str(path)
    assert isinstance(info.value, ValueError)
    return info.value


def test_zero_byte_file(tmp_path: Path) -> None:
    path = tmp_path / "empty.png"
    path.write_bytes(b"")
    _assert_read_error(path, "empty")
    with pytest.raises(ImageReadError):
        probe_image(path)


@pytest.mark.parametrize(("fmt", "suffix"), [("PNG", ".png"), ("JPEG", ".jpg")])
def test_truncated_file(tmp_path: Path, fmt: str, suffix: str) -> None:
    assert ImageFile.LOAD_TRUNCATED_IMAGES is False
    data = _encoded(fmt)
    path = tmp_path / f"half{suffix}"
    path.write_bytes(data[: len(data) // 2])
    _assert_read_error(path, "truncated|corrupt|decode")


def test_truncated_file_raises_even_if_pil_leniency_is_on(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(ImageFile, "LOAD_TRUNCATED_IMAGES", True)
    data = _encoded("JPEG")
    path = tmp_path / "half.jpg"
    path.write_bytes(data[: len(data) // 2])
    _assert_read_error(path, "truncated|corrupt|decode")
    assert ImageFile.LOAD_TRUNCATED_IMAGES is True  # the caller's setting is restored


def test_text_file_named_png(tmp_path: Path) -> None:
    path = tmp_path / "notes.png"
    path.write_text("this is not an image\n" * 20)
    _assert_read_error(path, "not a recognised image")


def test_text_file_named_dcm(tmp_path: Path) -> None:
    path = tmp_path / "notes.dcm"
    path.write_text("this is not a DICOM file\n" * 20)
    _assert_read_error(path, "not a valid DICOM")


def test_missing_file_and_directory(tmp_path: Path) -> None:
    _assert_read_error(tmp_path / "nope.png", "not found")
    _assert_read_error(tmp_path, "directory")


def test_error_message_and_pickling(tmp_path: Path) -> None:
    import pickle

    err = ImageReadError(tmp_path / "x.png", "broken")
    assert str(err) == f"cannot read image {tmp_path / 'x.png'}: broken"
    again = pickle.loads(pickle.dumps(err))
    assert str(again) == str(err) and again.reason == "broken"


# ------------------------------------------------------------------------------ probe


def test_probe_image_reports_size_and_mode(tmp_path: Path) -> None:
    cases = {
        "l.png": Image.fromarray(_noise((5, 7))),
        "deep.png": Image.fromarray(np.zeros((5, 7), dtype=np.uint16)),
        "rgba.png": Image.new("RGBA", (7, 5)),
        "p.png": Image.new("P", (7, 5)),
        "rgb.jpg": Image.new("RGB", (7, 5)),
    }
    modes = {}
    for name, img in cases.items():
        info = probe_image(_save(img, tmp_path / name))
        assert (info["width"], info["height"]) == (7, 5)
        modes[name] = (info["mode"], info["format"])
    assert modes["l.png"] == ("L", "PNG")
    assert modes["deep.png"][0].startswith("I")
    assert modes["rgba.png"] == ("RGBA", "PNG")
    assert modes["p.png"] == ("P", "PNG")
    assert modes["rgb.jpg"] == ("RGB", "JPEG")
    m1 = probe_image(_write_dicom(tmp_path / "m1.dcm", STORED, "MONOCHROME1"))
    assert m1 == {"width": 4, "height": 2, "mode": "DICOM:MONOCHROME1", "format": "DICOM"}


def test_probe_image_errors(tmp_path: Path) -> None:
    with pytest.raises(ImageReadError, match="not found"):
        probe_image(tmp_path / "missing.jpg")
    text = tmp_path / "t.jpg"
    text.write_text("hello")
    with pytest.raises(ImageReadError, match="not a recognised image"):
        probe_image(text)


def test_exif_orientation_is_applied_as_a_viewer_would(tmp_path: Path) -> None:
    """A film photographed with a phone: stored on its side, EXIF orientation 6 (turn 90° CW)."""
    stored = np.zeros((20, 40), np.uint8)
    stored[:, 20:] = 255                      # left half dark, right half bright, as stored
    exif = Image.Exif()
    exif[0x0112] = 6
    path = tmp_path / "phone.jpg"
    Image.fromarray(stored).save(path, exif=exif, quality=95)
    out, info = read_image_with_info(path)
    assert out.shape == (40, 20)               # upright: taller than wide
    assert out[:15].mean() < 40 and out[25:].mean() > 215  # left went to the top
    assert (info["height"], info["width"]) == (40, 20) and info["format"] == "JPEG"
    probed = probe_image(path)
    assert (probed["height"], probed["width"]) == (40, 20)
    plain = _save(Image.fromarray(stored), tmp_path / "plain.jpg", quality=95)
    assert read_image(plain).shape == (20, 40)  # no tag: untouched


def test_dicom_pixel_padding_is_background_and_left_out_of_the_scaling(tmp_path: Path) -> None:
    """A film digitised into a larger frame: the frame is padding (value 0), not anatomy."""
    stored = np.zeros((16, 16), np.uint16)
    stored[4:12, 4:12] = np.linspace(1000, 2000, 64).reshape(8, 8).astype(np.uint16)
    plain = read_image(_write_dicom(tmp_path / "plain.dcm", stored, slope=None, window=None))
    assert plain[4:12, 4:12].min() > 100  # without padding: the frame takes half the range

    def padded(name: str, photometric: str, **tags) -> np.ndarray:
        path = _write_dicom(tmp_path / name, stored, photometric, slope=None, window=None)
        ds = pydicom.dcmread(path)
        tag_numbers = {"PixelPaddingValue": 0x00280120, "PixelPaddingRangeLimit": 0x00280121}
        for tag, value in tags.items():
            ds.add_new(tag_numbers[tag], "US", value)  # US or SS: unsigned pixels here
        ds.save_as(path)
        return read_image(path)

    m2 = padded("m2.dcm", "MONOCHROME2", PixelPaddingValue=0)
    assert m2[4:12, 4:12].min() == 0 and m2[4:12, 4:12].max() == 255  # the picture, full range
    assert (np.delete(m2, np.s_[4:12], axis=0) == 0).all()              # padding: black
    m1 = padded("m1.dcm", "MONOCHROME1", PixelPaddingValue=0)
    assert m1[4:12, 4:12].max() == 255 and m1[0, 0] == 0                # inverted, padding black
    ranged = padded("r.dcm", "MONOCHROME2", PixelPaddingValue=0, PixelPaddingRangeLimit=1000)
    assert ranged[4, 4] == 0 and ranged[11, 11] == 255                  # 1000 is padding too
