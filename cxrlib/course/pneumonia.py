"""Notebook ``06``'s summaries: the two-stage course's figures beside ours, and occlusion maps
of the screen."""

from __future__ import annotations

import os

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from cxrlib.course.presets import Preset


def healthy_share(test: dict) -> float | None:
    """Of the films a binary screen calls positive at its 99 %-sensitivity operating point, the
    share that are healthy: false positives / (false + true positives), from the test metrics."""
    point, matrix = test.get("operating_point"), np.asarray(test.get("confusion_matrix") or [])
    if not point or matrix.shape != (2, 2):
        return None
    negatives, positives = matrix.sum(axis=1)
    false_calls = (1 - point["specificity"]) * negatives
    true_calls = point["sensitivity"] * positives
    return float(false_calls / (false_calls + true_calls)) if false_calls + true_calls else None


def against_course(preset: Preset, stage1: dict, chain: dict) -> pd.DataFrame:
    """The course's three headline figures and ours (screen accuracy, two-stage accuracy,
    healthy share of positive calls at 99 % recall), from the records and the preset."""
    rows = {"screen: test accuracy": (stage1["test"]["accuracy"], preset.run("stage1").reported.get("accuracy")),
            "two-stage: 3-class accuracy": (chain["accuracy"], preset.reported.get("two_stage_accuracy")),
            "healthy share of positive calls at 99 % recall":
                (healthy_share(stage1["test"]), preset.reported.get("healthy_share_of_positive_calls"))}
    return pd.DataFrame(rows, index=["ours", "course"]).T.astype(float)


def occlusion_figure(model, record: dict, test: pd.DataFrame, n: int = 4, seed: int = 0,
                     patch: int = 15, stride: int = 10, save: str | os.PathLike | None = None) -> Figure:
    """Occlusion maps of the predicted class for ``n`` test films of each class."""
    from cxrlib.course import heatmaps as hl
    from cxrlib.data.pipeline import model_inputs, prep_from_record, read_prepared
    from cxrlib.runs.evaluate import predict

    prep = prep_from_record(record)
    classes = record["dataset"]["classes"]
    examples = hl.pick_examples(test, classes, n, seed=seed)
    images, _ = read_prepared(examples["path"].tolist(), prep)
    x = model_inputs(np.stack(images), prep)
    maps, _ = hl.explain_methods(model, x, ["occlusion"],
                                 options=hl.method_options(patch=patch, stride=stride))
    probs = predict(model, x)
    rows = [f"{t} →\n{classes[p.argmax()]} ({p.max():.0%})" for t, p in zip(examples["label"], probs)]
    return hl.overlay_grid(images, maps, rows, title=f"{record['name']}: occlusion", save=save)
