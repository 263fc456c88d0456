"""The traced forward pass against eager calls, on the heat-map lesson's hottest loop.

``occlusion_speedup``: :func:`cxrlib.explain.maps.occlusion_scan` of DenseNet121 at 64 px
(random weights, the cost is the same) on the same images, once with every model call eager
(``forward.HOT_CALLS`` set past the number of calls) and once as the library runs it (eager
for the first calls, then the pass traced once, the trace counted in its time). Both runs
start from a fresh model of the same weights. Target ≥ 2. The maps must agree to 1e-4.

    python benchmarks/bench_forward.py [--images 20] [--out outputs/benchmarks/bench_forward.json]

The last line printed is ``occlusion_speedup=<x>``.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np

from cxrlib.environment import environment_info
from cxrlib.files import write_json_atomic


def scan_all(model, images: np.ndarray) -> tuple[np.ndarray, float]:
    """Occlusion maps of every image (class 0) and the seconds they took."""
    from cxrlib.explain.maps import occlusion_scan

    started = time.perf_counter()
    maps = np.stack([occlusion_scan(model, image, 0)[0] for image in images])
    return maps, time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=20)
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--out", default="outputs/benchmarks/bench_forward.json")
    args = parser.parse_args()

    import keras

    from cxrlib.models import forward
    from cxrlib.models.build import build_model

    keras.utils.set_random_seed(0)
    images = np.random.default_rng(0).random((args.images, args.size, args.size, 3), np.float32)
    eager_model = build_model("densenet121", "v2reg", 3, args.size, weights=None)
    traced_model = build_model("densenet121", "v2reg", 3, args.size, weights=None)
    traced_model.set_weights(eager_model.get_weights())

    hot = forward.HOT_CALLS
    forward.HOT_CALLS = 10**9
    try:
        eager_maps, eager_s = scan_all(eager_model, images)
    finally:
        forward.HOT_CALLS = hot
    traced_maps, traced_s = scan_all(traced_model, images)
    difference = float(np.abs(eager_maps - traced_maps).max())
    speedup = eager_s / traced_s
    result = {"benchmark": "occlusion_speedup", "images": args.images, "size": args.size,
              "eager_s": round(eager_s, 2), "traced_s": round(traced_s, 2),
              "max_map_difference": difference, "speedup": round(speedup, 2), "target": 2.0,
              "met": bool(speedup >= 2.0 and difference <= 1e-4), "environment": environment_info()}
    print(f"eager {eager_s:.1f} s, traced (trace included) {traced_s:.1f} s, "
          f"maps differ by at most {difference:.2e}")
    write_json_atomic(Path(args.out), result)
    print(f"occlusion_speedup={speedup:.2f}")


if __name__ == "__main__":
    main()
