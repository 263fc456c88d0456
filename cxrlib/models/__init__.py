"""Models: the backbone registry and the variants, built as flat functional graphs.

- ``backbones``: the registry (sizes, preprocessing, last conv layer, weights files), the
  variant registry, and where weights come from.
- ``build``: flat models, heads, optimisers and schedules, loading ``.keras`` files safely.
"""
