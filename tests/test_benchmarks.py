"""The benchmark scripts run and write their JSON (their targets are checked by `make bench`,
never as timed assertions here)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_bench_metrics_writes_a_ratio_and_agreeing_intervals(tmp_path) -> None:
    out = tmp_path / "bench_metrics.json"
    done = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "bench_metrics.py"),
                           "--n", "300", "--resamples", "200", "--out", str(out)],
                          capture_output=True, text=True, cwd=ROOT, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip().splitlines()[-1].startswith("bootstrap_speedup=")
    result = json.loads(out.read_text())
    assert result["speedup"] == result["loop_s"] / result["vectorised_s"] > 0
    for key in ("accuracy", "auc_macro"):
        low, high = result["vectorised"][key]
        assert 0 < low < high <= 1
    assert result["n"] == 300 and result["resamples"] == 200
