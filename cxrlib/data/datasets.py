"""Every dataset layout, read into one manifest.

A *manifest* is a pandas DataFrame with one row per image and the columns in
:data:`MANIFEST_COLUMNS`. Everything after this module (splits, the input pipeline,
training, the integrity check) reads the manifest and never a folder layout, so adding
a dataset means adding one reader (here, or in a module of its own as :mod:`cxrlib.data.siim`
is, on :mod:`cxrlib.data.manifest`) and nothing else.

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

import logging
import os
import re
from pathlib import Path
from typing import Callable, Iterable, Sequence

import pandas as pd

from cxrlib.data.manifest import (
    KNOWN_CLASSES,
    DatasetError,
    canonical_class,
    images_in,
    manifest_frame,
    subdirs,
)
from cxrlib.data.siim import read_siim
from cxrlib.errors import InputError

log = logging.getLogger(__name__)

LAYOUTS: tuple[str, ...] = ("covid19-radiography", "kermany", "siim", "folders")

KAGGLE_SOURCES: dict[str, tuple[str, str]] = {
    # layout: (kind, slug)
    "covid19-radiography": ("dataset", "tawsifurrahman/covid19-radiography-database"),
    "kermany": ("dataset", "paultimothymooney/chest-xray-pneumonia"),
    "siim": ("competition", "siim-covid19-detection"),
}

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


def _is_class_folder(folder: Path) -> bool:
    """True for a folder that holds images itself or in ``images/`` (a class, not a wrapper)."""
    return bool(images_in(folder) or images_in(folder / "images"))


def _descend(root: Path) -> Path:
    """Skip single wrapper folders such as ``COVID-19_Radiography_Dataset/`` left by unzip.

    A single folder that holds images is a class (a one-class dataset), not a wrapper.
    """
    while True:
        folders = subdirs(root)
        if (len(folders) == 1 and not images_in(root) and not list(root.glob("*.csv"))
                and not _is_class_folder(folders[0])):
            root = folders[0]
        else:
            return root


def _image_dir(class_dir: Path) -> Path:
    """Where a class's images are: ``<class>/images/`` when present (loose ones are reported)."""
    if not (class_dir / "images").is_dir():
        return class_dir
    loose = images_in(class_dir)
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
    folders = subdirs(_descend(root))
    known = [d for d in folders if canonical_class(d.name) in KNOWN_CLASSES]
    has_covid = any(canonical_class(d.name) == "COVID" for d in known)
    if has_covid and all((d / "images").is_dir() or images_in(d) for d in known):
        return "covid19-radiography"
    if any(images_in(d) or images_in(d / "images") for d in folders):
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
    for class_dir in subdirs(root):
        image_dir = _image_dir(class_dir)
        mask_dir = class_dir / "masks"
        sources = _covid_metadata_sources(class_dir)
        for path in images_in(image_dir):
            mask = mask_dir / path.name
            rows.append({
                "path": str(path.resolve()),
                "label": canonical_class(class_dir.name),
                "source": "synthetic" if synthetic else sources.get(path.stem.lower(), ""),
                "mask_path": str(mask.resolve()) if mask.is_file() else "",
                "mask_kind": ("lesion" if synthetic else "lung") if mask.is_file() else "",
            })
    return manifest_frame(rows)


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
        for class_dir in subdirs(base / split) if (base / split).is_dir() else []:
            for path in images_in(class_dir):
                rows.append({
                    "path": str(path.resolve()),
                    "label": canonical_class(class_dir.name),
                    "patient_id": kermany_patient_id(path.name),
                    "source": "kermany",
                    "subtype": kermany_subtype(path.name),
                    "split": split,
                })
    return manifest_frame(rows)


def read_folders(root: Path) -> pd.DataFrame:
    """Read a plain class-folder tree; ``<class>/images/`` sub-folders are accepted too."""
    rows = []
    for class_dir in subdirs(_descend(root)):
        image_dir = _image_dir(class_dir)
        label = canonical_class(class_dir.name)
        subtype = label if label in ("Bacterial Pneumonia", "Viral Pneumonia") else ""
        for path in images_in(image_dir):
            rows.append({"path": str(path.resolve()), "label": label, "subtype": subtype,
                         "source": root.name})
    return manifest_frame(rows)


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
