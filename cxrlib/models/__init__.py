"""Models: the backbone registry and the variants, built as flat functional graphs.

- ``backbones``: the registry (sizes, preprocessing, last conv layer, weights files), the
  variant registry, and where weights come from.
- ``build``: flat models, heads (standardised features), optimisers and schedules, loading
  ``.keras`` files safely.
- ``pretrain``: the ``synthetic`` weights: backbones pretrained by cxrlib on a synthetic source
  task, cached per backbone and size (the offline stand-in for ImageNet in ``make demo``).
"""
