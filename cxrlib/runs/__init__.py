"""Runs: training, evaluation, run records and the reports built from them.

- ``train``: ``train`` and the run directory (record, history, checkpoints, locking, resumption).
- ``evaluate``: ``load_run``, ``predict`` and scoring a saved run on a split or a folder.
- ``records``: the run record (``record.json``): its typed schema and the training config.
- ``metrics``: accuracy, AUC, confusion, operating points, bootstrap intervals.
- ``report``: tables and figures built from run records.
- ``pretrain``: the ``synthetic`` weights: backbones pretrained by cxrlib on a synthetic source
  task (the offline stand-in for ImageNet in ``make demo``); ``pretrain_cache``: their checked
  cache, per backbone and size (names, checks, locks, saving).
"""
