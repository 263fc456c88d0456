"""Applications over the library: the ``python -m cxrlib`` command line, folder diagnosis and
the two-stage pneumonia pipeline."""
