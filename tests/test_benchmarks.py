"""The benchmark scripts run and write their JSON (their targets are checked by `make bench`,
never as timed assertions here)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def run_benchmark(script: str, *args: str, timeout: int = 600) -> subprocess.CompletedProcess:
    """``benchmarks/<script>`` with ``args`` in a fresh process; it must exit 0."""
    done = subprocess.run([sys.executable, str(ROOT / "benchmarks" / script), *args],
                          capture_output=True, text=True, cwd=ROOT, timeout=timeout)
    assert done.returncode == 0, done.stderr[-2000:]
    return done


def test_bench_metrics_times_both_bootstraps_and_they_agree(tmp_path) -> None:
    out = tmp_path / "bench_metrics.json"
    done = run_benchmark("bench_metrics.py", "--n", "300", "--resamples", "200", "--out", str(out),
                         timeout=300)
    assert done.stdout.strip().splitlines()[-1].startswith("bootstrap_speedup=")
    result = json.loads(out.read_text())
    assert result["vectorised_s"] > 0 and result["loop_s"] > 0
    for key in ("accuracy", "auc_macro"):
        low, high = result["vectorised"][key]
        assert 0 < low < high <= 1
        assert result["loop"][key] == pytest.approx([low, high], abs=0.05)   # one interval, two ways
    assert result["n"] == 300 and result["resamples"] == 200


@pytest.mark.slow  # four fresh processes that each import TensorFlow: about a minute
def test_bench_loading_measures_four_methods_in_fresh_processes(tmp_path) -> None:
    out = tmp_path / "bench_loading.json"
    done = run_benchmark("bench_loading.py", "--n", "60", "--size", "64", "--repeats", "1",
                         "--cache", str(tmp_path / "data"), "--out", str(out), timeout=600)
    last = dict(item.split("=") for item in done.stdout.strip().splitlines()[-1].split())
    assert list(last) == ["time_ratio", "memory_ratio", "vs_keras", "vs_floor"]
    result = json.loads(out.read_text())
    methods = result["methods"]
    assert set(methods) == {"seed", "keras", "cxrlib", "floor"}
    for method in methods.values():
        assert method["images"] == 60 and method["seconds"] > 0 and method["increase_mb"] >= 0
    assert methods["seed"]["shape"] == [60, 64, 64, 3] and methods["seed"]["dtype"] == "float32"
    assert methods["cxrlib"]["shape"][1:] == [64, 64, 3]
    ratios = result["ratios"]
    for key, printed in last.items():   # the line printed is the JSON's
        assert float(printed) == pytest.approx(ratios[key], abs=0.006) and ratios[key] > 0
    assert len(result["runs"]) == 4 and result["n"] == 60 and result["image_size"] == 64


def _probe_module():
    import importlib.util

    spec = importlib.util.spec_from_file_location("probe_features", ROOT / "benchmarks" / "probe_features.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_feature_probe_scores_what_the_features_know() -> None:
    import numpy as np

    probe = _probe_module().probe
    rng = np.random.default_rng(0)
    labels = np.repeat([0, 1, 2], 40)
    informative = rng.normal(size=(120, 16))
    informative[:, 0] += 6.0 * labels           # one feature carries the class (6 sd apart)
    assert np.mean(probe(informative, labels)) > 0.9
    assert np.mean(probe(rng.normal(size=(120, 16)), labels)) < 0.6   # noise: about chance


def test_feature_probe_script_writes_its_measurement(tmp_path) -> None:
    out = tmp_path / "probe.json"
    done = run_benchmark("probe_features.py", "--backbone", "densenet121", "--weights", "none",
                         "--image-size", "32", "--per-class", "10", "--out", str(out),
                         timeout=300)
    result = json.loads(out.read_text())
    assert done.stdout.strip().splitlines()[-1] == f"probe_accuracy={result['probe_accuracy']:.3f}"
    assert result["images"] == 30 and result["features"] == 1024 and len(result["fold_accuracy"]) == 5


@pytest.mark.slow  # two V1 runs on a 336-film target set: about a minute
def test_transfer_gain_script_uses_the_cached_weights_and_writes_a_paired_gain(tmp_path) -> None:
    import keras

    from cxrlib.runs import pretrain_cache

    cache = tmp_path / "cache"
    weights = pretrain_cache.weights_path("densenet121", 32, seed=5, cache=cache)
    weights.parent.mkdir(parents=True)
    keras.applications.DenseNet121(include_top=False, weights=None,
                                   input_shape=(32, 32, 3)).save_weights(weights)
    pretrain_cache.info_path(weights).write_text(json.dumps({"validation_loss": 0.5}))
    saved = weights.read_bytes()
    out = tmp_path / "gain.json"
    run_benchmark("transfer_gain.py", "--image-size", "32", "--pretrain-seeds", "5",
                  "--target-seeds", "3", "--train-per-class", "2", "--cache",
                  str(cache), "--out", str(out), timeout=600)
    assert weights.read_bytes() == saved        # the cached weights were used, not pretrained again
    result = json.loads(out.read_text())
    assert result["test_films"] == 300 and result["train_per_class"] == 2
    [row] = result["rows"]
    assert (row["target_seed"], row["pretrain_seed"], row["source_validation_loss"]) == (3, 5, 0.5)
    assert row["low"] <= row["gain"] <= row["high"]
    assert 0 <= row["random"] <= 1 and 0 <= row["synthetic"] <= 1


@pytest.mark.slow  # two DenseNet121 occlusion scans in a fresh process: about 20 s
def test_bench_forward_times_eager_and_traced_scans_and_their_maps_agree(tmp_path) -> None:
    out = tmp_path / "bench_forward.json"
    done = run_benchmark("bench_forward.py", "--images", "2", "--size", "32", "--out", str(out),
                         timeout=600)
    result = json.loads(out.read_text())
    assert done.stdout.strip().splitlines()[-1] == f"occlusion_speedup={result['speedup']:.2f}"
    assert result["images"] == 2 and result["eager_s"] > 0 and result["traced_s"] > 0
    assert result["max_map_difference"] <= 1e-4
