"""Evaluation of a classifier from true labels and predicted probabilities.

Everything here works on numpy arrays, never on a model, so the same code scores a Keras
model, a saved prediction file or a hand-made example in a test. The result of
:func:`compute_metrics` is a plain JSON-serialisable dict that goes into the run record
(``record.test``, :class:`cxrlib.runs.records.TestResult`) and from there into every report table.

Why each number is there:

- **accuracy** alone hides a lot on imbalanced data, so every class also gets its
  **precision**, **recall** (= sensitivity: how many of the sick are found), **specificity**
  (how many of the healthy are left alone) and **F1**, plus its one-vs-rest **ROC AUC**,
  which does not depend on a threshold at all;
- a test set of a few hundred images gives a noisy estimate, so accuracy and macro AUC come
  with a 95 % **bootstrap confidence interval**: the test set is resampled with replacement
  ``bootstrap`` times and the interval is the 2.5th–97.5th percentile of the results. Two
  models whose intervals overlap widely are not shown to differ by that test set;
- a screening tool must miss (almost) nobody, so for two classes the **operating point** is
  the highest threshold that still reaches the target sensitivity (99 % by default), with
  the specificity it costs. The default threshold 0.5 of ``argmax`` is rarely that point.

Predictions are the ``argmax`` of the probabilities. Undefined ratios (a class never
predicted, say) are 0.0, as with scikit-learn's ``zero_division=0``; an AUC that cannot be
defined (a class absent from the labels) is ``None``.
"""

from __future__ import annotations

import logging
import math
from typing import Sequence

import numpy as np
from sklearn.metrics import confusion_matrix, precision_recall_fscore_support, roc_auc_score, roc_curve

from cxrlib.files import jsonable

log = logging.getLogger(__name__)

CI_LEVEL = 0.95
_BOOTSTRAP_CELLS = 2_000_000  # resamples x samples per chunk: bounds the memory of the bootstrap


def cross_entropy(y_true: np.ndarray, y_prob: np.ndarray) -> float | None:
    """Mean cross-entropy of the true class (the test loss the courses' tables report).

    Not ``sklearn.metrics.log_loss``: that clips at float64's eps and renormalises each row,
    while this clips at Keras's 1e-7, so the number matches ``model.evaluate``'s loss."""
    if not len(y_true):
        return None
    picked = np.clip(y_prob[np.arange(len(y_true)), y_true], 1e-7, 1.0)
    return float(-np.mean(np.log(picked)))


def compute_metrics(y_true: np.ndarray, y_prob: np.ndarray, classes: Sequence[str],
                    bootstrap: int = 1000, seed: int = 0,
                    target_sensitivity: float = 0.99, y_pred: np.ndarray | None = None) -> dict:
    """All test-set metrics as a JSON-serialisable dict (see the module docstring).

    ``y_true`` holds class indices (N,), ``y_prob`` probabilities (N, K) with K == len(classes).
    For two classes a single column of positive-class probabilities (N,) or (N, 1) is also
    accepted and read as ``[1 - p, p]``. ``y_pred``, the decisions (class indices), defaults
    to the probabilities' argmax; a pipeline that decides otherwise (the two-stage routing)
    gives its own, and the accuracy, confusion matrix and per-class scores are theirs.
    """
    classes = [str(c) for c in classes]
    y_true, y_prob = _check_inputs(y_true, y_prob, len(classes))
    k = len(classes)
    y_pred = y_prob.argmax(axis=1) if y_pred is None else np.asarray(y_pred, dtype=np.int64)
    matrix, scores = class_scores(y_true, y_pred, k)
    aucs = [_auc(y_true == i, y_prob[:, i]) for i in range(k)]
    per_class = {name: {**scores[i], "auc": aucs[i]} for i, name in enumerate(classes)}
    result: dict = {
        "classes": classes,
        "n": int(len(y_true)),
        "accuracy": float(np.mean(y_pred == y_true)) if len(y_true) else None,
        "loss": cross_entropy(y_true, y_prob),
        "per_class": per_class,
        "auc_macro": None if any(a is None for a in aucs) else float(np.mean(aucs)),
        "confusion_matrix": matrix.tolist(),
        "ci": bootstrap_ci(y_true, y_prob, n_resamples=bootstrap, seed=seed, y_pred=y_pred),
    }
    if result["auc_macro"] is None:
        result["auc_macro_note"] = auc_note(y_true, classes)
    if k == 2:
        result["roc"] = _binary_roc(y_true == 1, y_prob[:, 1])
        result["operating_point"] = threshold_for_sensitivity(y_true == 1, y_prob[:, 1],
                                                              target=target_sensitivity)
    return jsonable(result)


def auc_note(y_true: np.ndarray, classes: Sequence[str]) -> str:
    """Why the macro AUC is undefined: the classes with no images (or only images) in the set."""
    counts = np.bincount(np.asarray(y_true, dtype=np.int64), minlength=len(classes))
    absent = [c for c, n in zip(classes, counts) if n == 0]
    if absent:
        return f"no images of {', '.join(absent)} in this set, so their AUC is undefined"
    return "every image is of one class, so no AUC is defined"


def threshold_for_sensitivity(y_true_binary: np.ndarray, scores: np.ndarray,
                              target: float = 0.99) -> dict:
    """The highest threshold whose sensitivity reaches target.

    Returns {"threshold", "sensitivity", "specificity", "target"}. A sample is called positive when ``score >= threshold``. With P positives, at least
    ``ceil(target * P)`` of them must be found, so the answer is the ``ceil(target * P)``-th
    highest positive score: any higher threshold finds fewer. ``None`` values mean there
    were no positives (threshold, sensitivity) or no negatives (specificity).
    """
    if not 0.0 < target <= 1.0:
        raise ValueError(f"target sensitivity must be in (0, 1], not {target}")
    positive = np.asarray(y_true_binary).astype(bool).ravel()
    scores = np.asarray(scores, dtype=np.float64).ravel()
    if positive.shape != scores.shape:
        raise ValueError(f"{positive.size} labels but {scores.size} scores")
    pos_scores = np.sort(scores[positive])[::-1]
    neg_scores = scores[~positive]
    out: dict = {"threshold": None, "sensitivity": None, "specificity": None,
                 "target": float(target)}
    if pos_scores.size == 0:
        log.warning("No positive samples: no threshold reaches a sensitivity.")
        return out
    needed = max(1, math.ceil(target * pos_scores.size - 1e-9))
    threshold = float(pos_scores[needed - 1])
    out["threshold"] = threshold
    out["sensitivity"] = float(np.mean(pos_scores >= threshold))
    if neg_scores.size:
        out["specificity"] = float(np.mean(neg_scores < threshold))
    return out


def bootstrap_ci(y_true: np.ndarray, y_prob: np.ndarray, n_resamples: int = 1000,
                 seed: int = 0, level: float = CI_LEVEL, y_pred: np.ndarray | None = None
                 ) -> dict[str, list[float] | None]:
    """Percentile bootstrap intervals of accuracy (of ``y_pred``, default the argmax) and of
    macro AUC: {"accuracy", "auc_macro"}.

    Each resample draws N samples with replacement; it is represented by how often each
    sample was drawn (a row of counts), so every statistic is a weighted sum over the
    original samples and no resample is ever materialised. Resamples in which a class is
    missing have no macro AUC and are skipped for it. ``None`` when nothing could be computed.
    Hand-written because it pays: 56x faster than resampling into scikit-learn's
    ``roc_auc_score`` (``benchmarks/bench_metrics.py``, docs/results.md).
    """
    y_true = np.asarray(y_true, dtype=np.int64)
    y_prob = np.asarray(y_prob, dtype=np.float64)
    n, k = y_prob.shape
    if n_resamples <= 0 or n == 0:
        return {"accuracy": None, "auc_macro": None}
    rng = np.random.default_rng(seed)
    y_pred = y_prob.argmax(axis=1) if y_pred is None else np.asarray(y_pred, dtype=np.int64)
    correct = (y_pred == y_true).astype(np.float64)
    accuracies, aucs = [], []
    chunk = max(1, _BOOTSTRAP_CELLS // n)
    for start in range(0, n_resamples, chunk):
        rows = min(chunk, n_resamples - start)
        counts = _resample_counts(rng, rows, n)
        accuracies.append(counts @ correct / n)
        per_class = np.stack([_weighted_auc(y_true == i, y_prob[:, i], counts)
                              for i in range(k)], axis=1)
        aucs.append(per_class.mean(axis=1))  # NaN wherever a class was missing
    auc_all = np.concatenate(aucs)
    return {"accuracy": _percentiles(np.concatenate(accuracies), level),
            "auc_macro": _percentiles(auc_all[np.isfinite(auc_all)], level)}


def paired_accuracy_gain(correct: np.ndarray, baseline: np.ndarray, n_resamples: int = 2000,
                         seed: int = 0, level: float = CI_LEVEL) -> dict[str, float | list[float] | None]:
    """How much more often one model is right than another on the *same* samples:
    {"gain": mean difference, "ci": its paired percentile-bootstrap interval}.

    ``correct`` and ``baseline`` are per-sample booleans in the same order. Resampling the
    pairs, not each model on its own, cancels the samples both get right or both get wrong,
    so the interval is much narrower than the two accuracies' intervals suggest.
    """
    a, b = (np.asarray(x, dtype=np.float64).ravel() for x in (correct, baseline))
    if a.shape != b.shape:
        raise ValueError(f"Paired comparison of {a.size} and {b.size} samples: they must be the same samples.")
    if a.size == 0:
        return {"gain": None, "ci": None}
    diff = a - b
    if n_resamples <= 0:
        return {"gain": float(diff.mean()), "ci": None}
    rng = np.random.default_rng(seed)
    chunk = max(1, _BOOTSTRAP_CELLS // diff.size)
    means = [_resample_counts(rng, min(chunk, n_resamples - start), diff.size) @ diff / diff.size
             for start in range(0, n_resamples, chunk)]
    return {"gain": float(diff.mean()), "ci": _percentiles(np.concatenate(means), level)}


def class_probabilities(output: np.ndarray, n_classes: int) -> np.ndarray:
    """A model's output as (N, K) probabilities: a sigmoid column (N, 1) or a vector (N,)
    becomes ``[1 - p, p]`` for two classes; any other width must equal ``n_classes``."""
    out = np.asarray(output, dtype=np.float64)
    if out.ndim == 1:
        out = out[:, None]
    if out.ndim == 2 and out.shape[1] == 1 and n_classes == 2:
        out = np.concatenate([1.0 - out, out], axis=1)
    if out.ndim != 2 or out.shape[1] != n_classes:
        raise ValueError(f"The model's output has shape {out.shape}, which does not fit "
                         f"{n_classes} classes; was it trained on these classes?")
    return out


def _check_inputs(y_true: np.ndarray, y_prob: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Validated int labels (N,) and float probabilities (N, K)."""
    y_true = np.asarray(y_true).ravel()
    y_prob = class_probabilities(y_prob, k)
    if len(y_true) != len(y_prob):
        raise ValueError(f"{len(y_true)} labels but {len(y_prob)} rows of probabilities")
    if y_true.size and not np.issubdtype(y_true.dtype, np.integer):
        if not np.all(np.mod(y_true, 1) == 0):
            raise ValueError("y_true must hold integer class indices")
    y_true = y_true.astype(np.int64)
    if y_true.size and (y_true.min() < 0 or y_true.max() >= k):
        raise ValueError(f"class indices must lie in [0, {k - 1}]")
    return y_true, y_prob


def class_scores(y_true: np.ndarray, y_pred: np.ndarray, k: int) -> tuple[np.ndarray, list[dict]]:
    """The K x K confusion matrix (rows true, columns predicted) and each class's precision,
    recall, specificity, F1 and support (scikit-learn's, ``zero_division=0``; specificity is
    the recall of "not this class", which scikit-learn does not name)."""
    labels = np.arange(k)
    if not len(y_true):   # scikit-learn refuses an empty set
        return np.zeros((k, k), dtype=np.int64), [dict.fromkeys(
            ("precision", "recall", "specificity", "f1"), 0.0) | {"support": 0} for _ in labels]
    matrix = confusion_matrix(y_true, y_pred, labels=labels)
    precision, recall, f1, support = precision_recall_fscore_support(
        y_true, y_pred, labels=labels, zero_division=0)
    negatives = matrix.sum() - matrix.sum(axis=1)
    true_negatives = negatives - (matrix.sum(axis=0) - matrix.diagonal())
    specificity = np.divide(true_negatives, negatives, out=np.zeros(k), where=negatives > 0)
    return matrix, [{"precision": float(precision[i]), "recall": float(recall[i]),
                     "specificity": float(specificity[i]), "f1": float(f1[i]),
                     "support": int(support[i])} for i in labels]


def _auc(positive: np.ndarray, scores: np.ndarray) -> float | None:
    """ROC AUC of one class against the rest; None when only one side is present."""
    positive = np.asarray(positive, dtype=bool)
    if positive.all() or not positive.any():
        return None
    return float(roc_auc_score(positive, scores))


def _binary_roc(positive: np.ndarray, scores: np.ndarray) -> dict | None:
    """{"fpr", "tpr", "thresholds"} lists with finite thresholds; None when undefined."""
    positive = np.asarray(positive, dtype=bool)
    if positive.all() or not positive.any():
        return None
    fpr, tpr, thresholds = roc_curve(positive, scores)
    thresholds = np.where(np.isfinite(thresholds), thresholds, 1.0)  # sklearn starts at inf
    return {"fpr": fpr.tolist(), "tpr": tpr.tolist(), "thresholds": thresholds.tolist()}


def _resample_counts(rng: np.random.Generator, rows: int, n: int) -> np.ndarray:
    """(rows, n) float matrix: how often each sample is drawn in each bootstrap resample."""
    draws = rng.integers(0, n, size=(rows, n)) + (np.arange(rows) * n)[:, None]
    return np.bincount(draws.ravel(), minlength=rows * n).reshape(rows, n).astype(np.float64)


def _weighted_auc(positive: np.ndarray, scores: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """ROC AUC for each row of sample weights (B, N); NaN where a side has zero weight.

    AUC is the probability that a random positive scores above a random negative (ties
    count half). Sorting the scores once and grouping equal scores gives, per group g, the
    weight of positives P_g and negatives N_g; then AUC = sum_g P_g (N_<g + N_g / 2) / (P N).
    """
    order = np.argsort(scores, kind="mergesort")
    sorted_scores = scores[order]
    positive = positive[order]
    w = weights[:, order]
    starts = np.flatnonzero(np.r_[True, sorted_scores[1:] != sorted_scores[:-1]])
    w_pos = np.add.reduceat(w * positive, starts, axis=1)
    w_neg = np.add.reduceat(w * ~positive, starts, axis=1)
    below = np.cumsum(w_neg, axis=1) - w_neg
    numerator = (w_pos * (below + 0.5 * w_neg)).sum(axis=1)
    denominator = w_pos.sum(axis=1) * w_neg.sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(denominator > 0, numerator / denominator, np.nan)


def _percentiles(values: np.ndarray, level: float) -> list[float] | None:
    """[low, high] percentile interval of values at the given level; None when empty."""
    if values.size == 0:
        return None
    tail = 100 * (1 - level) / 2
    low, high = np.percentile(values, [tail, 100 - tail])
    return [float(low), float(high)]
