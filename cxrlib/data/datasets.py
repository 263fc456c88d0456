"""Every dataset layout, read into one manifest.

A *manifest* is a pandas DataFrame with one row per image and the columns in
:data:`MANIFEST_COLUMNS`. Everything after this module (splits, the input pipeline,
training, the integrity check) reads the manifest and never a folder layout, so adding
a dataset means adding one reader here and nothing else.

Supported layouts (detected, or named with ``layout=``):

- ``covid19-radiography``: the Kaggle COVID-19 Radiography Database, every version:
  v1–v3 flat class folders (``COVID/COVID (1).png``) and v4+ (``COVID/images/COVID-1.png``
  with optional ``masks/`` and metadata spreadsheets). The synthetic default dataset is
  written in this layout too.
- ``kermany``: the chest-xray-pneumonia set (``chest_xray/{train,val,test}/{NORMAL,PNEUMONIA}``)
  with its official split, the bacterial/viral subtype and the patient id from the file names.
- ``siim``: SIIM-FISABIO-RSNA COVID-19 Detection (``train_study_level.csv`` and
  ``train_image_level.csv`` joined to DICOM or resized PNG/JPEG copies).
- ``folders``: any plain class-folder tree, ``ROOT/<class>/*.{png,jpg,jpeg,dcm}``.

Text columns are strings, ``""`` where unknown, so that a manifest survives a CSV round trip.
"""

from __future__ import annotations

import json
import logging
import math
import os
import re
from pathlib import Path
from typing import Callable, Iterable, Sequence

import pandas as pd

from cxrlib.data.images import IMAGE_SUFFIXES, probe_image
from cxrlib.data.pixels import ImageReadError
from cxrlib.errors import InputError, UserError
from cxrlib.text import one_line

log = logging.getLogger(__name__)

MANIFEST_COLUMNS: tuple[str, ...] = (
    "path", "label", "patient_id", "source", "subtype", "mask_path", "mask_kind", "split",
)
LAYOUTS: tuple[str, ...] = ("covid19-radiography", "kermany", "siim", "folders")

KAGGLE_SOURCES: dict[str, tuple[str, str]] = {
    # layout: (kind, slug)
    "covid19-radiography": ("dataset", "tawsifurrahman/covid19-radiography-database"),
    "kermany": ("dataset", "paultimothymooney/chest-xray-pneumonia"),
    "siim": ("competition", "siim-covid19-detection"),
}

_CANONICAL: dict[str, str] = {
    "covid": "COVID", "covid19": "COVID", "covid-19": "COVID", "covid_19": "COVID",
    "normal": "Normal", "no finding": "Normal",
    "viral pneumonia": "Viral Pneumonia", "viralpneumonia": "Viral Pneumonia",
    "viral_pneumonia": "Viral Pneumonia", "virus": "Viral Pneumonia", "viral": "Viral Pneumonia",
    "bacterial pneumonia": "Bacterial Pneumonia", "bacterialpneumonia": "Bacterial Pneumonia",
    "bacterial_pneumonia": "Bacterial Pneumonia", "bacteria": "Bacterial Pneumonia",
    "bacterial": "Bacterial Pneumonia",
    "lung_opacity": "Lung Opacity", "lung opacity": "Lung Opacity", "lungopacity": "Lung Opacity",
    "pneumonia": "Pneumonia",
}

_SIIM_STUDY_CLASSES: dict[str, str] = {
    "Negative for Pneumonia": "Negative",
    "Typical Appearance": "Typical",
    "Indeterminate Appearance": "Indeterminate",
    "Atypical Appearance": "Atypical",
}


class DatasetError(UserError, FileNotFoundError):
    """A dataset directory that is missing, empty or not in a layout cxrlib knows."""


def canonical_class(name: str) -> str:
    """Normalise a class name: ``NORMAL``/``normal`` → ``Normal``, ``Covid-19`` → ``COVID``.

    Unknown names are returned stripped but otherwise unchanged.
    """
    key = re.sub(r"\s+", " ", str(name).strip()).lower()
    return _CANONICAL.get(key, _CANONICAL.get(key.replace(" ", ""), str(name).strip()))


def how_to_get(layout: str) -> str:
    """Instructions for downloading a dataset, for error messages and the notebooks."""
    if layout not in KAGGLE_SOURCES:
        return "Put one folder per class under the root: ROOT/<class>/*.png|jpg|jpeg|dcm."
    kind, slug = KAGGLE_SOURCES[layout]
    command = (f"kaggle datasets download -d {slug} --unzip -p data/{layout}" if kind == "dataset"
               else f"kaggle competitions download -c {slug} -p data/{layout}")
    return (f"Get it from Kaggle ({kind} '{slug}'): `{command}` "
            f"or `python -m cxrlib data download {layout} data/{layout}`; "
            "or download it by hand from https://www.kaggle.com and unzip it there. "
            "See data/README.md.")


def _visible(path: Path) -> bool:
    """False for hidden files and macOS archive debris (``__MACOSX``, ``._x.png``)."""
    return not any(part.startswith((".", "__MACOSX")) for part in path.parts[-3:])


def _images_in(folder: Path, recursive: bool = False) -> list[Path]:
    """Image files in a folder, sorted, hidden files skipped."""
    if not folder.is_dir():
        return []
    walker = folder.rglob("*") if recursive else folder.iterdir()
    return sorted(p for p in walker
                  if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES and _visible(p))


def _subdirs(folder: Path) -> list[Path]:
    """Visible sub-directories, sorted."""
    return sorted(p for p in folder.iterdir() if p.is_dir() and _visible(p))


def _manifest(rows: list[dict]) -> pd.DataFrame:
    """Rows → a manifest with every column present and text columns as strings."""
    frame = pd.DataFrame(rows)
    for column in MANIFEST_COLUMNS:
        if column not in frame:
            frame[column] = ""
    extra = [c for c in frame.columns if c not in MANIFEST_COLUMNS]
    frame = frame[list(MANIFEST_COLUMNS) + extra].fillna("")
    return frame.reset_index(drop=True)


def _is_class_folder(folder: Path) -> bool:
    """True for a folder that holds images itself or in ``images/`` (a class, not a wrapper)."""
    return bool(_images_in(folder) or _images_in(folder / "images"))


def _descend(root: Path) -> Path:
    """Skip single wrapper folders such as ``COVID-19_Radiography_Dataset/`` left by unzip.

    A single folder that holds images is a class (a one-class dataset), not a wrapper.
    """
    while True:
        subdirs = _subdirs(root)
        if (len(subdirs) == 1 and not _images_in(root) and not list(root.glob("*.csv"))
                and not _is_class_folder(subdirs[0])):
            root = subdirs[0]
        else:
            return root


def _image_dir(class_dir: Path) -> Path:
    """Where a class's images are: ``<class>/images/`` when present (loose ones are reported)."""
    if not (class_dir / "images").is_dir():
        return class_dir
    loose = _images_in(class_dir)
    if loose:
        log.warning("%d image file(s) directly in %s (e.g. %s) are left out: this layout reads "
                    "%s/images/ only; move them there to use them.", len(loose), class_dir,
                    loose[0].name, class_dir.name)
    return class_dir / "images"


# --- layout detection -------------------------------------------------------------------

def _find_kermany_root(root: Path) -> Path | None:
    """The folder holding ``train/NORMAL`` (the Kaggle zip nests ``chest_xray`` twice)."""
    for candidate in [root, root / "chest_xray", root / "chest_xray" / "chest_xray"]:
        if (candidate / "train" / "NORMAL").is_dir() or (candidate / "train" / "PNEUMONIA").is_dir():
            return candidate
    return None


def detect_layout(root: str | Path) -> str:
    """Name the layout of a dataset directory, or raise :class:`DatasetError`."""
    root = _check_root(root)
    if (root / "train_study_level.csv").is_file():
        return "siim"
    if _find_kermany_root(root) is not None:
        return "kermany"
    subdirs = _subdirs(_descend(root))
    known = [d for d in subdirs if canonical_class(d.name) in set(_CANONICAL.values())]
    has_covid = any(canonical_class(d.name) == "COVID" for d in known)
    if has_covid and all((d / "images").is_dir() or _images_in(d) for d in known):
        return "covid19-radiography"
    if any(_images_in(d) or _images_in(d / "images") for d in subdirs):
        return "folders"
    raise DatasetError(
        f"No dataset layout recognised in {root}. Expected one of: class folders with images "
        "(ROOT/<class>/*.png, or ROOT/<class>/images/*.png as in the COVID-19 Radiography "
        "Database v4), chest_xray/{train,val,test}/{NORMAL,PNEUMONIA} (Kermany), or "
        "train_study_level.csv + train_image_level.csv (SIIM). "
        + how_to_get("covid19-radiography"))


def _check_root(root: str | Path) -> Path:
    """The root as a Path, or a DatasetError that says what is missing and how to get it."""
    root = Path(root).expanduser()
    if not root.exists():
        raise DatasetError(
            f"Dataset directory {root} does not exist. Create the synthetic default with "
            f"`python -m cxrlib synth {root}`, or download a real dataset. "
            + how_to_get("covid19-radiography"))
    if not root.is_dir():
        raise DatasetError(f"{root} is a file, not a dataset directory.")
    if not any(root.iterdir()):
        raise DatasetError(f"Dataset directory {root} is empty. " + how_to_get("covid19-radiography"))
    return root


# --- readers ------------------------------------------------------------------------------

def _covid_metadata_sources(class_dir: Path) -> dict[str, str]:
    """File stem → source URL from the v4 ``<Class>.metadata.xlsx`` sheet, when readable."""
    sheets = list(class_dir.parent.glob(f"{class_dir.name}.metadata.xls*"))
    if not sheets:
        return {}
    try:
        sheet = pd.read_excel(sheets[0])
    except Exception as error:  # openpyxl missing or a damaged sheet: the sources are optional
        log.info("Could not read %s (%s); sources left empty.", sheets[0], error)
        return {}
    columns = {c.strip().upper(): c for c in sheet.columns}
    if "FILE NAME" not in columns or "URL" not in columns:
        return {}
    return {str(n).strip().lower(): str(u) for n, u in
            zip(sheet[columns["FILE NAME"]], sheet[columns["URL"]])}


def read_covid19_radiography(root: Path) -> pd.DataFrame:
    """Read any version of the COVID-19 Radiography Database (or the synthetic default)."""
    root = _descend(root)
    synthetic = (root / "synthetic.json").is_file()
    rows = []
    for class_dir in _subdirs(root):
        image_dir = _image_dir(class_dir)
        mask_dir = class_dir / "masks"
        sources = _covid_metadata_sources(class_dir)
        for path in _images_in(image_dir):
            mask = mask_dir / path.name
            rows.append({
                "path": str(path.resolve()),
                "label": canonical_class(class_dir.name),
                "source": "synthetic" if synthetic else sources.get(path.stem.lower(), ""),
                "mask_path": str(mask.resolve()) if mask.is_file() else "",
                "mask_kind": ("lesion" if synthetic else "lung") if mask.is_file() else "",
            })
    return _manifest(rows)


_KERMANY_PATIENT = [
    re.compile(r"^(person\d+)_", re.IGNORECASE),              # person1000_bacteria_2931.jpeg
    re.compile(r"^((?:NORMAL\d*-)?IM-\d+)-\d+", re.IGNORECASE),  # IM-0115-0001, NORMAL2-IM-1427-0001
]


def kermany_patient_id(filename: str) -> str:
    """The patient id encoded in a Kermany file name, or ``""``."""
    for pattern in _KERMANY_PATIENT:
        match = pattern.match(filename)
        if match:
            return match.group(1)
    return ""


def kermany_subtype(filename: str) -> str:
    """``Bacterial Pneumonia``/``Viral Pneumonia`` from a Kermany file name, or ``""``."""
    name = filename.lower()
    if "bacteria" in name:
        return "Bacterial Pneumonia"
    if "virus" in name:
        return "Viral Pneumonia"
    return ""


def read_kermany(root: Path) -> pd.DataFrame:
    """Read chest-xray-pneumonia with its official train/val/test split."""
    base = _find_kermany_root(root)
    if base is None:
        raise DatasetError(f"{root} is not in the kermany layout: it has no train/NORMAL or "
                           "train/PNEUMONIA folder (nor under chest_xray/). Point at the folder "
                           "that holds train/, val/ and test/, or use --layout auto.")
    rows = []
    for split in ("train", "val", "test"):
        for class_dir in _subdirs(base / split) if (base / split).is_dir() else []:
            for path in _images_in(class_dir):
                rows.append({
                    "path": str(path.resolve()),
                    "label": canonical_class(class_dir.name),
                    "patient_id": kermany_patient_id(path.name),
                    "source": "kermany",
                    "subtype": kermany_subtype(path.name),
                    "split": split,
                })
    return _manifest(rows)


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
    files = {p.stem: p for p in _images_in(root, recursive=True)}
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
    return _manifest(rows)


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


def read_folders(root: Path) -> pd.DataFrame:
    """Read a plain class-folder tree; ``<class>/images/`` sub-folders are accepted too."""
    rows = []
    for class_dir in _subdirs(_descend(root)):
        image_dir = _image_dir(class_dir)
        label = canonical_class(class_dir.name)
        subtype = label if label in ("Bacterial Pneumonia", "Viral Pneumonia") else ""
        for path in _images_in(image_dir):
            rows.append({"path": str(path.resolve()), "label": label, "subtype": subtype,
                         "source": root.name})
    return _manifest(rows)


_READERS: dict[str, Callable[..., pd.DataFrame]] = {
    "covid19-radiography": read_covid19_radiography,
    "kermany": read_kermany,
    "siim": read_siim,
    "folders": read_folders,
}


def load_manifest(root: str | Path, layout: str = "auto",
                  classes: Sequence[str] | None = None, **options) -> pd.DataFrame:
    """Read a dataset directory into a manifest.

    ``layout`` is one of :data:`LAYOUTS` or ``"auto"``. ``classes`` keeps only those classes
    (names are normalised first, so ``"NORMAL"`` matches ``"Normal"``); ``None`` keeps all.
    Extra ``options`` go to the reader (``target=`` for SIIM).
    """
    root = _check_root(root)
    layout = detect_layout(root) if layout == "auto" else layout
    if layout not in _READERS:
        raise InputError(f"Unknown layout {layout!r}; choose one of {', '.join(LAYOUTS)} or 'auto'.")
    manifest = _READERS[layout](root, **options)
    manifest.attrs["layout"] = layout
    manifest.attrs["root"] = str(root.resolve())
    if classes is not None:
        wanted = [canonical_class(c) for c in classes]
        absent = sorted(set(wanted) - set(manifest["label"]))
        if absent:
            raise DatasetError(f"Classes {absent} not found in {root}; it has "
                               f"{sorted(manifest['label'].unique())}.")
        manifest = manifest[manifest["label"].isin(wanted)].reset_index(drop=True)
    if manifest.empty:
        raise DatasetError(f"No images found in {root} (layout {layout}). " + how_to_get(layout))
    log.info("Loaded %d images from %s (layout %s).", len(manifest), root, layout)
    return manifest


def relabel(manifest: pd.DataFrame, mapping: dict[str, str]) -> pd.DataFrame:
    """Merge or rename classes; the old label is kept in ``subtype`` where that is empty.

    ``relabel(m, {"Bacterial Pneumonia": "Pneumonia", "Viral Pneumonia": "Pneumonia"})``
    turns the three-class pneumonia set into normal vs pneumonia, keeping the subtype for
    the second stage.
    """
    out = manifest.copy()
    changed = out["label"].isin(mapping)
    out.loc[changed & (out["subtype"] == ""), "subtype"] = out.loc[changed, "label"]
    out["label"] = out["label"].map(lambda label: mapping.get(label, label))
    out.attrs = dict(manifest.attrs)
    return out


def class_names(manifest: pd.DataFrame, classes: Iterable[str] | None = None) -> list[str]:
    """The class list in a stable order: ``classes`` as given, else the sorted labels."""
    return [canonical_class(c) for c in classes] if classes else sorted(manifest["label"].unique())


def kaggle_credentials_present() -> bool:
    """True when the Kaggle API can authenticate (``~/.kaggle/kaggle.json`` or env vars)."""
    config_dir = Path(os.environ.get("KAGGLE_CONFIG_DIR", Path.home() / ".kaggle"))
    return (config_dir / "kaggle.json").is_file() or (
        bool(os.environ.get("KAGGLE_USERNAME")) and bool(os.environ.get("KAGGLE_KEY")))


def download(layout: str, dest: str | Path) -> Path:
    """Download a dataset with the Kaggle API; without credentials, say exactly what to do."""
    if layout not in KAGGLE_SOURCES:
        raise InputError(f"No download for {layout!r}; choose one of {', '.join(KAGGLE_SOURCES)}.")
    kind, slug = KAGGLE_SOURCES[layout]
    if not kaggle_credentials_present():
        raise DatasetError(
            "No Kaggle credentials. Create an API token at https://www.kaggle.com/settings "
            "(API → Create New Token), save it as ~/.kaggle/kaggle.json (chmod 600), or set "
            "KAGGLE_USERNAME and KAGGLE_KEY; then run this again. " + how_to_get(layout))
    dest = Path(dest)
    dest.mkdir(parents=True, exist_ok=True)
    try:
        from kaggle.api.kaggle_api_extended import KaggleApi

        api = KaggleApi()
        api.authenticate()
        if kind == "dataset":
            api.dataset_download_files(slug, path=str(dest), unzip=True, quiet=False)
        else:
            api.competition_download_files(slug, path=str(dest), quiet=False)
    except Exception as error:  # network, permissions, competition rules not accepted
        raise DatasetError(f"Kaggle download of {slug} failed: {error}. " + how_to_get(layout)) from error
    return dest
