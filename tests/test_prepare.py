"""One way from files to pixels: the in-graph decoder for plain files gives exactly what
read_image + the same finish gives, every other file takes read_image, and no unreadable
file is dropped without a reason."""

from __future__ import annotations

import io
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from cxrlib.data.images import plain_format
from cxrlib.data.prepare import (
    Prep,
    _prepare_robust,
    border_crop_box,
    prepare_files,
    prepare_image,
    resize,
    resize_plan,
)


def _film(shape: tuple[int, int], seed: int = 0) -> np.ndarray:
    """A smooth grey picture with some texture (so that resizing has work to do)."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[:shape[0], :shape[1]]
    smooth = 128 + 80 * np.sin(x / 7.0) * np.cos(y / 11.0)
    return np.clip(smooth + rng.normal(0, 20, shape), 0, 255).astype(np.uint8)


def _exif_rotated_jpeg(path: Path, grey: np.ndarray) -> None:
    exif = Image.Exif()
    exif[0x0112] = 6  # shown turned by 90°
    Image.fromarray(grey).save(path, exif=exif.tobytes())


def _with_text_chunk(path: Path, grey: np.ndarray) -> None:
    from PIL.PngImagePlugin import PngInfo

    info = PngInfo()
    info.add_text("Comment", "burned-in text lives here")
    Image.fromarray(grey).save(path, pnginfo=info)


def _write_formats(folder: Path, shape: tuple[int, int]) -> dict[str, tuple[Path, str | None]]:
    """One file per format: name → (path, the plain format expected, or None)."""
    grey = _film(shape)
    rgb = np.stack([grey, np.roll(grey, 3, axis=1), 255 - grey], axis=-1)
    rgba = np.concatenate([rgb, (grey // 2 + 100)[..., None]], axis=-1)
    files = {
        "grey.png": (lambda p: Image.fromarray(grey).save(p), "grey-png"),
        "rgb.png": (lambda p: Image.fromarray(rgb).save(p), "rgb-png"),
        "grey.jpg": (lambda p: Image.fromarray(grey).save(p, quality=90), "grey-jpeg"),
        "rgb.jpg": (lambda p: Image.fromarray(rgb).save(p, quality=90), "rgb-jpeg"),
        "cmyk.jpg": (lambda p: Image.fromarray(rgb).convert("CMYK").save(p), None),
        "rgba.png": (lambda p: Image.fromarray(rgba).save(p), None),
        "palette.png": (lambda p: Image.fromarray(rgb).convert("P").save(p), None),
        "grey16.png": (lambda p: Image.fromarray(grey.astype(np.uint16) * 200).save(p), None),
        "exif.jpg": (lambda p: _exif_rotated_jpeg(p, grey), None),
        "text.png": (lambda p: _with_text_chunk(p, grey), None),
        "grey.bmp": (lambda p: Image.fromarray(grey).save(p), None),
        "grey.tif": (lambda p: Image.fromarray(grey).save(p), None),
    }
    out = {}
    for name, (write, expected) in files.items():
        path = folder / name
        write(path)
        out[name] = (path, expected)
    return out


PREPS = [Prep(48), Prep(48, interpolation="nearest"), Prep(48, interpolation="bicubic"),
         Prep(48, equalize="clahe"), Prep(48, crop=True, crop_reference=(160, 120))]


@pytest.mark.parametrize("shape", [(40, 30), (48, 48), (120, 160)], ids=["up", "same", "reduce"])
def test_plain_formats_are_recognised_and_the_rest_left_to_read_image(tmp_path, shape) -> None:
    for name, (path, expected) in _write_formats(tmp_path, shape).items():
        found = plain_format(path)
        assert (found[0] if found else None) == expected, name
        if found:
            assert found[1:] == shape, name  # height, width from the header


@pytest.mark.parametrize("prep", PREPS, ids=lambda p: f"{p.interpolation}-{p.equalize}-{p.crop}")
@pytest.mark.parametrize("shape", [(40, 30), (48, 48), (120, 160)], ids=["up", "same", "reduce"])
def test_every_file_gets_the_same_pixels_by_either_path(tmp_path, shape, prep) -> None:
    files = _write_formats(tmp_path, shape)
    paths = [str(path) for path, _ in files.values()]
    images, errors = prepare_files(paths, prep)
    assert errors == [""] * len(paths)
    for image, path in zip(images, paths):
        np.testing.assert_array_equal(image, _prepare_robust(path, prep), err_msg=path)
        np.testing.assert_array_equal(image, prepare_image(path, prep), err_msg=path)
    assert images.shape == (len(paths), 48, 48) and images.dtype == np.uint8


def _corrupt_idat_behind_valid_checksums(path: Path) -> None:
    """A PNG whose IDAT holds garbage with a correct CRC: only decoding can tell."""
    buffer = io.BytesIO()
    Image.fromarray(_film((32, 32))).save(buffer, format="PNG")
    data = buffer.getvalue()
    at = data.index(b"IDAT") - 4
    length = struct.unpack(">I", data[at:at + 4])[0]
    garbage = zlib.compress(b"\x07" * 50)[:-6] + bytes(range(40))  # a broken deflate stream
    chunk = struct.pack(">I", len(garbage)) + b"IDAT" + garbage
    chunk += struct.pack(">I", zlib.crc32(b"IDAT" + garbage))
    path.write_bytes(data[:at] + chunk + data[at + 12 + length:])


def test_corrupt_plain_files_are_reported_never_dropped_silently(tmp_path, caplog) -> None:
    good = tmp_path / "good.png"
    Image.fromarray(_film((32, 32))).save(good)
    corrupt = tmp_path / "corrupt.png"
    _corrupt_idat_behind_valid_checksums(corrupt)
    truncated = tmp_path / "truncated.jpg"
    Image.fromarray(_film((64, 64))).save(truncated, quality=90)
    truncated.write_bytes(truncated.read_bytes()[:400])
    assert plain_format(corrupt) is not None and plain_format(truncated) is not None
    paths = [str(good), str(corrupt), str(truncated), str(tmp_path / "missing.png")]
    skipped: list = []
    images, errors = prepare_files(paths, Prep(16), skip_log=skipped)
    assert errors[0] == "" and all(errors[1:])
    assert sorted(s["path"] for s in skipped) == sorted(paths[1:])
    assert "corrupt.png" in caplog.text and "missing.png" in caplog.text
    assert images[0].any() and not images[1:].any()


def test_a_large_reduction_is_antialiased() -> None:
    stripes = np.tile(np.array([0, 255], np.uint8), (512, 256))  # 1-px columns, 512×512
    assert resize_plan(512, 512, 64, "bilinear") == "reduce"
    assert resize_plan(512, 512, 512, "bilinear") == "same"
    assert resize_plan(100, 90, 64, "bilinear") == resize_plan(512, 512, 64, "nearest") == "interpolate"
    smooth = resize(stripes, 64)
    assert smooth.shape == (64, 64) and np.abs(smooth.astype(int) - 128).max() <= 1  # the mean grey
    assert set(np.unique(resize(stripes, 64, "nearest"))) <= {0, 255}  # picks pixels: aliases


def test_the_crop_box_is_the_crop() -> None:
    top, left, h, w = border_crop_box(100, 200, (200, 100))
    assert (h, w) == (80, 130) and (top, left) == (10, 35)


@pytest.mark.realdata
def test_real_samples_are_plain_and_exact(covid_sample: Path, pneumonia_sample: Path) -> None:
    for folder, kind in ((covid_sample, "rgb-png"), (pneumonia_sample, "grey-jpeg")):
        paths = sorted(str(p) for p in folder.rglob("*") if p.suffix in {".png", ".jpeg"})[:30]
        assert {plain_format(p)[0] for p in paths} == {kind}
        for prep in (Prep(224), Prep(64), Prep(96, equalize="clahe")):
            images, errors = prepare_files(paths, prep)
            assert not any(errors)
            np.testing.assert_array_equal(images, np.stack([_prepare_robust(p, prep) for p in paths]))


def test_headers_are_walked_past_large_neutral_blocks(tmp_path) -> None:
    """A 100 KB ICC profile before the pixels (PNG iCCP, JPEG APP2) leaves a file plain: the
    probe seeks from header to header instead of parsing a fixed head of the file."""
    film = _film((40, 30))
    profile = np.random.default_rng(0).bytes(100_000)   # incompressible; not a valid profile
    png, jpeg = tmp_path / "icc.png", tmp_path / "icc.jpg"
    Image.fromarray(film).save(png, icc_profile=profile)
    Image.fromarray(film).save(jpeg, icc_profile=profile, quality=95)
    assert b"iCCP" in png.read_bytes()[:64] and min(png.stat().st_size, jpeg.stat().st_size) > 100_000
    assert plain_format(png) == ("grey-png", 40, 30)
    assert plain_format(jpeg) == ("grey-jpeg", 40, 30)
    images, errors = prepare_files([str(png), str(jpeg)], Prep(24))
    assert errors == ["", ""]
    for image, path in zip(images, [png, jpeg]):
        np.testing.assert_array_equal(image, _prepare_robust(str(path), Prep(24)))


def test_resize_takes_a_height_and_width_and_nearest_copies_pixels() -> None:
    """The one resize of images and masks: a (height, width) target, and nearest upsampling
    by a whole factor repeats each pixel exactly (a mask keeps its values)."""
    mask = np.array([[0, 255, 0], [255, 0, 255]], np.uint8)
    doubled = resize(mask, (4, 6), "nearest")
    assert doubled.shape == (4, 6)
    np.testing.assert_array_equal(doubled, np.repeat(np.repeat(mask, 2, axis=0), 2, axis=1))
    wide = resize(np.full((40, 40), 7, np.uint8), (10, 30), "bilinear")
    assert wide.shape == (10, 30) and (wide == 7).all()
    assert resize(mask, (2, 3), "nearest") is mask      # already there: untouched
    with pytest.raises(ValueError, match="interpolation"):
        resize(mask, 4, "cubic-ish")


def test_mask_like_resizes_a_mask_through_the_pipelines_resize() -> None:
    from cxrlib.explain.masks import mask_like

    mask = np.zeros((8, 8), bool)
    mask[:4, :4] = True
    small = mask_like(mask, (4, 4, 3))
    assert small.dtype == bool and small.shape == (4, 4)
    np.testing.assert_array_equal(small, np.array([[1, 1, 0, 0]] * 2 + [[0, 0, 0, 0]] * 2, bool))
