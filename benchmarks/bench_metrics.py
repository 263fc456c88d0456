"""Bootstrap speed, measured as a ratio within one run (never as an absolute time in tests).

``bootstrap_speedup``: ``cxrlib.runs.metrics.bootstrap_ci`` represents each resample by how often
every sample was drawn and computes all resamples' accuracy and macro AUC as weighted sums,
without materialising a resample. The baseline is the textbook loop: draw indices, index the
arrays, call scikit-learn's ``roc_auc_score`` per class, per resample. Both use 1000 resamples
of the same 1000 three-class predictions. Target ≥ 10. The two intervals must agree to within
the Monte-Carlo noise of 1000 resamples (they use different random draws).

    python benchmarks/bench_metrics.py [--out outputs/benchmarks/bench_metrics.json]

The last line printed is ``bootstrap_speedup=<x>``.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
from sklearn.metrics import roc_auc_score

from cxrlib.environment import environment_info
from cxrlib.files import write_json_atomic
from cxrlib.runs.metrics import bootstrap_ci


def predictions(n: int, k: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Labels and softmax probabilities of a classifier that is right most of the time."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, k, n)
    logits = rng.normal(size=(n, k)) + 1.5 * np.eye(k)[y]
    probs = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    return y, probs


def naive_bootstrap(y: np.ndarray, probs: np.ndarray, n_resamples: int, seed: int) -> dict:
    """The loop baseline: one materialised resample and k sklearn AUCs per iteration."""
    rng = np.random.default_rng(seed)
    n, k = probs.shape
    accuracies, aucs = [], []
    for _ in range(n_resamples):
        idx = rng.integers(0, n, n)
        yy, pp = y[idx], probs[idx]
        accuracies.append(float((pp.argmax(axis=1) == yy).mean()))
        if len(np.unique(yy)) == k:
            aucs.append(np.mean([roc_auc_score(yy == i, pp[:, i]) for i in range(k)]))
    return {"accuracy": np.percentile(accuracies, [2.5, 97.5]).tolist(),
            "auc_macro": np.percentile(aucs, [2.5, 97.5]).tolist()}


def best_of(function, repeats: int) -> float:
    """The fastest of several wall-clock timings, in seconds (the least disturbed by load)."""
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        function()
        times.append(time.perf_counter() - started)
    return min(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="outputs/benchmarks/bench_metrics.json")
    parser.add_argument("--n", type=int, default=1000, help="predictions")
    parser.add_argument("--resamples", type=int, default=1000)
    args = parser.parse_args()
    y, probs = predictions(args.n, 3)
    fast = bootstrap_ci(y, probs, n_resamples=args.resamples, seed=0)
    slow = naive_bootstrap(y, probs, args.resamples, seed=1)
    agree = all(abs(a - b) < 0.02 for key in ("accuracy", "auc_macro")
                for a, b in zip(fast[key], slow[key]))
    fast_s = best_of(lambda: bootstrap_ci(y, probs, n_resamples=args.resamples, seed=0), 3)
    slow_s = best_of(lambda: naive_bootstrap(y, probs, args.resamples, seed=1), 1)
    result = {"vectorised_s": fast_s, "loop_s": slow_s, "speedup": slow_s / fast_s,
              "intervals_agree": agree, "vectorised": fast, "loop": slow,
              "n": args.n, "resamples": args.resamples, "environment": environment_info(),
              "command": "python benchmarks/bench_metrics.py"}
    write_json_atomic(Path(args.out), result)
    print(f"vectorised {fast_s:.2f} s, loop {slow_s:.2f} s; intervals agree: {agree}")
    print(f"bootstrap_speedup={slow_s / fast_s:.1f}")


if __name__ == "__main__":
    main()
