"""cxrlib: chest X-ray classification with transfer learning, as a library.

The notebooks in ``notebooks/`` and the ``python -m cxrlib`` CLI are thin layers over these
packages, in layers that import only downwards (``tests/test_architecture.py``; DESIGN.md
has the data flow):

- base: ``files`` (atomic writes), ``environment`` (versions, devices), ``plots``, and the
  Keras-free registries ``models.backbones`` and ``models.variants``.
- ``data``: decoding, dataset layouts → one manifest, the synthetic default, integrity
  checks, splits, and the ``tf.data`` pipeline (the one way from files to model inputs).
- ``models``: flat Keras models for every backbone × variant, optimisers and schedules.
- ``runs``: ``train``, ``load_run``/``predict``/``evaluate``, run records, metrics, reports.
- ``explain``: activation maps, CAMs, saliency, occlusion and measured explanations.
- ``apps``: the command line, folder diagnosis, the two-stage pneumonia pipeline.
- ``course``: what only the notebooks need (first cells, lesson figures and tables, the
  shortcut experiment, the notebook runner). The library never imports it.
"""

__version__ = "0.1.0"

from cxrlib import quiet as _quiet

_quiet.install()   # before anything imports TensorFlow: no C++ start-up lines (cxrlib/quiet.py)
