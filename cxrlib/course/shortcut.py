"""The shortcut experiment of notebook 05: train a model that can cheat, catch it with
numbers, and take the cheat away with the border crop.

A lesson, not library: it composes the synthetic generator, training and the measured
explanations of :mod:`cxrlib.explain.measures`.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import pandas as pd

from cxrlib.backbones import SCRATCH
from cxrlib.data.images import read_image
from cxrlib.data.pipeline import model_inputs
from cxrlib.data.prepare import Prep, border_crop, resize
from cxrlib.explain.maps import default_layer, heatmap
from cxrlib.explain.masks import border_mask
from cxrlib.explain.measures import border_share, energy_inside, lung_share
from cxrlib.runs.evaluate import Run, load_run, predict
from cxrlib.spec import LIBRARY_AUGMENT, NO_AUGMENT, Split, variant_spec


def _generate(out: Path, classes: Sequence[str], per_class: int, film_size: int, seed: int,
              severity: tuple[float, float], shortcut_class: str, shortcut_prob: float) -> pd.DataFrame:
    """A synthetic set without random markers, with the shortcut marker at ``shortcut_prob``.

    Always named ``shortcut_class``: the random-marker pool (and so every patient's random
    draws) then stays the same, and ``shortcut_prob=0`` gives the *same films* with no marker.
    """
    from cxrlib.data.datasets import load_manifest
    from cxrlib.data.synthetic import generate_synthetic

    generate_synthetic(out, per_class=per_class, size=film_size, seed=seed, classes=list(classes),
                       severity=severity, marker_prob=0.0, shortcut_class=shortcut_class,
                       shortcut_prob=shortcut_prob, vary_size=False, progress=False)
    manifest = load_manifest(out)
    markers = pd.read_csv(out / "markers.csv", keep_default_na=False)
    shortcut = {str((out / f).resolve()): bool(s) for f, s in zip(markers["file"], markers["shortcut"])}
    manifest["marker"] = [shortcut.get(p, False) for p in manifest["path"]]
    return manifest


def _marker_masks(marked: pd.DataFrame, clean: pd.DataFrame, prep: Prep) -> dict[str, np.ndarray]:
    """File name → where the marker is, as the model sees the film (bool (S, S)).

    The two test sets hold the same films with and without the marker, so the marker is
    exactly where a marked film differs from its twin; that difference goes through the
    model's geometry (crop, resize). An all-False mask means the marker is out of view.
    """
    twins = {Path(p).name: p for p in clean["path"]}
    masks = {}
    for path in marked.loc[marked["marker"], "path"]:
        name = Path(path).name
        if name not in twins:
            continue
        diff = np.abs(read_image(path).astype(np.int16) - read_image(twins[name]).astype(np.int16)) > 20
        if prep.crop:
            diff = border_crop(diff, prep.crop_reference)
        masks[name] = resize(diff.astype(np.uint8) * 255, prep.image_size, "nearest") > 127
    return masks


def _films(run: Run, manifest: pd.DataFrame) -> tuple[float, dict[str, np.ndarray]]:
    """A run's accuracy over a manifest's readable films, and their model inputs by file name."""
    from cxrlib.data.pipeline import label_indices

    inputs = model_inputs(manifest["path"].tolist(), run.prep)
    labels = label_indices(manifest["label"].iloc[inputs.kept].tolist(), run.classes)
    accuracy = float(np.mean(predict(run.model, inputs.x).argmax(axis=1) == labels))
    return accuracy, {Path(manifest["path"].iloc[i]).name: inputs.x[k] for k, i in enumerate(inputs.kept)}


def _mean(values: list[float]) -> float | None:
    values = [v for v in values if v == v]  # drop NaN
    return float(np.mean(values)) if values else None


def _shortcut_scores(run: Run, marked: pd.DataFrame, clean: pd.DataFrame, method: str,
                     explain_class: int, layer: str | None) -> dict[str, Any]:
    """One run's numbers for :func:`shortcut_experiment`."""
    model = run.model
    accuracy_marked, x_marked = _films(run, marked)
    accuracy_clean, x_clean = _films(run, clean)
    masks = _marker_masks(marked, clean, run.prep)
    names = [n for n in masks if n in x_marked and n in x_clean]
    out: dict[str, Any] = {"accuracy_marked": accuracy_marked, "accuracy_marker_free": accuracy_clean,
                           "n_marked": len(names)}
    if names:
        on_marked = heatmap(model, np.stack([x_marked[n] for n in names]), method, explain_class, layer)
        on_clean = heatmap(model, np.stack([x_clean[n] for n in names]), method, explain_class, layer)
        near = [_dilate(masks[n], 2) for n in names]
        out.update({
            "border_share_marked": _mean([border_share(h) for h in on_marked]),
            "border_share_marker_free": _mean([border_share(h) for h in on_clean]),
            "lung_share_marked": _mean([lung_share(h) for h in on_marked]),
            "lung_share_marker_free": _mean([lung_share(h) for h in on_clean]),
            "marker_share_marked": _mean([energy_inside(h, m) if m.any() else 0.0
                                          for h, m in zip(on_marked, near)]),
            "marker_area_share": _mean([float(m.mean()) for m in near]),
            "marker_pixels_in_view": float(np.mean([masks[n].any() for n in names])),
        })
    return out


def _dilate(mask: np.ndarray, pixels: int) -> np.ndarray:
    from scipy.ndimage import binary_dilation

    return binary_dilation(mask, np.ones((3, 3), bool), iterations=pixels) if mask.any() else mask


def shortcut_experiment(work_dir: str | os.PathLike, size: int = 64, per_class: int = 60,
                        epochs: int = 12, seed: int = 0, method: str = "gradcam",
                        classes: Sequence[str] = ("COVID", "Normal"), shortcut_class: str = "COVID",
                        shortcut_prob: float = 0.95, severity: tuple[float, float] = (0.6, 1.0),
                        film_size: int | None = None, test_per_class: int | None = None,
                        layer: str | None = None, batch_size: int = 16, augment: bool = False,
                        progress: bool = False) -> dict[str, Any]:
    """Train a model that can cheat, catch it with numbers, and take the cheat away.

    1. A training set where ``shortcut_class`` carries a "PORTABLE" marker in the top-left
       corner on ``shortcut_prob`` of its films (no other film has one), with lesions faint
       enough (``severity``) that the marker is the easier cue.
    2. Two test sets from another seed: one made the same way (*marked*), and the very same
       films without any marker (*marker-free*), so that the marker is the only difference.
    3. The scratch CNN trained on it (``shortcut``), then again with the border crop
       (``cropped``), which cuts the marker band away before the model ever sees it.

    Per model: accuracy on both test sets, and on the films that carry the marker the heat
    maps (``method`` for ``shortcut_class``, read at ``layer``, default :func:`default_layer`)
    with and without it: border share, lung share, and the share on the marker itself
    (``marker_share_marked``, against the marker's area share). The shortcut model is right
    on marked films, falls to about chance without the marker, and its evidence sits on the
    marker; the cropped model never sees the marker and must learn the lungs.

    Border shares of the two models are not directly comparable: the cropped model's frame
    is the central part of the film, whose border band is lung. Compare each model with
    itself (marked vs marker-free films) and the accuracies across models.

    The films are ``film_size`` px (default ``max(96, size)``), all the same size
    (``vary_size=False``): the marker is at least 7 px tall, and on smaller films, or on
    films smaller than the largest one (which the crop takes less from), it reaches below
    the band the crop removes. ``marker_pixels_in_view`` (share of marked films with any
    marker pixel left) checks it: 0 for the cropped model. Augmentation is off by default
    (a flip would move the marker, and it makes the run slower). Returns a JSON-serialisable
    dict.
    """
    from cxrlib.data.splits import make_split
    from cxrlib.runs.train import train

    work = Path(work_dir)
    classes = list(classes)
    film_size = film_size or max(96, size)
    test_per_class = test_per_class or max(20, per_class // 2)
    train_set = _generate(work / "data_train", classes, per_class, film_size, seed, severity,
                          shortcut_class, shortcut_prob)
    marked = _generate(work / "data_test_marked", classes, test_per_class, film_size, seed + 1,
                       severity, shortcut_class, shortcut_prob)
    clean = _generate(work / "data_test_marker_free", classes, test_per_class, film_size, seed + 1,
                      severity, shortcut_class, 0.0)
    train_set = make_split(train_set, Split(val=0.15, test=0.0), seed)
    explain_class = classes.index(shortcut_class)
    result: dict[str, Any] = {
        "settings": {"size": size, "film_size": film_size, "per_class": per_class,
                     "test_per_class": test_per_class, "epochs": epochs, "seed": seed,
                     "method": method, "classes": classes, "shortcut_class": shortcut_class,
                     "shortcut_prob": shortcut_prob, "severity": list(severity),
                     "augment": augment},
    }
    for name, crop in (("shortcut", False), ("cropped", True)):
        spec = variant_spec(SCRATCH, "scratch", image_size=size, epochs=epochs,
                            batch_size=batch_size, optimizer="adam", learning_rate=1e-3, seed=seed,
                            crop=crop, augment=LIBRARY_AUGMENT if augment else NO_AUGMENT)
        train(train_set, classes, spec, work / name, progress=progress, bootstrap=0)
        run = load_run(work / name)
        scores = _shortcut_scores(run, marked, clean, method, explain_class, layer)
        result[name] = {"layer": layer or default_layer(run.model), **scores}
    result["border_band_area_share"] = float(border_mask((size, size)).mean())
    return result
