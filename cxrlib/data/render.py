"""Procedural chest radiographs: the renderer behind the synthetic datasets (the default
dataset, so the course runs with no download; :mod:`cxrlib.data.synthetic` writes it).

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

The writers: :func:`cxrlib.data.synthetic.generate_synthetic` (the COVID-19 Radiography
Database layout), :mod:`cxrlib.data.siim_synthetic` (the SIIM format) and
:mod:`cxrlib.data.source_task` (pretraining's source films).
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
from PIL import Image, ImageDraw, ImageFont
from scipy.ndimage import gaussian_filter

from cxrlib.errors import InputError

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


def check_label(label: str) -> int:
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


def smooth_noise(rng: np.random.Generator, shape: tuple[int, int], cell: float) -> np.ndarray:
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
    warp = smooth_noise(rng, shape, 0.12 * unit)
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


def lesion_density(label: str, rng: np.random.Generator, lungs: list[tuple[np.ndarray, ...]],
            shape: tuple[int, int], unit: float) -> np.ndarray:
    """Extra density of the class's lesion at severity 1 (before masking to the lungs)."""
    d = np.zeros(shape, _F)
    if label == "Normal":
        return d
    if label == "COVID":  # peripheral, lower-zone, bilateral ground glass
        patchy = 0.75 + 0.25 * smooth_noise(rng, shape, 0.05 * unit)
        for _field, t, r in lungs:
            for _ in range(rng.integers(2, 4)):
                tc, rc = rng.uniform(0.5, 0.88), rng.uniform(0.72, 0.95)
                st, sr = rng.uniform(0.12, 0.2), rng.uniform(0.2, 0.3)
                d += rng.uniform(0.6, 0.9) * np.exp(-((t - tc) / st) ** 2 - ((r - rc) / sr) ** 2)
        return 0.24 * np.clip(d, 0, 1.3) * patchy
    if label == "Viral Pneumonia":  # diffuse interstitial, perihilar emphasis
        fine = smooth_noise(rng, shape, 0.016 * unit)
        net = np.exp(-(fine / 0.5) ** 2)  # zero crossings of band-limited noise: a mesh
        haze = 0.5 + 0.5 * np.clip(smooth_noise(rng, shape, 0.06 * unit), -1, 1)
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
    level = 1 - ((t - ct) / wt) ** 4 - ((r - cr) / wr) ** 4 + 0.35 * smooth_noise(rng, shape, 0.05 * unit)
    fill = _sigmoid(level / 0.12)
    bronchi = 1 - 0.18 * np.exp(-(smooth_noise(rng, shape, 0.03 * unit) / 0.2) ** 2)
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
    check_label(label)
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
    img += 0.025 * smooth_noise(rng, shape, 0.1 * unit) * body  # uneven soft tissue

    # 4. lesion: fluid replaces air inside the lungs, scaled by severity; blurred like the
    #    lung edge so that a lesion touching the pleura leaves no dark rim
    draw = lesion or (lambda *a: lesion_density(label, *a))
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
    img += 0.5 * grain * smooth_noise(rng, shape, 3.0)

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


def check_film_settings(size: int, severity: tuple[float, float]) -> tuple[float, float]:
    """Check a film size and a severity range; return the range as floats."""
    if int(size) < MIN_SIZE:
        raise InputError(f"size must be at least {MIN_SIZE} px, got {size}")
    lo, hi = (float(s) for s in severity)
    if not 0 <= lo <= hi:
        raise InputError(f"severity must be a (low, high) pair with 0 <= low <= high, got {severity}")
    return lo, hi
