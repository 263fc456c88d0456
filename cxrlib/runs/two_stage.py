"""The two-stage pneumonia pipeline: normal → pneumonia, then bacterial or viral.

Stage 1 is a screen: is there pneumonia at all? Only the images it calls sick go on to
stage 2, which names the kind. Each stage is an ordinary run of :func:`cxrlib.runs.train.train`
(stage 1 on ``Normal`` vs ``Pneumonia``, stage 2 on the pneumonia images only), so each can
be trained, tuned and reused on its own; this module only chains them.

The combined prediction has the classes ``[normal] + stage-2 classes``:

- the **label** follows the routing exactly: an image whose stage-1 disease probability is
  below ``threshold`` is ``Normal`` and never reaches stage 2; every other image gets the
  stage-2 class with the highest probability. Lowering ``threshold`` (the screening
  operating point) sends more images to stage 2: fewer sick images are missed, more healthy
  ones are flagged;
- the **probabilities** follow the chain rule, ``P(Normal) = 1 - p`` and
  ``P(subtype) = p · q(subtype)``, with ``p`` the stage-1 disease probability and ``q`` the
  stage-2 probabilities. For an image stage 2 never saw, ``q`` is unknown and taken as
  uniform. They rank images for ROC AUCs; they are **not** the decision: their ``argmax``
  can differ from the routed label (``p = 0.6, q = (0.5, 0.5)`` gives ``[0.4, 0.3, 0.3]``),
  so the confusion matrix and accuracy of :func:`evaluate_two_stage` come from the labels.

API: :func:`evaluate_two_stage` scores two saved runs on a manifest, each stage with its own
recorded preparation and :func:`cxrlib.runs.evaluate.predict`; :func:`disease_probability`
and :func:`combine_stages` are the routing and the chain rule, for a script that holds the
two stages' outputs already (``cxr diagnose --stage2`` chains them per film).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Sequence

import numpy as np
import pandas as pd

from cxrlib.runs.evaluate import load_run, predict
from cxrlib.runs.metrics import class_probabilities

log = logging.getLogger(__name__)


def disease_probability(stage1_probs: np.ndarray, stage1_classes: Sequence[str],
                        normal_class: str = "Normal") -> np.ndarray:
    """P(not ``normal_class``) per image from stage-1 probabilities (N, 2) or a sigmoid (N, 1)."""
    classes = list(stage1_classes)
    if len(classes) != 2 or normal_class not in classes:
        raise ValueError(f"Stage 1 must have two classes, one of them {normal_class!r}; got {classes}.")
    probs = class_probabilities(stage1_probs, 2)
    return 1.0 - probs[:, classes.index(normal_class)]


def combine_stages(p_disease: np.ndarray, stage2_probs: np.ndarray, routed: np.ndarray,
                   stage2_classes: Sequence[str], normal_class: str = "Normal"
                   ) -> tuple[list[str], np.ndarray]:
    """Final labels and (N, 1 + K2) chain-rule probabilities, columns ``[normal] + stage2_classes``.

    ``stage2_probs`` (M, K2) belongs to the ``M = routed.sum()`` routed images, in order.
    """
    p = np.asarray(p_disease, dtype=np.float64).ravel()
    routed = np.asarray(routed, dtype=bool).ravel()
    k2 = len(stage2_classes)
    q_routed = class_probabilities(stage2_probs, k2) if routed.any() else np.zeros((0, k2))
    if len(q_routed) != int(routed.sum()):
        raise ValueError(f"{int(routed.sum())} images were routed but stage 2 scored {len(q_routed)}.")
    q = np.full((len(p), k2), 1.0 / k2)
    q[routed] = q_routed
    probs = np.concatenate([(1.0 - p)[:, None], p[:, None] * q], axis=1)
    labels = [stage2_classes[int(np.argmax(q[i]))] if routed[i] else normal_class
              for i in range(len(p))]
    return labels, probs


def _predict(model, manifest: pd.DataFrame, label_classes: Sequence[str], prep, n_out: int,
             batch_size: int, skipped: list) -> np.ndarray:
    """(N, n_out) probabilities over the readable images of a manifest, in order."""
    from cxrlib.data.pipeline import make_dataset

    ds = make_dataset(manifest, label_classes, prep, batch_size=batch_size,
                      label_mode="int", skip_log=skipped)
    return predict(model, ds, n_out)


def evaluate_two_stage(stage1_run_dir: str | Path, stage2_run_dir: str | Path,
                       manifest: pd.DataFrame, classes: Sequence[str] | None = None,
                       threshold: float = 0.5, normal_class: str = "Normal",
                       batch_size: int = 32, bootstrap: int = 1000, seed: int = 0) -> dict:
    """Score the chained runs on a manifest labelled with the final classes.

    Each stage reads the images with its own recorded preparation, in batches; stage 2 sees
    only the images stage 1 routes to it. Returns a :func:`cxrlib.runs.metrics.compute_metrics`
    dict in which the confusion matrix, accuracy (with its bootstrap interval) and the
    per-class precision/recall/specificity/F1 come from the routed labels, the AUCs from the
    chain-rule probabilities; plus ``threshold``, ``routed`` (how many reached stage 2),
    ``stage1`` (the screen's own sensitivity and specificity), ``paths``, ``predicted``,
    ``probabilities`` and ``skipped``.
    """
    from cxrlib.data.pipeline import label_indices
    from cxrlib.runs.metrics import compute_metrics

    if not 0.0 <= threshold <= 1.0:
        raise ValueError(f"threshold must lie in [0, 1], not {threshold}")
    stage1, stage2 = load_run(stage1_run_dir), load_run(stage2_run_dir)
    classes2 = stage2.classes
    classes = list(classes) if classes is not None else [normal_class] + classes2
    if sorted(classes) != sorted([normal_class] + classes2):
        raise ValueError(f"classes {classes} must be {normal_class!r} plus stage 2's {classes2}.")
    if manifest.empty:
        raise ValueError("The manifest is empty: nothing to evaluate.")
    label_indices(manifest["label"].tolist(), classes)  # a clear error for a foreign label

    skipped: list = []
    probs1 = _predict(stage1.model, manifest, classes, stage1.prep, 2, batch_size, skipped)
    gone = {item["path"] for item in skipped}
    readable = manifest[~manifest["path"].astype(str).isin(gone)].reset_index(drop=True)
    p = disease_probability(probs1, stage1.classes, normal_class)
    routed = p >= threshold
    probs2 = (_predict(stage2.model, readable[routed], classes, stage2.prep, len(classes2),
                       batch_size, skipped)
              if routed.any() else np.zeros((0, len(classes2))))
    labels, chain = combine_stages(p, probs2, routed, classes2, normal_class)
    order = [([normal_class] + classes2).index(c) for c in classes]
    chain = chain[:, order]

    y_true = label_indices(readable["label"].tolist(), classes)
    result = compute_metrics(y_true, chain, classes, bootstrap=bootstrap, seed=seed,
                             y_pred=label_indices(labels, classes))
    sick_true = y_true != classes.index(normal_class)
    result.update({
        "threshold": float(threshold),
        "routed": int(routed.sum()),
        "stage1": {"sensitivity": float(routed[sick_true].mean()) if sick_true.any() else None,
                   "specificity": float((~routed[~sick_true]).mean()) if (~sick_true).any() else None},
        "stage_runs": [str(stage1_run_dir), str(stage2_run_dir)],
        "paths": readable["path"].astype(str).tolist(),
        "predicted": labels,
        "probabilities": chain.tolist(),
        "skipped": skipped,
    })
    return result
