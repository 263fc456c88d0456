"""cxrlib.models.forward: eager for a model's first uses, then one traced pass reused for any
batch size, with the same outputs; other callables pass through."""

from __future__ import annotations

import gc
import weakref

import numpy as np

from cxrlib.models import forward as fw


def _model():
    import keras

    inputs = keras.Input((8, 8, 3))
    x = keras.layers.Conv2D(4, 3, activation="relu")(inputs)
    x = keras.layers.GlobalAveragePooling2D()(x)
    return keras.Model(inputs, keras.layers.Dense(3, activation="softmax")(x))


def test_a_model_used_often_is_traced_once_and_gives_the_same_outputs() -> None:
    model = _model()
    x = np.random.default_rng(0).random((5, 8, 8, 3))          # float64: cast to the input dtype
    eager = [fw.forward(model) for _ in range(fw.HOT_CALLS)]
    expected = np.asarray(model(x.astype("float32"), training=False))
    np.testing.assert_allclose(np.asarray(eager[0](x.astype("float32"))), expected, rtol=1e-5)
    traced = fw.forward(model)
    assert fw.forward(model) is traced and model in fw._TRACED
    np.testing.assert_allclose(np.asarray(traced(x)), expected, rtol=1e-5, atol=1e-6)
    assert np.asarray(traced(x[:1])).shape == (1, 3)           # any batch size, no new signature


def test_the_traced_pass_does_not_keep_the_model_alive() -> None:
    model = _model()
    for _ in range(fw.HOT_CALLS + 1):
        fw.forward(model)
    assert model in fw._TRACED
    alive = weakref.ref(model)
    del model
    gc.collect()
    assert alive() is None


def test_any_other_callable_is_called_as_it_is() -> None:
    seen = []

    def probabilities(x, training=None):
        seen.append(training)
        return np.full((len(x), 2), 0.5)

    for _ in range(fw.HOT_CALLS + 2):
        out = fw.forward(probabilities)(np.zeros((3, 4)))
    assert out.shape == (3, 2) and seen == [False] * (fw.HOT_CALLS + 2)
