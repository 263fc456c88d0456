"""Using a finished run: load it, predict with it, score it.

- :func:`load_run`: a run's model with its record, preparation and classes (each model file
  is read once per process).
- :func:`predict`: class probabilities from model inputs (an array or a ``tf.data`` dataset).
- :func:`evaluate`: the metrics of a model on a manifest.
- :func:`evaluate_saved_model`: a saved run on its own test split or on a folder it never
  saw, with the folder's class names matched to the model's.
"""

from __future__ import annotations

import functools
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import pandas as pd

from cxrlib.data.datasets import canonical_class, load_manifest
from cxrlib.data.pipeline import make_dataset
from cxrlib.data.prepare import Prep
from cxrlib.data.splits import load_split
from cxrlib.errors import InputError
from cxrlib.models.forward import forward
from cxrlib.runs.metrics import class_probabilities
from cxrlib.runs.records import RECORD_FILE, RunRecord, read_record

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Run:
    """A finished run, loaded: what :func:`load_run` returns. Its fields are read by name (it
    is not a tuple: no caller depends on their order)."""

    model: Any          # the Keras model (or any callable on a batch)
    record: RunRecord   # its record.json, typed (:func:`cxrlib.runs.records.read_record`)
    prep: Prep          # how its training files became inputs: use it for every file it sees
    classes: list[str]  # its output columns, in order
    dir: Path           # the run directory


#: How many models :func:`load_run` keeps loaded (the most recently used): a lesson that loads
#: a few runs again and again reads each file once, and a long session does not hold them all.
MODELS_KEPT = 8


@functools.lru_cache(maxsize=MODELS_KEPT)
def _loaded_model(path: str, mtime_ns: int, classes: tuple[str, ...]):
    """The model file ``path`` as it was at ``mtime_ns`` (a retrained model is read anew),
    checked against its record's classes (:func:`check_outputs`)."""
    from cxrlib.models.build import load_model

    model = load_model(path)
    check_outputs(model, list(classes), Path(path))
    return model


def load_run(path: str | Path) -> Run:
    """The run in ``path`` (its directory, or its ``model.keras``): model, record, prep, classes.

    Raises FileNotFoundError when the model file or the record beside it is missing, and
    ValueError when the model does not fit its record (see :func:`check_outputs`). A model
    file loaded recently in this process is not read again unless it changed on disk
    (:data:`MODELS_KEPT`).
    """
    path = Path(path)
    if path.suffix == ".keras" and not path.is_file():
        raise FileNotFoundError(f"No model file at {path}; train the run first.")
    run_dir = path if path.is_dir() else path.parent
    if not (run_dir / RECORD_FILE).is_file():
        raise FileNotFoundError(f"No {RECORD_FILE} in {run_dir}: the run's classes and image "
                                "preparation are recorded there; train the run first.")
    record = read_record(run_dir)
    model_path = path if path.suffix == ".keras" else run_dir / record.artifacts.model
    if not model_path.is_file():
        raise FileNotFoundError(f"No model file at {model_path}; train the run first.")
    model = _loaded_model(str(model_path.resolve()), model_path.stat().st_mtime_ns,
                          tuple(record.dataset.classes))
    return Run(model=model, record=record, prep=record.prep.to_prep(),
               classes=list(record.dataset.classes), dir=run_dir)


def input_batches(inputs, batch_size: int = 32):
    """``(x, y)`` batches from an array (N, S, S, C) (``y`` None) or from an iterable of
    batches such as a ``tf.data`` dataset yielding ``x`` or ``(x, y)``."""
    if isinstance(inputs, np.ndarray):
        for start in range(0, len(inputs), batch_size):
            yield inputs[start:start + batch_size], None
        return
    for batch in inputs:
        yield (batch[0], batch[1]) if isinstance(batch, (tuple, list)) else (batch, None)


def predict(model, inputs, n_classes: int | None = None, batch_size: int = 32,
            with_labels: bool = False):
    """Class probabilities (N, K) of ``model`` for model inputs, in order.

    ``inputs`` is an array (N, S, S, C) or an iterable of batches (a ``tf.data`` dataset
    yielding ``x`` or ``(x, y)``). A one-unit sigmoid output becomes ``[1 - p, p]``;
    ``n_classes`` (default: the output's width, 2 for a sigmoid) is checked. ``model`` is
    any callable on a batch. With ``with_labels``, returns ``(probabilities, integer
    labels)`` read from the dataset's ``y``.
    """
    probs, labels = [], []
    for x, y in input_batches(inputs, batch_size):
        out = np.asarray(forward(model)(x))
        n_classes = n_classes or max(2, out.shape[-1])
        probs.append(class_probabilities(out, n_classes))
        if with_labels:
            labels.append(_label_indices(np.asarray(y)))
    out = np.concatenate(probs) if probs else np.zeros((0, n_classes or 0))
    if not with_labels:
        return out
    return out, (np.concatenate(labels) if labels else np.zeros((0,), int))


def per_film_correct(run_dir: str | Path, manifest: pd.DataFrame, batch_size: int = 32) -> np.ndarray:
    """Per film of ``manifest``'s ``test`` split (in its order), whether the run's saved model
    classifies it right: the input of a paired comparison of two runs
    (:func:`cxrlib.runs.metrics.paired_accuracy_gain`)."""
    run = load_run(run_dir)
    test = manifest[manifest["split"] == "test"]
    probs, labels = predict(run.model, make_dataset(test, run.classes, run.prep, batch_size),
                            len(run.classes), with_labels=True)
    return probs.argmax(1) == labels


def _label_indices(y: np.ndarray) -> np.ndarray:
    """Integer labels from int, binary (N, 1) or one-hot (N, K) encodings."""
    if y.ndim == 2 and y.shape[1] == 1:
        return y[:, 0].astype(int)
    return y.argmax(1) if y.ndim == 2 else y.astype(int)


def evaluate(model, manifest: pd.DataFrame, classes: Sequence[str], prep: Prep,
             batch_size: int = 32, bootstrap: int = 1000, seed: int = 0,
             target_sensitivity: float = 0.99) -> dict:
    """Score a model on a manifest: the metrics of :func:`cxrlib.runs.metrics.compute_metrics`
    plus ``skipped`` (the unreadable files, with their errors) and ``non_finite_outputs`` (how
    many images a diverged model gave NaN for: scored as uniform guesses, never a crash)."""
    from cxrlib.runs.metrics import compute_metrics

    binary = model.output_shape[-1] == 1
    skipped: list = []
    ds = make_dataset(manifest, classes, prep, batch_size=batch_size,
                      label_mode="binary" if binary else "categorical", skip_log=skipped)
    probs, labels = predict(model, ds, len(classes), with_labels=True)
    if len(labels) == 0:
        raise InputError("No readable images to evaluate.")
    broken = ~np.isfinite(probs).all(axis=1)
    if broken.any():  # a diverged model: its run is still scored and recorded, and says so
        log.warning("%d of %d outputs are not finite (the training diverged); they count as "
                    "uniform guesses.", int(broken.sum()), len(probs))
        probs = np.where(broken[:, None], 1.0 / len(classes), probs)
    metrics = compute_metrics(labels, probs, classes, bootstrap=bootstrap, seed=seed,
                              target_sensitivity=target_sensitivity)
    metrics["skipped"] = skipped
    metrics["non_finite_outputs"] = int(broken.sum())
    return metrics


def match_classes(manifest: pd.DataFrame, model_classes: Sequence[str]) -> pd.DataFrame:
    """Keep the rows whose class is one of the model's, matching names by their canonical form
    (``Covid``/``COVID``/``COVID-19``; ``NORMAL``/``Normal``); rename them to the model's names."""
    lookup = {canonical_class(c): c for c in model_classes}
    labels = manifest["label"].map(lambda label: lookup.get(canonical_class(label)))
    dropped = sorted(set(manifest.loc[labels.isna(), "label"]))
    if dropped:
        log.warning("Classes %s are not among the model's %s; their images are left out.",
                    dropped, list(model_classes))
    if labels.isna().all():
        raise InputError(f"None of the classes {sorted(set(manifest['label']))} match the model's "
                         f"classes {list(model_classes)}.")
    out = manifest[labels.notna()].assign(label=labels[labels.notna()]).reset_index(drop=True)
    out.attrs = dict(manifest.attrs)
    return out


def check_outputs(model, classes: Sequence[str], path: str | Path) -> None:
    """ValueError unless the model has one output per recorded class (or one sigmoid for two)."""
    units = int(model.output_shape[-1])
    if units != len(classes) and not (units == 1 and len(classes) == 2):
        raise InputError(f"The model {path} has {units} output(s) but its record.json lists "
                         f"{len(classes)} classes {list(classes)}: the model and the record come "
                         "from different runs; train the run again.")


def _test_split(run_dir: Path, record: RunRecord, data: str | Path | None) -> pd.DataFrame:
    """The run's own test split; ``data``, when given, must be the folder it was drawn from."""
    root = record.dataset.root
    if data is not None:
        if not Path(data).is_dir():
            raise FileNotFoundError(f"--data {data} is not a folder. With --split test the run's "
                                    "own test split is scored; leave --data out, or use --split "
                                    "all to score another folder.")
        if root and Path(data).resolve() != Path(root).resolve():
            raise InputError(f"--split test scores the run's own test split, drawn from {root}, "
                             f"not {data}; use --split all --data {data} to score every image "
                             "there, or leave --data out.")
    split_path = run_dir / record.artifacts.split
    manifest = load_split(split_path)
    manifest = manifest[manifest["split"] == "test"].reset_index(drop=True)
    if manifest.empty:
        raise InputError(f"The run's split {split_path} has no test images; use --split all --data DIR.")
    missing = [p for p in manifest["path"] if not Path(p).is_file()]
    if missing:
        raise FileNotFoundError(f"{len(missing)} of the run's {len(manifest)} test images are "
                                f"gone (first: {missing[0]}); the dataset moved or changed. "
                                "Use --split all --data DIR to score the folder where it is now.")
    return manifest


def evaluate_saved_model(model_path: str | Path, data: str | Path | None = None, split: str = "test",
                         out_dir: str | Path | None = None, layout: str = "auto") -> dict:
    """Score ``RUN_DIR/model.keras`` and write ``out_dir/metrics.json`` (and a confusion plot).

    ``split="test"`` scores the run's saved test split (``data``, if given, must be the
    folder the run was trained on); ``split="all"`` scores every image of ``data`` whose
    class the model knows. What cannot be honoured (a missing folder, another folder with
    ``split="test"``, test images that are gone) raises instead of scoring something else.
    """
    from cxrlib.files import write_json_atomic
    from cxrlib.plots import plot_confusion

    run = load_run(model_path)
    record, classes, prep = run.record, run.classes, run.prep
    if split == "test":
        manifest = _test_split(run.dir, record, data)
        data = record.dataset.root or data
    elif split == "all":
        if data is None:
            raise InputError("--split all scores every image of a folder: give it with --data DIR.")
        manifest = match_classes(load_manifest(data, layout=layout), classes)
    else:
        raise InputError(f"split must be 'test' or 'all', not {split!r}")
    metrics = evaluate(run.model, manifest, classes, prep,
                       seed=record.spec.seed)
    metrics.update({"model": str(model_path), "data": str(data), "split": split,
                    "run": record.name})
    if out_dir is not None:
        out = Path(out_dir)
        write_json_atomic(out / "metrics.json", metrics)
        plot_confusion(metrics["confusion_matrix"], classes, title=f"{record.name} on {split}",
                       save=out / "confusion.png")
    return metrics
