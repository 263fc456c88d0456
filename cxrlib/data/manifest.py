"""What every dataset reader shares: the manifest's columns, the class names' canonical
spelling, the dataset error, and the walk over visible image files.

The lowest module of the readers: :mod:`cxrlib.data.datasets` (layouts and the plain
readers) and :mod:`cxrlib.data.siim` (the SIIM reader) both build on it.
"""

from __future__ import annotations

import re
from pathlib import Path

import pandas as pd

from cxrlib.data.images import IMAGE_SUFFIXES
from cxrlib.errors import UserError

MANIFEST_COLUMNS: tuple[str, ...] = (
    "path", "label", "patient_id", "source", "subtype", "mask_path", "mask_kind", "split",
)
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

KNOWN_CLASSES: frozenset[str] = frozenset(_CANONICAL.values())
"""The canonical class names (what :func:`canonical_class` maps known spellings to)."""


class DatasetError(UserError, FileNotFoundError):
    """A dataset directory that is missing, empty or not in a layout cxrlib knows."""


def canonical_class(name: str) -> str:
    """Normalise a class name: ``NORMAL``/``normal`` → ``Normal``, ``Covid-19`` → ``COVID``.

    Unknown names are returned stripped but otherwise unchanged.
    """
    key = re.sub(r"\s+", " ", str(name).strip()).lower()
    return _CANONICAL.get(key, _CANONICAL.get(key.replace(" ", ""), str(name).strip()))


def visible(path: Path) -> bool:
    """False for hidden files and macOS archive debris (``__MACOSX``, ``._x.png``)."""
    return not any(part.startswith((".", "__MACOSX")) for part in path.parts[-3:])


def images_in(folder: Path, recursive: bool = False) -> list[Path]:
    """Image files in a folder, sorted, hidden files skipped."""
    if not folder.is_dir():
        return []
    walker = folder.rglob("*") if recursive else folder.iterdir()
    return sorted(p for p in walker
                  if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES and visible(p))


def subdirs(folder: Path) -> list[Path]:
    """Visible sub-directories, sorted."""
    return sorted(p for p in folder.iterdir() if p.is_dir() and visible(p))


def manifest_frame(rows: list[dict]) -> pd.DataFrame:
    """Rows → a manifest with every column present and text columns as strings."""
    frame = pd.DataFrame(rows)
    for column in MANIFEST_COLUMNS:
        if column not in frame:
            frame[column] = ""
    extra = [c for c in frame.columns if c not in MANIFEST_COLUMNS]
    frame = frame[list(MANIFEST_COLUMNS) + extra].fillna("")
    return frame.reset_index(drop=True)
