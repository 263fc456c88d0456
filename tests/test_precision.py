"""Mixed precision and XLA on every variant: each trains a step on the CPU, its record says how,
the global dtype policy is restored, and the saved model loads and predicts in float32.

DenseNet121 at its smallest size (32 px), one epoch, four training films. Mixed precision runs
eagerly (no tracing); XLA compiles the whole training step, which for a fine-tuned DenseNet121
costs about a minute of CPU, so those runs are slow and see no validation or test split (one
compiled step less each)."""

from __future__ import annotations

import keras
import numpy as np
import pytest

from cxrlib.data.datasets import load_manifest
from cxrlib.data.splits import split_manifest
from cxrlib.data.synthetic import generate_synthetic
from cxrlib.models.build import build_model, compile_model, load_model, make_optimizer
from cxrlib.runs import train as training
from cxrlib.spec import variant_spec

CLASSES = ["COVID", "Normal"]
VARIANTS = ("v1", "v2", "v2reg", "v3", "frozen", "finetune", "scratch")


def _cases(mode: str) -> list:
    """Every variant; all but the scratch CNN (a few seconds) marked slow."""
    return [pytest.param(v, marks=() if v == "scratch" else pytest.mark.slow, id=f"{mode}-{v}")
            for v in VARIANTS]


@pytest.fixture(scope="module")
def films(tmp_path_factory):
    """8 films of 40 px, two classes: split 4/2/2, and a train-only manifest of 4."""
    root = generate_synthetic(tmp_path_factory.mktemp("precision"), per_class=4, size=40, seed=3,
                              classes=CLASSES, vary_size=False, progress=False)
    manifest = load_manifest(root)
    split = split_manifest(manifest, val=0.25, test=0.25, seed=0)
    train_only = manifest.groupby("label").head(2).assign(split="train")
    return split, train_only


def _spec(variant: str):
    backbone = "scratch" if variant == "scratch" else "densenet121"
    weights = {} if backbone == "scratch" else {"weights": None}
    return variant_spec(backbone, variant, image_size=32, epochs=1, batch_size=4, **weights)


def _check_saved_model(out, mixed: bool) -> None:
    model = load_model(str(out / "model.keras"))
    policies = {layer.dtype_policy.name for layer in model.layers}
    assert ("mixed_float16" in policies) == mixed     # the model computed in float16
    assert model.output.dtype == "float32"            # its softmax in float32
    x = np.random.default_rng(0).uniform(-1, 1, (3, *model.input_shape[1:])).astype("float32")
    probs = model.predict(x, verbose=0)
    assert probs.dtype == np.float32 and np.all(np.isfinite(probs))
    np.testing.assert_allclose(probs.sum(axis=1), 1.0, rtol=1e-3)


def test_mixed_precision_pays_on_a_gpu_with_tensor_cores_only(monkeypatch) -> None:
    from cxrlib import environment

    assert not environment.mixed_precision_pays([])                                  # a CPU
    assert not environment.mixed_precision_pays([{"compute_capability": (6, 1)}])    # Pascal
    assert environment.mixed_precision_pays([{"compute_capability": (7, 0)}])        # Volta
    assert environment.mixed_precision_pays([{"compute_capability": (6, 1)},
                                             {"compute_capability": (8, 6)}])
    assert not environment.mixed_precision_pays([{"device_name": "GPU:0"}])          # unknown
    monkeypatch.setattr(environment, "gpu_details", lambda: [{"compute_capability": (9, 0)}])
    assert environment.use_mixed_precision(None) is True                            # automatic
    assert environment.use_mixed_precision(False) is False and environment.use_mixed_precision(True)
    assert environment.environment_info(detailed=True)["mixed_precision_useful"] is True
    monkeypatch.setattr(environment, "gpu_details", lambda: [])
    assert environment.use_mixed_precision(None) is False
    with pytest.raises(ValueError, match="MIXED_PRECISION"):
        environment.use_mixed_precision("yes")


def test_keras_wraps_the_optimizer_for_loss_scaling_under_mixed_precision() -> None:
    before = keras.mixed_precision.global_policy().name
    keras.mixed_precision.set_global_policy("mixed_float16")
    try:
        model = build_model("scratch", "scratch", 2, image_size=32, weights=None)
        compile_model(model, make_optimizer("sgd", 0.01, 0.0))
    finally:
        keras.mixed_precision.set_global_policy(before)
    assert isinstance(model.optimizer, keras.optimizers.LossScaleOptimizer)
    assert model.get_layer("head_logits").dtype_policy.name == "mixed_float16"
    assert model.get_layer("predictions").dtype_policy.name == "float32" and model.output.dtype == "float32"


@pytest.mark.parametrize("variant", _cases("mixed"))
def test_every_variant_trains_under_mixed_precision(films, tmp_path, variant) -> None:
    split, _ = films
    policy = keras.mixed_precision.global_policy().name
    record = training.train(split, CLASSES, _spec(variant), tmp_path / variant, mixed_precision=True,
                            run_eagerly=True, progress=False, bootstrap=10)
    assert keras.mixed_precision.global_policy().name == policy   # restored
    runtime = record.runtime
    assert runtime.mixed_precision is True and runtime.loss_scale is True and not runtime.xla
    assert record.training.epochs_run == 1 and record.test.n == 2
    assert np.isfinite(record.final.loss)
    _check_saved_model(tmp_path / variant, mixed=True)


@pytest.mark.parametrize("variant", _cases("xla"))
def test_every_variant_trains_with_xla(films, tmp_path, variant) -> None:
    _, train_only = films
    record = training.train(train_only, CLASSES, _spec(variant), tmp_path / variant, xla=True,
                            progress=False, bootstrap=10)
    runtime = record.runtime
    assert runtime.xla is True and not runtime.mixed_precision and not runtime.loss_scale
    assert record.training.epochs_run == 1 and np.isfinite(record.final.loss)
    _check_saved_model(tmp_path / variant, mixed=False)
