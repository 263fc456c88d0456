"""The default dataset on disk: :func:`generate_synthetic` writes the films of
:mod:`cxrlib.data.render` in the layout of the Kaggle COVID-19 Radiography Database (v4),
so the same code reads the synthetic and the real data, and keeps track of the files it
owns in a folder (``synthetic.json``), so that it never overwrites or deletes anything else.

With ``shortcut_class`` one class gets a "PORTABLE" marker in its top-left corner on most of
its images, and no other image ever gets it: a model can then learn the marker instead of
the lungs, which is the shortcut-learning lesson of the course.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image

from cxrlib.data.render import (
    MIN_SIZE,
    RANDOM_MARKERS,
    SHORTCUT_MARKER,
    SYNTH_CLASSES,
    check_film_settings,
    check_label,
    render_radiograph,
)
from cxrlib.errors import InputError, RefusedFolderError
from cxrlib.files import read_json, write_csv_atomic, write_json_atomic

log = logging.getLogger(__name__)


def generator_version() -> str | None:
    """cxrlib's version, or None when it cannot be imported."""
    try:
        from cxrlib import __version__
    except Exception:  # pragma: no cover - only when used outside the package
        return None
    return __version__


def _synthetic_files(classes: Sequence[str], per_class: int) -> list[str]:
    """The files one synthetic run writes, relative to its folder (posix paths)."""
    files = [f"{name}/{sub}/{name}-{i}.png" for name in classes for sub in ("images", "masks")
             for i in range(1, per_class + 1)]
    return files + ["markers.csv"]


#: A file generate_synthetic writes: ``<Class>/images|masks/<Class>-<i>.png`` (or markers.csv).
_SYNTH_FILE = re.compile(r"(?P<cls>[^/]+)/(?:images|masks)/(?P=cls)-(?P<i>[1-9][0-9]*)\.png")


def inside(root: Path, path: Path) -> bool:
    """True when ``path``, with every symbolic link resolved, lies inside ``root``."""
    return path.resolve().is_relative_to(root.resolve())


def refuse_links_out(out: Path, paths: Sequence[str]) -> None:
    """RefusedFolderError when one of ``paths`` (relative to ``out``) leads outside it by a link."""
    outside = [p for p in paths if not inside(out, out / p)]
    if outside:
        raise RefusedFolderError(f"{out / outside[0]} leads outside {out} through a symbolic link; "
                                 "refusing to write there. Give the generator a new or empty folder.")


def _synth_would_write(out: Path, rel: str) -> bool:
    """True for a path generate_synthetic writes, that also resolves inside ``out``."""
    match = _SYNTH_FILE.fullmatch(rel)
    ours = rel == "markers.csv" or (match is not None and match["cls"] in SYNTH_CLASSES)
    return ours and inside(out, out / rel)


def _listed_files(out: Path, meta: dict) -> list[str]:
    """The files ``synthetic.json`` says synth wrote, as listed (not yet trusted).

    Older versions recorded no list; theirs is the files present of their classes, numbered up
    to their ``per_class``.
    """
    if isinstance(meta.get("files"), list):
        return [str(f) for f in meta["files"]]
    classes = meta.get("classes")
    per_class = meta.get("per_class")
    if not isinstance(classes, list) or not isinstance(per_class, int):
        return []
    found = [p.relative_to(out).as_posix() for c in classes if c in SYNTH_CLASSES
             for sub in ("images", "masks") for p in sorted((out / c / sub).glob(f"{c}-*.png"))]
    numbered = [(f, _SYNTH_FILE.fullmatch(f)) for f in found]
    return [f for f, match in numbered if match and int(match["i"]) <= per_class] + ["markers.csv"]


def _owned_files(out: Path) -> set[str]:
    """The files an earlier run recorded as its own in ``out/synthetic.json``.

    ``synthetic.json`` is input: only entries that synth itself writes and that resolve inside
    ``out`` are trusted; any other entry is left alone, with a warning.
    """
    listed = _listed_files(out, read_json(out / "synthetic.json"))
    owned = {f for f in listed if _synth_would_write(out, f)}
    ignored = sorted(set(listed) - owned)
    if ignored:
        log.warning("%s lists %d file(s) synth does not write, or outside the folder (first: %s); "
                    "left alone and dropped from the list. Delete them by hand if they are yours "
                    "to delete.", out / "synthetic.json", len(ignored), ignored[0])
    return owned


def _claim_folder(out: Path, targets: Sequence[str]) -> set[str]:
    """Check that synth may write ``targets`` into ``out``; return the files it owns there.

    ``out`` must be missing, empty, or a folder an earlier synth run wrote (``synthetic.json``);
    a file synth did not write is never overwritten, and nothing is written through a link that
    leads outside ``out``. Raises RefusedFolderError otherwise.
    """
    meta_path = out / "synthetic.json"
    if out.exists() and not out.is_dir():
        raise RefusedFolderError(f"{out} is a file; give synth a new or empty folder.")
    if not out.exists() or not any(out.iterdir()):
        return set()
    if not meta_path.is_file():
        raise RefusedFolderError(f"{out} is not empty and holds no synthetic.json, so synth did "
                                 "not write it; refusing to touch it. Give synth a new or empty "
                                 "folder.")
    refuse_links_out(out, [*targets, "synthetic.json"])
    owned = _owned_files(out)
    foreign = sorted(f for f in targets if f not in owned and (out / f).exists())
    if foreign:
        raise RefusedFolderError(f"{out} holds {len(foreign)} file(s) synth did not write (first: "
                                 f"{foreign[0]}); refusing to overwrite them. Give synth a new or "
                                 "empty folder.")
    return owned


def _remove_owned(out: Path, stale: set[str]) -> None:
    """Delete files an earlier synth run wrote and this one does not, and emptied folders."""
    for rel in sorted(stale):
        path = out / rel
        if path.is_file() and not path.is_symlink():
            path.unlink()
    folders = {p for r in stale for p in Path(r).parents if p != Path(".")}
    for rel in sorted(folders, key=lambda p: len(p.parts), reverse=True):
        folder = out / rel
        if folder.is_dir() and not folder.is_symlink() and not any(folder.iterdir()):
            folder.rmdir()


def generate_synthetic(out_dir: str | Path, per_class: int = 300, size: int = 256, seed: int = 0,
                       classes: Sequence[str] | None = SYNTH_CLASSES, vary_size: bool = True,
                       severity: tuple[float, float] = (0.6, 1.0), marker_prob: float = 0.3,
                       shortcut_class: str | None = None, shortcut_prob: float = 0.9,
                       progress: bool = True) -> Path:
    """Write the dataset in the Kaggle COVID-19 Radiography Database v4 layout and return out_dir.

    Layout: ``<Class>/images/<Class>-<i>.png`` and ``<Class>/masks/<Class>-<i>.png``
    (i = 1..per_class), ``synthetic.json`` (all parameters) and ``markers.csv`` (file,
    label, marker, shortcut). Image ``i`` of a class depends only on (seed, class, i), so
    the output is reproducible and does not depend on ``per_class`` or ``classes``
    (None means all of SYNTH_CLASSES). Sizes vary in [0.85, 1.25] x ``size`` per side when
    ``vary_size``; each image's severity is drawn uniformly from ``severity``.
    ``synthetic.json`` also lists every file the run wrote (``files``). Re-running into the
    same folder overwrites and removes only files listed there (images beyond ``per_class``,
    or of classes dropped since); other files are never touched, nor is a listed entry that synth
    does not write or that leads outside the folder (``synthetic.json`` is input, like any
    file). A non-empty folder without ``synthetic.json`` (e.g. the real database), or one where
    a file to be written exists but is not listed, is refused with FileExistsError before
    anything is written.
    """
    classes = list(SYNTH_CLASSES if classes is None else classes)
    if not classes:
        raise InputError("classes must name at least one class")
    for name in classes:
        check_label(name)
    if len(set(classes)) != len(classes):
        raise InputError(f"classes contains duplicates: {classes}")
    if int(per_class) < 1:
        raise InputError(f"per_class must be >= 1, got {per_class}")
    lo, hi = check_film_settings(size, severity)
    for pname, p in (("marker_prob", marker_prob), ("shortcut_prob", shortcut_prob)):
        if not 0 <= p <= 1:
            raise InputError(f"{pname} must be in [0, 1], got {p}")
    if shortcut_class is not None and shortcut_class not in classes:
        raise InputError(f"shortcut_class {shortcut_class!r} is not one of classes {classes}")
    per_class, size = int(per_class), int(size)

    out = Path(out_dir)
    meta_path = out / "synthetic.json"
    targets = _synthetic_files(classes, per_class)
    owned = _claim_folder(out, targets)
    out.mkdir(parents=True, exist_ok=True)
    meta = {
        "generator": "cxrlib.data.synthetic.generate_synthetic",
        "cxrlib_version": generator_version(),
        "seed": seed, "per_class": per_class, "size": size, "classes": classes,
        "vary_size": vary_size, "size_range": [0.85, 1.25] if vary_size else [1.0, 1.0],
        "severity": [lo, hi], "marker_prob": marker_prob, "random_markers": list(RANDOM_MARKERS),
        "shortcut_class": shortcut_class, "shortcut_prob": shortcut_prob,
        "shortcut_marker": SHORTCUT_MARKER if shortcut_class else None,
        "shortcut_corner": "tl" if shortcut_class else None,
        "rng": "numpy.random.default_rng([seed, SYNTH_CLASSES.index(class), i])",
        "layout": "COVID-19 Radiography Database v4: <Class>/images|masks/<Class>-<i>.png",
    }
    # written first, listing every file synth may own, so an interrupted run is still recognised
    write_json_atomic(meta_path, {**meta, "files": sorted(owned | set(targets))})
    _remove_owned(out, owned - set(targets))

    pool = [m for m in RANDOM_MARKERS if not (shortcut_class and m == SHORTCUT_MARKER)]
    jobs = [(name, i) for name in classes for i in range(1, per_class + 1)]
    if progress:
        from tqdm.auto import tqdm
        jobs = tqdm(jobs, desc="synthetic CXR", unit="img")
    rows = []
    for name, i in jobs:
        ci = SYNTH_CLASSES.index(name)
        rng = np.random.default_rng([seed, ci, i])
        # the same draws whatever the options, so that e.g. the shortcut or vary_size
        # settings change only the marker or the frame, never the patient
        factors, sev_u, short_u, marker_u = rng.uniform(0.85, 1.25, size=2), *rng.uniform(size=3)
        h, w = (max(MIN_SIZE, round(size * f)) for f in factors) if vary_size else (size, size)
        sev = lo + (hi - lo) * sev_u
        shortcut = name == shortcut_class and short_u < shortcut_prob
        random_marker = marker_u < marker_prob
        pick = pool[rng.integers(len(pool))]
        if shortcut:
            text, corner = SHORTCUT_MARKER, "tl"
        elif random_marker:
            text, corner = pick, None
        else:
            text, corner = None, None
        image, mask = render_radiograph(rng, name, (h, w), sev, text, corner)
        rel = Path(name) / "images" / f"{name}-{i}.png"
        for sub, arr in (("images", image), ("masks", mask)):
            path = out / name / sub / f"{name}-{i}.png"
            path.parent.mkdir(parents=True, exist_ok=True)
            Image.fromarray(arr).save(path, format="PNG")
        rows.append({"file": rel.as_posix(), "label": name, "marker": text or "",
                     "shortcut": bool(shortcut)})

    write_csv_atomic(pd.DataFrame(rows, columns=["file", "label", "marker", "shortcut"]), out / "markers.csv")
    write_json_atomic(meta_path, {**meta, "files": targets})
    return out


# --------------------------------------------------------------------------- source task
