"""Plots people would rather look at than read: curves, confusion matrices, ROC, galleries.

Every function builds and returns a matplotlib ``Figure`` and never calls ``plt.show()``:
a script or the report saves it with ``save=path`` (PNG, parent folders created), and a
notebook shows it when it is the last value of a cell (or with ``display(figure)``).

Each figure is handed back already *closed* in pyplot's sense: pyplot no longer tracks it,
so a loop that saves hundreds of figures does not accumulate them in memory, and a notebook
shows a returned figure once rather than twice. The backend is never set here; headless
machines fall back to Agg by themselves.
"""

from __future__ import annotations

import logging
import math
import os
from pathlib import Path
from typing import Sequence

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import seaborn as sns
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

log = logging.getLogger(__name__)

DPI = 110


def save_figure(figure: Figure, path: str | os.PathLike) -> Path:
    """Write figure as a PNG at path (parent folders created); return the path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=DPI, bbox_inches="tight")
    return path


def new_figure(width: float, height: float) -> Figure:
    """An empty figure with constrained layout, already released by pyplot (see above)."""
    figure = plt.figure(figsize=(width, height), layout="constrained")
    plt.close(figure)
    return figure


def finish_figure(figure: Figure, save: str | os.PathLike | None) -> Figure:
    """Save the figure when asked; return it."""
    if save is not None:
        save_figure(figure, save)
    return figure


def plot_history(history: dict[str, list[float]], title: str = "",
                 save: str | os.PathLike | None = None) -> Figure:
    """Loss and accuracy per epoch, training against validation, side by side.

    A validation curve that turns up while the training curve keeps falling is the picture
    of overfitting; two curves that never fall are the picture of a learning rate problem.
    """
    figure = new_figure(10, 3.8)
    axes = figure.subplots(1, 2)
    for ax, metric in zip(axes, ("loss", "accuracy")):
        series = ((metric, "training", "-o"), (f"val_{metric}", "validation", "-s"))
        for key, label, style in series:
            values = history.get(key)
            if not values:
                continue
            y = np.array([np.nan if v is None else v for v in values], dtype=float)
            ax.plot(np.arange(1, len(y) + 1), y, style, markersize=3, label=label)
        ax.set(xlabel="epoch", ylabel=metric, title=metric.capitalize())
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.grid(alpha=0.3)
        if ax.get_legend_handles_labels()[0]:
            ax.legend()
    if title:
        figure.suptitle(title)
    return finish_figure(figure, save)


def plot_confusion(matrix: Sequence[Sequence[int]] | np.ndarray, classes: Sequence[str],
                   normalize: bool = True, title: str = "",
                   save: str | os.PathLike | None = None) -> Figure:
    """Confusion matrix heat map (rows = true, columns = predicted), counts annotated.

    With ``normalize`` the colours are row fractions (each row sums to 100 %, i.e. the
    diagonal is every class's recall) and each cell shows its count and row percentage,
    so a small class's errors are as visible as a large one's.
    """
    counts = np.asarray(matrix, dtype=np.int64)
    rows = counts.sum(axis=1, keepdims=True)
    fractions = np.divide(counts, rows, out=np.zeros(counts.shape), where=rows > 0)
    if normalize:
        labels = np.array([[f"{c}\n{f:.0%}" for c, f in zip(cr, fr)]
                           for cr, fr in zip(counts, fractions)])
    else:
        labels = counts.astype(str)
    size = 1.2 + 0.9 * len(classes)
    figure = new_figure(size + 1.2, size)
    ax = figure.subplots()
    sns.heatmap(fractions if normalize else counts, annot=labels, fmt="", cmap="Blues",
                vmin=0, vmax=1 if normalize else None, square=True, cbar=True,
                xticklabels=list(classes), yticklabels=list(classes), ax=ax,
                linewidths=0.5, linecolor="white")
    ax.set(xlabel="predicted", ylabel="true", title=title or "Confusion matrix")
    ax.tick_params(axis="y", labelrotation=0)
    return finish_figure(figure, save)


def plot_roc(curves: dict[str, dict], operating_point: dict | None = None, title: str = "",
             save: str | os.PathLike | None = None) -> Figure:
    """ROC curves ({name: {"fpr", "tpr", "auc"}}, as a run record's ``test.roc`` holds them), AUC
    in the legend.

    ``operating_point`` (from :func:`cxrlib.runs.metrics.threshold_for_sensitivity`) is marked
    at (1 - specificity, sensitivity) on the positive class's curve.
    """
    figure = new_figure(5.2, 5)
    ax = figure.subplots()
    for name, curve in curves.items():
        auc = curve.get("auc")
        label = f"{name} (AUC {auc:.3f})" if auc is not None else str(name)
        ax.plot(curve["fpr"], curve["tpr"], lw=1.8, label=label)
    ax.plot([0, 1], [0, 1], ls="--", color="grey", lw=1, label="chance")
    if operating_point and operating_point.get("sensitivity") is not None \
            and operating_point.get("specificity") is not None:
        x, y = 1 - operating_point["specificity"], operating_point["sensitivity"]
        ax.plot([x], [y], "o", color="crimson", markersize=8,
                label=f"threshold {operating_point['threshold']:.3f}: "
                      f"sens {y:.1%}, spec {1 - x:.1%}")
    ax.set(xlim=(-0.01, 1.01), ylim=(-0.01, 1.01), xlabel="false positive rate (1 - specificity)",
           ylabel="true positive rate (sensitivity)", title=title or "ROC")
    ax.grid(alpha=0.3)
    ax.legend(loc="lower right", fontsize="small")
    return finish_figure(figure, save)


def plot_comparison(table: pd.DataFrame, metric: str = "Test Accuracy",
                    ci: dict[str, tuple[float, float]] | None = None,
                    save: str | os.PathLike | None = None, chance: float | None = None) -> Figure:
    """Horizontal bars of metric per model (column ``Model``), best at the top.

    ``ci`` maps a model name to its (low, high) interval, drawn as an error bar; ``chance``
    draws a dashed vertical line (e.g. 1 / number of classes for accuracy).
    """
    frame = table[["Model", metric]].dropna().sort_values(metric)
    figure = new_figure(7, 1.2 + 0.45 * max(len(frame), 1))
    ax = figure.subplots()
    values = frame[metric].to_numpy(dtype=float)
    positions = np.arange(len(values))
    ax.barh(positions, values, color="steelblue")
    ax.set_yticks(positions, frame["Model"].astype(str).tolist())
    if ci:
        for position, (model, value) in enumerate(zip(frame["Model"], values)):
            interval = ci.get(model)
            if interval is not None and None not in interval:
                low, high = interval
                ax.errorbar(value, position, xerr=[[max(value - low, 0.0)], [max(high - value, 0.0)]],
                            fmt="none", ecolor="black", capsize=3, lw=1)
    for position, (model, value) in enumerate(zip(frame["Model"], values)):
        interval = (ci or {}).get(model)
        right = interval[1] if interval is not None and None not in interval else value
        ax.text(right, position, f"  {value:.3f}", va="center", fontsize="small")
    if chance is not None:
        ax.axvline(chance, ls="--", color="grey", lw=1, label="chance")
        ax.legend(loc="lower right", fontsize="small")
    if len(values) and np.nanmax(values) <= 1:
        ax.set_xlim(0, 1.12)
    ax.set(xlabel=metric, title=f"{metric} per model")
    ax.grid(axis="x", alpha=0.3)
    return finish_figure(figure, save)


def image_grid(images: Sequence[np.ndarray], titles: Sequence[str] | None = None, ncols: int = 6,
               cmap: str = "gray", save: str | os.PathLike | None = None) -> Figure:
    """Images in a grid (samples, galleries of errors), one optional title each."""
    n = len(images)
    ncols = max(1, min(ncols, n))
    nrows = max(1, math.ceil(n / ncols))
    figure = new_figure(2.2 * ncols, 2.4 * nrows)
    axes = np.atleast_1d(figure.subplots(nrows, ncols)).ravel()
    for i, ax in enumerate(axes):
        ax.axis("off")
        if i >= n:
            continue
        image = np.asarray(images[i])
        if image.ndim == 3 and image.shape[-1] == 1:
            image = image[..., 0]
        # uint8 on its full 0-255 scale, so brightness can be compared between images
        limits = {"vmin": 0, "vmax": 255} if image.dtype == np.uint8 else {}
        ax.imshow(image, cmap=cmap if image.ndim == 2 else None, **limits)
        if titles is not None and i < len(titles):
            ax.set_title(str(titles[i]), fontsize="small")
    return finish_figure(figure, save)


def plot_class_counts(labels: Sequence[str], title: str = "",
                      save: str | os.PathLike | None = None) -> Figure:
    """Bar chart of how many images each class has (the first look at imbalance)."""
    counts = pd.Series(list(labels), dtype=str).value_counts().sort_index()
    figure = new_figure(1.5 + 0.8 * max(len(counts), 1), 3.5)
    ax = figure.subplots()
    bars = ax.bar(counts.index, counts.to_numpy(), color="steelblue")
    ax.bar_label(bars, fontsize="small")
    ax.set(ylabel="images", title=title or "Images per class")
    ax.tick_params(axis="x", labelrotation=30 if len(counts) > 4 else 0)
    return finish_figure(figure, save)


def plot_size_histograms(widths: Sequence[int], heights: Sequence[int],
                         save: str | os.PathLike | None = None) -> Figure:
    """Histograms of image widths and heights: how much resizing will change the images."""
    figure = new_figure(9, 3.2)
    axes = figure.subplots(1, 2)
    for ax, values, name in zip(axes, (widths, heights), ("width", "height")):
        ax.hist(np.asarray(values, dtype=float), bins=30, color="steelblue")
        ax.set(xlabel=f"{name} (pixels)", ylabel="images", title=f"Image {name}s")
    return finish_figure(figure, save)


def plot_intensity_histograms(images_by_class: dict[str, list[np.ndarray]],
                              save: str | os.PathLike | None = None) -> Figure:
    """Per class: the distribution of mean image intensity, and the pixel histogram.

    Classes that differ clearly in mean brightness can be told apart without looking at
    the lungs at all: a warning sign of a shortcut (different hospitals, scanners, export
    settings) that a model will happily learn.
    """
    figure = new_figure(10, 3.6)
    means_ax, pixels_ax = figure.subplots(1, 2)
    for name, images in images_by_class.items():
        if not images:
            continue
        means = [float(np.mean(image)) for image in images]
        if len(set(means)) > 1:
            sns.kdeplot(means, ax=means_ax, label=str(name), fill=True, alpha=0.2)
        else:  # a single value has no density
            means_ax.axvline(means[0], label=str(name))
        # one histogram per image, summed: never holds every pixel of a class at once
        edges = np.linspace(0, max(255.0, max(float(np.max(image)) for image in images)), 65)
        counts = sum(np.histogram(image, bins=edges)[0] for image in images)
        density = counts / (counts.sum() * np.diff(edges))
        pixels_ax.stairs(density, edges, lw=1.5, label=str(name))
    means_ax.set(xlabel="mean intensity per image", ylabel="density", title="Mean intensity")
    pixels_ax.set(xlabel="pixel value", ylabel="density", title="Pixel histogram")
    for ax in (means_ax, pixels_ax):
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize="small")
    return finish_figure(figure, save)


def plot_boxes(image: np.ndarray, boxes: Sequence[dict] | str | None, title: str = "",
               save: str | os.PathLike | None = None, color: str = "orangered",
               label: str = "opacity") -> Figure:
    """An image with its bounding boxes drawn on it (SIIM's opacity boxes, say).

    ``boxes`` is a list of ``{"x", "y", "width", "height"}`` dicts in the image's own pixel
    coordinates, or that list as JSON (the manifest's ``boxes`` column); ``None`` or an
    empty list draws the image alone. Each box is numbered, and the title says how many.
    """
    import json

    from matplotlib.patches import Rectangle

    if isinstance(boxes, str):
        boxes = json.loads(boxes) if boxes.strip() else []
    boxes = list(boxes or [])
    image = np.asarray(image)
    if image.ndim == 3 and image.shape[-1] == 1:
        image = image[..., 0]
    height, width = image.shape[:2]
    figure = new_figure(4.2 * width / max(height, width) + 0.4, 4.2 * height / max(height, width) + 0.6)
    ax = figure.subplots()
    limits = {"vmin": 0, "vmax": 255} if image.dtype == np.uint8 else {}
    ax.imshow(image, cmap="gray" if image.ndim == 2 else None, **limits)
    line = max(1.0, 2.0 * max(height, width) / 1000)
    for number, box in enumerate(boxes, start=1):
        ax.add_patch(Rectangle((box["x"], box["y"]), box["width"], box["height"], fill=False,
                               edgecolor=color, linewidth=line))
        ax.text(box["x"], box["y"], f" {label} {number}", color="white", fontsize="x-small",
                va="bottom", bbox={"facecolor": color, "edgecolor": "none", "pad": 1, "alpha": 0.8})
    ax.set_xlim(-0.5, width - 0.5)
    ax.set_ylim(height - 0.5, -0.5)
    ax.axis("off")
    count = f"{len(boxes)} box{'es' if len(boxes) != 1 else ''}"
    ax.set_title(f"{title} ({count})" if title else count, fontsize="small")
    return finish_figure(figure, save)
