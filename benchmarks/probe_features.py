"""How much a backbone's frozen features know: a linear probe on a synthetic target set.

The probe is logistic regression on the *standardised* global-average-pooled features, scored
by 5-fold cross-validation. It measures the features alone, with no head-training recipe in
the way, so it is how the README compares weights (``synthetic`` against random, one
pretraining recipe against another). The target set is three classes drawn by
``generate_synthetic`` with a seed that pretraining never used; ``--data`` scores a folder of
real images instead (any supported layout).

    python benchmarks/probe_features.py --backbone vgg16 --weights synthetic [--image-size 64]
        [--per-class 100] [--seed 11] [--data DIR] [--out outputs/benchmarks/probe-....json]

``--weights`` is ``synthetic`` (cxrlib's pretrained cache, pretrained first when missing),
``none`` (random) or a weights file. The last line printed is ``probe_accuracy=<x>``; the
measurement is written as JSON.
"""

from __future__ import annotations

import argparse
import os
import tempfile
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402

CLASSES = ["COVID", "Normal", "Viral Pneumonia"]


def pooled_features(backbone: str, weights: str | None, image_size: int, data: str
                    ) -> tuple[np.ndarray, np.ndarray]:
    """(pooled features (N, D), integer labels (N,)) of every image in ``data``."""
    from cxrlib.data.datasets import load_manifest
    from cxrlib.data.prepare import Prep
    from cxrlib.models.build import build_model
    from cxrlib.runs.features import extract_features
    from cxrlib.runs.pretrain import weights_source

    manifest = load_manifest(data)
    classes = sorted(manifest["label"].unique())
    resolved = weights_source(backbone, weights, image_size)["file"] or weights
    model = build_model(backbone, "v1", len(classes), image_size, weights=resolved)
    [(features, labels)] = extract_features(model, [manifest], classes, Prep(image_size, backbone),
                                            32, "int")
    return features, labels


def probe(features: np.ndarray, labels: np.ndarray, folds: int = 5, seed: int = 0) -> list[float]:
    """Per-fold accuracy of standardised logistic regression (stratified folds)."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import StratifiedKFold, cross_val_score
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    classifier = make_pipeline(StandardScaler(), LogisticRegression(max_iter=2000))
    split = StratifiedKFold(folds, shuffle=True, random_state=seed)
    return cross_val_score(classifier, features, labels, cv=split).tolist()


def main() -> None:
    from cxrlib.environment import environment_info
    from cxrlib.files import write_json_atomic

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backbone", default="densenet121")
    parser.add_argument("--weights", default="synthetic", help="synthetic, none or a weights file")
    parser.add_argument("--image-size", type=int, default=64)
    parser.add_argument("--per-class", type=int, default=100, help="synthetic target films per class")
    parser.add_argument("--seed", type=int, default=11, help="the synthetic target set's seed")
    parser.add_argument("--data", help="a folder of images to probe instead of a synthetic set")
    parser.add_argument("--out", help="JSON file (default outputs/benchmarks/probe-<backbone>-<weights>.json)")
    args = parser.parse_args()
    weights = None if args.weights.lower() == "none" else args.weights
    with tempfile.TemporaryDirectory() as tmp:
        data = args.data
        if data is None:
            from cxrlib.data.synthetic import generate_synthetic

            generate_synthetic(tmp, per_class=args.per_class, size=args.image_size, seed=args.seed,
                               classes=CLASSES, progress=False)
            data = tmp
        features, labels = pooled_features(args.backbone, weights, args.image_size, data)
    scores = probe(features, labels)
    result = {"backbone": args.backbone, "weights": args.weights, "image_size": args.image_size,
              "data": args.data or f"synthetic, {args.per_class} per class, seed {args.seed}",
              "images": int(len(labels)), "features": int(features.shape[1]),
              "fold_accuracy": scores, "probe_accuracy": float(np.mean(scores)),
              "environment": environment_info()}
    name = f"probe-{args.backbone}-{Path(args.weights).name.removesuffix('.weights.h5')}.json"
    write_json_atomic(Path(args.out or Path("outputs/benchmarks") / name), result)
    print(f"probe_accuracy={np.mean(scores):.3f}")


if __name__ == "__main__":
    main()
