"""Plain helpers that several test modules share (the shared fixtures are in conftest.py)."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np
import pandas as pd
from PIL import Image

from cxrlib.apps.cli import main
from cxrlib.data.manifest import MANIFEST_COLUMNS
from cxrlib.runs.records import SCHEMA, RunRecord, to_record
from cxrlib.spec import variant_spec

CLASSES = ["COVID", "Normal", "Viral Pneumonia"]
"""The course's three classes."""
TRAIN_CLASSES = ["COVID", "Normal", "Bacterial Pneumonia"]
"""The classes of the session's shared trained scratch CNN (conftest's ``scratch_run``)."""
FINAL = {"loss": 0.5, "accuracy": 0.8, "val_loss": 0.6, "val_accuracy": 0.75}
"""A record's default last-epoch results."""


# --------------------------------------------------------------------------- manifests

def manifest_frame(rows: Sequence[Mapping[str, Any]]) -> pd.DataFrame:
    """``rows`` as a manifest: the columns they give, then the rest of MANIFEST_COLUMNS empty."""
    frame = pd.DataFrame(list(rows))
    for column in MANIFEST_COLUMNS:
        if column not in frame:
            frame[column] = ""
    return frame


def png_manifest(folder: Path, films: Mapping[str, Sequence[np.ndarray]]) -> pd.DataFrame:
    """The manifest of ``films`` (label → 8-bit pixel arrays), each saved as
    ``folder/<label>/<i>.png``."""
    rows = []
    for label, arrays in films.items():
        for i, pixels in enumerate(arrays):
            path = folder / label / f"{i}.png"
            path.parent.mkdir(parents=True, exist_ok=True)
            Image.fromarray(pixels).save(path)
            rows.append({"path": str(path), "label": label})
    return manifest_frame(rows)


# --------------------------------------------------------------------------- records

def record_data(name: str = "DN-V2", created: str = "2024-05-01T12:00:00+00:00", *,
                backbone: str = "densenet121", variant: str = "v2",
                classes: Sequence[str] = CLASSES, epochs: int = 3, wall: float = 12.5,
                final: Mapping[str, float | None] | None = None, test: dict | None = None,
                **sections: Mapping[str, Any]) -> dict:
    """The JSON of a valid run record with these results (``record.json`` as a dict, to damage
    or to write by hand); the rest is filler.

    ``final`` is merged over :data:`FINAL`; the history has ``epochs`` entries per metric,
    ending at ``final``'s (flat where that is null). ``sections`` (``dataset=``, ``model=``,
    ``training=``) are merged over those sections' defaults.
    """
    final = {**FINAL, **(final or {})}
    start = {"loss": 1.0, "accuracy": 0.5, "val_loss": 1.1, "val_accuracy": 0.4}
    history = {key: [float(v) for v in np.linspace(first, first if final[key] is None else final[key],
                                                   epochs)]
               for key, first in start.items()}
    record = {
        "schema": SCHEMA, "name": name, "created": created,
        "dataset": {"root": "/data/covid", "layout": "kaggle-v4", "split_file": "split.csv",
                    "classes": list(classes), "n_train": 100, "n_val": 20, "n_test": 30},
        "model": {"backbone": backbone, "variant": variant, "weights": "imagenet",
                  "image_size": 224, "channels": 3, "trainable_params": 1000,
                  "total_params": 7_000_000},
        "prep": {"image_size": 224, "crop": False, "equalize": None},
        "spec": variant_spec(backbone, variant, epochs=epochs).model_dump(mode="json"),
        "runtime": {},
        "environment": {"python": "3.11", "tensorflow": "2.21", "keras": "3.15",
                        "cxrlib": "0.1.0", "numpy": "2.0", "device": "CPU", "platform": "Linux"},
        "training": {"epochs_run": epochs, "wall_time_s": wall, "resumed": False, "history": history},
        "final": final,
        "test": test,
        "skipped": [{"path": "bad.png", "error": "truncated"}],
        "artifacts": {"model": "model.keras", "history": "history.csv"},
    }
    for section, values in sections.items():
        record[section] = {**record[section], **values}
    return record


def make_record(*args: Any, **kwargs: Any) -> RunRecord:
    """:func:`record_data` as the typed record that :func:`cxrlib.runs.records.read_record`
    and :func:`cxrlib.runs.train.train` hand back."""
    return to_record(record_data(*args, **kwargs))


def scored(accuracy: float, classes: Sequence[str] = CLASSES, **more: Any) -> dict:
    """A record's ``test`` section as :func:`cxrlib.runs.metrics.compute_metrics` writes it, with
    ``accuracy``, a macro AUC of 0.9 and the bootstrap interval (accuracy - 0.1, accuracy + 0.05)
    on 30 films of ``classes``; ``more`` replaces keys."""
    k = len(classes)
    return {"classes": list(classes), "n": 30, "accuracy": accuracy, "loss": 0.5,
            "per_class": {c: {"precision": accuracy, "recall": accuracy, "specificity": accuracy,
                              "f1": accuracy, "support": 30 // k, "auc": 0.9} for c in classes},
            "auc_macro": 0.9, "confusion_matrix": [[30 // k if i == j else 0 for j in range(k)]
                                                  for i in range(k)],
            "ci": {"accuracy": [accuracy - 0.1, accuracy + 0.05], "auc_macro": [0.85, 0.95]}, **more}


def shortcut_result(drop: float = 0.45) -> dict:
    """What :func:`cxrlib.course.shortcut.shortcut_experiment` returns, with marked films scored
    ``drop`` above marker-free ones."""
    return {"settings": {"classes": ["COVID", "Normal"], "per_class": 60, "epochs": 12,
                         "method": "gradcam", "shortcut_class": "COVID"},
            "shortcut": {"accuracy_marked": 0.95, "accuracy_marker_free": 0.95 - drop, "n_marked": 27,
                         "border_share_marked": 0.5, "border_share_marker_free": 0.41,
                         "lung_share_marked": 0.42, "lung_share_marker_free": 0.55,
                         "marker_share_marked": 0.23, "marker_area_share": 0.05,
                         "marker_pixels_in_view": 1.0},
            "cropped": {"accuracy_marked": 0.9, "accuracy_marker_free": 0.9, "n_marked": 27,
                        "border_share_marked": 0.5, "border_share_marker_free": 0.5,
                        "lung_share_marked": 0.47, "lung_share_marker_free": 0.47,
                        "marker_share_marked": 0.0, "marker_area_share": 0.0,
                        "marker_pixels_in_view": 0.0},
            "border_band_area_share": 0.4375}


# --------------------------------------------------------------------------- the command line

def cli_run(argv: Sequence[Any], capsys) -> tuple[int, str, str]:
    """Run the CLI in-process: (exit status, stdout, stderr); argparse exits become statuses."""
    capsys.readouterr()
    try:
        code = main([str(a) for a in argv])
    except SystemExit as exit_:
        code = exit_.code if isinstance(exit_.code, int) else 1
    out, err = capsys.readouterr()
    return code, out, err


def assert_one_line_error(err: str, *fragments: str) -> str:
    """stderr is exactly one 'error:' line, no traceback, mentioning every fragment."""
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1, err
    line = lines[0]
    assert line.startswith("error:") and "Traceback" not in err and "\x1b[" not in err, err
    assert len(line) < 700, line
    for fragment in fragments:
        assert fragment.lower() in line.lower(), line
    return line


def tree_hash(root: Path, skip: tuple[str, ...] = ()) -> dict[str, str]:
    """Relative path → content hash (or link target) of everything under ``root``."""
    found: dict[str, str] = {}
    if not root.exists():
        return found
    if root.is_file():
        return {".": hashlib.sha256(root.read_bytes()).hexdigest()}
    for folder, dirs, files in os.walk(root, followlinks=False):
        dirs[:] = [d for d in dirs if d not in skip]
        for name in files + [d for d in dirs if (Path(folder) / d).is_symlink()]:
            path = Path(folder) / name
            rel = path.relative_to(root).as_posix()
            if name in skip:
                continue
            found[rel] = ("link:" + os.readlink(path) if path.is_symlink()
                          else hashlib.sha256(path.read_bytes()).hexdigest())
        found.setdefault(Path(folder).relative_to(root).as_posix() + "/", "dir")
    return found
