"""Metrics from labels and probabilities: hand-checked values, AUC, bootstrap, operating point."""

from __future__ import annotations

import json

import numpy as np
import pytest
from sklearn.metrics import roc_auc_score

from cxrlib.runs.metrics import _weighted_auc, compute_metrics, threshold_for_sensitivity

CLASSES = ["A", "B", "C"]
# rows = true, columns = predicted: A [2, 1, 1], B [1, 2, 0], C [0, 0, 3]
Y_TRUE = np.array([0, 0, 0, 0, 1, 1, 1, 2, 2, 2])
Y_PRED = np.array([0, 0, 1, 2, 1, 1, 0, 2, 2, 2])


def _one_hot_probs(y_pred: np.ndarray, k: int, high: float = 0.8) -> np.ndarray:
    """Probabilities whose argmax is y_pred."""
    probs = np.full((len(y_pred), k), (1 - high) / (k - 1))
    probs[np.arange(len(y_pred)), y_pred] = high
    return probs


def _binary(n: int, separation: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Labels and [1-p, p] probabilities; separation 0 gives random scores."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 2, n)
    p = np.clip(rng.random(n) * (1 - separation) + separation * y, 0, 1)
    return y, np.stack([1 - p, p], axis=1)


def test_hand_computed_counts_and_ratios() -> None:
    m = compute_metrics(Y_TRUE, _one_hot_probs(Y_PRED, 3), CLASSES, bootstrap=50)
    assert m["classes"] == CLASSES and m["n"] == 10
    assert m["accuracy"] == pytest.approx(0.7)
    assert m["confusion_matrix"] == [[2, 1, 1], [1, 2, 0], [0, 0, 3]]
    expected = {  # precision, recall, specificity, f1, support
        "A": (2 / 3, 2 / 4, 5 / 6, 4 / 7, 4),
        "B": (2 / 3, 2 / 3, 6 / 7, 2 / 3, 3),
        "C": (3 / 4, 3 / 3, 6 / 7, 6 / 7, 3),
    }
    for name, (precision, recall, specificity, f1, support) in expected.items():
        scores = m["per_class"][name]
        assert scores["precision"] == pytest.approx(precision)
        assert scores["recall"] == pytest.approx(recall)
        assert scores["specificity"] == pytest.approx(specificity)
        assert scores["f1"] == pytest.approx(f1)
        assert scores["support"] == support


def test_auc_matches_sklearn_and_result_is_plain_json() -> None:
    rng = np.random.default_rng(0)
    y = rng.integers(0, 3, 300)
    probs = rng.dirichlet([1, 1, 1], 300)
    probs[np.arange(300), y] += 0.5
    probs /= probs.sum(axis=1, keepdims=True)
    m = compute_metrics(y, probs, CLASSES, bootstrap=100)
    assert m["auc_macro"] == pytest.approx(roc_auc_score(y, probs, multi_class="ovr"))
    for i, name in enumerate(CLASSES):
        assert m["per_class"][name]["auc"] == pytest.approx(roc_auc_score(y == i, probs[:, i]))
    assert "roc" not in m and "operating_point" not in m  # binary only
    assert json.loads(json.dumps(m, allow_nan=False)) == m


def test_perfect_predictions_give_auc_one_and_a_degenerate_ci() -> None:
    y = np.array([0, 1] * 20)
    m = compute_metrics(y, _one_hot_probs(y, 2, high=0.9), ["normal", "pneumonia"], bootstrap=200)
    assert m["accuracy"] == 1.0 and m["auc_macro"] == 1.0
    assert m["ci"] == {"accuracy": [1.0, 1.0], "auc_macro": [1.0, 1.0]}


def test_random_predictions_give_auc_near_half() -> None:
    y, probs = _binary(2000, separation=0.0, seed=3)
    m = compute_metrics(y, probs, ["neg", "pos"], bootstrap=200)
    assert m["auc_macro"] == pytest.approx(0.5, abs=0.05)
    assert m["accuracy"] == pytest.approx(0.5, abs=0.05)


def test_ci_contains_estimate_and_is_seeded() -> None:
    y, probs = _binary(400, separation=0.3, seed=1)
    m = compute_metrics(y, probs, ["neg", "pos"], bootstrap=300, seed=7)
    for key in ("accuracy", "auc_macro"):
        low, high = m["ci"][key]
        assert low < m[key] < high
        assert high - low < 0.2
    assert compute_metrics(y, probs, ["neg", "pos"], bootstrap=300, seed=7)["ci"] == m["ci"]
    assert compute_metrics(y, probs, ["neg", "pos"], bootstrap=300, seed=8)["ci"] != m["ci"]


def test_weighted_auc_equals_auc_of_the_resample() -> None:
    """The vectorised bootstrap AUC (counts as weights, ties half) is the ordinary AUC."""
    rng = np.random.default_rng(5)
    y = rng.integers(0, 2, 200).astype(bool)
    scores = np.round(rng.random(200) + 0.3 * y, 1)  # many ties
    draws = rng.integers(0, 200, size=(4, 200))
    counts = np.stack([np.bincount(d, minlength=200) for d in draws]).astype(float)
    got = _weighted_auc(y, scores, counts)
    expected = [roc_auc_score(y[d], scores[d]) for d in draws]
    np.testing.assert_allclose(got, expected)
    assert np.isnan(_weighted_auc(np.ones(5, bool), np.arange(5.0), np.ones((1, 5))))[0]


def test_operating_point_is_the_highest_threshold_reaching_the_target() -> None:
    positive = np.array([1, 1, 1, 1, 1, 0, 0, 0])
    scores = np.array([0.9, 0.8, 0.7, 0.6, 0.5, 0.1, 0.65, 0.2])
    point = threshold_for_sensitivity(positive, scores, target=0.8)
    assert point == {"threshold": 0.6, "sensitivity": 0.8, "specificity": pytest.approx(2 / 3),
                     "target": 0.8}

    y, probs = _binary(500, separation=0.4, seed=4)
    for target in (0.9, 0.95, 0.99, 1.0):
        point = threshold_for_sensitivity(y, probs[:, 1], target=target)
        t = point["threshold"]
        sensitivity = np.mean(probs[y == 1, 1] >= t)
        assert sensitivity >= target and point["sensitivity"] == pytest.approx(sensitivity)
        assert np.mean(probs[y == 1, 1] >= np.nextafter(t, np.inf)) < target  # highest such
        assert point["specificity"] == pytest.approx(np.mean(probs[y == 0, 1] < t))
    with pytest.raises(ValueError):
        threshold_for_sensitivity(y, probs[:, 1], target=0)


def test_binary_extras_roc_and_operating_point() -> None:
    y, probs = _binary(300, separation=0.3, seed=6)
    m = compute_metrics(y, probs, ["normal", "pneumonia"], bootstrap=50, target_sensitivity=0.95)
    roc = m["roc"]
    assert len(roc["fpr"]) == len(roc["tpr"]) == len(roc["thresholds"])
    assert all(np.isfinite(roc["thresholds"])) and roc["fpr"][-1] == roc["tpr"][-1] == 1.0
    assert m["operating_point"] == threshold_for_sensitivity(y, probs[:, 1], 0.95)
    # a single column of positive-class probabilities means the same
    assert compute_metrics(y, probs[:, 1], ["normal", "pneumonia"], bootstrap=50,
                           target_sensitivity=0.95) == m


def test_single_class_labels_do_not_crash() -> None:
    y = np.zeros(6, dtype=int)
    probs = _one_hot_probs(np.array([0, 0, 0, 1, 0, 0]), 2)
    m = compute_metrics(y, probs, ["normal", "pneumonia"], bootstrap=50)
    assert m["accuracy"] == pytest.approx(5 / 6)
    assert m["auc_macro"] is None and m["per_class"]["normal"]["auc"] is None
    assert m["ci"]["auc_macro"] is None and m["roc"] is None
    assert m["per_class"]["pneumonia"]["specificity"] == pytest.approx(5 / 6)
    assert m["per_class"]["pneumonia"]["precision"] == 0.0  # zero_division=0
    assert m["operating_point"]["threshold"] is None
    json.dumps(m, allow_nan=False)


def test_an_empty_set_has_zero_counts_and_no_scores() -> None:
    m = compute_metrics(np.zeros(0, int), np.zeros((0, 3)), CLASSES, bootstrap=10)
    assert m["n"] == 0 and m["accuracy"] is None and m["loss"] is None
    assert m["confusion_matrix"] == [[0] * 3] * 3
    assert {name: scores["support"] for name, scores in m["per_class"].items()} == dict.fromkeys(CLASSES, 0)


def test_bad_inputs_are_rejected() -> None:
    with pytest.raises(ValueError, match="shape"):
        compute_metrics(Y_TRUE, np.ones((10, 2)), CLASSES)
    with pytest.raises(ValueError, match="labels"):
        compute_metrics(Y_TRUE[:5], _one_hot_probs(Y_PRED, 3), CLASSES)
    with pytest.raises(ValueError, match="class indices"):
        compute_metrics(Y_TRUE + 1, _one_hot_probs(Y_PRED, 3), CLASSES)


def test_paired_accuracy_gain_cancels_the_samples_both_models_share() -> None:
    from cxrlib.runs.metrics import paired_accuracy_gain

    rng = np.random.default_rng(1)
    baseline = rng.uniform(size=300) < 0.7
    better = baseline.copy()
    wrong = np.flatnonzero(~baseline)
    better[wrong[:15]] = True                    # right on 15 more films, wrong on none more
    paired = paired_accuracy_gain(better, baseline)
    assert paired["gain"] == pytest.approx(15 / 300)
    low, high = paired["ci"]
    assert 0 < low < 0.05 < high < 0.09          # above 0: no film got worse
    # the unpaired view (each model resampled alone) overlaps: pairing is what resolves it
    alone = [np.percentile(x[rng.integers(0, 300, (2000, 300))].mean(1), [2.5, 97.5])
             for x in (better, baseline)]
    assert alone[0][0] < alone[1][1]
    same = paired_accuracy_gain(baseline, baseline)
    assert same["gain"] == 0 and same["ci"] == [0.0, 0.0]
    assert paired_accuracy_gain([], [])["ci"] is None
    assert paired_accuracy_gain(better, baseline, n_resamples=0) == {"gain": paired["gain"], "ci": None}
    with pytest.raises(ValueError, match="same samples"):
        paired_accuracy_gain(better, baseline[:-1])
