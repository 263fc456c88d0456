"""Notebook ``06``'s summaries: the two-stage course's figures beside ours, and occlusion maps
of the screen."""

from __future__ import annotations

import os

import pandas as pd
from matplotlib.figure import Figure

from cxrlib.course.presets import Preset
from cxrlib.runs.evaluate import Run
from cxrlib.runs.records import RunRecord


def against_course(preset: Preset, stage1: RunRecord, chain: dict) -> pd.DataFrame:
    """The course's three headline figures and ours, measured as the course measured them:
    the screen's test accuracy and the two-stage pipeline's 3-class accuracy at the 0.5
    threshold (``chain`` must be scored at 0.5), and the false-positive rate at 99 %
    sensitivity, read off the test ROC (the report's "≈40 %"). Ours from the records, the
    course's from its report's table (:mod:`cxrlib.course.reports`)."""
    if chain.get("threshold") != 0.5:
        raise ValueError(f"The course's two-stage accuracy is at threshold 0.5; this chain is at "
                         f"{chain.get('threshold')}.")
    test = stage1.test
    if test is None:
        raise ValueError(f"The screen {stage1.name} has no test scores to set beside the course's.")
    point = test.operating_point
    fpr = None if point is None or point.specificity is None else 1 - point.specificity
    rows = {"screen: test accuracy (threshold 0.5)":
                (test.accuracy, preset.run("stage1").reported.get("test_accuracy")),
            "two-stage: 3-class accuracy (threshold 0.5)":
                (chain["accuracy"], preset.findings.get("two_stage_accuracy")),
            "screen: false-positive rate at 99 % sensitivity":
                (fpr, preset.findings.get("fpr_at_99_sensitivity"))}
    return pd.DataFrame(rows, index=["ours", "course"]).T.astype(float)


def occlusion_figure(run: Run, test: pd.DataFrame, n: int = 4, seed: int = 0, patch: int = 15,
                     stride: int = 10, save: str | os.PathLike | None = None) -> Figure:
    """Occlusion maps of the predicted class of a loaded run for ``n`` test films, the classes in turn
    (an unreadable film is left out, with its reason logged)."""
    from cxrlib.course import heatmaps as hl
    from cxrlib.data.pipeline import model_inputs
    from cxrlib.runs.evaluate import predict

    examples = hl.pick_examples(test, run.classes, n, seed=seed)
    inputs = model_inputs(examples["path"].tolist(), run.prep)
    maps, _ = hl.explain_methods(run.model, inputs.x, ["occlusion"],
                                 options=hl.method_options(patch=patch, stride=stride))
    probs = predict(run.model, inputs.x)
    rows = [f"{t} →\n{run.classes[p.argmax()]} ({p.max():.0%})"
            for t, p in zip(examples["label"].iloc[inputs.kept], probs)]
    return hl.overlay_grid(inputs.images, maps, rows, title=f"{run.record.name}: occlusion",
                           save=save)
