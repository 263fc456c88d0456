"""Models: flat Keras graphs built from the backbone and variant registries
(:mod:`cxrlib.backbones`, :mod:`cxrlib.variants`, in the base layer).

- ``build``: flat models, heads (standardised features), optimisers and schedules, loading
  ``.keras`` files safely.
"""
