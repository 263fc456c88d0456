"""Exploratory data analysis: per-image statistics, outliers, burned-in text, and the figures of
notebooks 00–02 that :mod:`cxrlib.plots` does not already draw.

The central function is :func:`image_statistics`: it reads every image of a manifest once and
returns one row per image (size, intensity, and how much *text-like* content sits in the
border band compared with the centre). Everything else summarises or shows that table.

**Burned-in text, measured.** A pixel is *text-like* when it is bright (≥ ``level``) and much
brighter (≥ ``contrast`` grey levels) than its grey *opening* over a window about 3 % of the
shorter image side: a thin bright stroke on a darker background, as letters, markers and
dates are. Wide bright structures (the abdomen, the shoulders, overexposed films) survive the
opening and are not counted, which a plain brightness threshold cannot tell apart. The score
of an image is the share of text-like pixels in the border band (the outer ``band`` of every
side, minus a thin rim where many files carry a frame line) minus that share in the central
half. It is a crude detector: wires, ECG leads and thin rib ends near the edge count too.
"""

from __future__ import annotations

import logging
import os
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Sequence

import numpy as np
import pandas as pd
from matplotlib.figure import Figure
from scipy import ndimage

from cxrlib.data.images import read_image
from cxrlib.data.pixels import ImageReadError
from cxrlib.data.splits import sample_per_class
from cxrlib.explain.masks import BORDER_BAND, border_mask
from cxrlib.plots import finish_figure, image_grid, new_figure

log = logging.getLogger(__name__)

TEXT_LEVEL = 200        # a text-like pixel is at least this bright (0–255) ...
TEXT_CONTRAST = 80      # ... and this much brighter than its grey opening
STROKE = 0.03           # opening window, as a fraction of the shorter side
RIM = 0.02              # outermost fraction left out of the border band (frame lines)
BRIGHT_LEVEL = 240      # "very bright" for the plain brightness shares
DARK_LEVEL = 20         # "background" (outside the body, collimation) for the dark share
TEXT_FLAG = 0.001       # an image "has border text" when its score exceeds 0.1 % of the band

STAT_COLUMNS: tuple[str, ...] = (
    "path", "label", "width", "height", "mean", "std", "dark_share",
    "border_bright_share", "centre_bright_share", "border_text_share", "centre_text_share",
    "text_score",
)

PREPROCESS_MODES: dict[str, str] = {
    "densenet121": "torch: /255, minus the ImageNet mean, divided by its std (RGB)",
    "resnet50": "caffe: RGB→BGR, minus the ImageNet mean on 0–255, not scaled",
    "vgg16": "caffe: RGB→BGR, minus the ImageNet mean on 0–255, not scaled",
    "inceptionv3": "tf: scaled to [-1, 1]",
    "xception": "tf: scaled to [-1, 1]",
    "efficientnetv2b0": "none: the model rescales inside",
    "scratch": "/255 → [0, 1]",
}


# ------------------------------------------------------------------------------ one image


def region_masks(shape: tuple[int, int], band: float = BORDER_BAND,
                 rim: float = RIM) -> tuple[np.ndarray, np.ndarray]:
    """Boolean (border, centre) masks: the border band less a ``rim``
    (:func:`cxrlib.explain.masks.border_mask`), and the central half (rows and columns from 1/4
    to 3/4)."""
    border = border_mask(shape, band, rim)
    h, w = border.shape
    centre = np.zeros((h, w), bool)
    centre[h // 4:h - h // 4, w // 4:w - w // 4] = True
    return border, centre


def text_like_pixels(image: np.ndarray, level: int = TEXT_LEVEL, contrast: int = TEXT_CONTRAST,
                     stroke: float = STROKE) -> np.ndarray:
    """Boolean mask of thin, bright strokes (letters, markers) in a uint8 grayscale image."""
    image = np.asarray(image)
    if image.ndim != 2:
        raise ValueError(f"expected a 2-D grayscale image, got shape {image.shape}")
    k = max(3, round(stroke * min(image.shape)))
    return (image >= level) & (ndimage.white_tophat(image, size=(k, k)) >= contrast)


def border_text_score(image: np.ndarray, band: float = BORDER_BAND, **options) -> float:
    """Share of text-like pixels in the border band minus their share in the centre.

    About 0 for a clean film; a letter or marker in a corner makes it positive. ``options``
    go to :func:`text_like_pixels`.
    """
    text = text_like_pixels(image, **options)
    border, centre = region_masks(text.shape, band)
    return float(text[border].mean() - text[centre].mean())


def image_features(image: np.ndarray, band: float = BORDER_BAND) -> dict[str, float | int]:
    """The numbers :func:`image_statistics` records for one uint8 grayscale image."""
    image = np.asarray(image)
    border, centre = region_masks(image.shape, band)
    bright = image >= BRIGHT_LEVEL
    text = text_like_pixels(image)
    return {
        "width": int(image.shape[1]), "height": int(image.shape[0]),
        "mean": float(image.mean()), "std": float(image.std()),
        "dark_share": float((image <= DARK_LEVEL).mean()),
        "border_bright_share": float(bright[border].mean()),
        "centre_bright_share": float(bright[centre].mean()),
        "border_text_share": float(text[border].mean()),
        "centre_text_share": float(text[centre].mean()),
        "text_score": float(text[border].mean() - text[centre].mean()),
    }


# ------------------------------------------------------------------------------- manifests


def _read_or_none(path: str, skipped: list[dict]) -> np.ndarray | None:
    """Decode one file; log and record it in ``skipped`` when it cannot be read."""
    try:
        return read_image(path)
    except (ImageReadError, OSError, ValueError) as error:
        log.warning("Skipping %s: %s", path, error)
        skipped.append({"path": str(path), "error": str(error)})
        return None


def image_statistics(manifest: pd.DataFrame, sample: int | None = None, seed: int = 0,
                     band: float = BORDER_BAND, progress: bool = True, workers: int | None = None
                     ) -> pd.DataFrame:
    """One row per image with the columns of :data:`STAT_COLUMNS` (plus ``source`` if known).

    Every file is read once with :func:`cxrlib.data.images.read_image`; unreadable files are
    skipped with a warning and listed in ``result.attrs["skipped"]``. ``sample`` limits the
    work to that many random images per class (None: all). Shares are fractions (0–1).
    """
    rows = manifest if sample is None else sample_per_class(manifest, sample, seed, warn=False)
    paths = rows["path"].astype(str).tolist()
    skipped: list[dict] = []

    def measure(path: str) -> dict | None:
        image = _read_or_none(path, skipped)
        return None if image is None else image_features(image, band)

    workers = workers or min(4, os.cpu_count() or 1)
    with ThreadPoolExecutor(max_workers=workers) as pool:
        results = pool.map(measure, paths)
        if progress:
            from tqdm.auto import tqdm

            results = tqdm(results, total=len(paths), desc="measuring images", unit="img")
        features = list(results)
    records = []
    for (_, row), feature in zip(rows.iterrows(), features):
        if feature is not None:
            extra = {"source": row["source"]} if "source" in rows else {}
            records.append({"path": row["path"], "label": row["label"], **feature, **extra})
    columns = list(STAT_COLUMNS) + (["source"] if "source" in rows else [])
    stats = pd.DataFrame(records, columns=columns)
    stats.attrs["skipped"] = skipped
    return stats


def class_summary(stats: pd.DataFrame) -> pd.DataFrame:
    """Per class: image count, median size, mean intensity and contrast, shares (in %), and the
    percentage of images whose border text score exceeds :data:`TEXT_FLAG`."""
    grouped = stats.groupby("label")
    table = pd.DataFrame({
        "images": grouped.size(),
        "median width": grouped["width"].median(),
        "median height": grouped["height"].median(),
        "mean intensity": grouped["mean"].mean(),
        "contrast (std)": grouped["std"].mean(),
        "dark %": 100 * grouped["dark_share"].mean(),
        "border bright %": 100 * grouped["border_bright_share"].mean(),
        "centre bright %": 100 * grouped["centre_bright_share"].mean(),
        "border text %": 100 * grouped["border_text_share"].mean(),
        "centre text %": 100 * grouped["centre_text_share"].mean(),
        "with border text %": 100 * grouped["text_score"].apply(lambda s: (s > TEXT_FLAG).mean()),
    })
    return table.round(2)


def brightness_outliers(stats: pd.DataFrame, z: float = 3.0, column: str = "mean") -> pd.DataFrame:
    """Images whose ``column`` is more than ``z`` robust standard deviations from their class's.

    The robust z-score is (x − class median) / (1.4826 · class MAD), so the outliers do not
    hide themselves by inflating the spread; a class with MAD 0 falls back to its std.
    Returns the outlying rows with a ``z`` column, the most extreme first.
    """
    from scipy.stats import median_abs_deviation

    def robust_z(values: pd.Series) -> pd.Series:
        median = values.median()
        spread = median_abs_deviation(values, scale="normal")
        if not spread > 0:
            spread = values.std(ddof=0)
        return (values - median) / spread if spread > 0 else values * 0.0

    scores = stats.groupby("label", group_keys=False)[column].apply(robust_z)
    out = stats.assign(z=scores.reindex(stats.index))
    out = out[out["z"].abs() > z]
    return out.reindex(out["z"].abs().sort_values(ascending=False).index)


def images_by_class(manifest: pd.DataFrame, n: int, seed: int = 0) -> dict[str, list[np.ndarray]]:
    """Up to ``n`` decoded images per class (unreadable files skipped with a warning)."""
    skipped: list[dict] = []
    out: dict[str, list[np.ndarray]] = {}
    for label, group in sample_per_class(manifest, n, seed, warn=False).groupby("label", sort=False):
        images = [_read_or_none(p, skipped) for p in group["path"]]
        out[str(label)] = [image for image in images if image is not None]
    return out


DUPLICATE_SECTIONS: tuple[str, ...] = ("all", "cross_split_duplicates", "cross_label_duplicates")


def duplicate_pairs(report: dict, section: str = "all") -> pd.DataFrame:
    """Duplicates of a :func:`cxrlib.data.quality.check_manifest` report, one row per pair:
    ``kind`` (exact/near), ``distance`` (dHash bits; 0 if exact), ``similarity`` (thumbnail
    correlation; 1.0 if exact), ``a``, ``b``.

    The report's near pairs are already confirmed by thumbnail correlation (the hash
    candidates it rejected are only counted, in ``near_candidates_rejected``).
    ``section="all"`` takes every exact group and near pair; ``"cross_split_duplicates"`` or
    ``"cross_label_duplicates"`` only those that cross splits or labels. An exact group of
    more than two files gives one pair per extra file.
    """
    if section not in DUPLICATE_SECTIONS:
        raise ValueError(f"section must be one of {DUPLICATE_SECTIONS}, not {section!r}")
    if section == "all":
        entries = [{"kind": "exact", "paths": g} for g in report.get("exact_duplicates", [])]
        entries += [{"kind": "near", "paths": [p["a"], p["b"]], "distance": p["distance"],
                     "similarity": p.get("similarity")}
                    for p in report.get("near_duplicates", [])]
    else:
        entries = report.get(section, [])
    rows = [{"kind": e["kind"], "distance": int(e.get("distance", 0)),
             "similarity": 1.0 if e["kind"] == "exact" else _float_or_nan(e.get("similarity")),
             "a": e["paths"][0], "b": other} for e in entries for other in e["paths"][1:]]
    return pd.DataFrame(rows, columns=["kind", "distance", "similarity", "a", "b"])


def _float_or_nan(value: float | None) -> float:
    """``value`` as float, NaN when absent."""
    return float("nan") if value is None else float(value)


def source_table(manifest: pd.DataFrame) -> pd.DataFrame | None:
    """Images per class (rows) and source (columns: the web host of the source URL), or None
    when the manifest names no sources (the v4 metadata sheets give them)."""
    if "source" not in manifest or (manifest["source"].astype(str) == "").all():
        return None
    host = manifest["source"].astype(str).str.replace(r"^\w+://(www\.)?", "", regex=True)
    host = host.str.split("/").str[0].replace("", "unknown")
    return pd.crosstab(manifest["label"], host)


def mask_overlay(image: np.ndarray, mask: np.ndarray, color: tuple[int, int, int] = (255, 60, 0),
                 alpha: float = 0.45) -> np.ndarray:
    """An RGB uint8 copy of a grayscale image with ``mask`` (nonzero = on) tinted in ``color``."""
    image = np.asarray(image)
    if image.shape[:2] != np.asarray(mask).shape[:2]:
        raise ValueError(f"image {image.shape} and mask {np.asarray(mask).shape} differ in size")
    rgb = np.repeat(image[..., None], 3, axis=-1).astype(np.float32)
    on = np.asarray(mask) > 0
    rgb[on] = (1 - alpha) * rgb[on] + alpha * np.asarray(color, np.float32)
    return np.clip(rgb + 0.5, 0, 255).astype(np.uint8)


def crop_box_overlay(image: np.ndarray, reference: tuple[int, int],
                     color: tuple[int, int, int] = (255, 200, 0)) -> np.ndarray:
    """An RGB copy of ``image`` with the rectangle that :func:`cxrlib.data.prepare.border_crop`
    keeps drawn on it."""
    from cxrlib.data.prepare import border_crop_box

    h, w = image.shape[:2]
    top, left, kh, kw = border_crop_box(h, w, reference)
    line = max(1, round(0.008 * min(h, w)))
    rgb = np.repeat(np.asarray(image)[..., None], 3, axis=-1).copy()
    box = np.zeros((h, w), bool)
    box[top:top + kh, left:left + kw] = True
    box[top + line:top + kh - line, left + line:left + kw - line] = False
    rgb[box] = color
    return rgb


# --------------------------------------------------------------------------------- figures


def plot_statistic_by_class(frames: pd.DataFrame | dict[str, pd.DataFrame], column: str,
                            title: str = "", log_scale: bool = False,
                            save: str | os.PathLike | None = None) -> Figure:
    """Box plots of one :func:`image_statistics` column per class; given a dict of frames
    (e.g. ``{"default": a, "shortcut": b}``) the datasets sit side by side in each class."""
    import seaborn as sns

    frames = {"": frames} if isinstance(frames, pd.DataFrame) else frames
    data = pd.concat([f[["label", column]].assign(dataset=name) for name, f in frames.items()])
    figure = new_figure(2 + 1.6 * data["label"].nunique(), 3.8)
    ax = figure.subplots()
    hue = "dataset" if len(frames) > 1 else None
    sns.boxplot(data=data, x="label", y=column, hue=hue, ax=ax, fliersize=2, linewidth=1)
    if log_scale:
        ax.set_yscale("symlog", linthresh=1e-4)
        ax.set_ylim(bottom=min(0.0, float(data[column].min())))
    ax.set(xlabel="", title=title or column)
    ax.grid(axis="y", alpha=0.3)
    return finish_figure(figure, save)


def equalization_figure(image: np.ndarray, methods: Sequence[str | None] = (None, "hist", "clahe"),
                        save: str | os.PathLike | None = None) -> Figure:
    """The same image under each equalisation method (top) with its pixel histogram (bottom)."""
    from cxrlib.data.prepare import equalize

    figure = new_figure(3.2 * len(methods), 5.6)
    axes = figure.subplots(2, len(methods), squeeze=False, height_ratios=[3, 1.4])
    for column, method in enumerate(methods):
        out = equalize(image, method)
        axes[0, column].imshow(out, cmap="gray", vmin=0, vmax=255)
        axes[0, column].set_title(method or "original", fontsize="small")
        axes[0, column].axis("off")
        axes[1, column].hist(out.ravel(), bins=64, range=(0, 255), color="steelblue")
        axes[1, column].set(xlabel="pixel value", yticks=[])
    return finish_figure(figure, save)


def value_ranges(manifest: pd.DataFrame, classes: Sequence[str], image_size: int,
                 backbones: Sequence[str], n: int = 32, seed: int = 0) -> pd.DataFrame:
    """What each backbone's ``preprocess_input`` makes of the same images: one row per
    backbone with min, max, mean, std and the mean of each input channel, measured on up to
    ``n`` images through :func:`cxrlib.data.pipeline.load_arrays` (``preprocess=True``)."""
    from cxrlib.data.pipeline import load_arrays
    from cxrlib.data.prepare import Prep

    rows = manifest.sample(n=min(n, len(manifest)), random_state=seed)
    table = []
    for backbone in backbones:
        x, _ = load_arrays(rows, classes, Prep(image_size, backbone=backbone), preprocess=True)
        channels = x.reshape(-1, x.shape[-1]).mean(axis=0)
        table.append({"backbone": backbone, "preprocess_input": PREPROCESS_MODES.get(backbone, ""),
                      "min": float(x.min()), "max": float(x.max()), "mean": float(x.mean()),
                      "std": float(x.std()),
                      "channel means": ", ".join(f"{c:.2f}" for c in channels)})
    return pd.DataFrame(table).set_index("backbone").round(3)


def duplicate_gallery(pairs: pd.DataFrame, n: int = 4,
                      save: str | os.PathLike | None = None) -> Figure:
    """The first ``n`` pairs of :func:`duplicate_pairs` side by side, two pairs per row; the
    titles give the kind, the hash distance and the thumbnail correlation r (when known)."""
    if pairs.empty:
        raise ValueError("No duplicate pairs to show.")
    shown = pairs.head(n)
    images, titles = [], []
    for row in shown.itertuples(index=False):
        for side, path in (("a", row.a), ("b", row.b)):
            images.append(read_image(path))
            name = f"{Path(path).parent.name}/{Path(path).name}"
            similarity = getattr(row, "similarity", None)
            known = similarity is not None and not pd.isna(similarity)
            detail = f", r = {similarity:.3f}" if known else ""
            titles.append(f"{row.kind} ({row.distance} bits{detail}) {side}\n{name}")
    return image_grid(images, titles=titles, ncols=4, save=save)


def augmented_copies(image: np.ndarray, augment, n: int = 8, seed: int = 0) -> np.ndarray:
    """``n`` random augmentations of one uint8 grayscale image, as the training pipeline makes
    them (:func:`cxrlib.data.augment.augment_batch`): uint8 (n, H, W)."""
    from cxrlib.data.augment import augment_batch

    batch = np.repeat(np.asarray(image, np.float32)[None, ..., None], n, axis=0)
    x = augment_batch(batch, augment, seed)
    return np.clip(np.asarray(x)[..., 0] + 0.5, 0, 255).astype(np.uint8)


def augmentation_gallery(image: np.ndarray, augment, n: int = 7, seed: int = 0, ncols: int = 4,
                         save: str | os.PathLike | None = None) -> Figure:
    """The original image followed by ``n`` augmented copies (see :func:`augmented_copies`)."""
    copies = list(augmented_copies(image, augment, n, seed))
    titles = ["original"] + [f"augmented {i + 1}" for i in range(n)]
    return image_grid([np.asarray(image)] + copies, titles=titles, ncols=ncols, save=save)
