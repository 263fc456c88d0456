"""The steps of notebook ``05`` (heat maps) that are longer than a notebook cell.

:mod:`cxrlib.explain` computes heat maps and scores them; this module runs those pieces the
way the lesson needs them:

- :func:`method_options`, :func:`explain_methods`, :func:`overlay_grid`: every method on the
  same images and classes, timed, shown side by side;
- :func:`pick_examples`, :func:`lesion_rows`: which test images to show or to score;
- :func:`lesion_table`: per method, the energy on the ground-truth lesions and the pointing
  game against a random map (data with lesion masks: the synthetic default);
- :func:`region_scores`, :func:`region_table`, :func:`class_regions`: border band against
  lung share, per method and per class (any data; the real data's lung masks when it has
  them, else the central region);
- :func:`plot_method_scores`, :func:`plot_class_regions`: those tables as bar charts;
- :func:`shortcut_table`, :func:`plot_shortcut`, :func:`shortcut_heatmaps`: the result of
  :func:`cxrlib.course.shortcut.shortcut_experiment` as a table, a chart and heat maps;
- The conclusions: ``cxrlib.course.conclusions`` (a markdown template filled from these results).
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from cxrlib.data.images import read_image
from cxrlib.data.pipeline import model_inputs
from cxrlib.data.prepare import Prep
from cxrlib.data.splits import sample_per_class
from cxrlib.explain.figures import overlay
from cxrlib.explain.maps import heatmap, random_maps
from cxrlib.explain.masks import central_mask, prepare_mask
from cxrlib.explain.measures import border_share, lesion_scores, lung_share, summarise_scores
from cxrlib.runs.evaluate import load_run, predict

# --------------------------------------------------------------------------- methods side by side


def method_options(max_n: int = 10, smooth_samples: int = 20, patch: int = 15,
                   stride: int = 10) -> dict[str, dict[str, Any]]:
    """The options of each heat-map method, in the form :func:`explain_methods`,
    :func:`lesion_table` and :func:`region_table` take.

    No ``batch_size``: :func:`cxrlib.explain.measures.lesion_scores` would take it as its own (images
    per batch) instead of passing it on to occlusion; occlusion keeps its default (64).
    """
    return {"fastscorecam": {"max_N": int(max_n)},
            "smoothgrad": {"smooth_samples": int(smooth_samples)},
            "occlusion": {"patch": int(patch), "stride": int(stride)}}


def explain_methods(model, x: np.ndarray, methods: Sequence[str],
                    class_index: int | Sequence[int] | None = None,
                    options: dict[str, dict[str, Any]] | None = None, layer: str | None = None
                    ) -> tuple[dict[str, np.ndarray], dict[str, float]]:
    """Heat maps of every method for the same inputs and classes, and each method's wall time (s).

    ``class_index`` None explains each image's predicted class, decided once so that every
    method explains the same class. ``options`` maps a method to its keyword options (see
    :func:`method_options`).
    """
    options = options or {}
    if class_index is None:
        class_index = [int(i) for i in predict(model, x).argmax(axis=1)]
    maps: dict[str, np.ndarray] = {}
    seconds: dict[str, float] = {}
    for method in methods:
        started = time.perf_counter()
        maps[method] = heatmap(model, x, method, class_index, layer, **options.get(method, {}))
        seconds[method] = time.perf_counter() - started
    return maps, seconds


def overlay_grid(images: Sequence[np.ndarray], maps_by_method: dict[str, np.ndarray],
                 row_labels: Sequence[str] | None = None, title: str = "", alpha: float = 0.45,
                 outlines: Sequence[np.ndarray] | None = None,
                 save: str | os.PathLike | None = None) -> Figure:
    """One row per image: the radiograph, then each method's heat map over it (one column each).

    ``outlines`` (one bool mask per image, e.g. the lesion from
    :func:`cxrlib.explain.masks.prepare_mask`) are drawn as a white contour on every tile.
    """
    from cxrlib.plots import finish_figure, new_figure

    methods = list(maps_by_method)
    ncols = len(methods) + 1
    figure = new_figure(1.9 * ncols + 0.6, 2.0 * len(images) + (0.4 if title else 0.1))
    axes = np.atleast_2d(figure.subplots(len(images), ncols, squeeze=False))
    for row, image in enumerate(images):
        gray = np.asarray(image)
        axes[row, 0].imshow(gray[..., 0] if gray.ndim == 3 else gray, cmap="gray", vmin=0, vmax=255)
        for col, method in enumerate(methods, start=1):
            axes[row, col].imshow(overlay(gray, maps_by_method[method][row], alpha=alpha))
        for ax in axes[row]:
            ax.set_xticks([])
            ax.set_yticks([])
            if outlines is not None and np.asarray(outlines[row]).any():
                ax.contour(np.asarray(outlines[row], dtype=float), levels=[0.5], colors="white",
                           linewidths=0.8)
        if row_labels is not None:
            axes[row, 0].set_ylabel(row_labels[row], fontsize="x-small")
    for col, name in enumerate(["radiograph", *methods]):
        axes[0, col].set_title(name, fontsize="small")
    if title:
        figure.suptitle(title)
    return finish_figure(figure, save)


# --------------------------------------------------------------------------- choosing images


def pick_examples(manifest: pd.DataFrame, classes: Sequence[str], n: int, split: str = "test",
                  seed: int = 0) -> pd.DataFrame:
    """``n`` rows of one split, taking the classes in turn (a random image of each; a class
    that runs out leaves its turn to the others)."""
    frame = manifest[manifest["split"] == split] if "split" in manifest else manifest
    drawn = sample_per_class(frame, n, seed, classes, warn=False)
    turn = drawn.groupby("label", sort=False).cumcount()
    return drawn.iloc[np.argsort(turn.to_numpy(), kind="stable")[:n]].reset_index(drop=True)


def lesion_rows(manifest: pd.DataFrame, classes: Sequence[str], max_images: int | None = None,
                split: str | None = "test", seed: int = 0) -> pd.DataFrame:
    """The rows of ``split`` whose lesion mask is not empty (``mask_kind == "lesion"``).

    A Normal film of the synthetic set has a mask file too, an empty one: it is left out.
    ``max_images`` keeps a random sample of that many (None: all). Empty when the data have
    no lesion masks (the real data have lung masks, or none).
    """
    if "mask_kind" not in manifest or "mask_path" not in manifest:
        return manifest.iloc[:0]
    rows = manifest[(manifest["mask_kind"] == "lesion") & (manifest["mask_path"] != "")
                    & manifest["label"].isin(list(classes))]
    if split is not None and "split" in rows:
        rows = rows[rows["split"] == split]
    keep = []
    for index, mask_path in zip(rows.index, rows["mask_path"]):
        try:
            if read_image(mask_path).max() > 127:
                keep.append(index)
        except (OSError, ValueError):
            continue
    rows = rows.loc[keep]
    if max_images is not None and len(rows) > max_images:
        rows = rows.sample(int(max_images), random_state=seed).sort_index()
    return rows.reset_index(drop=True)


# --------------------------------------------------------------------------- measuring


def lesion_table(model, manifest: pd.DataFrame, classes: Sequence[str], prep: Prep,
                 methods: Sequence[str], options: dict[str, dict[str, Any]] | None = None,
                 layer: str | None = None, explain_class: str = "label", seed: int = 0) -> pd.DataFrame:
    """Per method, the means of :func:`cxrlib.explain.measures.lesion_scores` and its wall time.

    Index: method. Columns: ``n``, ``energy_inside`` (share of the map on the lesion),
    ``random_energy_inside`` (a smooth random map's), ``mask_share`` (the lesion's area),
    ``energy_ratio`` (method ÷ random), ``pointing_rate``, ``random_pointing_rate``,
    ``border_share`` and ``seconds``. Every method sees the same images and random maps.
    """
    options = options or {}
    rows = {}
    for method in methods:
        started = time.perf_counter()
        scores = lesion_scores(model, manifest, classes, prep, method, layer, explain_class,
                               seed=seed, **options.get(method, {}))
        rows[method] = {**summarise_scores(scores), "seconds": time.perf_counter() - started}
    columns = ["n", "energy_inside", "random_energy_inside", "mask_share", "energy_ratio",
               "pointing_rate", "random_pointing_rate", "border_share", "seconds"]
    return pd.DataFrame.from_dict(rows, orient="index").reindex(columns=columns).rename_axis("method")


def _lung_region(row: pd.Series, prep: Prep, shape: tuple[int, int]) -> tuple[np.ndarray, str]:
    """The row's lung mask as the model sees it when it has one, else the central region."""
    if row.get("mask_kind", "") == "lung" and row.get("mask_path", ""):
        try:
            mask = prepare_mask(row["mask_path"], prep, row["path"])
            if mask.any():
                return mask, "lung mask"
        except (OSError, ValueError):
            pass
    return central_mask(shape), "central region"


def region_scores(model, manifest: pd.DataFrame, classes: Sequence[str], prep: Prep,
                  method: str = "gradcam", layer: str | None = None, batch_size: int = 16,
                  seed: int = 0, **options: Any) -> pd.DataFrame:
    """Per image: the share of the predicted class's heat map in the border band and on the lungs.

    The lungs are the row's lung mask (``mask_kind == "lung"``, the real data) or else the
    central region (:func:`cxrlib.explain.masks.central_mask`). A smooth random map gets the same
    two scores (``random_border_share``, ``random_lung_share``): the baseline. Unreadable
    images are skipped. Columns: path, label, predicted, border_share, lung_share,
    random_border_share, random_lung_share, lung_region.
    """
    records = []
    for part_no, start in enumerate(range(0, len(manifest), batch_size)):
        inputs = model_inputs(manifest["path"].iloc[start:start + batch_size].tolist(), prep)
        if not inputs.kept:
            continue
        x = inputs.x
        predicted = predict(model, x).argmax(axis=1)
        heat = heatmap(model, x, method, [int(p) for p in predicted], layer, **options)
        noise = random_maps(len(x), x.shape[1:3], seed + part_no)
        for k, i in enumerate(inputs.kept):
            row = manifest.iloc[start + i]
            lungs, source = _lung_region(row, prep, heat.shape[1:])
            records.append({"path": row["path"], "label": row["label"],
                            "predicted": classes[int(predicted[k])],
                            "border_share": border_share(heat[k]),
                            "lung_share": lung_share(heat[k], lungs),
                            "random_border_share": border_share(noise[k]),
                            "random_lung_share": lung_share(noise[k], lungs),
                            "lung_region": source})
    columns = ["path", "label", "predicted", "border_share", "lung_share", "random_border_share",
               "random_lung_share", "lung_region"]
    return pd.DataFrame(records, columns=columns)


def region_table(model, manifest: pd.DataFrame, classes: Sequence[str], prep: Prep,
                 methods: Sequence[str], options: dict[str, dict[str, Any]] | None = None,
                 layer: str | None = None, seed: int = 0) -> pd.DataFrame:
    """Per method, the mean border and lung shares of :func:`region_scores`, with the random
    map's, and the wall time. Index: method; columns: n, border_share, random_border_share,
    lung_share, random_lung_share, seconds."""
    options = options or {}
    rows = {}
    for method in methods:
        started = time.perf_counter()
        scores = region_scores(model, manifest, classes, prep, method, layer, seed=seed,
                               **options.get(method, {}))
        rows[method] = {"n": len(scores),
                        **scores[["border_share", "random_border_share", "lung_share",
                                  "random_lung_share"]].mean().to_dict(),
                        "seconds": time.perf_counter() - started}
    columns = ["n", "border_share", "random_border_share", "lung_share", "random_lung_share", "seconds"]
    return pd.DataFrame.from_dict(rows, orient="index").reindex(columns=columns).rename_axis("method")


def class_regions(scores: pd.DataFrame, classes: Sequence[str] | None = None) -> pd.DataFrame:
    """Mean border and lung shares per true class from :func:`region_scores`, and a last row
    ``random map`` (the baseline over all images). Index: class; columns: n, border_share,
    lung_share."""
    order = list(classes) if classes is not None else sorted(scores["label"].unique())
    grouped = scores.groupby("label")[["border_share", "lung_share"]].mean().reindex(order)
    grouped.insert(0, "n", scores.groupby("label").size().reindex(order).fillna(0).astype(int))
    grouped.loc["random map"] = [len(scores), scores["random_border_share"].mean(),
                                 scores["random_lung_share"].mean()]
    grouped["n"] = grouped["n"].astype(int)
    return grouped.rename_axis("class")


# --------------------------------------------------------------------------- charts


def plot_method_scores(table: pd.DataFrame, title: str = "",
                       save: str | os.PathLike | None = None) -> Figure:
    """Two bar charts of a :func:`lesion_table` or :func:`region_table`, methods against the
    random map (dashed line).

    Lesion table: energy on the lesion (dotted: the lesion's area) and the pointing-game hit
    rate. Region table: border-band share and lung share.
    """
    from cxrlib.plots import finish_figure, new_figure

    if "energy_inside" in table:
        panels = [("energy_inside", "random_energy_inside", "share of the map on the lesion"),
                  ("pointing_rate", "random_pointing_rate", "pointing game: peak on the lesion")]
    else:
        panels = [("border_share", "random_border_share", "share of the map in the border band"),
                  ("lung_share", "random_lung_share", "share of the map on the lungs")]
    methods = list(table.index)
    figure = new_figure(0.9 * len(methods) * 2 + 2.5, 3.8)
    for ax, (column, baseline, label) in zip(figure.subplots(1, 2), panels):
        values = table[column].astype(float).to_numpy()
        bars = ax.bar(methods, values, color="steelblue")
        ax.bar_label(bars, labels=[f"{v:.2f}" if v == v else "—" for v in values], fontsize="x-small")
        ax.axhline(float(table[baseline].mean()), color="crimson", linestyle="--", label="random map")
        if column == "energy_inside":
            ax.axhline(float(table["mask_share"].mean()), color="grey", linestyle=":",
                       label="lesion area")
        ax.set_ylim(0, 1.05)
        ax.set_title(label, fontsize="small")
        ax.tick_params(axis="x", rotation=40, labelsize="small")
        ax.legend(fontsize="x-small", loc="upper right")
        ax.grid(axis="y", alpha=0.3)
    if title:
        figure.suptitle(title)
    return finish_figure(figure, save)


def plot_class_regions(per_class: pd.DataFrame, title: str = "",
                       save: str | os.PathLike | None = None) -> Figure:
    """Grouped bars of :func:`class_regions`: border and lung share per class; dashed lines for
    the random map."""
    from cxrlib.plots import finish_figure, new_figure

    rows = per_class.drop(index="random map", errors="ignore")
    figure = new_figure(1.4 * len(rows) + 2.5, 3.6)
    ax = figure.subplots()
    positions = np.arange(len(rows))
    for offset, column, colour in ((-0.2, "border_share", "darkorange"), (0.2, "lung_share", "seagreen")):
        values = rows[column].astype(float).to_numpy()
        bars = ax.bar(positions + offset, values, 0.4, color=colour, label=column.replace("_", " "))
        ax.bar_label(bars, labels=[f"{v:.2f}" for v in values], fontsize="x-small")
        if "random map" in per_class.index:
            ax.axhline(float(per_class.loc["random map", column]), color=colour, linestyle="--",
                       linewidth=1, label=f"{column.replace('_', ' ')}, random map")
    ax.set_xticks(positions, list(rows.index), fontsize="small")
    ax.set_ylim(0, 1.05)
    ax.set_ylabel("share of the heat map")
    ax.legend(fontsize="x-small", ncols=2, loc="upper left")
    ax.grid(axis="y", alpha=0.3)
    if title:
        ax.set_title(title)
    return finish_figure(figure, save)


# --------------------------------------------------------------------------- shortcut experiment


SHORTCUT_COLUMNS = {
    "accuracy_marked": "accuracy, marked films",
    "accuracy_marker_free": "accuracy, marker-free films",
    "marker_share_marked": "heat on the marker",
    "marker_area_share": "marker area",
    "border_share_marked": "border share, marked",
    "border_share_marker_free": "border share, marker-free",
    "lung_share_marked": "lung share, marked",
    "lung_share_marker_free": "lung share, marker-free",
    "marker_pixels_in_view": "marker in view",
    "n_marked": "marked test films",
}


def shortcut_table(result: dict) -> pd.DataFrame:
    """The numbers of :func:`cxrlib.course.shortcut.shortcut_experiment`, one row per model
    (``shortcut``, ``cropped``), with readable column names."""
    rows = {name: {label: result[name].get(key) for key, label in SHORTCUT_COLUMNS.items()}
            for name in ("shortcut", "cropped") if name in result}
    return pd.DataFrame.from_dict(rows, orient="index").rename_axis("model")


def plot_shortcut(result: dict, save: str | os.PathLike | None = None) -> Figure:
    """Left: each model's accuracy on marked and on marker-free films (dashed: chance).
    Right: where the shortcut model's heat map lies on marked films against marker-free ones."""
    from cxrlib.plots import finish_figure, new_figure

    figure = new_figure(10.5, 3.8)
    left, right = figure.subplots(1, 2)
    models = [m for m in ("shortcut", "cropped") if m in result]
    positions = np.arange(len(models))
    for offset, key, colour in ((-0.2, "accuracy_marked", "indianred"),
                                (0.2, "accuracy_marker_free", "steelblue")):
        values = [float(result[m][key]) for m in models]
        bars = left.bar(positions + offset, values, 0.4, color=colour, label=SHORTCUT_COLUMNS[key])
        left.bar_label(bars, labels=[f"{v:.2f}" for v in values], fontsize="x-small")
    left.axhline(1 / len(result["settings"]["classes"]), color="grey", linestyle="--", label="chance")
    left.set_xticks(positions, [f"{m} model" for m in models])
    left.set(ylim=(0, 1.1), ylabel="test accuracy", title="accuracy: the marker is the only difference")
    left.legend(fontsize="x-small", loc="lower right")
    shortcut = result.get("shortcut", {})
    pairs = [("border band", "border_share_marked", "border_share_marker_free"),
             ("lungs", "lung_share_marked", "lung_share_marker_free")]
    labels = [p[0] for p in pairs] + ["marker"]
    marked = [shortcut.get(p[1]) for p in pairs] + [shortcut.get("marker_share_marked")]
    other = [shortcut.get(p[2]) for p in pairs] + [shortcut.get("marker_area_share")]
    positions = np.arange(len(labels))
    for offset, values, colour, name in ((-0.2, marked, "indianred", "marked films"),
                                         (0.2, other, "steelblue", "marker-free films (marker: its area)")):
        numbers = [np.nan if v is None else float(v) for v in values]
        bars = right.bar(positions + offset, numbers, 0.4, color=colour, label=name)
        right.bar_label(bars, labels=[f"{v:.2f}" if v == v else "—" for v in numbers], fontsize="x-small")
    right.set_xticks(positions, labels)
    right.set(ylim=(0, 1.1), ylabel="share of the heat map",
              title=f"the shortcut model's {result['settings']['method']} for "
                    f"{result['settings']['shortcut_class']}")
    right.legend(fontsize="x-small", loc="upper right")
    for ax in (left, right):
        ax.grid(axis="y", alpha=0.3)
    return finish_figure(figure, save)


def shortcut_pairs(work_dir: str | os.PathLike, n: int = 2) -> list[tuple[str, str]]:
    """(marked film, the same film without the marker) for the first ``n`` test films that
    carry the shortcut marker, from a :func:`cxrlib.course.shortcut.shortcut_experiment` folder."""
    work = Path(work_dir)
    markers = pd.read_csv(work / "data_test_marked" / "markers.csv", keep_default_na=False)
    marked = markers[markers["shortcut"].astype(str).str.lower() == "true"]["file"].tolist()[:n]
    return [(str(work / "data_test_marked" / f), str(work / "data_test_marker_free" / f)) for f in marked]


def shortcut_heatmaps(work_dir: str | os.PathLike, shortcut_class: str = "COVID",
                      method: str = "gradcam", n: int = 2, save: str | os.PathLike | None = None,
                      **options: Any) -> Figure:
    """Heat maps of both models of a shortcut experiment on marked films and their marker-free twins.

    One row per film; columns: the shortcut model on the marked film and on its twin, then the
    cropped model on both (it sees the centre of the film only). Each tile explains
    ``shortcut_class`` and gives its probability.
    """
    from cxrlib.plots import finish_figure, new_figure

    work = Path(work_dir)
    pairs = shortcut_pairs(work, n)
    if not pairs:
        raise ValueError(f"No marked test films in {work}.")
    prepared = {}
    for name in ("shortcut", "cropped"):
        run = load_run(work / name)
        for version, side in (("marked", 0), ("marker-free", 1)):
            prepared[name, version] = run, model_inputs([pair[side] for pair in pairs], run.prep)
    shown = sorted(set.intersection(*(set(inputs.kept) for _, inputs in prepared.values())))
    if not shown:  # the unreadable films were logged with their reasons
        raise ValueError(f"No readable pair of a marked film and its twin in {work}.")
    columns = []
    for (name, version), (run, inputs) in prepared.items():
        rows = [inputs.kept.index(r) for r in shown]
        index = run.classes.index(shortcut_class)
        probability = predict(run.model, inputs.x[rows])[:, index]
        heat = heatmap(run.model, inputs.x[rows], method, index, **options)
        columns.append((f"{name} model,\n{version} film", inputs.images[rows], heat, probability))
    figure = new_figure(2.3 * len(columns) + 0.4, 2.5 * len(shown) + 0.5)
    axes = np.atleast_2d(figure.subplots(len(shown), len(columns), squeeze=False))
    for col, (label, images, heat, probability) in enumerate(columns):
        for row in range(len(shown)):
            ax = axes[row, col]
            ax.imshow(overlay(images[row], heat[row]))
            ax.set_xticks([])
            ax.set_yticks([])
            ax.set_xlabel(f"p({shortcut_class}) = {probability[row]:.2f}", fontsize="x-small")
            if row == 0:
                ax.set_title(label, fontsize="small")
    figure.suptitle(f"{method} for {shortcut_class}; the marker sits in the top-left corner")
    return finish_figure(figure, save)
