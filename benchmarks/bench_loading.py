"""Loading speed and memory: four ways of reading the same images, each in a fresh process.

The data: ``--n`` synthetic radiographs (``generate_synthetic``, three classes, ``--size`` px
square 8-bit grayscale PNGs, as the COVID-19 Radiography Database stores its 299 px images),
generated once into a cache folder and reused while the parameters match. Every method
loads all of them at ``--image-size`` (S, default 224, the course's size):

- **seed** (the baseline): the course's original way, a Python loop of
  ``keras.utils.load_img(path, target_size=(S, S))`` + ``img_to_array``, the arrays collected
  in a list and turned into one float32 array (N, S, S, 3) in memory;
- **keras**: ``keras.utils.image_dataset_from_directory`` at (S, S), default settings
  (batch 32, RGB), iterated once;
- **cxrlib**: ``cxrlib.data.pipeline.make_dataset`` over the manifest, one training epoch
  (decode and resize every file into a uint8 set in memory, shuffle, batch, DenseNet121
  preprocess_input, no augmentation), iterated once;
- **floor**: the raw parallel decode, the fastest decode there is and no other work:
  tf.data over the file list, ``tf.io.read_file`` + ``tf.io.decode_png`` (one channel: the
  files are grayscale) + ``tf.image.resize``, ``num_parallel_calls=AUTOTUNE``, batched,
  iterated once.

Each measurement runs in a fresh subprocess (this script with ``--method``). Time is the
wall time of loading every image (the CPU time of all its threads is recorded too); memory is the peak RSS increase over the process's RSS
after its imports and the file listing (VmHWM reset through /proc/self/clear_refs, else
``ru_maxrss``). The methods are interleaved over ``--repeats`` rounds (A B C D A B C D ...)
and each figure is the median over the rounds, so that load from other processes hits all
methods alike. The files are in the page cache for all methods (they were just written or
read).

- ``time_ratio = seed_s / cxrlib_s`` (target ≥ 3)
- ``memory_ratio = cxrlib_increase / seed_increase`` (target ≤ 0.25)
- ``vs_keras = keras_s / cxrlib_s`` (target ≥ 1)
- ``vs_floor = cxrlib_s / floor_s`` (target ≤ 1.5)

    python benchmarks/bench_loading.py [--n 3600] [--size 299] [--image-size 224]
        [--repeats 3] [--out outputs/benchmarks/bench_loading.json] [--quick]

The last line printed is ``time_ratio=<a> memory_ratio=<b> vs_keras=<c> vs_floor=<d>``; the
full measurement is written as JSON (the README's numbers come from that file).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Callable

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # the child processes import cxrlib from this checkout
    sys.path.insert(0, str(ROOT))

CLASSES = ["COVID", "Normal", "Viral Pneumonia"]
METHODS = ("seed", "keras", "cxrlib", "floor")
TARGETS = {"time_ratio": (">=", 3.0), "memory_ratio": ("<=", 0.25), "vs_keras": (">=", 1.0),
           "vs_floor": ("<=", 1.5)}
DEFAULT_CACHE = ROOT / "outputs" / "benchmarks" / "loading-data"
MB = 1024 * 1024


# --------------------------------------------------------------------------- the data

def data_dirs(cache: Path, n: int, size: int) -> tuple[Path, Path]:
    """(the synthetic dataset, its class-folder view for Keras) for these parameters."""
    name = f"n{n}-s{size}"
    return cache / name, cache / f"{name}-by-class"


def data_parameters(n: int, size: int) -> dict:
    """What the cached data must have been generated with to be reused."""
    return {"per_class": n // len(CLASSES), "size": size, "seed": 0, "classes": CLASSES,
            "vary_size": False}


def prepare_data(cache: Path, n: int, size: int) -> tuple[Path, Path]:
    """Generate the images (once) and hard-link them into ``<Class>/<file>`` folders for Keras.

    The synthetic layout also holds masks (``<Class>/masks``), which
    ``image_dataset_from_directory`` would read as images; the linked view holds exactly the
    manifest's files.
    """
    data, by_class = data_dirs(cache, n, size)
    stamp = by_class / "bench_loading.json"
    wanted = data_parameters(n, size)
    if stamp.is_file() and json.loads(stamp.read_text()) == wanted:
        return data, by_class
    from cxrlib.data.datasets import load_manifest
    from cxrlib.data.synthetic import generate_synthetic
    from cxrlib.files import write_json_atomic

    stamp.unlink(missing_ok=True)
    generate_synthetic(data, per_class=wanted["per_class"], size=size, seed=0, classes=CLASSES,
                       vary_size=False, progress=False)
    for row in load_manifest(data).itertuples():
        link = by_class / row.label / Path(row.path).name
        link.parent.mkdir(parents=True, exist_ok=True)
        if not link.exists():
            os.link(row.path, link)
    write_json_atomic(stamp, wanted)
    return data, by_class


# --------------------------------------------------------------------------- memory

def reset_peak_rss() -> bool:
    """Reset the kernel's peak-RSS mark (VmHWM) to the current RSS; False where unsupported."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        return False
    return True


def status_mb(field: str) -> float | None:
    """A ``/proc/self/status`` memory field (VmRSS, VmHWM) in MiB, or None."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 1024
    except OSError:
        return None
    return None


def cpu_seconds() -> float:
    """User + system CPU time of this process so far, all threads."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def maxrss_mb() -> float:
    """``ru_maxrss`` in MiB (kilobytes on Linux)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


# --------------------------------------------------------------------------- the methods

def load_seed(paths: list[str], labels: list[str], by_class: Path, size: int, batch: int) -> dict:
    """The course's original loop: load_img + img_to_array, one float32 array in memory."""
    import keras
    import numpy as np

    images = []
    for path in paths:
        image = keras.utils.load_img(path, target_size=(size, size))
        images.append(keras.utils.img_to_array(image))
    x = np.array(images, dtype=np.float32)
    return {"images": int(x.shape[0]), "shape": list(x.shape), "dtype": str(x.dtype)}


def iterate(ds) -> dict:
    """Run through a dataset once; the number of images and the first batch's shape and dtype."""
    count, shape, dtype = 0, None, None
    for images, _ in ds:
        count += int(images.shape[0])
        if shape is None:
            shape, dtype = list(images.shape), images.dtype.name
    return {"images": count, "shape": shape, "dtype": dtype}


def load_keras(paths: list[str], labels: list[str], by_class: Path, size: int, batch: int) -> dict:
    """``image_dataset_from_directory`` at the same size, default settings, iterated once."""
    import keras

    ds = keras.utils.image_dataset_from_directory(by_class, image_size=(size, size),
                                                  batch_size=batch, verbose=False)
    return iterate(ds)


def load_cxrlib(paths: list[str], labels: list[str], by_class: Path, size: int, batch: int) -> dict:
    """One training epoch of the cxrlib pipeline (decode to uint8 in memory, shuffle, batch, preprocess)."""
    import pandas as pd

    from cxrlib.data.pipeline import make_dataset
    from cxrlib.data.prepare import Prep

    manifest = pd.DataFrame({"path": paths, "label": labels})
    ds = make_dataset(manifest, CLASSES, Prep(size, "densenet121"), batch, training=True)
    return iterate(ds)


def load_floor(paths: list[str], labels: list[str], by_class: Path, size: int, batch: int) -> dict:
    """Raw parallel decode: read_file + decode_png + resize, AUTOTUNE, batched."""
    import tensorflow as tf

    def decode(path):
        image = tf.io.decode_png(tf.io.read_file(path), channels=1)
        return tf.image.resize(image, (size, size)), 0

    ds = (tf.data.Dataset.from_tensor_slices(paths)
          .map(decode, num_parallel_calls=tf.data.AUTOTUNE).batch(batch))
    return iterate(ds)


LOADERS: dict[str, Callable[..., dict]] = {"seed": load_seed, "keras": load_keras,
                                           "cxrlib": load_cxrlib, "floor": load_floor}


def measure(method: str, data: Path, by_class: Path, size: int, batch: int) -> dict:
    """In this (fresh) process: the wall time and peak RSS increase of one method."""
    import keras  # noqa: F401  every method pays the same imports, outside the measurement
    import numpy  # noqa: F401
    import pandas  # noqa: F401
    import tensorflow  # noqa: F401

    import cxrlib.data.pipeline  # noqa: F401
    from cxrlib.data.datasets import load_manifest

    manifest = load_manifest(data)
    paths, labels = manifest["path"].tolist(), manifest["label"].tolist()
    peak_reset = reset_peak_rss()
    base_mb = status_mb("VmRSS") if peak_reset else maxrss_mb()
    cpu_started, started = cpu_seconds(), time.perf_counter()
    result = LOADERS[method](paths, labels, by_class, size, batch)
    seconds, cpu_s = time.perf_counter() - started, cpu_seconds() - cpu_started
    peak_mb = (status_mb("VmHWM") if peak_reset else None) or maxrss_mb()
    return {"method": method, "seconds": seconds, "cpu_s": cpu_s, "base_mb": base_mb, "peak_mb": peak_mb,
            "increase_mb": peak_mb - base_mb, "peak_source": "VmHWM" if peak_reset else "ru_maxrss",
            **result}


# --------------------------------------------------------------------------- the driver

def run_child(method: str, args: argparse.Namespace, data: Path, by_class: Path) -> dict:
    """One measurement in a fresh Python process; its last stdout line is the JSON."""
    command = [sys.executable, str(Path(__file__).resolve()), "--method", method,
               "--data", str(data), "--by-class", str(by_class),
               "--image-size", str(args.image_size), "--batch", str(args.batch)]
    done = subprocess.run(command, capture_output=True, text=True, cwd=ROOT)
    if done.returncode != 0:
        raise RuntimeError(f"{method} failed ({done.returncode}):\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def summarise(runs: list[dict]) -> dict:
    """Per method: the medians (and all values) of the seconds and the RSS increase."""
    summary = {}
    for method in METHODS:
        mine = [r for r in runs if r["method"] == method]
        summary[method] = {
            "seconds": statistics.median(r["seconds"] for r in mine),
            "increase_mb": statistics.median(r["increase_mb"] for r in mine),
            "images_per_s": mine[0]["images"] / statistics.median(r["seconds"] for r in mine),
            "cpu_s": statistics.median(r["cpu_s"] for r in mine),
            "all_seconds": [r["seconds"] for r in mine],
            "all_increase_mb": [r["increase_mb"] for r in mine],
            "images": mine[0]["images"], "shape": mine[0]["shape"], "dtype": mine[0]["dtype"]}
    return summary


def ratios(summary: dict) -> dict:
    """The four ratios the targets are stated in."""
    seconds = {m: summary[m]["seconds"] for m in METHODS}
    return {"time_ratio": seconds["seed"] / seconds["cxrlib"],
            "memory_ratio": summary["cxrlib"]["increase_mb"] / summary["seed"]["increase_mb"],
            "vs_keras": seconds["keras"] / seconds["cxrlib"],
            "vs_floor": seconds["cxrlib"] / seconds["floor"]}


def met(name: str, value: float) -> bool:
    """Whether a ratio meets its target."""
    op, bound = TARGETS[name]
    return value >= bound if op == ">=" else value <= bound


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """The command line; ``--quick`` is a small run (60 images of 64 px, one round)."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=3600, help="images (a multiple of 3)")
    parser.add_argument("--size", type=int, default=299, help="side of the PNG files, px")
    parser.add_argument("--image-size", type=int, default=None,
                        help="side loaded at, px (default: 224, or --size when smaller)")
    parser.add_argument("--repeats", type=int, default=3, help="interleaved rounds")
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--cache", default=str(DEFAULT_CACHE), help="where the images are kept")
    parser.add_argument("--out", default="outputs/benchmarks/bench_loading.json")
    parser.add_argument("--quick", action="store_true", help="--n 60 --size 64 --repeats 1")
    parser.add_argument("--method", choices=METHODS, help=argparse.SUPPRESS)
    parser.add_argument("--data", help=argparse.SUPPRESS)
    parser.add_argument("--by-class", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.quick:
        args.n, args.size, args.repeats = 60, 64, 1
    if args.image_size is None:
        args.image_size = min(224, args.size)
    return args


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    if args.method:
        print(json.dumps(measure(args.method, Path(args.data), Path(args.by_class),
                                 args.image_size, args.batch)))
        return
    from cxrlib.environment import environment_info
    from cxrlib.files import write_json_atomic

    data, by_class = prepare_data(Path(args.cache), args.n, args.size)
    runs = []
    for round_ in range(args.repeats):
        for method in METHODS:
            runs.append({"round": round_, **run_child(method, args, data, by_class)})
            print(f"round {round_ + 1}/{args.repeats} {method:7s} {runs[-1]['seconds']:7.2f} s "
                  f"(CPU {runs[-1]['cpu_s']:6.2f} s) +{runs[-1]['increase_mb']:7.1f} MiB", flush=True)
    summary = summarise(runs)
    result = {"ratios": ratios(summary), "targets": TARGETS, "methods": summary, "runs": runs,
              "n": args.n, "size": args.size, "image_size": args.image_size,
              "repeats": args.repeats, "batch": args.batch, "data": str(data),
              "environment": environment_info(), "cpus": os.cpu_count(),
              "command": "python benchmarks/bench_loading.py " + " ".join(sys.argv[1:] if argv is None else argv)}
    result["met"] = {name: met(name, value) for name, value in result["ratios"].items()}
    write_json_atomic(Path(args.out), result)
    r = result["ratios"]
    # three decimals: a ratio just under its target must not print as meeting it (0.998 → "1.00")
    print(f"time_ratio={r['time_ratio']:.3f} memory_ratio={r['memory_ratio']:.3f} "
          f"vs_keras={r['vs_keras']:.3f} vs_floor={r['vs_floor']:.3f}")


if __name__ == "__main__":
    main()
