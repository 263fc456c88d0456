"""Pictures of explanations: heat maps over the radiograph (:func:`overlay`, :func:`plot_overlay`),
a gallery of right or wrong predictions, and feature maps side by side (:func:`activation_comparison`).
The maps come from :mod:`cxrlib.explain.maps`."""

from __future__ import annotations

import os
from typing import Any, Sequence

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from cxrlib.data.pipeline import model_inputs
from cxrlib.data.prepare import Prep
from cxrlib.data.splits import sample_per_class
from cxrlib.explain.maps import heatmap, resize_maps
from cxrlib.runs.evaluate import predict


def _top_channels(maps: np.ndarray, n: int) -> np.ndarray:
    """The ``n`` channels with the highest mean activation (the ones this image drives)."""
    return np.argsort(-maps.reshape(-1, maps.shape[-1]).mean(axis=0), kind="stable")[:n]


def activation_comparison(maps_by_model: dict[str, np.ndarray], n: int = 8,
                          save: str | os.PathLike | None = None) -> Figure:
    """Rows of feature maps from several models at the same layer (e.g. frozen vs fine-tuned).

    The channels are the first model's most active ones, and every row shows those same
    channels: after fine-tuning, channel k still descends from the pretrained channel k.
    """
    from cxrlib.plots import finish_figure, new_figure

    names = list(maps_by_model)
    if not names:
        raise ValueError("maps_by_model is empty.")
    chosen = _top_channels(np.asarray(maps_by_model[names[0]]), n)
    figure = new_figure(1.4 * len(chosen) + 1.2, 1.5 * len(names))
    axes = np.atleast_2d(figure.subplots(len(names), len(chosen)))
    for row, name in enumerate(names):
        maps = np.asarray(maps_by_model[name])
        for col, channel in enumerate(chosen):
            ax = axes[row, col]
            ax.imshow(maps[..., channel], cmap="viridis")
            ax.set_xticks([])
            ax.set_yticks([])
            if row == 0:
                ax.set_title(f"ch {channel}", fontsize="x-small")
        axes[row, 0].set_ylabel(name, fontsize="small")
    return finish_figure(figure, save)


def overlay(image: np.ndarray, heat: np.ndarray, alpha: float = 0.4, cmap: str = "jet") -> np.ndarray:
    """The heat map in colour over the grey radiograph: RGB uint8 (S, S, 3).

    ``image`` is uint8 (S, S) (or (S, S, C): its first channel is used); ``heat`` is in
    [0, 1] and is resized to the image when the sizes differ.
    """
    import matplotlib

    gray = np.asarray(image)
    if gray.ndim == 3:
        gray = gray[..., 0]
    heat = np.clip(np.nan_to_num(np.asarray(heat, dtype=np.float32)), 0, 1)
    heat = resize_maps(heat[None], gray.shape)[0]
    colour = matplotlib.colormaps[cmap](heat)[..., :3]
    base = np.repeat(gray[..., None].astype(np.float32) / 255.0, 3, axis=-1)
    mixed = (1 - alpha) * base + alpha * colour
    return np.clip(mixed * 255 + 0.5, 0, 255).astype(np.uint8)


def plot_overlay(image: np.ndarray, heat: np.ndarray, title: str = "",
                 probabilities: dict[str, float] | None = None, alpha: float = 0.4,
                 cmap: str = "jet", save: str | os.PathLike | None = None,
                 original: np.ndarray | None = None) -> Figure:
    """The radiograph, the heat map over it (with a colour bar) and the class probabilities.

    ``original`` (the film as read, before the crop and the resize) is shown in the first panel
    instead of the model's input, as the pneumonia course's diagnosis script did."""
    from cxrlib.plots import finish_figure, new_figure

    gray = np.asarray(image)
    if gray.ndim == 3:
        gray = gray[..., 0]
    heat = resize_maps(np.clip(np.nan_to_num(np.asarray(heat, np.float32)), 0, 1)[None], gray.shape)[0]
    panels = 3 if probabilities else 2
    figure = new_figure(3.6 * panels + 0.6, 3.9)
    axes = np.atleast_1d(figure.subplots(1, panels, width_ratios=[1, 1.12, 1.1][:panels]))
    first = gray if original is None else np.asarray(original)
    axes[0].imshow(first[..., 0] if first.ndim == 3 else first, cmap="gray", vmin=0, vmax=255)
    axes[0].set_title("radiograph (as the model saw it)" if original is None else "the original film",
                      fontsize="small")
    axes[1].imshow(gray, cmap="gray", vmin=0, vmax=255)
    shown = axes[1].imshow(heat, cmap=cmap, alpha=alpha, vmin=0, vmax=1)
    axes[1].set_title("heat map", fontsize="small")
    figure.colorbar(shown, ax=axes[1], fraction=0.046, pad=0.03, label="importance")
    for ax in axes[:2]:
        ax.axis("off")
    if probabilities:
        names = list(probabilities)
        values = [float(probabilities[n]) for n in names]
        best = int(np.argmax(values))
        colours = ["crimson" if i == best else "steelblue" for i in range(len(names))]
        ax = axes[2]
        bars = ax.barh(np.arange(len(names)), values, color=colours)
        ax.set_yticks(np.arange(len(names)), names, fontsize="small")
        ax.invert_yaxis()
        ax.bar_label(bars, labels=[f"{v:.1%}" for v in values], fontsize="small", padding=2)
        ax.set_xlim(0, 1.18)
        ax.set(xlabel="probability", title="class probabilities")
        ax.grid(axis="x", alpha=0.3)
    if title:
        figure.suptitle(title)
    return finish_figure(figure, save)


def gallery(model, manifest: pd.DataFrame, classes: Sequence[str], prep: Prep,
            method: str = "gradcam", n_per_class: int = 4, correct: bool = True,
            layer: str | None = None, max_candidates: int = 200, seed: int = 0,
            save: str | os.PathLike | None = None, **options: Any) -> Figure:
    """Heat-map overlays of right (``correct=True``) or wrong predictions, one row per true class.

    Up to ``max_candidates`` images per class (a random sample) are classified to find
    ``n_per_class`` right or wrong ones; each tile shows the heat map of the *predicted* class,
    titled ``true →`` / ``predicted (probability)``. A class with none to show says so.
    """
    from cxrlib.plots import finish_figure, new_figure

    candidates = sample_per_class(manifest, max_candidates, seed, classes, warn=False)
    rows: list[list[tuple[np.ndarray, np.ndarray, str]]] = []
    for ci, name in enumerate(classes):
        inputs = model_inputs(candidates.loc[candidates["label"] == name, "path"].tolist(), prep)
        picked: list[tuple[np.ndarray, np.ndarray, str]] = []
        if inputs.kept:
            probs = predict(model, inputs.x)
            predicted = probs.argmax(axis=1)
            chosen = np.flatnonzero((predicted == ci) == correct)[:n_per_class]
            if len(chosen):
                heat = heatmap(model, inputs.x[chosen], method, [int(predicted[i]) for i in chosen],
                               layer, **options)
                for k, i in enumerate(chosen):
                    p = int(predicted[i])
                    picked.append((inputs.images[i], heat[k],
                                   f"{name} →\n{classes[p]} ({probs[i, p]:.0%})"))
        rows.append(picked)
    ncols = max(1, n_per_class)
    figure = new_figure(2.3 * ncols + 0.8, 2.5 * len(classes) + 0.4)
    axes = np.atleast_2d(figure.subplots(len(classes), ncols, squeeze=False))
    for r, (name, picked) in enumerate(zip(classes, rows)):
        for c in range(ncols):
            ax = axes[r, c]
            ax.set_xticks([])
            ax.set_yticks([])
            for spine in ax.spines.values():
                spine.set_visible(False)
            if c < len(picked):
                image, heat, label = picked[c]
                ax.imshow(overlay(image, heat))
                ax.set_title(label, fontsize="x-small")
            elif c == 0:
                ax.text(0.5, 0.5, f"no {'correct' if correct else 'wrong'}\npredictions",
                        ha="center", va="center", fontsize="small", transform=ax.transAxes)
        axes[r, 0].set_ylabel(name, fontsize="small")
    figure.suptitle(f"{'Correct' if correct else 'Wrong'} predictions, {method} of the predicted class")
    return finish_figure(figure, save)
