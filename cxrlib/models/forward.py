"""A model's forward pass in inference mode, traced once the model is used often.

A Keras model called eagerly pays Python for every layer on every call: DenseNet121 at 64 px
took about 0.8 s for a batch of 16 eagerly and 0.13 s traced, after a trace of about 3 s
(2 CPU cores). One evaluation (two or three batches) is cheaper eagerly; an occlusion scan, a
gallery or a table of heat-map scores calls the same model hundreds of times. So
:func:`forward` calls a model eagerly for its first :data:`HOT_CALLS` uses, then traces its
forward pass once, for any batch size, and reuses it (``benchmarks/bench_forward.py``
measures the gain on an occlusion scan).
"""

from __future__ import annotations

import weakref
from typing import Any, Callable

#: Eager calls of a model before its forward pass is traced.
HOT_CALLS = 4

_CALLS: "weakref.WeakKeyDictionary[Any, int]" = weakref.WeakKeyDictionary()
_TRACED: "weakref.WeakKeyDictionary[Any, Callable]" = weakref.WeakKeyDictionary()


def forward(model) -> Callable[[Any], Any]:
    """``model`` as a function of one batch, in inference mode (``training=False``).

    A Keras model's :data:`HOT_CALLS` first uses are eager; after them the forward pass is a
    traced ``tf.function`` with a free batch size, held only as long as the model lives. Any
    other callable (or a model under a distribution strategy) is called as it is.
    """
    import keras
    import tensorflow as tf

    if not isinstance(model, keras.Model) or tf.distribute.has_strategy():
        return lambda x: model(x, training=False)
    traced = _TRACED.get(model)
    if traced is not None:
        return traced
    _CALLS[model] = _CALLS.get(model, 0) + 1
    if _CALLS[model] <= HOT_CALLS or len(model.inputs) != 1:
        return lambda x: model(x, training=False)
    traced = _traced_forward(model)
    _TRACED[model] = traced
    return traced


def _traced_forward(model) -> Callable[[Any], Any]:
    """The traced inference pass of a one-input model; inputs are cast to its input dtype."""
    import tensorflow as tf

    owner = weakref.ref(model)   # the function must not keep the model alive
    spec = tf.TensorSpec((None, *model.inputs[0].shape[1:]), model.inputs[0].dtype)
    graph = tf.function(lambda x: owner()(x, training=False), input_signature=[spec],
                        autograph=False)
    return lambda x: graph(tf.cast(x, spec.dtype))
