"""Runs: training, evaluation, run records and the reports built from them.

- ``train``: ``train`` and the run directory (record, history, checkpoints, resumption).
- ``evaluate``: ``load_run``, ``predict`` and scoring a saved run on a split or a folder.
- ``records``: the run record (``record.json``), its schema and reading.
- ``metrics``: accuracy, AUC, confusion, operating points, bootstrap intervals.
- ``report``: tables and figures built from run records.
"""
