"""The from-scratch recipe on real films: same-source and other-source accuracy over seeds.

Protocol (``docs/real_films.md`` says what it does and does not measure):

- **Data.** ``../shared/data/covid19-radiography-sample`` (COVID, Normal, Viral Pneumonia;
  300 films each). For each seed, one split made as ``cxr train`` makes it
  (:func:`cxrlib.data.splits.make_split` with the recipe's ``split``: 15 % test, 15 % of the
  rest for validation, stratified by class; the sample has no patient IDs, so each film is
  its own group). The split changes with the seed.
- **Training.** :func:`cxrlib.runs.train.train` with the recipe's :class:`cxrlib.spec.RunSpec`
  and that seed, nothing re-implemented: the run keeps its best validation epoch as
  ``cxr train`` does.
- **Same source** (``test``): the run's accuracy on its held-out 15 % (135 films).
- **Other source** (``other``): the run's model scored as ``cxr evaluate --split all`` scores a
  folder, on ``../shared/data/pneumonia-sample`` (Kermany's paediatric set: its Normal and Viral
  Pneumonia films, 400, are the classes the model knows; Bacterial Pneumonia is left out), and
  ``other_binary``: Normal against any pneumonia (bacterial and viral, 600 films; a film counts
  as pneumonia when the model says COVID or Viral Pneumonia), balanced accuracy.
- **Choosing** a recipe is on ``val`` (the best validation epoch's accuracy), never on the test
  or other-source figures, which are reported.
- Each figure over the seeds as mean ± spread (max − min) and the standard deviation.

    python benchmarks/real_films.py [--recipe today new] [--seeds 0 1 2] [--epochs N]
        [--image-size PX] [--set augment.flip=false ...] [--rerun]
        [--out outputs/benchmarks/real_films.json]

``--rerun`` trains the first seed of each recipe twice and reports the difference (the
same-seed reproducibility bar). ``--epochs``, ``--image-size`` and ``--set`` (a dotted spec
field and a JSON value) change every recipe, for exploring; the figures in the docs use none
of them. Without ``../shared/data`` (or ``--data``) the script says so and exits 0.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data"
SAME = "covid19-radiography-sample"
OTHER = "pneumonia-sample"
NORMAL = "Normal"


def recipe_spec(name: str):
    """The spec of a recipe: ``today`` (the library's scratch recipe until issue 22, written out
    so that it stays measurable) or ``new`` (the library's scratch defaults now)."""
    from cxrlib.spec import LIBRARY_AUGMENT, make_spec, variant_spec

    if name == "today":
        return make_spec(backbone="scratch", variant="scratch", head="course", weights=None,
                         optimizer="adam", learning_rate=1e-3, decay=0.0, epochs=30,
                         augment=LIBRARY_AUGMENT)
    if name == "new":
        return variant_spec("scratch", "scratch")
    raise SystemExit(f"Unknown recipe {name!r}; choose today or new.")


def with_changes(spec, epochs: int | None, image_size: int | None, settings: list[str]):
    """``spec`` with the exploring overrides applied (``--epochs``, ``--image-size``, ``--set``)."""
    from cxrlib.spec import updated

    changes: dict[str, Any] = {}
    if epochs:
        changes["epochs"] = epochs
    if image_size:
        changes["image_size"] = image_size
    for item in settings:
        key, _, text = item.partition("=")
        changes[key] = json.loads(text)
    return updated(spec, changes) if changes else spec


def kept_val_accuracy(history: dict[str, list[float]]) -> float | None:
    """Validation accuracy of the epoch the run kept (the lowest validation loss)."""
    losses = history.get("val_loss") or []
    if not losses:
        return None
    return float(history["val_accuracy"][int(np.nanargmin(losses))])


COPY_CORRELATION = 0.99
"""Two films whose 16×16 thumbnails correlate this much are one film (resized, re-encoded)."""


def copies_of(paths: list[str], reference: list[str]) -> np.ndarray:
    """For each file of ``paths``, whether it is a copy of one of ``reference``'s films
    (:func:`cxrlib.data.quality.thumbnail` correlation ≥ :data:`COPY_CORRELATION`)."""
    from cxrlib.data.images import read_image
    from cxrlib.data.quality import thumbnail

    def thumbs(files: list[str]) -> np.ndarray:
        return np.stack([thumbnail(read_image(f), 16) for f in files])

    return (thumbs(paths) @ thumbs(reference).T).max(axis=1) >= COPY_CORRELATION


def other_source_set(data: Path):
    """The other-source manifest without the films that are also in the same-source sample
    (the Kaggle database took its Viral Pneumonia and some Normal films from Kermany's set),
    and how many of each class were left out."""
    from cxrlib.data.datasets import load_manifest

    other, same = load_manifest(data / OTHER), load_manifest(data / SAME)
    shared = copies_of(other["path"].astype(str).tolist(), same["path"].astype(str).tolist())
    kept = other[~shared].reset_index(drop=True)
    kept.attrs = dict(other.attrs)
    return kept, other.loc[shared, "label"].value_counts().to_dict()


def other_source_scores(run_dir: Path, manifest) -> dict[str, float]:
    """The run's model on the other-source films: ``other`` as ``cxr evaluate --split all``
    scores a folder (the classes the model knows), ``other_binary`` the balanced accuracy of
    Normal against any pneumonia."""
    from cxrlib.data.pipeline import model_inputs
    from cxrlib.runs.evaluate import evaluate, load_run, match_classes, predict

    run = load_run(run_dir)
    scored = evaluate(run.model, match_classes(manifest, run.classes), run.classes, run.prep,
                      bootstrap=0)
    inputs = model_inputs(manifest["path"].astype(str).tolist(), run.prep)
    said_normal = predict(run.model, inputs.x, len(run.classes)).argmax(1) == run.classes.index(NORMAL)
    is_normal = (manifest["label"].to_numpy()[inputs.kept] == NORMAL)
    balanced = 0.5 * (said_normal[is_normal].mean() + (~said_normal[~is_normal]).mean())
    return {"other": float(scored["accuracy"]), "other_n": int(np.sum(scored["confusion_matrix"])),
            "other_confusion": scored["confusion_matrix"],
            "other_binary": float(balanced)}


def one_run(spec, seed: int, data: Path, work: Path, other) -> dict[str, Any]:
    """Train ``spec`` with ``seed`` on its seed's split of the same-source sample; its figures."""
    from cxrlib.data.datasets import load_manifest
    from cxrlib.data.splits import make_split
    from cxrlib.runs.train import train
    from cxrlib.spec import updated

    spec = updated(spec, {"seed": seed})
    manifest = make_split(load_manifest(data / SAME), spec.split, seed)
    classes = sorted(manifest["label"].unique())
    run_dir = work / f"seed{seed}-{time.monotonic_ns()}"
    started = time.perf_counter()
    record = train(manifest, classes, spec, run_dir, reuse=False, progress=False, bootstrap=200)
    wall = time.perf_counter() - started
    figures = {"seed": seed, "val": kept_val_accuracy(record.training.history),
               "test": float(record.test.accuracy), "n_test": record.dataset.n_test,
               "epochs_run": record.training.epochs_run,
               "train_s": float(record.training.wall_time_s), "run_s": wall,
               "params": record.model.total_params}
    figures.update(other_source_scores(run_dir, other))
    return figures


def summary(runs: list[dict[str, Any]]) -> dict[str, dict[str, float]]:
    """Mean, spread (max − min) and standard deviation of each figure over the seeds."""
    out = {}
    for key in ("val", "test", "other", "other_binary", "train_s"):
        values = np.array([run[key] for run in runs if run.get(key) is not None], float)
        if values.size:
            out[key] = {"mean": float(values.mean()), "spread": float(np.ptp(values)),
                        "std": float(values.std(ddof=1)) if values.size > 1 else 0.0}
    return out


def line(name: str, figures: dict[str, dict[str, float]]) -> str:
    """One printed line: each figure as mean ± spread."""
    parts = [f"{k}={v['mean']:.3f}±{v['spread']:.3f}" for k, v in figures.items() if k != "train_s"]
    return f"{name}: " + " ".join(parts) + f" train_s={figures['train_s']['mean']:.0f}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--recipe", nargs="+", default=["today", "new"], choices=("today", "new"))
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    parser.add_argument("--epochs", type=int)
    parser.add_argument("--image-size", type=int)
    parser.add_argument("--set", action="append", default=[], metavar="FIELD=JSON")
    parser.add_argument("--rerun", action="store_true", help="train each recipe's first seed twice")
    parser.add_argument("--data", type=Path, default=DATA)
    parser.add_argument("--out", type=Path, default=ROOT / "outputs" / "benchmarks" / "real_films.json")
    args = parser.parse_args(argv)
    if not ((args.data / SAME).is_dir() and (args.data / OTHER).is_dir()):
        print(f"real_films: skipped, no {args.data / SAME} and {args.data / OTHER} "
              "(the real samples are kept outside the project).")
        return 0

    from cxrlib.environment import environment_info
    from cxrlib.files import write_json_atomic

    result: dict[str, Any] = {"command": " ".join([Path(sys.argv[0]).name, *(argv or sys.argv[1:])]),
                              "seeds": args.seeds, "recipes": {}, "environment": environment_info()}
    other, left_out = other_source_set(args.data)
    result["other_source"] = {"films": len(other), "left_out_as_copies": left_out}
    print(f"other source: {len(other)} films of {OTHER}, without the copies of {SAME} films "
          f"{left_out}", flush=True)
    with tempfile.TemporaryDirectory(prefix="real_films_") as tmp:
        for name in args.recipe:
            spec = with_changes(recipe_spec(name), args.epochs, args.image_size, args.set)
            runs: list[dict[str, Any]] = []
            result["recipes"][name] = {"spec": spec.model_dump(mode="json"), "runs": runs}
            for seed in args.seeds:
                runs.append(one_run(spec, seed, args.data, Path(tmp), other))
                write_json_atomic(args.out, result)   # each run as it ends: a long sweep keeps them
                print(f"  {name} seed {seed}: " + " ".join(
                    f"{k}={v:.3f}" if isinstance(v, float) else f"{k}={v}" for k, v in runs[-1].items()),
                    flush=True)
            entry = result["recipes"][name]
            entry["summary"] = summary(runs)
            if args.rerun:
                again = one_run(spec, args.seeds[0], args.data, Path(tmp), other)
                entry["rerun"] = {**again, "test_difference": abs(again["test"] - runs[0]["test"]),
                                  "other_difference": abs(again["other"] - runs[0]["other"])}
                print(f"  {name} rerun of seed {args.seeds[0]}: test difference "
                      f"{entry['rerun']['test_difference']:.3f}, other difference "
                      f"{entry['rerun']['other_difference']:.3f}", flush=True)
            print(line(name, entry["summary"]), flush=True)
            write_json_atomic(args.out, result)
    print(f"→ {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
