"""The course layer: what the notebooks need and the library does not.

The library (``cxrlib.data``, ``models``, ``runs``, ``explain``, ``apps``) never imports
this package (``tests/test_architecture.py`` checks it). Here live the notebooks' first
cells, the lessons' figures and tables, the shortcut experiment, the notebook runner, the
source courses as presets (``presets``) and their reproduction (``reproduce``), and the
conclusions as markdown templates (``conclusions``).
"""
