"""The SIIM-FISABIO-RSNA COVID-19 Detection reader: the study and image CSVs joined to the
image files, with the image-level boxes scaled into the pixels of the file found."""

from __future__ import annotations

import json
import logging
import math
from pathlib import Path
from typing import Sequence

import pandas as pd

from cxrlib.data.images import probe_image
from cxrlib.data.manifest import DatasetError, images_in, manifest_frame
from cxrlib.data.pixels import ImageReadError
from cxrlib.errors import InputError
from cxrlib.text import one_line

log = logging.getLogger(__name__)

_SIIM_STUDY_CLASSES: dict[str, str] = {
    "Negative for Pneumonia": "Negative",
    "Typical Appearance": "Typical",
    "Indeterminate Appearance": "Indeterminate",
    "Atypical Appearance": "Atypical",
}


def read_siim(root: Path, target: str = "study") -> pd.DataFrame:
    """Read SIIM-FISABIO-RSNA: study-level classes (``target="study"``) or binary opacity.

    Image files are matched by image id anywhere under the root: the original DICOM tree
    (``train/<study>/<series>/<image>.dcm``) or a resized PNG/JPEG copy (``train/<image>.png``).
    The image-level boxes are kept, as JSON, in a ``boxes`` column for drawing, in the pixel
    frame of the file found: the competition lists them in the original DICOM's pixels, so for
    a resized copy they are scaled by the copy's size over the original's, which such copies
    give in a metadata CSV (``image_id, dim0, dim1``: original rows and columns, as in the
    widely used resized Kaggle sets). A copy without one keeps the listed boxes, with a warning.
    """
    if target not in ("study", "opacity"):
        raise InputError(f"target must be 'study' or 'opacity', not {target!r}")
    study = _siim_study_labels(root / "train_study_level.csv")
    image_csv = root / "train_image_level.csv"
    image = _read_siim_csv(image_csv, ("id", "StudyInstanceUID", "label"))
    image["line"] = range(2, len(image) + 2)  # the CSV's line, for messages (line 1: header)
    image["StudyInstanceUID"] = image["StudyInstanceUID"].astype(str)
    merged = image.merge(study, on="StudyInstanceUID", how="left")
    files = {p.stem: p for p in images_in(root, recursive=True)}
    originals = _siim_original_sizes(root)
    synthetic = (root / "synthetic.json").is_file()  # cxrlib's own set is drawn at size
    rows, missing, unscaled, orphans = [], 0, 0, []
    for record in merged.to_dict("records"):
        image_id = str(record["id"]).replace("_image", "")
        where = f"{image_csv} line {record['line']} (id {record['id']})"
        boxes = _parse_siim_boxes(record.get("boxes"), where)
        path = files.get(image_id)
        if path is None:
            missing += 1
            continue
        if not isinstance(record["study_label"], str):
            orphans.append(where)
            continue
        if boxes and path.suffix.lower() != ".dcm":
            if image_id in originals:
                boxes = _scale_boxes(boxes, path, originals[image_id])
            elif not synthetic:
                unscaled += 1
        rows.append({
            "path": str(path.resolve()),
            "label": ("Opacity" if str(record["label"]).startswith("opacity") else "No Opacity")
            if target == "opacity" else record["study_label"],
            "patient_id": record["StudyInstanceUID"],
            "source": "siim",
            "subtype": record["study_label"],
            "boxes": json.dumps(boxes),
        })
    if missing:
        log.warning("SIIM: %d of %d images listed in train_image_level.csv have no file under %s.",
                    missing, len(merged), root)
    if orphans:
        log.warning("SIIM: %d images belong to no study of train_study_level.csv (first: %s); "
                    "left out.", len(orphans), orphans[0])
    if unscaled:
        log.warning("SIIM: %d resized images have boxes in the original DICOM's pixels and no "
                    "metadata CSV (image_id, dim0, dim1) under %s to rescale them: drawn boxes "
                    "will be misplaced.", unscaled, root)
    return manifest_frame(rows)


def _read_siim_csv(path: Path, columns: Sequence[str]) -> pd.DataFrame:
    """One of SIIM's CSVs, checked for ``columns``; a DatasetError or InputError naming it."""
    if not path.is_file():
        raise DatasetError(f"{path.parent} is not in the SIIM layout: it has no {path.name}. "
                           "Point at the folder that holds train_study_level.csv and "
                           "train_image_level.csv, or use --layout auto.")
    try:
        frame = pd.read_csv(path, dtype=str, keep_default_na=False)
    except (ValueError, pd.errors.EmptyDataError) as error:  # ParserError, UnicodeDecodeError
        raise InputError(f"Cannot read {path} as a CSV ({error}); restore the competition's "
                         "file.") from error
    absent = [c for c in columns if c not in frame.columns]
    if absent:
        raise InputError(f"{path} has no column {', '.join(map(repr, absent))} (it has "
                         f"{list(frame.columns)}); restore the competition's file, or name the "
                         "columns as it does.")
    return frame


def _siim_study_labels(path: Path) -> pd.DataFrame:
    """``StudyInstanceUID`` and ``study_label`` of every study in ``train_study_level.csv``.

    Each row must mark exactly one of the study class columns with 1; an InputError names the
    file and the line otherwise.
    """
    study = _read_siim_csv(path, ("id",))
    class_columns = [c for c in _SIIM_STUDY_CLASSES if c in study.columns]
    if not class_columns:
        raise InputError(f"{path} has none of the study class columns {list(_SIIM_STUDY_CLASSES)} "
                         f"(it has {list(study.columns)}); restore the competition's file.")
    marks = study[class_columns].apply(pd.to_numeric, errors="coerce")
    bad = marks.isna().any(axis=1) | (marks == 1).sum(axis=1).ne(1)
    if bad.any():
        i = int(bad.to_numpy().argmax())
        raise InputError(f"{path} line {i + 2} (id {study['id'].iloc[i]}): the class columns "
                         f"{class_columns} must hold one 1 and otherwise 0, not "
                         f"{study[class_columns].iloc[i].tolist()}; fix that row.")
    return pd.DataFrame({
        "StudyInstanceUID": study["id"].str.replace("_study", "", regex=False),
        "study_label": marks.idxmax(axis=1).map(_SIIM_STUDY_CLASSES)})


def _siim_original_sizes(root: Path) -> dict[str, tuple[float, float]]:
    """Original (rows, columns) per image id, from a resized copy's metadata CSV; {} if none.

    A row whose ``dim0`` or ``dim1`` is not a positive number is an InputError naming the
    table and the line.
    """
    tables = [p for p in (*root.glob("*.csv"), *root.glob("*/*.csv"))
              if p.name not in ("train_study_level.csv", "train_image_level.csv",
                                "sample_submission.csv")]
    sizes: dict[str, tuple[float, float]] = {}
    for table in tables:
        try:
            frame = pd.read_csv(table, dtype=str, keep_default_na=False)
        except (OSError, ValueError, pd.errors.ParserError) as error:
            log.warning("SIIM: could not read %s (%s); skipped.", table, error)
            continue
        if not {"image_id", "dim0", "dim1"} <= set(frame.columns):
            continue
        for line, (image_id, rows, cols) in enumerate(
                zip(frame["image_id"], frame["dim0"], frame["dim1"]), start=2):
            where = f"{table} line {line} (image_id {image_id})"
            sizes[str(image_id).replace("_image", "")] = (_positive(rows, "dim0", where),
                                                          _positive(cols, "dim1", where))
    return sizes


def _positive(text: str, name: str, where: str) -> float:
    """``text`` as a positive finite number, or an InputError naming ``where`` and ``name``."""
    try:
        value = float(text)
    except (TypeError, ValueError):
        value = float("nan")
    if not (math.isfinite(value) and value > 0):
        raise InputError(f"{where}: {name} must be a positive number (the original image's "
                         f"size in pixels), not {text!r}; fix that row.")
    return value


def _scale_boxes(boxes: list[dict], path: Path, original: tuple[float, float]) -> list[dict]:
    """Boxes from the original image's pixels into those of the resized file at ``path``."""
    try:
        header = probe_image(path)  # the header only; no decoding
    except ImageReadError:  # an unreadable file is reported when it is loaded
        return boxes
    sy, sx = header["height"] / original[0], header["width"] / original[1]
    return [{"x": b["x"] * sx, "y": b["y"] * sy, "width": b["width"] * sx,
             "height": b["height"] * sy} for b in boxes]


_BOX_KEYS = ("x", "y", "width", "height")


def _parse_siim_boxes(text: object, where: str) -> list[dict]:
    """The ``boxes`` column (a Python-literal list of ``{'x', 'y', 'width', 'height'}`` dicts,
    empty for none) → plain JSON-able dicts; an InputError naming ``where`` when it is not that."""
    import ast

    if text is None or str(text).strip() in ("", "nan", "[]"):
        return []
    try:
        boxes = ast.literal_eval(str(text))
    except (ValueError, SyntaxError, MemoryError, RecursionError):
        boxes = None
    if not isinstance(boxes, (list, tuple)) or not all(isinstance(b, dict) for b in boxes):
        raise InputError(f"{where}: boxes must be a list of {{'x', 'y', 'width', 'height'}} "
                         f"dicts, not {one_line(text, 80)}; fix that row (empty for no box).")
    return [{key: _box_number(box, key, where) for key in _BOX_KEYS} for box in boxes]


def _box_number(box: dict, key: str, where: str) -> float:
    """``box[key]`` as a finite number, or an InputError naming ``where`` and the key."""
    try:
        value = float(box[key])
    except (KeyError, TypeError, ValueError):
        value = float("nan")
    if not math.isfinite(value):
        raise InputError(f"{where}: box {key!r} must be a number, not {box.get(key)!r}; fix that "
                         "row.")
    return value
