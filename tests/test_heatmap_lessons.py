"""The notebook-05 helpers of cxrlib.course.heatmaps: tables, charts, grids and sentences.

Untrained tiny scratch CNNs on a tiny synthetic set check shapes and bookkeeping (what a
trained model finds is tested in test_explain.py); one tiny shortcut experiment checks the
figures built from its folder.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from helpers import shortcut_result
from matplotlib.figure import Figure

pytestmark = pytest.mark.filterwarnings("ignore:Your input ran out of data")

from cxrlib.course import heatmaps as hl
from cxrlib.course.shortcut import shortcut_experiment
from cxrlib.data.pipeline import model_inputs
from cxrlib.data.prepare import Prep

CLASSES = ["COVID", "Normal"]
FAST = hl.method_options(max_n=3, smooth_samples=2, patch=12, stride=16)


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    """A tiny synthetic set with lesion masks (COVID has lesions, Normal empty masks), split."""
    from cxrlib.data.datasets import load_manifest
    from cxrlib.data.splits import split_manifest
    from cxrlib.data.synthetic import generate_synthetic

    root = tmp_path_factory.mktemp("hl_data")
    generate_synthetic(root, per_class=8, size=48, seed=0, classes=CLASSES, marker_prob=0.0,
                       vary_size=False, progress=False)
    return split_manifest(load_manifest(root), val=0.25, test=0.5, seed=0)


@pytest.fixture(scope="module")
def model():
    from cxrlib.models.build import build_model

    return build_model("scratch", "scratch", 2, 32, None, seed=1)


PREP = Prep(image_size=32, backbone="scratch")


def test_method_options_have_no_batch_size():
    options = hl.method_options(max_n=7, smooth_samples=5)
    assert options["fastscorecam"] == {"max_N": 7}
    assert options["smoothgrad"] == {"smooth_samples": 5}
    assert options["occlusion"] == {"patch": 15, "stride": 10}
    assert not any("batch_size" in o for o in options.values())


def test_pick_examples_alternates_classes(data):
    rows = hl.pick_examples(data, CLASSES, 3, seed=1)
    assert list(rows["label"]) == ["COVID", "Normal", "COVID"]
    assert (rows["split"] == "test").all() and rows["path"].is_unique
    many = hl.pick_examples(data, CLASSES, 100)
    assert len(many) == (data["split"] == "test").sum()


def test_lesion_rows_keep_only_real_lesions(data):
    rows = hl.lesion_rows(data, CLASSES)
    assert len(rows) > 0 and set(rows["label"]) == {"COVID"}  # Normal masks are empty
    assert (rows["split"] == "test").all()
    assert len(hl.lesion_rows(data, CLASSES, max_images=1)) == 1
    real = data.assign(mask_kind="lung")
    assert hl.lesion_rows(real, CLASSES).empty
    assert hl.lesion_rows(data.drop(columns=["mask_kind"]), CLASSES).empty


def test_explain_methods_and_overlay_grid(model, data, tmp_path):
    rows = hl.pick_examples(data, CLASSES, 2)
    inputs = model_inputs(rows["path"].tolist(), PREP)
    images, x = inputs.images, inputs.x
    methods = ["gradcam", "fastscorecam", "smoothgrad", "occlusion"]
    maps, seconds = hl.explain_methods(model, x, methods, options=FAST)
    assert list(maps) == methods and set(seconds) == set(methods)
    for heat in maps.values():
        assert heat.shape == (2, 32, 32) and heat.min() >= 0 and heat.max() <= 1
    assert all(s >= 0 for s in seconds.values())
    outlines = [np.zeros((32, 32), bool), np.pad(np.ones((8, 8), bool), 12)]
    figure = hl.overlay_grid(images, maps, row_labels=["a", "b"], title="t", outlines=outlines,
                             save=tmp_path / "g.png")
    assert isinstance(figure, Figure) and (tmp_path / "g.png").is_file()
    assert len(figure.axes) == 2 * (len(methods) + 1)
    assert figure.axes[1].get_title() == "gradcam"
    assert not figure.axes[0].collections and figure.axes[-1].collections  # contour on row 2 only


def test_lesion_table_and_chart(model, data, tmp_path):
    rows = hl.lesion_rows(data, CLASSES)
    table = hl.lesion_table(model, rows, CLASSES, PREP, ["gradcam", "random"], FAST)
    assert list(table.index) == ["gradcam", "random"]
    assert (table["n"] == len(rows)).all()
    # every method is scored against the same random maps
    assert table["random_energy_inside"].nunique() == 1
    assert table[["energy_inside", "pointing_rate", "mask_share"]].apply(lambda c: c.between(0, 1)).all().all()
    figure = hl.plot_method_scores(table, title="lesions", save=tmp_path / "m.png")
    assert isinstance(figure, Figure) and (tmp_path / "m.png").is_file()


def test_region_scores_tables_and_charts(model, data, tmp_path):
    test = data[data["split"] == "test"]
    scores = hl.region_scores(model, test, CLASSES, PREP, "gradcam")
    assert len(scores) == len(test)
    assert set(scores["lung_region"]) == {"central region"}  # lesion masks are not lung masks
    assert scores[["border_share", "lung_share", "random_border_share"]].apply(
        lambda c: c.between(0, 1)).all().all()
    per_class = hl.class_regions(scores, CLASSES)
    assert list(per_class.index) == [*CLASSES, "random map"]
    assert per_class.loc["random map", "n"] == len(scores)
    assert per_class.loc[CLASSES, "n"].sum() == len(scores)
    table = hl.region_table(model, test, CLASSES, PREP, ["gradcam", "saliency"], FAST)
    assert list(table.columns) == ["n", "border_share", "random_border_share", "lung_share",
                                   "random_lung_share", "seconds"]
    assert isinstance(hl.plot_method_scores(table, save=tmp_path / "r.png"), Figure)
    assert isinstance(hl.plot_class_regions(per_class, title="c", save=tmp_path / "c.png"), Figure)
    assert (tmp_path / "r.png").is_file() and (tmp_path / "c.png").is_file()


def test_region_scores_use_lung_masks(model, data):
    """Rows with ``mask_kind == "lung"`` are scored against their mask, not the centre."""
    test = data[(data["split"] == "test") & (data["label"] == "COVID")].assign(mask_kind="lung")
    scores = hl.region_scores(model, test, CLASSES, PREP, "random")
    assert set(scores["lung_region"]) == {"lung mask"}


def test_shortcut_table_and_chart(tmp_path):
    result = shortcut_result()
    table = hl.shortcut_table(result)
    assert list(table.index) == ["shortcut", "cropped"]
    assert table.loc["shortcut", "accuracy, marker-free films"] == pytest.approx(0.5)
    assert table.loc["cropped", "marker in view"] == 0.0
    assert isinstance(hl.plot_shortcut(result, save=tmp_path / "s.png"), Figure)
    assert (tmp_path / "s.png").is_file()


@pytest.mark.slow
def test_shortcut_figures_from_a_tiny_experiment(tmp_path):
    result = shortcut_experiment(tmp_path / "sc", size=48, per_class=6, epochs=1,
                                         test_per_class=4, film_size=96)
    json.dumps(result)
    pairs = hl.shortcut_pairs(tmp_path / "sc", n=2)
    assert len(pairs) == 2
    for marked, clean in pairs:
        assert Path(marked).name == Path(clean).name and "marker_free" in clean
    figure = hl.shortcut_heatmaps(tmp_path / "sc", "COVID", "gradcam", n=2, save=tmp_path / "h.png")
    assert isinstance(figure, Figure) and (tmp_path / "h.png").is_file()
    assert sum(1 for ax in figure.axes if ax.images) == 8
    Path(pairs[0][1]).write_bytes(b"not an image")  # one unreadable twin: its pair is left out
    figure = hl.shortcut_heatmaps(tmp_path / "sc", "COVID", "gradcam", n=2)
    assert sum(1 for ax in figure.axes if ax.images) == 4
