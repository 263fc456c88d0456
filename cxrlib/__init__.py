"""cxrlib: chest X-ray classification with transfer learning, as a library.

The notebooks in ``notebooks/`` and the ``python -m cxrlib`` CLI are thin layers over
the functions in these modules (see DESIGN.md for the data flow):

Data
- ``images``: robust decoding of any radiograph file (8/16-bit, RGB(A), palette, JPEG, DICOM).
- ``datasets``: every supported dataset layout, read into one manifest (a DataFrame).
- ``synthetic``: the procedural default dataset (no download needed), also in SIIM format.
- ``quality``: integrity and duplicate checks (``cxr data check``).
- ``eda``: image statistics, border text, outliers, and the figures of the EDA notebooks.
- ``splits``: balanced sampling, class weights, patient-grouped stratified splits.
- ``pipeline``: the ``tf.data`` input pipeline built from a manifest.

Models and runs
- ``backbones``: the registry of ImageNet backbones (size, preprocessing, last conv layer,
  weights files) and the variant names.
- ``models``: flat functional models, the course's variants, optimisers.
- ``training``: ``train`` and ``evaluate``; run directories with records.
- ``metrics``, ``records``, ``report``, ``plots``: numbers, run records, tables and figures.
- ``two_stage``: normal → pneumonia → bacterial/viral.
- ``explain``, ``diagnose``: activation maps, CAMs, occlusion, measured explanations,
  batch diagnosis of a folder.

Glue
- ``experiments``: the steps the CLI and the notebooks share.
- ``course``: the notebooks' first cells (smoke mode, environment, data, weights).
- ``runner``: executing the notebook series with papermill.
- ``cli``: ``python -m cxrlib``.
"""

__version__ = "0.1.0"
