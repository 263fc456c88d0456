"""The library's from-scratch recipe (issue 22): its settings act, it learns, and it repeats.

The figures on real films are ``benchmarks/real_films.py``'s (docs/real_films.md); these tests
use tiny synthetic sets.
"""

from __future__ import annotations

from pathlib import Path

import keras
import numpy as np
import pytest

from cxrlib.data.augment import augment_batch
from cxrlib.data.datasets import load_manifest
from cxrlib.data.pipeline import make_dataset
from cxrlib.data.prepare import Prep
from cxrlib.data.splits import split_manifest
from cxrlib.data.synthetic import generate_synthetic
from cxrlib.models.build import compile_model, make_optimizer
from cxrlib.runs import train as training
from cxrlib.spec import SCRATCH_AUGMENT, SCRATCH_RECIPE, Augment, make_spec, variant_spec

CLASSES = ["COVID", "Normal", "Viral Pneumonia"]


@pytest.fixture(scope="module")
def easy_split(tmp_path_factory):
    """Three classes with strong lesions at 48 px: 40 films each."""
    out = tmp_path_factory.mktemp("scratch_easy")
    generate_synthetic(out, per_class=40, size=48, seed=3, classes=CLASSES, severity=(1.0, 1.3),
                       marker_prob=0.0, vary_size=False, progress=False)
    return split_manifest(load_manifest(out), val=0.2, test=0.2, seed=0)


def test_the_scratch_defaults_are_the_recipe() -> None:
    spec = variant_spec("scratch", "scratch")
    assert spec.weights is None and spec.optimizer == "adamw" and spec.augment == SCRATCH_AUGMENT
    for name, value in SCRATCH_RECIPE.items():
        assert getattr(spec, name) == value
    # the pretrained backbones keep theirs
    other = variant_spec("densenet121", "v3")
    assert other.schedule == "inverse-time" and other.label_smoothing == 0 and other.equalize is None


def test_cosine_schedule_ends_at_zero_and_weight_decay_is_decoupled() -> None:
    optimizer = make_optimizer("adamw", 0.002, schedule="cosine", total_steps=100, weight_decay=0.05)
    rates = []
    for step in (0, 50, 100):
        optimizer.iterations.assign(step)
        rates.append(float(optimizer.learning_rate))
    assert rates == pytest.approx([0.002, 0.001, 0.0], abs=1e-7)
    optimizer.iterations.assign(0)
    # a zero gradient still shrinks the weight: the decay does not go through the gradient
    weight = keras.Variable(np.ones((2,), "float32"))
    optimizer.apply_gradients([(np.zeros((2,), "float32"), weight)])
    assert float(weight.numpy()[0]) == pytest.approx(1 - 0.002 * 0.05, rel=1e-4)
    with pytest.raises(ValueError, match="total_steps"):
        make_optimizer("adam", 0.001, schedule="cosine")


def test_label_smoothing_reaches_the_loss() -> None:
    inputs = keras.Input((2,))
    model = keras.Model(inputs, keras.layers.Dense(3, activation="softmax")(inputs))
    compile_model(model, make_optimizer("adam", 1e-3, 0), label_smoothing=0.1)
    y = np.eye(3, dtype="float32")[[0]]
    sure = np.array([[1 - 2e-7, 1e-7, 1e-7]], "float32")
    # a confident right answer costs more with smoothed targets than the plain loss's ~0
    assert float(model.loss(y, sure)) > 0.3
    assert float(keras.losses.categorical_crossentropy(y, sure)[0]) < 1e-3


def test_gamma_augmentation_keeps_black_and_white_and_moves_the_middle() -> None:
    x = np.tile(np.array([0.0, 64.0, 255.0], "float32")[None, None, :, None], (8, 3, 1, 1))
    out = np.asarray(augment_batch(x, Augment(gamma=(0.5, 2.0)), seed=1))
    assert np.allclose(out[..., 0, 0], 0) and np.allclose(out[..., 2, 0], 255, atol=1e-3)
    middle = out[:, 0, 1, 0]
    assert middle.min() >= 255 * (64 / 255) ** 2 - 1e-3 and middle.max() <= 255 * (64 / 255) ** 0.5 + 1e-3
    assert middle.std() > 1   # each film its own exponent
    with pytest.raises(ValueError, match="gamma"):
        Augment(gamma=(1.2, 0.8))


def test_augmented_batches_repeat_with_the_seed(easy_split) -> None:
    train = easy_split[easy_split["split"] == "train"]
    prep = Prep(image_size=32, backbone="scratch", channels=1, equalize="hist")

    def first_epoch(seed: int) -> np.ndarray:
        ds = make_dataset(train, CLASSES, prep, 8, training=True, augment=SCRATCH_AUGMENT, seed=seed)
        return np.concatenate([np.asarray(x) for x, _ in ds])

    keras.utils.set_random_seed(0)
    once = first_epoch(0)
    keras.utils.set_random_seed(0)
    again = first_epoch(0)
    keras.utils.set_random_seed(0)
    other = first_epoch(1)
    assert np.array_equal(once, again) and not np.array_equal(once, other)


@pytest.mark.slow
def test_the_recipe_learns_the_easy_set_and_a_rerun_agrees(easy_split, tmp_path: Path) -> None:
    spec = variant_spec("scratch", "scratch", image_size=48, epochs=12, batch_size=16, seed=0)
    first = training.train(easy_split, CLASSES, spec, tmp_path / "a", progress=False, bootstrap=100)
    second = training.train(easy_split, CLASSES, spec, tmp_path / "b", progress=False, bootstrap=100)
    assert first.test.accuracy >= 0.8 and first.test.ci.accuracy[0] > 1 / 3
    assert abs(first.test.accuracy - second.test.accuracy) <= 0.01
    assert np.allclose(first.training.history["loss"], second.training.history["loss"],
                       rtol=1e-3)


def test_the_earlier_scratch_recipe_still_builds_as_a_spec() -> None:
    # what benchmarks/real_films.py measures as "today": every field still valid
    spec = make_spec(backbone="scratch", variant="scratch", weights=None, optimizer="adam",
                     learning_rate=1e-3, epochs=30)
    assert spec.schedule == "inverse-time" and spec.weight_decay == 0 and spec.channels == 3
