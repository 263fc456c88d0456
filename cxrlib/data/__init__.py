"""Data: from files on disk to model inputs.

- ``images``: robust decoding of any radiograph file (8/16-bit, RGB(A), palette, JPEG, DICOM).
- ``datasets``: every supported dataset layout, read into one manifest (a DataFrame).
- ``synthetic``: the procedural default dataset (no download needed), also in SIIM format.
- ``quality``: integrity and duplicate checks (``cxr data check``).
- ``splits``: balanced sampling, class weights, patient-grouped stratified splits.
- ``pipeline``: ``Prep`` (how files become inputs) and the ``tf.data`` pipeline; the one way
  from files to model inputs.
"""
