"""Small synthetic copies of the real datasets' folder layouts, for checking that the series
runs on real-data layouts without the real data: :func:`write_layouts` writes all four (the API;
``tests/test_notebooks.py`` points the notebooks' dataset folders at them).

- Radiography v3: ``COVID/``, ``NORMAL/``, ``Viral Pneumonia/`` with the images directly inside;
- Radiography v4: ``<Class>/images/`` (and ``Lung_Opacity``), as on Kaggle today;
- Kermany: ``chest_xray/{train,val,test}/{NORMAL,PNEUMONIA}/`` with Kermany's file names
  (``person1_bacteria_1.jpeg``, ``IM-0001-0001.jpeg``);
- SIIM: the competition's CSVs and ``train/`` (:func:`cxrlib.data.siim_synthetic.generate_siim_like`).
"""

from __future__ import annotations

import shutil
from pathlib import Path

from PIL import Image

from cxrlib.data.images import read_image

V3_FOLDERS = {"COVID": "COVID", "Normal": "NORMAL", "Viral Pneumonia": "Viral Pneumonia"}
V4_FOLDERS = {"COVID": "COVID", "Normal": "Normal", "Viral Pneumonia": "Viral Pneumonia",
              "Bacterial Pneumonia": "Lung_Opacity"}   # a stand-in class for Lung Opacity


def _drawn(out: Path, classes: list[str], per_class: int, size: int, seed: int) -> dict[str, list[Path]]:
    from cxrlib.data.synthetic import generate_synthetic

    folder = generate_synthetic(out / ".drawn", per_class=per_class, size=size, seed=seed,
                                classes=classes, progress=False)
    return {c: sorted((folder / c / "images").glob("*.png")) for c in classes}


def _write_radiography(out: str | Path, version: str = "v4", per_class: int = 12, size: int = 96,
                      seed: int = 0) -> Path:
    """A Radiography Database in the v3 or v4 layout."""
    out = Path(out)
    folders = V3_FOLDERS if version == "v3" else V4_FOLDERS
    for label, files in _drawn(out, list(folders), per_class, size, seed).items():
        target = out / folders[label] if version == "v3" else out / folders[label] / "images"
        target.mkdir(parents=True, exist_ok=True)
        for i, path in enumerate(files, start=1):
            shutil.copy(path, target / f"{folders[label]} ({i}).png")
    shutil.rmtree(out / ".drawn")
    return out


def _write_kermany(out: str | Path, per_class: int = 12, size: int = 96, seed: int = 0) -> Path:
    """Kermany's ``chest_xray/`` with an official train/val/test split and its file names."""
    out = Path(out)
    drawn = _drawn(out, ["Normal", "Bacterial Pneumonia", "Viral Pneumonia"], per_class, size, seed)
    for label, files in drawn.items():
        for i, path in enumerate(files):
            split = "test" if i % 4 == 0 else ("val" if i % 7 == 1 else "train")
            folder = out / "chest_xray" / split / ("NORMAL" if label == "Normal" else "PNEUMONIA")
            folder.mkdir(parents=True, exist_ok=True)
            kind = {"Bacterial Pneumonia": "bacteria", "Viral Pneumonia": "virus"}.get(label)
            name = f"person{i}_{kind}_{i}.jpeg" if kind else f"IM-{i:04d}-0001.jpeg"
            Image.fromarray(read_image(path)).save(folder / name, quality=95)
    shutil.rmtree(out / ".drawn")
    return out


def write_layouts(out: str | Path, per_class: int = 12, size: int = 96, seed: int = 0) -> dict[str, Path]:
    """The four dataset folders of ``make notebooks``: name → folder (COVID_DIR in the v4
    layout, EXTERNAL_DIR in the v3 layout, KERMANY_DIR, SIIM_DIR)."""
    from cxrlib.data.siim_synthetic import generate_siim_like

    out = Path(out)
    return {"COVID_DIR": _write_radiography(out / "radiography_v4", "v4", per_class, size, seed),
            "EXTERNAL_DIR": _write_radiography(out / "radiography_v3", "v3", per_class, size, seed + 1),
            "KERMANY_DIR": _write_kermany(out / "kermany", per_class, size, seed + 2),
            "SIIM_DIR": generate_siim_like(out / "siim", n_studies=4 * per_class, size=size, seed=seed + 3)}
