"""Heat maps, activation maps and the measured explanations of cxrlib.explain.

Untrained tiny models check shapes, scaling and bookkeeping; one scratch CNN trained on an
easy synthetic set (conftest's ``scratch_run``, shared by the whole session with
test_diagnose.py) checks that Grad-CAM really finds the lesions; the shortcut experiment
checks that the numbers catch a model cheating with a border marker.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
from helpers import TRAIN_CLASSES
from matplotlib.figure import Figure
from PIL import Image

# pytest resets warning filters per test; training on a filtered dataset warns harmlessly
pytestmark = pytest.mark.filterwarnings("ignore:Your input ran out of data")

from cxrlib.course.shortcut import shortcut_experiment
from cxrlib.data.prepare import Prep, prepare_image
from cxrlib.explain.figures import activation_comparison, gallery, overlay, plot_overlay
from cxrlib.explain.maps import (
    METHODS,
    activation_maps,
    default_layer,
    heatmap,
    normalise_maps,
    occlusion_map,
    occlusion_positions,
    occlusion_scan,
    random_maps,
    representative_layers,
)
from cxrlib.explain.masks import central_mask, prepare_mask
from cxrlib.explain.measures import (
    border_share,
    energy_inside,
    lesion_scores,
    lung_share,
    pointing_game,
    summarise_scores,
)
from cxrlib.runs.evaluate import predict

FAST = {"smooth_samples": 3, "max_N": 4, "stride": 8, "patch": 12}


# --------------------------------------------------------------------------- shared models


@pytest.fixture(scope="session")
def trained(scratch_run):
    """(model, record, prep, split manifest) of the session's trained scratch CNN."""
    from cxrlib.runs.evaluate import load_run

    run, manifest = scratch_run
    loaded = load_run(run)
    return loaded.model, loaded.record, loaded.prep, manifest


@pytest.fixture(scope="module")
def tiny():
    """Untrained scratch CNNs at 32 px: a 3-class softmax and a 1-unit sigmoid model."""
    from cxrlib.models.build import build_model

    return {"softmax": build_model("scratch", "scratch", 3, 32, None, seed=1),
            "sigmoid": build_model("scratch", "scratch", 2, 32, None, binary=True, seed=2)}


@pytest.fixture(scope="module")
def images():
    return np.random.default_rng(0).random((3, 32, 32, 3)).astype(np.float32)


# --------------------------------------------------------------------------- heat maps


@pytest.mark.parametrize("kind", ["softmax", "sigmoid"])
@pytest.mark.parametrize("method", [m for m in METHODS if m != "random"])
def test_every_method_gives_unit_maps_of_input_size(tiny, images, kind, method):
    maps = heatmap(tiny[kind], images, method, **FAST)
    assert maps.shape == (3, 32, 32) and maps.dtype == np.float32
    assert np.isfinite(maps).all()
    for m in maps:  # each map is scaled to exactly [0, 1], or all zeros when it was flat
        assert (m.min(), m.max()) in ((0.0, 1.0), (0.0, 0.0))
    assert any(m.max() == 1.0 and m.std() > 0.01 for m in maps)


@pytest.mark.parametrize("method", ["gradcam", "gradcam++", "scorecam", "saliency", "occlusion"])
def test_binary_model_explains_each_class(tiny, images, method):
    """Class 0 of a sigmoid model is scored by the negated logit (BinaryScore); Score-CAM goes
    through the two-logit wrapper, since a softmax over one unit would weigh every map alike."""
    zero = heatmap(tiny["sigmoid"], images, method, class_index=0, **FAST)
    one = heatmap(tiny["sigmoid"], images, method, class_index=1, **FAST)
    if method == "saliency":  # |gradient| of z and -z are the same map, as they should be
        np.testing.assert_allclose(zero, one, atol=1e-5)
    else:
        assert not np.allclose(zero, one, atol=1e-3)
        assert max(zero.max(), one.max()) == 1.0  # (Grad-CAM of one class may be all 0 after ReLU)
    if method == "scorecam":  # both classes have positive scores, hence positive weights
        assert zero.max() == 1.0 and one.max() == 1.0


def test_class_index_forms(tiny, images):
    model = tiny["softmax"]
    predicted = predict(model, images).argmax(axis=1)
    default = heatmap(model, images, "gradcam")
    np.testing.assert_allclose(default, heatmap(model, images, "gradcam", list(predicted)))
    same = heatmap(model, images, "gradcam", 2)
    np.testing.assert_allclose(same[1], heatmap(model, images[1:2], "gradcam", [2])[0], atol=1e-5)
    with pytest.raises(ValueError, match="entries"):
        heatmap(model, images, "gradcam", [0, 1])
    with pytest.raises(ValueError, match="Unknown method"):
        heatmap(model, images, "lime")


def test_random_maps_are_seeded_unit_maps():
    a = heatmap(None, np.zeros((2, 40, 40, 1), np.float32), "random", seed=3)
    b = random_maps(2, (40, 40), seed=3)
    np.testing.assert_array_equal(a, b)
    assert a.shape == (2, 40, 40) and a.min() == 0.0 and a.max() == 1.0
    assert not np.allclose(a, random_maps(2, (40, 40), seed=4))


def test_normalise_maps_handles_constant_and_nan():
    maps = np.stack([np.full((4, 4), 7.0), np.arange(16.0).reshape(4, 4), np.full((4, 4), np.nan)])
    out = normalise_maps(maps)
    assert np.isfinite(out).all()
    np.testing.assert_array_equal(out[0], 0)
    np.testing.assert_array_equal(out[2], 0)
    assert out[1].min() == 0 and out[1].max() == 1 and out[1][0, 1] == pytest.approx(1 / 15)


def test_default_layer_is_fine_enough(tiny):
    from cxrlib.models.build import SCRATCH_LAST_CONV, build_model

    big = build_model("scratch", "scratch", 3, 128, None)
    assert default_layer(big) == SCRATCH_LAST_CONV == "scratch_conv5"
    # at 64 px the last block is 4×4 (16-px cells): the heat maps read the 8×8 block before it
    small = build_model("scratch", "scratch", 3, 64, None)
    assert default_layer(small) == "scratch_relu4"
    assert small.get_layer("scratch_relu4").output.shape[1:3] == (8, 8)


# --------------------------------------------------------------------------- occlusion


class CountingModel:
    """Wraps a model: counts calls and records batch sizes."""

    def __init__(self, model):
        self.model, self.calls, self.sizes = model, 0, []

    def __call__(self, x, training=False):
        self.calls += 1
        self.sizes.append(len(x))
        return self.model(x, training=training)


@pytest.mark.parametrize("stride,batch_size", [(4, 16), (5, 7), (10, 64)])
def test_occlusion_batches_model_calls(tiny, images, stride, batch_size):
    counter = CountingModel(tiny["softmax"])
    raw, calls = occlusion_scan(counter, images[0], 1, patch=8, stride=stride,
                                        batch_size=batch_size)
    positions = len(occlusion_positions(32, 8, stride)) ** 2
    assert calls == counter.calls == math.ceil(positions / batch_size) + 1
    assert max(counter.sizes[1:]) <= batch_size and sum(counter.sizes[1:]) == positions
    assert raw.shape == (32, 32)


def test_occlusion_finds_the_region_the_model_reads():
    """A 'model' whose class-1 probability rises with the brightness of one 8×8 square."""
    def model(x, training=False):
        z = 6.0 * (np.asarray(x)[:, 20:28, 4:12, 0].mean(axis=(1, 2)) - 0.5)
        p = 1 / (1 + np.exp(-z))
        return np.stack([1 - p, p], axis=1)

    image = np.full((32, 32, 3), 0.3, np.float32)
    image[20:28, 4:12] = 1.0
    heat = occlusion_map(model, image, 1, patch=6, stride=2)
    row, col = np.unravel_index(np.argmax(heat), heat.shape)
    assert 18 <= row < 30 and 2 <= col < 14
    assert heat[:10, 20:].max() == 0.0  # occluding far away changes nothing


# --------------------------------------------------------------------------- activations


def test_activation_maps_and_layers(tiny, images):
    model = tiny["softmax"]
    layers = representative_layers(model)
    assert layers == ["scratch_conv1", "scratch_conv3", "scratch_conv5"]
    names = [layer.name for layer in model.layers]
    assert names.index(layers[0]) < names.index(layers[1]) < names.index(layers[2])
    for name in layers + ["scratch_relu2"]:
        maps = activation_maps(model, images[0], name)
        assert maps.shape == tuple(model.get_layer(name).output.shape[1:])
    np.testing.assert_allclose(activation_maps(model, images[0], 0),
                               activation_maps(model, images[0], "scratch_conv1"))
    assert activation_maps(model, images[0], -1).shape == (2, 2, 256)
    with pytest.raises(ValueError):
        activation_maps(model, images[0], "no_such_layer")
    figure = activation_comparison({"one model": activation_maps(model, images[0], 0)}, n=16)
    assert isinstance(figure, Figure) and sum(ax.images != [] for ax in figure.axes) == 16


def test_activation_comparison_uses_the_same_channels(tiny, images):
    maps = activation_maps(tiny["softmax"], images[0], 1)
    figure = activation_comparison({"frozen": maps, "fine-tuned": maps[..., ::-1]}, n=5)
    titles = [ax.get_title() for ax in figure.axes if ax.get_title()]
    assert len(figure.axes) == 10 and len(titles) == 5


# --------------------------------------------------------------------------- measures


def test_energy_pointing_border_lung():
    heat = np.zeros((20, 20))
    heat[5:10, 5:10] = 1.0
    heat[0, 0] = 1.0
    mask = np.zeros((20, 20), bool)
    mask[5:10, 5:10] = True
    assert energy_inside(heat, mask) == pytest.approx(25 / 26)
    # a mask at another size is resized (nearest) to the map
    assert energy_inside(heat, np.kron(mask, np.ones((2, 2), bool))) == pytest.approx(25 / 26)
    assert math.isnan(energy_inside(np.zeros((20, 20)), mask))
    peak = np.zeros((20, 20))
    peak[12, 12] = 1.0
    assert not pointing_game(peak, mask, tolerance=2)
    peak = np.zeros((20, 20))
    peak[11, 11] = 1.0
    assert pointing_game(peak, mask, tolerance=2)
    assert not pointing_game(peak, mask, tolerance=0)
    flat = np.ones((50, 50))
    assert border_share(flat, band=0.1) == pytest.approx(1 - 0.8 ** 2)
    corner = np.zeros((50, 50))
    corner[:4, :10] = 1.0
    assert border_share(corner) == 1.0 and lung_share(corner) == 0.0
    assert lung_share(flat) == pytest.approx(central_mask((50, 50)).mean())
    assert lung_share(heat, mask) == energy_inside(heat, mask)


def _square_files(tmp_path: Path, size=(120, 100), mask_size=None):
    """An image with a bright square and a mask of that square (optionally at another size)."""
    h, w = size
    image = np.full((h, w), 40, np.uint8)
    image[30:60, 20:50] = 220
    Image.fromarray(image).save(tmp_path / "image.png")
    mask = np.zeros((h, w), np.uint8)
    mask[30:60, 20:50] = 255
    if mask_size is not None:
        mask = np.asarray(Image.fromarray(mask).resize(mask_size[::-1], Image.NEAREST))
    Image.fromarray(mask).save(tmp_path / "mask.png")
    return tmp_path / "image.png", tmp_path / "mask.png"


@pytest.mark.parametrize("crop", [False, True])
@pytest.mark.parametrize("mask_size", [None, (64, 64)])
def test_prepare_mask_follows_the_image_geometry(tmp_path, crop, mask_size):
    image_path, mask_path = _square_files(tmp_path, mask_size=mask_size)
    prep = Prep(image_size=48, backbone="scratch", crop=crop, crop_reference=(100, 120) if crop else None)
    image = prepare_image(str(image_path), prep)
    mask = prepare_mask(mask_path, prep, image_path)
    assert mask.shape == (48, 48) and mask.dtype == bool
    bright = image > 130
    assert (mask & bright).sum() / (mask | bright).sum() > 0.85  # IoU of the two squares


def test_overlay_and_plot_overlay(tmp_path):
    gray = np.tile(np.linspace(0, 255, 32, dtype=np.uint8), (32, 1))
    heat = np.zeros((16, 16), np.float32)
    heat[:4, :4] = 1.0
    rgb = overlay(gray, heat, alpha=0.4)
    assert rgb.shape == (32, 32, 3) and rgb.dtype == np.uint8
    np.testing.assert_array_equal(overlay(gray, heat, alpha=0.0), np.repeat(gray[..., None], 3, -1))
    assert rgb[0, 0, 0] > rgb[0, 0, 2]  # hot (red) corner; cold (blue) elsewhere
    assert rgb[-1, 16, 2] > rgb[-1, 16, 0]
    figure = plot_overlay(gray, heat, "test", {"COVID": 0.7, "Normal": 0.3},
                                  save=tmp_path / "overlay.png")
    assert isinstance(figure, Figure) and (tmp_path / "overlay.png").stat().st_size > 1000
    assert len(plot_overlay(gray, heat).axes) == 3  # two panels and the colour bar


# --------------------------------------------------------------------------- trained model


@pytest.mark.slow
def test_gradcam_finds_the_lesions(trained):
    """On a scratch CNN trained at 64 px, Grad-CAM's energy sits on the lesion masks.

    The heat maps read the default layer, ``scratch_relu4`` (8×8) at this size: the last
    block, ``scratch_conv5``, is 4×4 here, and its 16-px cells are coarser than most
    lesions (about 1.4× the random baseline against about 2× at ``scratch_relu4``).
    """
    model, record, prep, manifest = trained
    assert record.test.accuracy > 0.6
    held_out = manifest[manifest["split"] != "train"]
    scores = lesion_scores(model, held_out, TRAIN_CLASSES, prep, "gradcam")
    assert len(scores) >= 40 and set(scores["label"]) == {"COVID", "Bacterial Pneumonia"}
    summary = summarise_scores(scores)
    assert summary["energy_inside"] >= 1.5 * summary["random_energy_inside"]
    assert summary["energy_inside"] >= 1.5 * summary["mask_share"]
    assert summary["pointing_rate"] >= max(0.25, 3 * summary["random_pointing_rate"])
    assert scores["border_share"].between(0, 1).all()
    # the random map scores about the lesion's area share, as a map that ignores it should
    assert abs(summary["random_energy_inside"] - summary["mask_share"]) < 0.03


@pytest.mark.slow
def test_gallery_of_right_and_wrong(trained, tmp_path):
    model, record, prep, manifest = trained
    test = manifest[manifest["split"] == "test"]
    right = gallery(model, test, TRAIN_CLASSES, prep, "gradcam++", n_per_class=3,
                    correct=True, save=tmp_path / "right.png")
    assert isinstance(right, Figure) and (tmp_path / "right.png").is_file()
    shown = [ax for ax in right.axes if ax.images]
    assert 3 <= len(shown) <= 9
    for ax in shown:
        true, predicted = ax.get_title().replace("\n", " ").split(" (")[0].split(" → ")
        assert true == predicted
    wrong = gallery(model, test, TRAIN_CLASSES, prep, "gradcam", n_per_class=2, correct=False)
    for ax in (ax for ax in wrong.axes if ax.images):
        true, predicted = ax.get_title().replace("\n", " ").split(" (")[0].split(" → ")
        assert true != predicted


@pytest.mark.slow
def test_shortcut_experiment(tmp_path):
    """The shortcut model cheats with the marker; the heat maps show it; the crop stops it."""
    result = shortcut_experiment(tmp_path, size=64, per_class=60, epochs=12, seed=0)
    json.dumps(result)  # JSON-serialisable
    shortcut, cropped = result["shortcut"], result["cropped"]
    assert shortcut["accuracy_marked"] >= 0.85
    assert shortcut["accuracy_marker_free"] <= shortcut["accuracy_marked"] - 0.2
    # the same films with and without the marker: the marker pulls the heat into the border
    assert shortcut["marker_share_marked"] >= 2 * shortcut["marker_area_share"]
    assert shortcut["border_share_marked"] > shortcut["border_share_marker_free"]
    # the crop removes every marker pixel, and the model learns the lungs instead
    assert shortcut["marker_pixels_in_view"] == 1.0 and cropped["marker_pixels_in_view"] == 0.0
    assert cropped["accuracy_marker_free"] >= shortcut["accuracy_marker_free"] + 0.1
    assert cropped["accuracy_marked"] == cropped["accuracy_marker_free"]  # it cannot see a difference
