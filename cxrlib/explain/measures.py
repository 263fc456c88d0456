"""Measured explanations: how much of a heat map lies where it should.

**Measure, don't eyeball.** A heat map over a radiograph is persuasive, and people see what
they expect in it: a blob "on the lungs" convinces whether it covers 80 % of the map's
energy or 30 %. So the course measures: :func:`energy_inside` (the share of a map's energy
inside a ground-truth lesion mask), :func:`pointing_game` (is the map's peak on the lesion),
:func:`border_share` (how much sits in the border band where text markers live) and
:func:`lung_share`, each compared with a random map's score. :func:`lesion_scores` does it
per image over a data set; the shortcut experiment of notebook 05
(:mod:`cxrlib.course.shortcut`) shows the numbers catching a model that learnt a marker
instead of the disease, and the border crop taking that shortcut away.
"""

from __future__ import annotations

import logging
from typing import Any, Sequence

import numpy as np
import pandas as pd

from cxrlib.data.pipeline import model_inputs
from cxrlib.data.pixels import ImageReadError
from cxrlib.data.prepare import Prep
from cxrlib.explain.maps import heatmap, random_maps
from cxrlib.explain.masks import BORDER_BAND, border_mask, central_mask, mask_like, prepare_mask
from cxrlib.runs.evaluate import predict

log = logging.getLogger(__name__)

_READ_ERRORS = (ImageReadError, OSError, ValueError)


def energy_inside(heat: np.ndarray, mask: np.ndarray) -> float:
    """Share of the heat map's energy (sum) inside the mask, 0–1; NaN for an all-zero map.

    A map that ignored the mask would score the mask's area share on average.
    """
    heat = np.clip(np.nan_to_num(np.asarray(heat, dtype=np.float64)), 0, None)
    total = heat.sum()
    if total <= 0:
        return float("nan")
    return float(heat[mask_like(mask, heat.shape)].sum() / total)


def pointing_game(heat: np.ndarray, mask: np.ndarray, tolerance: int = 2) -> bool:
    """True when the heat map's maximum lies inside the mask dilated by ``tolerance`` pixels
    (in any direction, diagonals included)."""
    from scipy.ndimage import binary_dilation

    heat = np.nan_to_num(np.asarray(heat, dtype=np.float64))
    region = mask_like(mask, heat.shape)
    if not region.any() or heat.max() <= 0:
        return False
    if tolerance > 0:
        region = binary_dilation(region, np.ones((3, 3), bool), iterations=int(tolerance))
    return bool(region[np.unravel_index(np.argmax(heat), heat.shape)])


def border_share(heat: np.ndarray, band: float = BORDER_BAND) -> float:
    """Share of the map's energy in the border band (where burned-in text lives).

    A flat map scores the band's area share (0.41 for ``band=0.12``).
    """
    heat = np.asarray(heat)
    return energy_inside(heat, border_mask(heat.shape, band))


def lung_share(heat: np.ndarray, lung_mask: np.ndarray | None = None) -> float:
    """Share of the map's energy on the lungs: the data set's lung mask, else the central region."""
    heat = np.asarray(heat)
    return energy_inside(heat, central_mask(heat.shape) if lung_mask is None else lung_mask)


def lesion_scores(model, manifest: pd.DataFrame, classes: Sequence[str], prep: Prep,
                  method: str = "gradcam", layer: str | None = None, explain: str = "label",
                  batch_size: int = 16, seed: int = 0, **options: Any) -> pd.DataFrame:
    """Per image: how much of the heat map lies on the ground-truth lesion, against a random map.

    Uses the rows whose ``mask_kind`` is ``"lesion"`` and whose mask is not empty (a Normal
    film has no lesion). ``explain`` is ``"label"`` (the true class: is the evidence for it
    on the lesion?) or ``"predicted"``. Columns: path, label, predicted, energy_inside,
    pointing_hit, border_share, mask_share (the lesion's area share: what a uniform map
    scores), random_energy_inside and random_pointing_hit (a smooth random map per image).
    """
    if explain not in ("label", "predicted"):
        raise ValueError(f"explain must be 'label' or 'predicted', not {explain!r}")
    lookup = {name: i for i, name in enumerate(classes)}
    if "mask_kind" not in manifest or "mask_path" not in manifest:
        raise ValueError("The manifest has no mask_path/mask_kind columns (see cxrlib.data.datasets).")
    rows = manifest[(manifest["mask_kind"] == "lesion") & (manifest["mask_path"] != "")
                    & manifest["label"].isin(list(classes))]
    found = []
    for path, mask_path, label in zip(rows["path"], rows["mask_path"], rows["label"]):
        try:
            mask = prepare_mask(mask_path, prep, path)
        except _READ_ERRORS as error:
            log.warning("Skipping %s: %s", path, error)
            continue
        if mask.any():
            found.append((path, label, mask))
    records = []
    rng_seed = seed
    for start in range(0, len(found), batch_size):
        inputs = model_inputs([p[0] for p in found[start:start + batch_size]], prep)
        part = [found[start + i] for i in inputs.kept]
        if not part:
            continue
        x = inputs.x
        predicted = predict(model, x).argmax(axis=1)
        targets = ([lookup[p[1]] for p in part] if explain == "label" else [int(i) for i in predicted])
        heat = heatmap(model, x, method, targets, layer, **options)
        noise = random_maps(len(part), x.shape[1:3], rng_seed)
        rng_seed += 1
        for k, (path, label, mask) in enumerate(part):
            records.append({
                "path": path, "label": label, "predicted": classes[int(predicted[k])],
                "energy_inside": energy_inside(heat[k], mask),
                "pointing_hit": pointing_game(heat[k], mask),
                "border_share": border_share(heat[k]),
                "mask_share": float(mask.mean()),
                "random_energy_inside": energy_inside(noise[k], mask),
                "random_pointing_hit": pointing_game(noise[k], mask),
            })
    columns = ["path", "label", "predicted", "energy_inside", "pointing_hit", "border_share",
               "mask_share", "random_energy_inside", "random_pointing_hit"]
    return pd.DataFrame(records, columns=columns)


def summarise_scores(scores: pd.DataFrame) -> dict[str, float]:
    """Means of :func:`lesion_scores` columns: the method against the random baseline."""
    if scores.empty:
        return {"n": 0}
    out = {"n": int(len(scores))}
    for column in ("energy_inside", "random_energy_inside", "mask_share", "border_share"):
        out[column] = float(scores[column].mean())
    for column in ("pointing_hit", "random_pointing_hit"):
        out[column.replace("_hit", "_rate")] = float(scores[column].astype(float).mean())
    out["energy_ratio"] = (out["energy_inside"] / out["random_energy_inside"]
                           if out["random_energy_inside"] > 0 else float("nan"))
    return out
