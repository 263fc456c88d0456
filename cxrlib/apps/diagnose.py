"""Batch diagnosis of a folder of radiographs (``cxr diagnose``).

Every image file under a folder goes through a trained model exactly as its run prepared
images (the ``prep`` in the run's ``record.json`` beside ``model.keras``). For each image
the output folder gets a PNG (the radiograph as the model saw it, the heat map of the
predicted class over it, the class probabilities) and ``summary.csv`` gets a row:

``file``, ``predicted``, ``p_<class>`` for every class, ``border_share`` (how much of the
heat map lies in the border band, where burned-in text lives: a high value deserves a
second look), ``figure``, and with a second-stage model ``stage2_predicted`` and
``p2_<class>``, then ``error``.

A second-stage model (``--stage2``) refines the images the first calls pneumonia (a class
whose name contains "pneumonia"): normal → pneumonia → bacterial or viral, as in the
pneumonia course. It uses its own recorded preparation.

A file that cannot be read (or whose figure name is too long for the file system) becomes a
row with its error, never a crash; the model runs on batches of images; ``summary.csv`` is
written atomically, so a crash never leaves half a file.
"""

from __future__ import annotations

import errno
import logging
import os
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import pandas as pd

from cxrlib.data.images import is_image_path
from cxrlib.data.pipeline import model_inputs
from cxrlib.errors import InputError
from cxrlib.explain.figures import plot_overlay
from cxrlib.explain.maps import METHODS, grey_baseline, heatmap
from cxrlib.explain.measures import border_share
from cxrlib.files import write_csv_atomic
from cxrlib.runs.evaluate import Run, load_run, predict

log = logging.getLogger(__name__)

SUMMARY_FILE = "summary.csv"
DIAGNOSE_METHODS = ("gradcam++", "gradcam", "scorecam", "fastscorecam", "occlusion")


def find_images(folder: str | os.PathLike, exclude: str | os.PathLike | None = None) -> list[Path]:
    """Image files under ``folder`` (recursively, sorted); hidden files and folders skipped.

    ``exclude`` is a folder to leave out (the output folder, when it lies inside).
    """
    root = Path(folder)
    skip = Path(exclude).resolve() if exclude is not None else None
    found = []
    for path in root.rglob("*"):
        relative = path.relative_to(root).parts
        if any(part.startswith((".", "__MACOSX")) for part in relative):
            continue
        try:
            target = path.resolve(strict=True)
        except (OSError, RuntimeError):  # a broken link or a link loop: a row with its error
            if is_image_path(path):
                found.append(path)
            else:
                log.warning("Skipped %s: a broken or looping symbolic link.", path)
            continue
        if skip is not None and (target == skip or skip in target.parents):
            continue
        if path.is_file() and is_image_path(path):
            found.append(path)
    return sorted(found)


def is_pneumonia(name: str) -> bool:
    """True for a class that the second stage refines (its name contains "pneumonia")."""
    return "pneumonia" in name.lower()


def _figure_name(relative: Path) -> str:
    """A unique flat PNG name for an input file: ``sub/x.jpg`` → ``sub__x.jpg.png``."""
    return "__".join(relative.parts) + ".png"


def _batches(items: Sequence, size: int):
    for start in range(0, len(items), size):
        yield items[start:start + size]


def diagnose_folder(images_dir: str | os.PathLike, model_path: str | os.PathLike,
                    out_dir: str | os.PathLike, stage2_path: str | os.PathLike | None = None,
                    method: str = "gradcam++", progress: bool = True, batch_size: int = 16,
                    layer: str | None = None) -> pd.DataFrame:
    """Diagnose every image under ``images_dir``; write the PNGs and ``summary.csv`` to ``out_dir``.

    Returns the summary (one row per image file, in file order). Raises FileNotFoundError
    for a missing folder or model and ValueError for a folder with no image files; a bad
    image is a row with its ``error``.
    """
    root = Path(images_dir)
    if not root.is_dir():
        raise FileNotFoundError(f"No folder at {root}.")
    out = Path(out_dir)
    files = find_images(root, exclude=out)
    if not files:
        raise InputError(f"No image files under {root}.")
    if method not in METHODS:
        raise InputError(f"Unknown method {method!r}; choose one of {', '.join(DIAGNOSE_METHODS)}.")
    run = load_run(model_path)
    model, prep, classes = run.model, run.prep, run.classes
    stage2 = load_run(stage2_path) if stage2_path is not None else None
    if stage2 is not None and not any(is_pneumonia(c) for c in classes):
        log.warning("The first model's classes %s have no pneumonia class: the second stage "
                    "will not run on any image.", classes)
    out.mkdir(parents=True, exist_ok=True)
    baseline = grey_baseline(prep.backbone) if method == "occlusion" else None
    options = {"baseline": baseline} if baseline is not None else {}

    rows: list[dict[str, Any]] = []
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=len(files), desc="Diagnosing", unit="img")
    try:
        for chunk in _batches(files, batch_size):
            inputs = model_inputs(chunk, prep)
            results: dict[int, dict[str, Any]] = {}
            if inputs.kept:
                probs = predict(model, inputs.x, len(classes), batch_size)
                predicted = probs.argmax(axis=1)
                heat = heatmap(model, inputs.x, method, [int(c) for c in predicted], layer,
                               **options)
                second = _stage2([chunk[i] for i in inputs.kept],
                                 [classes[int(c)] for c in predicted], stage2, batch_size)
                for k, i in enumerate(inputs.kept):
                    results[i] = {"probs": probs[k], "predicted": classes[int(predicted[k])],
                                  "heat": heat[k], "image": inputs.images[k], "path": chunk[i],
                                  **second.get(k, {})}
            for i, path in enumerate(chunk):
                relative = path.relative_to(root)
                row: dict[str, Any] = {"file": relative.as_posix()}
                if i in results:
                    row.update(_figure_row(results[i], classes, stage2, out / _figure_name(relative),
                                           relative))
                else:
                    row["error"] = inputs.dropped[i]
                rows.append(row)
            if bar is not None:
                bar.update(len(chunk))
    finally:
        if bar is not None:
            bar.close()

    columns = ["file", "predicted", *[f"p_{c}" for c in classes], "border_share"]
    if stage2 is not None:
        columns += ["stage2_predicted", *[f"p2_{c}" for c in stage2.classes]]
    columns += ["figure", "error"]
    summary = pd.DataFrame(rows).reindex(columns=columns)
    summary["error"] = summary["error"].fillna("")
    write_csv_atomic(summary, out / SUMMARY_FILE)
    n_bad = int((summary["error"] != "").sum())
    log.info("Diagnosed %d images (%d unreadable) → %s", len(summary) - n_bad, n_bad, out / SUMMARY_FILE)
    return summary


def _stage2(paths: Sequence[Path], predicted: Sequence[str], stage2: Run | None, batch_size: int
            ) -> dict[int, dict[str, Any]]:
    """Second-stage probabilities for the images predicted as pneumonia, by position."""
    if stage2 is None:
        return {}
    chosen = [k for k, name in enumerate(predicted) if is_pneumonia(name)]
    if not chosen:
        return {}
    inputs = model_inputs([paths[k] for k in chosen], stage2.prep)
    out: dict[int, dict[str, Any]] = {}
    if inputs.kept:
        probs = predict(stage2.model, inputs.x, len(stage2.classes), batch_size)
        for row, j in enumerate(inputs.kept):
            out[chosen[j]] = {"stage2_probs": probs[row], "stage2_classes": stage2.classes,
                              "stage2_predicted": stage2.classes[int(probs[row].argmax())]}
    return out


def _figure_row(result: dict[str, Any], classes: Sequence[str], stage2, figure: Path,
                relative: Path) -> dict[str, Any]:
    """:func:`_row`, or ``{"error": ...}`` for an image whose figure name is too long for the
    file system (nested folders make long names), so that one image never stops the batch."""
    try:
        return _row(result, classes, stage2, figure, relative)
    except OSError as error:
        if error.errno != errno.ENAMETOOLONG:
            raise
        message = (f"cannot write its figure {figure.name[:40]}...: the name is too long for the "
                   f"file system ({len(os.fsencode(figure.name))} bytes; most allow 255); shorten "
                   "the folder or file names under the images folder, or give a shorter --out")
        log.warning("Skipping %s: %s", relative, message)
        return {"error": message}


def _original(path: Path) -> np.ndarray | None:
    """The film as read (8-bit grey, before the crop and the resize), for the figure's first
    panel; None when it can no longer be read (the figure then shows the model's input)."""
    from cxrlib.data.images import read_image
    from cxrlib.data.pixels import ImageReadError

    try:
        return read_image(str(path))
    except (ImageReadError, OSError) as error:
        log.warning("Showing the model's input for %s: the original could not be read (%s).", path, error)
        return None


def _row(result: dict[str, Any], classes: Sequence[str], stage2, figure: Path,
         relative: Path) -> dict[str, Any]:
    """One summary row for a readable image; draws and saves its figure."""
    probs = result["probs"]
    row: dict[str, Any] = {"predicted": result["predicted"],
                           **{f"p_{c}": float(p) for c, p in zip(classes, probs)},
                           "border_share": border_share(result["heat"])}
    title = f"{relative.as_posix()}: {result['predicted']} ({probs.max():.0%})"
    if "stage2_predicted" in result:
        row["stage2_predicted"] = result["stage2_predicted"]
        row.update({f"p2_{c}": float(p) for c, p in zip(result["stage2_classes"], result["stage2_probs"])})
        title += f" → {result['stage2_predicted']} ({result['stage2_probs'].max():.0%})"
    plot_overlay(result["image"], result["heat"], title=title, original=_original(result["path"]),
                 probabilities={c: float(p) for c, p in zip(classes, probs)}, save=figure)
    row["figure"] = figure.name
    return row
