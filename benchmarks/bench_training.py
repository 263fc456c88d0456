"""Training speed, measured as ratios within one run (never as absolute times in tests).

(a) ``feature_cache_speedup``: V1 trains a softmax on frozen DenseNet121 features. Extracting
    the features once and training on the cache, against pushing every image through the
    frozen backbone again in every epoch. Each is one whole training run on a fresh model;
    the two alternate over ``--rounds`` rounds after a warm-up, and the speedup is the median
    of the per-round ratios, so that a busy machine slows both alike. Target ≥ 10.
(b) ``pipeline_efficiency``: training throughput when the cxrlib tf.data pipeline feeds the
    model from files on disk (decoded once into memory, then shuffle, batch, preprocess, prefetch),
    divided by the throughput of the same model fed from tensors already in memory. Target ≥ 0.9.

    python benchmarks/bench_training.py [--quick] [--rounds 3] [--out outputs/benchmarks/bench_training.json]

The last line printed is ``feature_cache_speedup=<x> pipeline_efficiency=<y>``; the full
measurement is written as JSON (the README's numbers come from that file).
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

from cxrlib.data.datasets import load_manifest  # noqa: E402
from cxrlib.data.pipeline import load_arrays, make_dataset  # noqa: E402
from cxrlib.data.prepare import Prep  # noqa: E402
from cxrlib.data.synthetic import generate_synthetic  # noqa: E402
from cxrlib.environment import environment_info  # noqa: E402
from cxrlib.files import write_json_atomic  # noqa: E402
from cxrlib.models.build import build_model, classifier_head, compile_model, make_optimizer  # noqa: E402
from cxrlib.runs.features import extract_features  # noqa: E402
from cxrlib.spec import NO_AUGMENT  # noqa: E402

CLASSES = ["COVID", "Normal", "Viral Pneumonia"]


def timed(function) -> float:
    """Wall-clock seconds of one call."""
    started = time.perf_counter()
    function()
    return time.perf_counter() - started


def v1_model(size: int):
    """A fresh V1 DenseNet121 (frozen backbone, softmax head), compiled as training does."""
    model = build_model("densenet121", "v1", len(CLASSES), size, weights=None, seed=0)
    compile_model(model, make_optimizer("sgd", 0.01, 1e-6))
    return model


def cached_run(model, manifest, prep: Prep, epochs: int, batch: int) -> None:
    """V1 as cxrlib trains it: extract the features once, train the head on them."""
    [(x, y)] = extract_features(model, [manifest], CLASSES, prep, batch, "categorical")
    head = classifier_head(model)
    head.compile(optimizer=make_optimizer("sgd", 0.01, 1e-6), loss="categorical_crossentropy")
    head.fit(x, y, epochs=epochs, batch_size=batch, verbose=0)  # the same batch size


def re_extracting_run(model, manifest, prep: Prep, epochs: int, batch: int) -> None:
    """V1 the naive way: every epoch pushes every image through the frozen backbone again."""
    ds = make_dataset(manifest, CLASSES, prep, batch, training=True, augment=NO_AUGMENT)
    model.fit(ds, epochs=epochs, shuffle=False, verbose=0)


def feature_cache(manifest, size: int, epochs: int, batch: int, rounds: int) -> dict:
    """(a): cached features vs re-extraction every epoch, the same head, optimiser and data.

    Each run is one whole V1 training as a user would start it: a fresh model (built outside
    the timing), then everything it costs, tracing and the one decode of the files included.
    One untimed warm-up run of each (process start-up: thread pools, oneDNN kernels), then
    ``rounds`` rounds of the two, interleaved, so that load from other processes hits both
    alike; the speedup is the median of the per-round ratios.
    """
    prep = Prep(size, "densenet121")
    runs = {"re_extracting": re_extracting_run, "cached": cached_run}
    for run in runs.values():
        run(v1_model(size), manifest.iloc[:2 * batch], prep, 1, batch)
    seconds = {name: [] for name in runs}
    for _ in range(rounds):
        for name, run in runs.items():
            model = v1_model(size)
            seconds[name].append(timed(lambda run=run, model=model: run(model, manifest, prep, epochs, batch)))
    ratios = np.array(seconds["re_extracting"]) / np.array(seconds["cached"])
    return {"cached_s": float(np.median(seconds["cached"])),
            "re_extracting_s": float(np.median(seconds["re_extracting"])),
            "speedup": float(np.median(ratios)), "ratios": ratios.tolist(), "seconds": seconds,
            "rounds": rounds, "epochs": epochs, "images": len(manifest)}


def pipeline_vs_memory(manifest, size: int, rounds: int, batch: int) -> dict:
    """(b): images/s from the disk pipeline vs from in-memory tensors, the same model.

    Epochs of the two alternate, after one warm-up epoch each (graph tracing, and the
    pipeline's single decode pass), so that load from other processes hits both alike; the
    efficiency is the median of the per-round ratios.
    """
    prep = Prep(size, "scratch")
    x, y = load_arrays(manifest, CLASSES, prep, preprocess=True)
    onehot = keras.utils.to_categorical(y, len(CLASSES))
    memory = (tf.data.Dataset.from_tensor_slices((x, onehot)).cache()
              .shuffle(len(x), seed=0).batch(batch).prefetch(tf.data.AUTOTUNE))
    disk = make_dataset(manifest, CLASSES, prep, batch, training=True, augment=NO_AUGMENT)
    models = {}
    for name, ds in (("memory", memory), ("pipeline", disk)):
        models[name] = build_model("scratch", "scratch", len(CLASSES), size, weights=None, seed=0)
        compile_model(models[name], make_optimizer("adam", 1e-3, 0))
        models[name].fit(ds, epochs=1, shuffle=False, verbose=0)
    seconds = {"memory": [], "pipeline": []}
    for _ in range(rounds):
        for name, ds in (("memory", memory), ("pipeline", disk)):
            seconds[name].append(timed(lambda name=name, ds=ds: models[name].fit(ds, epochs=1, shuffle=False,
                                                                                  verbose=0)))
    ratios = np.array(seconds["memory"]) / np.array(seconds["pipeline"])
    return {"memory_img_s": len(manifest) / float(np.median(seconds["memory"])),
            "pipeline_img_s": len(manifest) / float(np.median(seconds["pipeline"])),
            "efficiency": float(np.median(ratios)), "rounds": rounds, "seconds": seconds}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer images and epochs")
    parser.add_argument("--rounds", type=int, default=None,
                        help="interleaved rounds of (a) (default 3, --quick 2)")
    parser.add_argument("--out", default="outputs/benchmarks/bench_training.json")
    args = parser.parse_args()
    per_class, epochs, size = (20, 10, 96) if args.quick else (60, 20, 128)
    rounds = args.rounds or (2 if args.quick else 3)
    keras.utils.set_random_seed(0)
    with tempfile.TemporaryDirectory() as tmp:
        generate_synthetic(tmp, per_class=per_class, size=160, seed=0, classes=CLASSES, progress=False)
        manifest = load_manifest(tmp)
        a = feature_cache(manifest, size=size, epochs=epochs, batch=32, rounds=rounds)
        print(f"(a) V1 {epochs} epochs: cached {a['cached_s']:.1f} s, re-extracting "
              f"{a['re_extracting_s']:.1f} s (medians of {rounds} rounds)", flush=True)
        b = pipeline_vs_memory(manifest, size=128, rounds=3 if args.quick else 5, batch=32)
        print(f"(b) from disk {b['pipeline_img_s']:.0f} img/s, in memory {b['memory_img_s']:.0f} img/s",
              flush=True)
    result = {"feature_cache": a, "pipeline": b, "quick": args.quick,
              "environment": environment_info(),
              "command": "python benchmarks/bench_training.py" + (" --quick" if args.quick else "")
              + (f" --rounds {args.rounds}" if args.rounds else "")}
    write_json_atomic(Path(args.out), result)
    print(f"feature_cache_speedup={a['speedup']:.1f} pipeline_efficiency={b['efficiency']:.2f}")


if __name__ == "__main__":
    main()
