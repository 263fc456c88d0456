"""Data: from files on disk to model inputs.

- ``images``: robust decoding of any radiograph file (8/16-bit, RGB(A), palette, JPEG, DICOM),
  DICOM through ``dicom``; ``pixels``: what the decoders share (the read error, the pixel limit,
  uint8 grayscale).
- ``datasets``: every supported dataset layout, read into one manifest (a DataFrame).
- ``synthetic``: the procedural default dataset (no download needed), also in SIIM format.
- ``quality``: integrity and duplicate checks (``cxr data check``); ``check_report``: their report as text.
- ``splits``: balanced sampling, class weights, patient-grouped stratified splits.
- ``prepare``: ``Prep`` (how files become inputs) and files → pixels (decode, crop, equalise,
  resize), the one definition.
- ``augment``: training augmentation; ``normalise``: each backbone's input normalisation.
- ``pipeline``: the ``tf.data`` pipeline and ``model_inputs``, the one way from files to model
  inputs.
"""
