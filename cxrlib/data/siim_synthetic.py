"""A synthetic stand-in for SIIM-FISABIO-RSNA COVID-19 Detection, in its file format: the
films of :mod:`cxrlib.data.render`, their lesion masks as the competition's boxes."""

from __future__ import annotations

import csv
import logging
import re
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image

from cxrlib.data.render import MIN_SIZE, RANDOM_MARKERS, check_film_settings, render_radiograph
from cxrlib.data.synthetic import generator_version, inside, refuse_links_out
from cxrlib.errors import InputError, RefusedFolderError
from cxrlib.files import read_json, write_csv_atomic, write_json_atomic

log = logging.getLogger(__name__)

#: The four study-level columns of SIIM-FISABIO-RSNA ``train_study_level.csv``, in order.
SIIM_STUDY_COLUMNS: tuple[str, ...] = ("Negative for Pneumonia", "Typical Appearance",
                                       "Indeterminate Appearance", "Atypical Appearance")
#: Which synthetic pattern stands in for each SIIM study class, and why:
#: Negative: no lesion. Typical (of COVID-19): bilateral, peripheral, lower-zone ground
#: glass, the synthetic COVID pattern. Indeterminate: diffuse or perihilar opacity that
#: does not point to COVID-19, the synthetic diffuse viral pattern. Atypical: focal lobar
#: consolidation, more typical of bacterial pneumonia, the synthetic bacterial pattern.
SIIM_SYNTHETIC_CLASSES: dict[str, str] = {
    "Negative for Pneumonia": "Normal",
    "Typical Appearance": "COVID",
    "Indeterminate Appearance": "Viral Pneumonia",
    "Atypical Appearance": "Bacterial Pneumonia",
}
#: The class shares of the competition's 6,054 training studies (1676, 2855, 1049, 474).
SIIM_CLASS_SHARES: tuple[float, float, float, float] = (0.277, 0.472, 0.173, 0.078)


def lesion_boxes(mask: np.ndarray, min_fraction: float = 0.005, close: float = 0.03
                 ) -> list[dict[str, float]]:
    """Bounding boxes ``{"x", "y", "width", "height"}`` (pixels) of a lesion mask's regions.

    As a radiologist draws one box round each opacity rather than round every speck, the
    mask is first closed (gaps up to ``close`` x the image size bridged) and its holes
    filled; then each connected component (``scipy.ndimage.label`` + ``find_objects``) whose
    box covers at least ``min_fraction`` of the image becomes a box, left to right.
    """
    from scipy import ndimage

    m = np.asarray(mask) > 0
    if not m.any():
        return []
    h, w = m.shape
    r = max(1, round(close * min(h, w)))
    padded = np.pad(m, r)  # so that closing does not stick regions to the border
    closed = ndimage.binary_closing(padded, structure=ndimage.generate_binary_structure(2, 1),
                                    iterations=r)[r:-r, r:-r]
    labels, _ = ndimage.label(ndimage.binary_fill_holes(closed))
    boxes = []
    for rows, cols in ndimage.find_objects(labels):
        bh, bw = rows.stop - rows.start, cols.stop - cols.start
        if bh * bw >= min_fraction * h * w:
            boxes.append({"x": float(cols.start), "y": float(rows.start),
                          "width": float(bw), "height": float(bh)})
    return sorted(boxes, key=lambda b: (b["x"], b["y"]))


def siim_label_string(boxes: Sequence[dict]) -> str:
    """The ``label`` column of ``train_image_level.csv``: ``opacity 1 x1 y1 x2 y2 ...`` or
    ``none 1 0 0 1 1`` for an image without boxes."""
    if not boxes:
        return "none 1 0 0 1 1"
    return " ".join(f"opacity 1 {b['x']:g} {b['y']:g} {b['x'] + b['width']:g} {b['y'] + b['height']:g}"
                    for b in boxes)


def _siim_counts(n: int, shares: Sequence[float]) -> list[int]:
    """n split by shares (largest remainder), every class at least one when n allows."""
    shares = np.asarray(shares, dtype=float) / float(np.sum(shares))
    raw = shares * n
    counts = np.floor(raw).astype(int)
    for i in np.argsort(-(raw - counts), kind="stable")[: n - counts.sum()]:
        counts[i] += 1
    for i in range(len(counts)):  # a class with no study would make the lesson pointless
        if counts[i] == 0 and counts.max() > 1 and shares[i] > 0:
            counts[int(np.argmax(counts))] -= 1
            counts[i] += 1
    return counts.tolist()


def generate_siim_like(out_dir: str | Path, n_studies: int = 600, size: int = 256, seed: int = 0,
                       shares: Sequence[float] = SIIM_CLASS_SHARES, vary_size: bool = True,
                       severity: tuple[float, float] = (0.6, 1.0), marker_prob: float = 0.3,
                       reuse: bool = True, progress: bool = True) -> Path:
    """A synthetic stand-in for SIIM-FISABIO-RSNA COVID-19 Detection, in its file format.

    Writes into ``out_dir``:

    - ``train_study_level.csv``: ``id`` (``<study>_study``) and the one-hot columns of
      :data:`SIIM_STUDY_COLUMNS`, ``n_studies`` rows in the competition's class shares
      (``shares``, in that column order);
    - ``train_image_level.csv``: ``id`` (``<image>_image``), ``boxes`` (a Python-literal list
      of ``{'x', 'y', 'width', 'height'}`` dicts, empty for none), ``label``
      (``opacity 1 x1 y1 x2 y2 ...`` or ``none 1 0 0 1 1``) and ``StudyInstanceUID``;
    - ``train/<image>.png``: one radiograph per study, drawn by :func:`render_radiograph`
      with the pattern :data:`SIIM_SYNTHETIC_CLASSES` maps the study class to; its boxes
      come from the lesion mask (:func:`lesion_boxes`), so a Negative image, or one whose
      lesion is too faint to box, is ``none``;
    - ``synthetic.json``: the parameters and the class mapping.

    Ids are 12 hex digits drawn from ``seed``; image ``k`` depends only on (seed, k) and its
    class. With ``reuse``, a folder already holding this set with the same parameters is
    returned untouched. A folder with a ``train_study_level.csv`` but no ``synthetic.json``
    (the real competition data) is refused with FileExistsError.
    """
    shares = [float(s) for s in shares]
    if len(shares) != len(SIIM_STUDY_COLUMNS) or min(shares) < 0 or sum(shares) <= 0:
        raise InputError(f"shares must be {len(SIIM_STUDY_COLUMNS)} non-negative numbers, got {shares}")
    if int(n_studies) < 1:
        raise InputError(f"n_studies must be >= 1, got {n_studies}")
    lo, hi = check_film_settings(size, severity)
    if not 0 <= marker_prob <= 1:
        raise InputError(f"marker_prob must be in [0, 1], got {marker_prob}")
    out = Path(out_dir)
    meta_path = out / "synthetic.json"
    meta = {"generator": "cxrlib.data.siim_synthetic.generate_siim_like", "cxrlib_version": generator_version(),
            "seed": seed, "n_studies": int(n_studies), "size": int(size), "shares": shares,
            "vary_size": vary_size, "severity": [lo, hi], "marker_prob": marker_prob,
            "classes": SIIM_SYNTHETIC_CLASSES,
            "layout": "SIIM-FISABIO-RSNA: train_study_level.csv, train_image_level.csv, train/<image>.png"}
    refuse_links_out(out, ["train", "synthetic.json", *_SIIM_CSVS])
    if (out / "train_study_level.csv").exists():
        if not meta_path.is_file():
            raise RefusedFolderError(f"{out} holds a train_study_level.csv but no synthetic.json: "
                                     "refusing to overwrite what looks like the real competition "
                                     "data. Give the generator a new or empty folder.")
        ids = _siim_listed_ids(out)
        old = read_json(meta_path)
        if reuse and {k: v for k, v in old.items() if k != "cxrlib_version"} == \
                {k: v for k, v in meta.items() if k != "cxrlib_version"} and \
                _siim_complete(out, ids, int(n_studies)):
            return out
        for image_id in ids:  # the images the earlier run wrote, and nothing else
            (out / "train" / f"{image_id}.png").unlink(missing_ok=True)
    (out / "train").mkdir(parents=True, exist_ok=True)
    write_json_atomic(meta_path, meta)

    id_rng = np.random.default_rng([seed, 9_001])
    counts = _siim_counts(int(n_studies), shares)
    columns = [c for c, k in zip(SIIM_STUDY_COLUMNS, counts) for _ in range(k)]
    columns = [columns[i] for i in id_rng.permutation(len(columns))]
    jobs = list(enumerate(columns))
    if progress:
        from tqdm.auto import tqdm
        jobs = tqdm(jobs, desc="synthetic SIIM", unit="img")
    studies, images = [], []
    for k, column in jobs:
        study, image_id = id_rng.bytes(6).hex(), id_rng.bytes(6).hex()
        rng = np.random.default_rng([seed, 9_002, k])
        factors, sev_u, marker_u = rng.uniform(0.85, 1.25, size=2), rng.uniform(), rng.uniform()
        h, w = (max(MIN_SIZE, round(size * f)) for f in factors) if vary_size else (size, size)
        marker = RANDOM_MARKERS[rng.integers(len(RANDOM_MARKERS))] if marker_u < marker_prob else None
        image, mask = render_radiograph(rng, SIIM_SYNTHETIC_CLASSES[column], (h, w),
                                        lo + (hi - lo) * sev_u, marker)
        Image.fromarray(image).save(out / "train" / f"{image_id}.png", format="PNG")
        boxes = lesion_boxes(mask)
        studies.append({"id": f"{study}_study", **{c: int(c == column) for c in SIIM_STUDY_COLUMNS}})
        images.append({"id": f"{image_id}_image", "boxes": repr(boxes) if boxes else "",
                       "label": siim_label_string(boxes), "StudyInstanceUID": study})
    for name, rows in zip(_SIIM_CSVS, (studies, images)):
        write_csv_atomic(pd.DataFrame(rows), out / name)
    return out


#: The two CSVs of the SIIM layout, study level first.
_SIIM_CSVS = ("train_study_level.csv", "train_image_level.csv")
#: An image id as generate_siim_like draws it: 12 hex digits.
_SIIM_ID = re.compile(r"[0-9a-f]{12}")


def _siim_listed_ids(out: Path) -> list[str]:
    """The image ids in ``out/train_image_level.csv`` that generate_siim_like could have drawn.

    The CSV is input: an id that is not 12 hex digits, or whose image would resolve outside
    ``out``, is left alone with a warning. Empty when the CSV is unreadable.
    """
    try:
        with open(out / "train_image_level.csv", newline="") as f:
            listed = [str(row.get("id") or "").removesuffix("_image") for row in csv.DictReader(f)]
    except (OSError, UnicodeDecodeError, csv.Error):
        return []
    ours = [i for i in listed if _SIIM_ID.fullmatch(i) and inside(out, out / "train" / f"{i}.png")]
    others = sorted(set(listed) - set(ours))
    if others:
        log.warning("%s lists %d image id(s) the generator does not draw (first: %r); their files "
                    "are left alone. Delete them by hand if they are yours to delete.",
                    out / "train_image_level.csv", len(others), others[0])
    return ours


def _siim_complete(out: Path, ids: Sequence[str], n_studies: int) -> bool:
    """True when ``ids`` (as :func:`_siim_listed_ids` gives them) are the ``n_studies`` images of
    one run, and every one of them is there."""
    return len(ids) == n_studies and all((out / "train" / f"{i}.png").is_file() for i in ids)
