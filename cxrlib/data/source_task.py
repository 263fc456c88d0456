"""Pretraining's source task: synthetic films with multi-label findings (an opacity in each
of six lung zones, a diffuse pattern, a consolidation, a burned-in marker), drawn by
:mod:`cxrlib.data.render` for :mod:`cxrlib.runs.pretrain`."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from cxrlib.data.render import (
    MIN_SIZE,
    RANDOM_MARKERS,
    lesion_density,
    render_layers,
    smooth_noise,
)

_F = np.float32

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
    patchy = 0.8 + 0.2 * smooth_noise(rng, shape, 0.04 * unit)
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
            density += 0.8 * lesion_density("Viral Pneumonia", rng, lungs, shape, unit)
        if findings[7]:
            density += lesion_density("Bacterial Pneumonia", rng, lungs, shape, unit)
        return density
    return draw


def render_source_film(rng: np.random.Generator, size: int) -> tuple[np.ndarray, np.ndarray]:
    """One film of the pretraining source task: (uint8 size×size image, float32 labels).

    The labels follow :data:`SOURCE_LABELS`; each finding is present with probability
    :data:`SOURCE_PREVALENCE`, independently, at a random severity. The film is drawn at a
    random frame size (0.85–1.25 × ``size`` per side, as
    :func:`cxrlib.data.synthetic.generate_synthetic` does) and resized to ``size`` the way the
    input pipeline resizes files.
    """
    from cxrlib.data.prepare import resize

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
