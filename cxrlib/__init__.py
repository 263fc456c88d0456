"""cxrlib: chest X-ray classification with transfer learning, as a library.

The notebooks in ``notebooks/`` and the ``python -m cxrlib`` CLI are thin layers over
the functions in these modules:

- ``images``: robust decoding of any radiograph file into a uint8 grayscale array.
- ``datasets``: every supported dataset layout, read into one manifest (a DataFrame).
- ``synthetic``: the procedural default dataset (no download needed).
- ``quality``: integrity and duplicate checks (``cxr data check``).
- ``splits``: balanced sampling, class weights, patient-grouped stratified splits.
- ``backbones``: the registry of ImageNet backbones (size, preprocessing, last conv layer).
- ``pipeline``: the ``tf.data`` input pipeline built from a manifest.
"""

__version__ = "0.1.0"
