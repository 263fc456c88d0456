"""How much V1 gains from synthetic pretraining, over pretraining seeds and target sets.

The slow test ``test_pretraining_on_the_source_task_transfers_to_a_fresh_target`` measures one
point (DenseNet121, pretraining seed 0, target seed 11, 20 training films per class). This
script measures the same protocol at several points, so that the README can say how much of
the gain is the method and how much is one pretraining run: for each target set, V1 trains on
random weights and on the weights of each pretraining seed, and the runs are scored on the
same 300 test films (100 per class), with a paired bootstrap of the accuracy difference.

    python benchmarks/transfer_gain.py [--image-size 64] [--pretrain-seeds 0 1 2]
        [--target-seeds 11 12] [--train-per-class 20] [--cache DIR]
        [--out outputs/benchmarks/transfer-gain-64px-20.json]

Pretrained weights go to ``--cache`` (default: a folder under ``outputs/benchmarks``, never the
user's cache, since seeds other than 0 are not what the course uses). One line is printed per
(target, seed); the measurements are written as JSON.
"""

from __future__ import annotations

import argparse
import os
import tempfile
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402

CLASSES = ["COVID", "Normal", "Viral Pneumonia"]
VAL_PER_CLASS, TEST_PER_CLASS = 10, 100


def target_set(folder: Path, image_size: int, seed: int, train_per_class: int):
    """A fresh 3-class synthetic target set, split (train_per_class / 10 / 100 per class)."""
    from cxrlib.data.datasets import load_manifest
    from cxrlib.data.splits import split_manifest
    from cxrlib.data.synthetic import generate_synthetic

    per_class = train_per_class + VAL_PER_CLASS + TEST_PER_CLASS
    generate_synthetic(folder, per_class=per_class, size=image_size, seed=seed, classes=CLASSES,
                       progress=False)
    return split_manifest(load_manifest(folder), val=VAL_PER_CLASS / per_class,
                          test=TEST_PER_CLASS / per_class, seed=0)


def _rounded(gain: dict) -> dict:
    """{"gain", "low", "high"} rounded for the JSON and the printed line."""
    low, high = gain["ci"]
    return {"gain": round(gain["gain"], 4), "low": round(low, 4), "high": round(high, 4)}


def v1_correct(manifest, weights: str | None, image_size: int, run: Path) -> np.ndarray:
    """Train V1 exactly as the slow test does; return its per-film correctness on ``test``."""
    from cxrlib.runs import train as training
    from cxrlib.runs.evaluate import per_film_correct
    from cxrlib.spec import variant_spec

    spec = variant_spec("densenet121", "v1", weights=weights, image_size=image_size, epochs=30,
                        batch_size=16)
    training.train(manifest, CLASSES, spec, run, progress=False, bootstrap=20, reuse=False)
    return per_film_correct(run, manifest)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--image-size", type=int, default=64)
    parser.add_argument("--pretrain-seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--target-seeds", type=int, nargs="+", default=[11, 12])
    parser.add_argument("--train-per-class", type=int, default=20)
    parser.add_argument("--cache", default="outputs/benchmarks/transfer-gain-cache")
    parser.add_argument("--out", default=None)
    args = parser.parse_args(argv)

    from cxrlib.files import write_json_atomic
    from cxrlib.runs import pretrain, pretrain_cache
    from cxrlib.runs.metrics import paired_accuracy_gain

    size, n = args.image_size, args.train_per_class
    cache = Path(args.cache)
    weights = {}
    for seed in args.pretrain_seeds:
        path = pretrain_cache.weights_path("densenet121", size, seed, cache)
        if not (path.is_file() and pretrain_cache.info_path(path).is_file()):
            path = pretrain.pretrain("densenet121", size, cache=cache, seed=seed, progress=False)
        weights[seed] = path
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for target in args.target_seeds:
            manifest = target_set(Path(tmp) / f"target-{target}", size, target, n)
            random = v1_correct(manifest, None, size, Path(tmp) / f"run-{target}-none")
            for seed, path in weights.items():
                pretrained = v1_correct(manifest, str(path), size, Path(tmp) / f"run-{target}-{seed}")
                row = {"target_seed": target, "pretrain_seed": seed,
                       "source_validation_loss": pretrain_cache.describe(path).get("validation_loss"),
                       "random": round(float(random.mean()), 4),
                       "synthetic": round(float(pretrained.mean()), 4),
                       **_rounded(paired_accuracy_gain(pretrained, random))}
                rows.append(row)
                print(f"target {target}, pretraining seed {seed} (source loss "
                      f"{row['source_validation_loss']}): synthetic {row['synthetic']:.3f}, random "
                      f"{row['random']:.3f}, gain {row['gain']:+.3f} ({row['low']:+.3f} to "
                      f"{row['high']:+.3f})", flush=True)
    out = Path(args.out or f"outputs/benchmarks/transfer-gain-{size}px-{n}.json")
    out.parent.mkdir(parents=True, exist_ok=True)
    write_json_atomic(out, {"image_size": size, "train_per_class": n, "test_films": 3 * TEST_PER_CLASS,
                            "rows": rows})
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
