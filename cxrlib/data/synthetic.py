"""Procedural chest radiographs: the default dataset, so the course runs with no download.

Every image is drawn from scratch with numpy on a coordinate grid. The anatomy lives in
*normalised* coordinates ``(u, v)``: the origin is the middle of the chest, ``u`` grows to
the right of the image and ``v`` downwards, and one unit is about the mean of the image
height and width (a little less for narrow frames, so the lungs stay in view). A random rotation, shift and zoom of that frame (the patient never stands
exactly the same way twice) and a random image size then make every film different, at
any resolution.

A film is a stack of densities (bright = dense, dark = air), as on a real radiograph:

1. dark background, the soft tissue of the body, the brighter abdomen below the domed
   diaphragm and a gastric air bubble under the left hemidiaphragm;
2. two dark lung fields with branching vessels fanning out of the hila; the patient's
   left lung (the image's *right* side, as on a PA film seen from the front) is smaller
   because the heart shadow bulges into it;
3. a bright mediastinum, heart shadow, aortic knob and spine (with vertebrae), ribs as
   curved bright arcs and two clavicles;
4. the lesion of the class, added as extra density *inside the lungs only*:

   - ``Normal``: nothing;
   - ``COVID``: bilateral, peripheral, lower-zone ground-glass opacities (soft hazy
     patches along the lateral edges of the lower halves of both lungs);
   - ``Viral Pneumonia``: a diffuse bilateral interstitial (reticular, streaky) pattern,
     strongest around the hila;
   - ``Bacterial Pneumonia``: one dense lobar consolidation in one lung (random side and
     lobe), sharply bounded by the fissure on one side.

   The lesion mask is exactly where the lesion added more than a few grey levels.
5. a slight blur, a random exposure (brightness, contrast, gamma), film-grain noise and,
   sometimes, a burned-in text marker ("L", "R", "AP", ...) in a corner, outside the lungs.

``generate_synthetic`` writes the images in the layout of the Kaggle COVID-19 Radiography
Database (v4), so the same code reads the synthetic and the real data. With
``shortcut_class`` one class gets a "PORTABLE" marker in its top-left corner on most of
its images, and no other image ever gets it: a model can then learn the marker instead of
the lungs, which is the shortcut-learning lesson of the course.
"""

from __future__ import annotations

import csv
import logging
import re
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image, ImageDraw, ImageFont
from scipy.ndimage import gaussian_filter

from cxrlib.errors import InputError, RefusedFolderError
from cxrlib.files import read_json, write_csv_atomic, write_json_atomic

log = logging.getLogger(__name__)

SYNTH_CLASSES: tuple[str, ...] = ("COVID", "Normal", "Viral Pneumonia", "Bacterial Pneumonia")

#: Text of the shortcut marker, always drawn in the top-left corner.
SHORTCUT_MARKER = "PORTABLE"
#: Texts of the random burned-in markers.
RANDOM_MARKERS: tuple[str, ...] = ("L", "R", "AP", "PA", "PORTABLE", "SUPINE", "ERECT")
#: Corners where a marker may go: top-left, top-right, bottom-left, bottom-right.
MARKER_CORNERS: tuple[str, ...] = ("tl", "tr", "bl", "br")

MIN_SIZE = 32
# A lesion pixel is one where the lesion added more than this (intensities in [0, 1]).
_MASK_THRESHOLD = 0.03
_F = np.float32


# --------------------------------------------------------------------------- helpers


def _check_label(label: str) -> int:
    """Index of ``label`` in SYNTH_CLASSES, or a ValueError naming the valid classes."""
    if label not in SYNTH_CLASSES:
        raise InputError(f"unknown class {label!r}; expected one of {list(SYNTH_CLASSES)}")
    return SYNTH_CLASSES.index(label)


def _shape(size: int | tuple[int, int]) -> tuple[int, int]:
    """(height, width) from an int or a (height, width) pair, checking the minimum."""
    h, w = (size, size) if np.isscalar(size) else tuple(size)
    h, w = int(h), int(w)
    if min(h, w) < MIN_SIZE:
        raise InputError(f"image size must be at least {MIN_SIZE} px, got {(h, w)}")
    return h, w


def _sigmoid(x: np.ndarray) -> np.ndarray:
    """Logistic function, used for soft edges."""
    return 1.0 / (1.0 + np.exp(-np.clip(x, -30, 30)))


def _smooth_noise(rng: np.random.Generator, shape: tuple[int, int], cell: float) -> np.ndarray:
    """Zero-mean, unit-std noise with features about ``cell`` pixels wide.

    Drawn on a coarse grid and upsampled (bicubic), which is far cheaper than a wide
    Gaussian filter on the full image.
    """
    h, w = shape
    ch, cw = max(2, int(np.ceil(h / cell)) + 2), max(2, int(np.ceil(w / cell)) + 2)
    coarse = rng.standard_normal((ch, cw)).astype(_F)
    img = Image.fromarray(coarse).resize((w, h), Image.Resampling.BICUBIC)
    out = np.asarray(img, dtype=_F)
    return (out - out.mean()) / (out.std() + 1e-6)


def _ellipse(u: np.ndarray, v: np.ndarray, cu: float, cv: float, ru: float, rv: float,
             p: float = 2.0) -> np.ndarray:
    """Super-ellipse level function: < 1 inside, 1 on the edge."""
    return np.abs((u - cu) / ru) ** p + np.abs((v - cv) / rv) ** p


def _band(d: np.ndarray, half: float, soft: float) -> np.ndarray:
    """Soft band of half-width ``half`` around d == 0."""
    return _sigmoid((half - np.abs(d)) / soft)


# --------------------------------------------------------------------------- anatomy


def _frame(rng: np.random.Generator, h: int, w: int) -> tuple[np.ndarray, np.ndarray, float]:
    """Anatomical coordinates (u, v) of every pixel, with a random pose, and the unit in px."""
    unit = min((h + w) / 2.0, 1.05 * min(h, w))  # keep the lungs inside narrow frames
    angle = np.deg2rad(rng.uniform(-5.0, 5.0))
    du, dv = rng.uniform(-0.03, 0.03, size=2)
    zoom = rng.uniform(1.0, 1.14)
    y, x = np.mgrid[0:h, 0:w].astype(_F)
    u0 = (x + 0.5 - w / 2.0) / unit - du
    v0 = (y + 0.5 - h / 2.0) / unit - dv
    c, s = np.cos(angle), np.sin(angle)
    u = (c * u0 + s * v0) / zoom
    v = (-s * u0 + c * v0) / zoom
    return u.astype(_F), v.astype(_F), unit * zoom


def _lung(u: np.ndarray, v: np.ndarray, side: int, rng: np.random.Generator
          ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """One lung field, side -1 (image left, patient right) or +1 (image right, patient left).

    Returns the boolean field, ``t`` (0 at the apex, 1 at the diaphragm) and ``r``
    (0 at the medial edge, 1 at the lateral edge), the lung's own coordinates used to
    place lesions.
    """
    a = side * u  # distance from the midline, outwards positive
    small = side > 0  # the patient's left lung is the smaller one
    apex = -0.305 + rng.uniform(-0.015, 0.015)
    a_apex = 0.15 + rng.uniform(-0.01, 0.01)
    a_max = (0.325 if small else 0.345) + rng.uniform(-0.012, 0.012)
    v_dia = (0.27 if small else 0.25) + rng.uniform(-0.015, 0.015)
    dome = 0.075 + rng.uniform(-0.015, 0.015)
    # domed diaphragm: highest in the middle of the lung, lowest at the costophrenic angle
    a_mid = 0.5 * (0.06 + a_max)
    base = v_dia - dome * np.clip(1.0 - ((a - a_mid) / (a_max - a_mid + 0.02)) ** 2, 0, 1)
    t = (v - apex) / (base - apex)
    tc = np.clip(t, 0, 1)
    a_lat = a_apex + (a_max - a_apex) * np.sqrt(np.clip(tc / 0.55, 0, 1)) * (1 + 0.06 * tc)
    a_med = a_apex - (a_apex - 0.055) * np.sqrt(np.clip(tc / 0.3, 0, 1))
    field = (t > 0) & (t < 1) & (a > a_med) & (a < a_lat)
    r = (a - a_med) / np.maximum(a_lat - a_med, 1e-3)
    return field, t.astype(_F), r.astype(_F)


def _mediastinum(u: np.ndarray, v: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Density of heart shadow, mediastinum and aortic knob (0..1, soft-edged).

    The heart sits on the diaphragm and bulges mostly to the image's right (the
    patient's left), its left border sloping outwards towards the apex.
    """
    hu = 0.05 + rng.uniform(-0.012, 0.012)
    width = 0.155 + rng.uniform(-0.012, 0.02)
    # wider at the bottom: the half-width grows with v, the apex points down and out
    grow = np.clip((v - 0.02) / 0.22, 0, 1)
    ru = width * (0.72 + 0.28 * grow)
    cu = hu + 0.035 * grow
    heart = _sigmoid((1 - _ellipse(u, v, cu, 0.17, ru, 0.16, 2.4)) / 0.08)
    upper = _band(u - 0.008, 0.06 + 0.03 * np.clip(v + 0.2, 0, 1), 0.01) * _sigmoid((v + 0.5) / 0.03)
    knob = 0.8 * _sigmoid((1 - _ellipse(u, v, 0.06, -0.14, 0.045, 0.04)) / 0.25)
    return np.maximum(np.maximum(heart, upper), knob)


def _rib_phase(d: np.ndarray, v0: float, step: float, grow: float) -> tuple[np.ndarray, np.ndarray]:
    """Continuous rib number k of offset ``d`` for ribs at v0 + step*k*(1 + grow*k).

    Returns (distance to the nearest rib centre in v units, that rib's number), so that all
    ribs are drawn in one vectorised pass instead of a loop over ribs.
    """
    # solve step*grow*k^2 + step*k - (d - v0) = 0 for k >= 0
    k = (-step + np.sqrt(np.maximum(step * step + 4 * step * grow * (d - v0), 0))) / (2 * step * grow)
    kn = np.round(k)
    centre = v0 + step * kn * (1 + grow * kn)
    return d - centre, kn


def _ribs(u: np.ndarray, v: np.ndarray, rng: np.random.Generator, px: float) -> np.ndarray:
    """Posterior ribs (arcs over the lungs), fainter anterior ribs and the clavicles."""
    a = np.abs(u)
    soft = max(0.003, 0.5 / px)
    # posterior ribs: leave the spine, rise a little, then sweep down the lateral wall
    arc = -0.3 * (a - 0.04) + 3.8 * np.maximum(a - 0.12, 0) ** 2 + 2.0 * np.maximum(a - 0.28, 0) ** 2
    d, k = _rib_phase(v - arc, -0.33 + rng.uniform(-0.01, 0.01), 0.056, 0.03)
    half = 0.0095 + 0.0009 * k
    post = _band(d, half, soft) * (0.65 + 0.35 * _band(np.abs(d) - half, 0.35 * half, soft))
    post *= (k >= 0) * (k <= 10) * _sigmoid((a - 0.04) / 0.006) * _sigmoid((0.395 - a) / 0.012)
    # anterior ribs: from the lateral wall down towards the sternum, fading medially
    arc2 = 0.45 * (0.4 - a) + 0.6 * (0.4 - a) ** 2
    d2, k2 = _rib_phase(v - arc2, -0.37 + rng.uniform(-0.01, 0.01), 0.075, 0.02)
    ant = _band(d2, 0.013, soft) * (k2 >= 0) * (k2 <= 5)
    ant *= np.clip((a - 0.1) / 0.2, 0, 1) * _sigmoid((0.41 - a) / 0.015)
    # clavicles: from the sternal notch up and out towards the shoulders
    cv = -0.265 - 0.28 * (a - 0.04) + 0.45 * (a - 0.04) ** 2 + rng.uniform(-0.015, 0.015)
    clav = _band(v - cv, 0.016 + 0.01 * np.clip(0.1 - a, 0, 0.1), soft)
    clav *= _sigmoid((a - 0.035) / 0.006) * _sigmoid((0.38 - a) / 0.01)
    return np.maximum(np.maximum(post, 0.45 * ant), 1.2 * clav)


def _trachea(u: np.ndarray, v: np.ndarray) -> np.ndarray:
    """Air column of the trachea, splitting at the carina into the two main bronchi."""
    trachea = _band(u - 0.006, 0.018, 0.004) * _sigmoid((-0.08 - v) / 0.01)
    below = np.clip((v + 0.08) / 0.08, 0, 1)
    bronchi = sum(_band(u - 0.006 - side * 0.45 * (v + 0.08), 0.013, 0.004) for side in (-1, 1))
    return np.maximum(trachea, bronchi * _sigmoid((v + 0.085) / 0.005) * (1 - below))


def _spine(u: np.ndarray, v: np.ndarray, px: float) -> np.ndarray:
    """Spine: a vertical band with faint vertebral bodies and pedicles."""
    soft = max(0.003, 0.5 / px)
    band = _band(u, 0.032, soft)
    vert = 0.8 + 0.2 * np.cos(np.pi * v / 0.055) ** 2
    pedicles = 0.3 * _band(np.abs(u) - 0.022, 0.006, soft) * (np.cos(2 * np.pi * v / 0.055) > 0.4)
    return band * vert + pedicles


def _vessels(u: np.ndarray, v: np.ndarray, rng: np.random.Generator, shape: tuple[int, int],
             unit: float) -> np.ndarray:
    """Vascular markings fanning out of both hila and tapering to the periphery."""
    out = np.zeros(shape, _F)
    warp = _smooth_noise(rng, shape, 0.12 * unit)
    bins = 720
    grid = np.linspace(-np.pi, np.pi, bins, endpoint=False)
    for side in (-1, 1):
        du, dv = u - side * 0.085, v + 0.0
        rho = np.sqrt(du * du + dv * dv)
        theta = np.arctan2(dv, side * du) + 0.06 * warp
        # angular profile: a few dozen thin vessels at random angles; the angular width
        # shrinks with distance, so a vessel is a tapering line
        prof = np.zeros(bins, _F)
        for ang in rng.uniform(-np.pi, np.pi, size=24):
            dist = np.angle(np.exp(1j * (grid - ang)))
            prof += rng.uniform(0.5, 1.0) * np.exp(-(dist / rng.uniform(0.02, 0.04)) ** 2).astype(_F)
        idx = ((theta + np.pi) / (2 * np.pi) * bins).astype(np.int32) % bins
        # raising the profile to a power that grows with distance narrows each vessel
        line = np.clip(prof, 1e-4, 1)[idx] ** (1 + rho / 0.1)
        out += line * np.exp(-rho / 0.22) * np.clip(rho / 0.05, 0, 1)
    return np.clip(out, 0, 1.5)


def _body(u: np.ndarray, v: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Soft-tissue silhouette: torso, sloping shoulders, neck and upper arms (0..1)."""
    wid = 0.43 + rng.uniform(-0.02, 0.03)
    a = np.abs(u)
    torso = _sigmoid((1 - _ellipse(u, v, 0, 0.1, wid, 0.66, 3.0)) / 0.1)
    top = -0.52 + 0.42 * np.maximum(a - 0.08, 0) + 0.5 * np.maximum(a - 0.3, 0) ** 2
    torso *= _sigmoid((v - top) / 0.012)
    neck = _band(u, 0.085, 0.008)
    arms = 0.55 * _band(a - wid - 0.08, 0.065, 0.012) * _sigmoid((v - top - 0.02) / 0.02)
    return np.maximum(np.maximum(torso, neck), arms)


# --------------------------------------------------------------------------- lesions


def _lesion(label: str, rng: np.random.Generator, lungs: list[tuple[np.ndarray, ...]],
            shape: tuple[int, int], unit: float) -> np.ndarray:
    """Extra density of the class's lesion at severity 1 (before masking to the lungs)."""
    d = np.zeros(shape, _F)
    if label == "Normal":
        return d
    if label == "COVID":  # peripheral, lower-zone, bilateral ground glass
        patchy = 0.75 + 0.25 * _smooth_noise(rng, shape, 0.05 * unit)
        for _field, t, r in lungs:
            for _ in range(rng.integers(2, 4)):
                tc, rc = rng.uniform(0.5, 0.88), rng.uniform(0.72, 0.95)
                st, sr = rng.uniform(0.12, 0.2), rng.uniform(0.2, 0.3)
                d += rng.uniform(0.6, 0.9) * np.exp(-((t - tc) / st) ** 2 - ((r - rc) / sr) ** 2)
        return 0.24 * np.clip(d, 0, 1.3) * patchy
    if label == "Viral Pneumonia":  # diffuse interstitial, perihilar emphasis
        fine = _smooth_noise(rng, shape, 0.016 * unit)
        net = np.exp(-(fine / 0.5) ** 2)  # zero crossings of band-limited noise: a mesh
        haze = 0.5 + 0.5 * np.clip(_smooth_noise(rng, shape, 0.06 * unit), -1, 1)
        for _field, t, r in lungs:
            hilum = np.exp(-((t - 0.55) / 0.4) ** 2 - (r / 0.65) ** 2)
            d += (0.25 + 0.75 * hilum) * (t > 0) * (t < 1)
        return 0.19 * d * (0.5 * net + 0.3 + 0.2 * haze)
    # Bacterial Pneumonia: one dense lobar consolidation, sharply bounded by the fissure
    field, t, r = lungs[rng.integers(2)]
    lo, hi = [(0.0, 0.4), (0.36, 0.68), (0.58, 1.0)][rng.integers(3)]
    edge = 0.012
    fissure = _sigmoid((t - lo) / edge) * _sigmoid((hi - t) / edge)
    # fills most of the lobe, with an irregular, fuzzy margin and faint air bronchograms
    cr, wr = rng.uniform(0.4, 0.6), rng.uniform(0.5, 0.65)
    ct, wt = 0.5 * (lo + hi), 0.65 * (hi - lo)
    level = 1 - ((t - ct) / wt) ** 4 - ((r - cr) / wr) ** 4 + 0.35 * _smooth_noise(rng, shape, 0.05 * unit)
    fill = _sigmoid(level / 0.12)
    bronchi = 1 - 0.18 * np.exp(-(_smooth_noise(rng, shape, 0.03 * unit) / 0.2) ** 2)
    return 0.4 * fissure * fill * bronchi * (t > 0) * (t < 1)


# --------------------------------------------------------------------------- markers


def _font(px: int) -> ImageFont.ImageFont | ImageFont.FreeTypeFont:
    """PIL's default font at about ``px`` pixels (the bitmap font if FreeType is missing)."""
    try:
        return ImageFont.load_default(size=px)
    except (TypeError, OSError, ImportError):  # old Pillow or no FreeType
        return ImageFont.load_default()


def _marker_layer(text: str, corner: str, shape: tuple[int, int], scale: float = 0.06) -> np.ndarray:
    """Float 0..1 layer with ``text`` in ``corner`` ('tl', 'tr', 'bl', 'br').

    The letters are ``scale`` times the shorter image side tall (at least 7 px), bold,
    drawn at 4x and reduced, so that they stay solid and bright on small images.
    """
    if corner not in MARKER_CORNERS:
        raise ValueError(f"unknown marker corner {corner!r}; expected one of {MARKER_CORNERS}")
    h, w = shape
    short = min(h, w)
    ss = 4  # supersampling
    px = max(7, round(scale * short))
    font = _font(px * ss)
    stroke = max(1, round(0.07 * px * ss))
    probe = ImageDraw.Draw(Image.new("L", (1, 1)))
    left, top, right, bottom = probe.textbbox((0, 0), text, font=font, stroke_width=stroke)
    pw, ph = -(-(right - left) // ss) * ss, -(-(bottom - top) // ss) * ss
    patch = Image.new("L", (pw, ph), 0)
    ImageDraw.Draw(patch).text((-left, -top), text, fill=255, font=font, stroke_width=stroke,
                               stroke_fill=255)
    small = np.asarray(patch.reduce(ss), dtype=_F)[:h, :w] / 255.0
    sh, sw = small.shape
    margin = max(2, round(0.03 * short))
    y = min(margin, h - sh) if corner[0] == "t" else max(0, h - margin - sh)
    x = min(margin, w - sw) if corner[1] == "l" else max(0, w - margin - sw)
    layer = np.zeros(shape, _F)
    layer[y:y + sh, x:x + sw] = small
    return layer


# --------------------------------------------------------------------------- public API


def render_layers(rng: np.random.Generator, label: str, size: int | tuple[int, int] = 256,
                  severity: float = 1.0, marker: str | None = None,
                  marker_corner: str | None = None,
                  lesion: Callable | None = None) -> dict[str, np.ndarray]:
    """Render one radiograph and return its layers.

    ``lesion`` replaces the class's lesion with ``lesion(rng, lungs, shape, unit)`` (the
    source task of :func:`render_source_film` draws its own findings this way).

    Keys: ``image`` (uint8 HxW), ``mask`` (lesion, uint8 0/255), ``lungs`` (bool, the lung
    fields) and ``marker`` (bool, the burned-in text pixels). ``size`` is an int or a
    (height, width) pair; ``marker_corner`` defaults to a random corner.

    The lesion and the marker draw from their own child generators, so the same ``rng``
    state with another label or marker gives the same patient on the same film: only
    the lungs (or only the marker pixels) change.
    """
    _check_label(label)
    shape = _shape(size)
    lesion_rng, marker_rng = rng.spawn(2)
    h, w = shape
    u, v, unit = _frame(rng, h, w)
    px = unit  # pixels per anatomical unit

    body = _body(u, v, rng)
    lungs = [_lung(u, v, side, rng) for side in (-1, 1)]
    medi = _mediastinum(u, v, rng)
    heart_hard = medi > 0.5
    lungs = [(f & ~heart_hard, t, r) for f, t, r in lungs]
    lung_bool = lungs[0][0] | lungs[1][0]
    lung_soft = gaussian_filter(lung_bool.astype(_F), sigma=max(0.6, 0.006 * px))

    # 1. background and soft tissue; abdomen below the diaphragm a little denser
    img = 0.06 + 0.44 * body
    img += 0.08 * body * _sigmoid((v - 0.2) / 0.05)
    bubble = _sigmoid((1 - _ellipse(u, v, 0.2, 0.31 + rng.uniform(-0.01, 0.02), 0.05, 0.03)) / 0.3)
    img -= 0.1 * bubble * body
    # 2. lungs: air is dark, periphery a little darker, vessels from the hila
    r_all = np.where(lungs[0][0], lungs[0][2], lungs[1][2])
    img -= lung_soft * (0.31 + 0.05 * np.clip(r_all, 0, 1))
    img += 0.14 * lung_soft * _vessels(u, v, rng, shape, unit)
    # 3. mediastinum and heart, spine, ribs and clavicles
    img += 0.14 * medi * body
    img += 0.08 * _spine(u, v, px) * body * (0.5 + 0.5 * medi)
    img -= 0.07 * _trachea(u, v) * body
    img += 0.13 * _ribs(u, v, rng, px) * body * (0.45 + 0.55 * lung_soft)
    img += 0.025 * _smooth_noise(rng, shape, 0.1 * unit) * body  # uneven soft tissue

    # 4. lesion: fluid replaces air inside the lungs, scaled by severity; blurred like the
    #    lung edge so that a lesion touching the pleura leaves no dark rim
    draw = lesion or (lambda *a: _lesion(label, *a))
    raw = draw(lesion_rng, lungs, shape, unit) * lung_bool * float(severity)
    lesion = gaussian_filter(raw, sigma=max(0.5, 0.003 * px)) if raw.any() else raw
    img += lesion
    mask = (lesion > _MASK_THRESHOLD) & lung_bool

    # 5. blur, exposure, grain
    img = gaussian_filter(img, sigma=max(0.4, 0.0025 * px))
    contrast = rng.uniform(0.8, 1.2)
    bright = rng.uniform(-0.06, 0.06)
    gamma = np.exp(rng.uniform(np.log(0.75), np.log(1.35)))
    img = np.clip(0.5 + contrast * (img - 0.5) + bright, 0, 1) ** gamma
    grain = rng.uniform(0.008, 0.025)
    img += grain * rng.standard_normal(shape).astype(_F)
    img += 0.5 * grain * _smooth_noise(rng, shape, 3.0)

    marker_px = np.zeros(shape, bool)
    if marker:
        corner = marker_corner or MARKER_CORNERS[marker_rng.integers(len(MARKER_CORNERS))]
        keep_out = lung_soft > 0.01  # the lungs and a small halo around them
        for scale in (0.06, 0.05, 0.04, 0.03):  # shrink the text until it clears the lungs
            layer = _marker_layer(marker, corner, shape, scale)
            if not (keep_out & (layer > 0)).any():
                break
        layer = layer * ~keep_out  # last resort on tiny, oddly shaped images
        img = np.maximum(img, marker_rng.uniform(0.88, 1.0) * layer)
        marker_px = layer > 0
        mask &= ~marker_px

    image = np.clip(np.round(img * 255), 0, 255).astype(np.uint8)
    return {"image": image, "mask": (mask * 255).astype(np.uint8), "lungs": lung_bool,
            "marker": marker_px}


def render_radiograph(rng: np.random.Generator, label: str, size: int | tuple[int, int] = 256,
                      severity: float = 1.0, marker: str | None = None,
                      marker_corner: str | None = None) -> tuple[np.ndarray, np.ndarray]:
    """One image: (uint8 HxW grayscale radiograph, uint8 HxW lesion mask with values 0/255).

    ``size`` is an int (square) or a (height, width) pair. ``severity`` scales the lesion
    density (1 = clearly visible). ``marker`` is a text burned into ``marker_corner``
    ('tl', 'tr', 'bl' or 'br'; random when None), always outside the lung fields.
    """
    layers = render_layers(rng, label, size, severity, marker, marker_corner)
    return layers["image"], layers["mask"]


def _version() -> str | None:
    """cxrlib's version, or None when it cannot be imported."""
    try:
        from cxrlib import __version__
    except Exception:  # pragma: no cover - only when used outside the package
        return None
    return __version__


def _synthetic_files(classes: Sequence[str], per_class: int) -> list[str]:
    """The files one synthetic run writes, relative to its folder (posix paths)."""
    files = [f"{name}/{sub}/{name}-{i}.png" for name in classes for sub in ("images", "masks")
             for i in range(1, per_class + 1)]
    return files + ["markers.csv"]


#: A file generate_synthetic writes: ``<Class>/images|masks/<Class>-<i>.png`` (or markers.csv).
_SYNTH_FILE = re.compile(r"(?P<cls>[^/]+)/(?:images|masks)/(?P=cls)-(?P<i>[1-9][0-9]*)\.png")


def _inside(root: Path, path: Path) -> bool:
    """True when ``path``, with every symbolic link resolved, lies inside ``root``."""
    return path.resolve().is_relative_to(root.resolve())


def _refuse_links_out(out: Path, paths: Sequence[str]) -> None:
    """RefusedFolderError when one of ``paths`` (relative to ``out``) leads outside it by a link."""
    outside = [p for p in paths if not _inside(out, out / p)]
    if outside:
        raise RefusedFolderError(f"{out / outside[0]} leads outside {out} through a symbolic link; "
                                 "refusing to write there. Give the generator a new or empty folder.")


def _synth_would_write(out: Path, rel: str) -> bool:
    """True for a path generate_synthetic writes, that also resolves inside ``out``."""
    match = _SYNTH_FILE.fullmatch(rel)
    ours = rel == "markers.csv" or (match is not None and match["cls"] in SYNTH_CLASSES)
    return ours and _inside(out, out / rel)


def _listed_files(out: Path, meta: dict) -> list[str]:
    """The files ``synthetic.json`` says synth wrote, as listed (not yet trusted).

    Older versions recorded no list; theirs is the files present of their classes, numbered up
    to their ``per_class``.
    """
    if isinstance(meta.get("files"), list):
        return [str(f) for f in meta["files"]]
    classes = meta.get("classes")
    per_class = meta.get("per_class")
    if not isinstance(classes, list) or not isinstance(per_class, int):
        return []
    found = [p.relative_to(out).as_posix() for c in classes if c in SYNTH_CLASSES
             for sub in ("images", "masks") for p in sorted((out / c / sub).glob(f"{c}-*.png"))]
    numbered = [(f, _SYNTH_FILE.fullmatch(f)) for f in found]
    return [f for f, match in numbered if match and int(match["i"]) <= per_class] + ["markers.csv"]


def _owned_files(out: Path) -> set[str]:
    """The files an earlier run recorded as its own in ``out/synthetic.json``.

    ``synthetic.json`` is input: only entries that synth itself writes and that resolve inside
    ``out`` are trusted; any other entry is left alone, with a warning.
    """
    listed = _listed_files(out, read_json(out / "synthetic.json"))
    owned = {f for f in listed if _synth_would_write(out, f)}
    ignored = sorted(set(listed) - owned)
    if ignored:
        log.warning("%s lists %d file(s) synth does not write, or outside the folder (first: %s); "
                    "left alone and dropped from the list. Delete them by hand if they are yours "
                    "to delete.", out / "synthetic.json", len(ignored), ignored[0])
    return owned


def _claim_folder(out: Path, targets: Sequence[str]) -> set[str]:
    """Check that synth may write ``targets`` into ``out``; return the files it owns there.

    ``out`` must be missing, empty, or a folder an earlier synth run wrote (``synthetic.json``);
    a file synth did not write is never overwritten, and nothing is written through a link that
    leads outside ``out``. Raises RefusedFolderError otherwise.
    """
    meta_path = out / "synthetic.json"
    if out.exists() and not out.is_dir():
        raise RefusedFolderError(f"{out} is a file; give synth a new or empty folder.")
    if not out.exists() or not any(out.iterdir()):
        return set()
    if not meta_path.is_file():
        raise RefusedFolderError(f"{out} is not empty and holds no synthetic.json, so synth did "
                                 "not write it; refusing to touch it. Give synth a new or empty "
                                 "folder.")
    _refuse_links_out(out, [*targets, "synthetic.json"])
    owned = _owned_files(out)
    foreign = sorted(f for f in targets if f not in owned and (out / f).exists())
    if foreign:
        raise RefusedFolderError(f"{out} holds {len(foreign)} file(s) synth did not write (first: "
                                 f"{foreign[0]}); refusing to overwrite them. Give synth a new or "
                                 "empty folder.")
    return owned


def _remove_owned(out: Path, stale: set[str]) -> None:
    """Delete files an earlier synth run wrote and this one does not, and emptied folders."""
    for rel in sorted(stale):
        path = out / rel
        if path.is_file() and not path.is_symlink():
            path.unlink()
    folders = {p for r in stale for p in Path(r).parents if p != Path(".")}
    for rel in sorted(folders, key=lambda p: len(p.parts), reverse=True):
        folder = out / rel
        if folder.is_dir() and not folder.is_symlink() and not any(folder.iterdir()):
            folder.rmdir()


def _check_film_settings(size: int, severity: tuple[float, float]) -> tuple[float, float]:
    """Check a film size and a severity range; return the range as floats."""
    if int(size) < MIN_SIZE:
        raise InputError(f"size must be at least {MIN_SIZE} px, got {size}")
    lo, hi = (float(s) for s in severity)
    if not 0 <= lo <= hi:
        raise InputError(f"severity must be a (low, high) pair with 0 <= low <= high, got {severity}")
    return lo, hi


def generate_synthetic(out_dir: str | Path, per_class: int = 300, size: int = 256, seed: int = 0,
                       classes: Sequence[str] | None = SYNTH_CLASSES, vary_size: bool = True,
                       severity: tuple[float, float] = (0.6, 1.0), marker_prob: float = 0.3,
                       shortcut_class: str | None = None, shortcut_prob: float = 0.9,
                       progress: bool = True) -> Path:
    """Write the dataset in the Kaggle COVID-19 Radiography Database v4 layout and return out_dir.

    Layout: ``<Class>/images/<Class>-<i>.png`` and ``<Class>/masks/<Class>-<i>.png``
    (i = 1..per_class), ``synthetic.json`` (all parameters) and ``markers.csv`` (file,
    label, marker, shortcut). Image ``i`` of a class depends only on (seed, class, i), so
    the output is reproducible and does not depend on ``per_class`` or ``classes``
    (None means all of SYNTH_CLASSES). Sizes vary in [0.85, 1.25] x ``size`` per side when
    ``vary_size``; each image's severity is drawn uniformly from ``severity``.
    ``synthetic.json`` also lists every file the run wrote (``files``). Re-running into the
    same folder overwrites and removes only files listed there (images beyond ``per_class``,
    or of classes dropped since); other files are never touched, nor is a listed entry that synth
    does not write or that leads outside the folder (``synthetic.json`` is input, like any
    file). A non-empty folder without ``synthetic.json`` (e.g. the real database), or one where
    a file to be written exists but is not listed, is refused with FileExistsError before
    anything is written.
    """
    classes = list(SYNTH_CLASSES if classes is None else classes)
    if not classes:
        raise InputError("classes must name at least one class")
    for name in classes:
        _check_label(name)
    if len(set(classes)) != len(classes):
        raise InputError(f"classes contains duplicates: {classes}")
    if int(per_class) < 1:
        raise InputError(f"per_class must be >= 1, got {per_class}")
    lo, hi = _check_film_settings(size, severity)
    for pname, p in (("marker_prob", marker_prob), ("shortcut_prob", shortcut_prob)):
        if not 0 <= p <= 1:
            raise InputError(f"{pname} must be in [0, 1], got {p}")
    if shortcut_class is not None and shortcut_class not in classes:
        raise InputError(f"shortcut_class {shortcut_class!r} is not one of classes {classes}")
    per_class, size = int(per_class), int(size)

    out = Path(out_dir)
    meta_path = out / "synthetic.json"
    targets = _synthetic_files(classes, per_class)
    owned = _claim_folder(out, targets)
    out.mkdir(parents=True, exist_ok=True)
    meta = {
        "generator": "cxrlib.data.synthetic.generate_synthetic",
        "cxrlib_version": _version(),
        "seed": seed, "per_class": per_class, "size": size, "classes": classes,
        "vary_size": vary_size, "size_range": [0.85, 1.25] if vary_size else [1.0, 1.0],
        "severity": [lo, hi], "marker_prob": marker_prob, "random_markers": list(RANDOM_MARKERS),
        "shortcut_class": shortcut_class, "shortcut_prob": shortcut_prob,
        "shortcut_marker": SHORTCUT_MARKER if shortcut_class else None,
        "shortcut_corner": "tl" if shortcut_class else None,
        "rng": "numpy.random.default_rng([seed, SYNTH_CLASSES.index(class), i])",
        "layout": "COVID-19 Radiography Database v4: <Class>/images|masks/<Class>-<i>.png",
    }
    # written first, listing every file synth may own, so an interrupted run is still recognised
    write_json_atomic(meta_path, {**meta, "files": sorted(owned | set(targets))})
    _remove_owned(out, owned - set(targets))

    pool = [m for m in RANDOM_MARKERS if not (shortcut_class and m == SHORTCUT_MARKER)]
    jobs = [(name, i) for name in classes for i in range(1, per_class + 1)]
    if progress:
        from tqdm.auto import tqdm
        jobs = tqdm(jobs, desc="synthetic CXR", unit="img")
    rows = []
    for name, i in jobs:
        ci = SYNTH_CLASSES.index(name)
        rng = np.random.default_rng([seed, ci, i])
        # the same draws whatever the options, so that e.g. the shortcut or vary_size
        # settings change only the marker or the frame, never the patient
        factors, sev_u, short_u, marker_u = rng.uniform(0.85, 1.25, size=2), *rng.uniform(size=3)
        h, w = (max(MIN_SIZE, round(size * f)) for f in factors) if vary_size else (size, size)
        sev = lo + (hi - lo) * sev_u
        shortcut = name == shortcut_class and short_u < shortcut_prob
        random_marker = marker_u < marker_prob
        pick = pool[rng.integers(len(pool))]
        if shortcut:
            text, corner = SHORTCUT_MARKER, "tl"
        elif random_marker:
            text, corner = pick, None
        else:
            text, corner = None, None
        image, mask = render_radiograph(rng, name, (h, w), sev, text, corner)
        rel = Path(name) / "images" / f"{name}-{i}.png"
        for sub, arr in (("images", image), ("masks", mask)):
            path = out / name / sub / f"{name}-{i}.png"
            path.parent.mkdir(parents=True, exist_ok=True)
            Image.fromarray(arr).save(path, format="PNG")
        rows.append({"file": rel.as_posix(), "label": name, "marker": text or "",
                     "shortcut": bool(shortcut)})

    write_csv_atomic(pd.DataFrame(rows, columns=["file", "label", "marker", "shortcut"]), out / "markers.csv")
    write_json_atomic(meta_path, {**meta, "files": targets})
    return out


# --------------------------------------------------------------------------- source task

#: Version of the pretraining source task (part of the pretrained weights' cache key): bump
#: it whenever :func:`render_source_film` draws differently.
SOURCE_TASK = "lung-zones-v1"
#: The three zones of each lung, as ranges of ``t`` (0 at the apex, 1 at the diaphragm).
_ZONES: dict[str, tuple[float, float]] = {"upper": (0.08, 0.3), "middle": (0.4, 0.6),
                                          "lower": (0.7, 0.9)}
#: The source task's labels, multi-label: a focal opacity in each of the six lung zones (the
#: patient's right lung is on the image's left), a diffuse interstitial pattern, a lobar
#: consolidation, and a burned-in marker.
SOURCE_LABELS: tuple[str, ...] = tuple(
    f"opacity_{side}_{zone}" for side in ("right", "left") for zone in _ZONES
) + ("interstitial", "consolidation", "marker")
#: Chance of each finding on a source film, independently.
SOURCE_PREVALENCE = 0.3


def _zone_opacity(rng: np.random.Generator, t: np.ndarray, r: np.ndarray,
                  zone: tuple[float, float], shape: tuple[int, int], unit: float) -> np.ndarray:
    """One fuzzy, patchy opacity centred inside ``zone`` of one lung (severity 1)."""
    tc, rc = rng.uniform(*zone), rng.uniform(0.25, 0.85)
    st, sr = rng.uniform(0.06, 0.1), rng.uniform(0.12, 0.22)
    patchy = 0.8 + 0.2 * _smooth_noise(rng, shape, 0.04 * unit)
    blob = np.exp(-((t - tc) / st) ** 2 - ((r - rc) / sr) ** 2) * (t > 0) * (t < 1)
    return rng.uniform(0.25, 0.4) * blob * patchy


def _source_lesion(findings: np.ndarray) -> Callable:
    """The lesion function of one source film: every finding flagged in ``findings``."""
    def draw(rng: np.random.Generator, lungs: list, shape: tuple[int, int], unit: float) -> np.ndarray:
        density = np.zeros(shape, _F)
        for k, (zone, side) in enumerate((z, s) for s in (0, 1) for z in _ZONES.values()):
            if findings[k]:
                _, t, r = lungs[side]
                density += _zone_opacity(rng, t, r, zone, shape, unit)
        if findings[6]:
            density += 0.8 * _lesion("Viral Pneumonia", rng, lungs, shape, unit)
        if findings[7]:
            density += _lesion("Bacterial Pneumonia", rng, lungs, shape, unit)
        return density
    return draw


def render_source_film(rng: np.random.Generator, size: int) -> tuple[np.ndarray, np.ndarray]:
    """One film of the pretraining source task: (uint8 size×size image, float32 labels).

    The labels follow :data:`SOURCE_LABELS`; each finding is present with probability
    :data:`SOURCE_PREVALENCE`, independently, at a random severity. The film is drawn at a
    random frame size (0.85–1.25 × ``size`` per side, as :func:`generate_synthetic` does) and
    resized to ``size`` the way the input pipeline resizes files.
    """
    from cxrlib.data.pipeline import resize

    findings = rng.uniform(size=len(SOURCE_LABELS)) < SOURCE_PREVALENCE
    h, w = (max(MIN_SIZE, round(size * f)) for f in rng.uniform(0.85, 1.25, size=2))
    marker = RANDOM_MARKERS[rng.integers(len(RANDOM_MARKERS))] if findings[8] else None
    layers = render_layers(rng, "Normal", (h, w), rng.uniform(0.6, 1.0), marker,
                           lesion=_source_lesion(findings))
    return resize(layers["image"], size), findings.astype(_F)


def source_task_arrays(n: int, size: int, seed: int = 0, progress: bool = True
                       ) -> tuple[np.ndarray, np.ndarray]:
    """``n`` source-task films: uint8 images (n, size, size) and labels (n, len(SOURCE_LABELS)).

    Film ``i`` depends only on (seed, i), so the set is reproducible and a larger ``n``
    extends a smaller one.
    """
    indices = range(int(n))
    if progress:
        from tqdm.auto import tqdm
        indices = tqdm(indices, desc="source films", unit="img")
    films = [render_source_film(np.random.default_rng([seed, 7_001, i]), size) for i in indices]
    images = np.stack([f[0] for f in films]) if films else np.zeros((0, size, size), np.uint8)
    labels = np.stack([f[1] for f in films]) if films else np.zeros((0, len(SOURCE_LABELS)), _F)
    return images, labels


# --------------------------------------------------------------------------- SIIM format

#: The four study-level columns of SIIM-FISABIO-RSNA ``train_study_level.csv``, in order.
SIIM_STUDY_COLUMNS: tuple[str, ...] = ("Negative for Pneumonia", "Typical Appearance",
                                       "Indeterminate Appearance", "Atypical Appearance")
#: Which synthetic pattern stands in for each SIIM study class, and why:
#: Negative: no lesion. Typical (of COVID-19): bilateral, peripheral, lower-zone ground
#: glass, the synthetic COVID pattern. Indeterminate: diffuse or perihilar opacity that
#: does not point to COVID-19, the synthetic diffuse viral pattern. Atypical: focal lobar
#: consolidation, more typical of bacterial pneumonia, the synthetic bacterial pattern.
SIIM_SYNTHETIC_CLASSES: dict[str, str] = {
    "Negative for Pneumonia": "Normal",
    "Typical Appearance": "COVID",
    "Indeterminate Appearance": "Viral Pneumonia",
    "Atypical Appearance": "Bacterial Pneumonia",
}
#: The class shares of the competition's 6,054 training studies (1676, 2855, 1049, 474).
SIIM_CLASS_SHARES: tuple[float, float, float, float] = (0.277, 0.472, 0.173, 0.078)


def lesion_boxes(mask: np.ndarray, min_fraction: float = 0.005, close: float = 0.03
                 ) -> list[dict[str, float]]:
    """Bounding boxes ``{"x", "y", "width", "height"}`` (pixels) of a lesion mask's regions.

    As a radiologist draws one box round each opacity rather than round every speck, the
    mask is first closed (gaps up to ``close`` x the image size bridged) and its holes
    filled; then each connected component (``scipy.ndimage.label`` + ``find_objects``) whose
    box covers at least ``min_fraction`` of the image becomes a box, left to right.
    """
    from scipy import ndimage

    m = np.asarray(mask) > 0
    if not m.any():
        return []
    h, w = m.shape
    r = max(1, round(close * min(h, w)))
    padded = np.pad(m, r)  # so that closing does not stick regions to the border
    closed = ndimage.binary_closing(padded, structure=ndimage.generate_binary_structure(2, 1),
                                    iterations=r)[r:-r, r:-r]
    labels, _ = ndimage.label(ndimage.binary_fill_holes(closed))
    boxes = []
    for rows, cols in ndimage.find_objects(labels):
        bh, bw = rows.stop - rows.start, cols.stop - cols.start
        if bh * bw >= min_fraction * h * w:
            boxes.append({"x": float(cols.start), "y": float(rows.start),
                          "width": float(bw), "height": float(bh)})
    return sorted(boxes, key=lambda b: (b["x"], b["y"]))


def siim_label_string(boxes: Sequence[dict]) -> str:
    """The ``label`` column of ``train_image_level.csv``: ``opacity 1 x1 y1 x2 y2 ...`` or
    ``none 1 0 0 1 1`` for an image without boxes."""
    if not boxes:
        return "none 1 0 0 1 1"
    return " ".join(f"opacity 1 {b['x']:g} {b['y']:g} {b['x'] + b['width']:g} {b['y'] + b['height']:g}"
                    for b in boxes)


def _siim_counts(n: int, shares: Sequence[float]) -> list[int]:
    """n split by shares (largest remainder), every class at least one when n allows."""
    shares = np.asarray(shares, dtype=float) / float(np.sum(shares))
    raw = shares * n
    counts = np.floor(raw).astype(int)
    for i in np.argsort(-(raw - counts), kind="stable")[: n - counts.sum()]:
        counts[i] += 1
    for i in range(len(counts)):  # a class with no study would make the lesson pointless
        if counts[i] == 0 and counts.max() > 1 and shares[i] > 0:
            counts[int(np.argmax(counts))] -= 1
            counts[i] += 1
    return counts.tolist()


def generate_siim_like(out_dir: str | Path, n_studies: int = 600, size: int = 256, seed: int = 0,
                       shares: Sequence[float] = SIIM_CLASS_SHARES, vary_size: bool = True,
                       severity: tuple[float, float] = (0.6, 1.0), marker_prob: float = 0.3,
                       reuse: bool = True, progress: bool = True) -> Path:
    """A synthetic stand-in for SIIM-FISABIO-RSNA COVID-19 Detection, in its file format.

    Writes into ``out_dir``:

    - ``train_study_level.csv``: ``id`` (``<study>_study``) and the one-hot columns of
      :data:`SIIM_STUDY_COLUMNS`, ``n_studies`` rows in the competition's class shares
      (``shares``, in that column order);
    - ``train_image_level.csv``: ``id`` (``<image>_image``), ``boxes`` (a Python-literal list
      of ``{'x', 'y', 'width', 'height'}`` dicts, empty for none), ``label``
      (``opacity 1 x1 y1 x2 y2 ...`` or ``none 1 0 0 1 1``) and ``StudyInstanceUID``;
    - ``train/<image>.png``: one radiograph per study, drawn by :func:`render_radiograph`
      with the pattern :data:`SIIM_SYNTHETIC_CLASSES` maps the study class to; its boxes
      come from the lesion mask (:func:`lesion_boxes`), so a Negative image, or one whose
      lesion is too faint to box, is ``none``;
    - ``synthetic.json``: the parameters and the class mapping.

    Ids are 12 hex digits drawn from ``seed``; image ``k`` depends only on (seed, k) and its
    class. With ``reuse``, a folder already holding this set with the same parameters is
    returned untouched. A folder with a ``train_study_level.csv`` but no ``synthetic.json``
    (the real competition data) is refused with FileExistsError.
    """
    shares = [float(s) for s in shares]
    if len(shares) != len(SIIM_STUDY_COLUMNS) or min(shares) < 0 or sum(shares) <= 0:
        raise InputError(f"shares must be {len(SIIM_STUDY_COLUMNS)} non-negative numbers, got {shares}")
    if int(n_studies) < 1:
        raise InputError(f"n_studies must be >= 1, got {n_studies}")
    lo, hi = _check_film_settings(size, severity)
    if not 0 <= marker_prob <= 1:
        raise InputError(f"marker_prob must be in [0, 1], got {marker_prob}")
    out = Path(out_dir)
    meta_path = out / "synthetic.json"
    meta = {"generator": "cxrlib.data.synthetic.generate_siim_like", "cxrlib_version": _version(),
            "seed": seed, "n_studies": int(n_studies), "size": int(size), "shares": shares,
            "vary_size": vary_size, "severity": [lo, hi], "marker_prob": marker_prob,
            "classes": SIIM_SYNTHETIC_CLASSES,
            "layout": "SIIM-FISABIO-RSNA: train_study_level.csv, train_image_level.csv, train/<image>.png"}
    _refuse_links_out(out, ["train", "synthetic.json", *_SIIM_CSVS])
    if (out / "train_study_level.csv").exists():
        if not meta_path.is_file():
            raise RefusedFolderError(f"{out} holds a train_study_level.csv but no synthetic.json: "
                                     "refusing to overwrite what looks like the real competition "
                                     "data. Give the generator a new or empty folder.")
        ids = _siim_listed_ids(out)
        old = read_json(meta_path)
        if reuse and {k: v for k, v in old.items() if k != "cxrlib_version"} == \
                {k: v for k, v in meta.items() if k != "cxrlib_version"} and \
                _siim_complete(out, ids, int(n_studies)):
            return out
        for image_id in ids:  # the images the earlier run wrote, and nothing else
            (out / "train" / f"{image_id}.png").unlink(missing_ok=True)
    (out / "train").mkdir(parents=True, exist_ok=True)
    write_json_atomic(meta_path, meta)

    id_rng = np.random.default_rng([seed, 9_001])
    counts = _siim_counts(int(n_studies), shares)
    columns = [c for c, k in zip(SIIM_STUDY_COLUMNS, counts) for _ in range(k)]
    columns = [columns[i] for i in id_rng.permutation(len(columns))]
    jobs = list(enumerate(columns))
    if progress:
        from tqdm.auto import tqdm
        jobs = tqdm(jobs, desc="synthetic SIIM", unit="img")
    studies, images = [], []
    for k, column in jobs:
        study, image_id = id_rng.bytes(6).hex(), id_rng.bytes(6).hex()
        rng = np.random.default_rng([seed, 9_002, k])
        factors, sev_u, marker_u = rng.uniform(0.85, 1.25, size=2), rng.uniform(), rng.uniform()
        h, w = (max(MIN_SIZE, round(size * f)) for f in factors) if vary_size else (size, size)
        marker = RANDOM_MARKERS[rng.integers(len(RANDOM_MARKERS))] if marker_u < marker_prob else None
        image, mask = render_radiograph(rng, SIIM_SYNTHETIC_CLASSES[column], (h, w),
                                        lo + (hi - lo) * sev_u, marker)
        Image.fromarray(image).save(out / "train" / f"{image_id}.png", format="PNG")
        boxes = lesion_boxes(mask)
        studies.append({"id": f"{study}_study", **{c: int(c == column) for c in SIIM_STUDY_COLUMNS}})
        images.append({"id": f"{image_id}_image", "boxes": repr(boxes) if boxes else "",
                       "label": siim_label_string(boxes), "StudyInstanceUID": study})
    for name, rows in zip(_SIIM_CSVS, (studies, images)):
        write_csv_atomic(pd.DataFrame(rows), out / name)
    return out


#: The two CSVs of the SIIM layout, study level first.
_SIIM_CSVS = ("train_study_level.csv", "train_image_level.csv")
#: An image id as generate_siim_like draws it: 12 hex digits.
_SIIM_ID = re.compile(r"[0-9a-f]{12}")


def _siim_listed_ids(out: Path) -> list[str]:
    """The image ids in ``out/train_image_level.csv`` that generate_siim_like could have drawn.

    The CSV is input: an id that is not 12 hex digits, or whose image would resolve outside
    ``out``, is left alone with a warning. Empty when the CSV is unreadable.
    """
    try:
        with open(out / "train_image_level.csv", newline="") as f:
            listed = [str(row.get("id") or "").removesuffix("_image") for row in csv.DictReader(f)]
    except (OSError, UnicodeDecodeError, csv.Error):
        return []
    ours = [i for i in listed if _SIIM_ID.fullmatch(i) and _inside(out, out / "train" / f"{i}.png")]
    others = sorted(set(listed) - set(ours))
    if others:
        log.warning("%s lists %d image id(s) the generator does not draw (first: %r); their files "
                    "are left alone. Delete them by hand if they are yours to delete.",
                    out / "train_image_level.csv", len(others), others[0])
    return ours


def _siim_complete(out: Path, ids: Sequence[str], n_studies: int) -> bool:
    """True when ``ids`` (as :func:`_siim_listed_ids` gives them) are the ``n_studies`` images of
    one run, and every one of them is there."""
    return len(ids) == n_studies and all((out / "train" / f"{i}.png").is_file() for i in ids)
