"""Models: the backbone and variant registries, and the models built from them as flat graphs.

- ``backbones``: the registry (sizes, preprocessing, last conv layer, weights files) and where
  ImageNet weights come from (Keras-free).
- ``variants``: what each variant builds, freezes and trains, and its defaults (Keras-free).
- ``build``: flat models, heads (standardised features), optimisers and schedules, loading
  ``.keras`` files safely.
"""
