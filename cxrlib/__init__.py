"""cxrlib: chest X-ray classification with transfer learning, as a library.

The notebooks in ``notebooks/`` and the ``python -m cxrlib`` CLI are thin layers over these
packages, in layers that import only downwards (``tests/test_architecture.py``; DESIGN.md
has the data flow):

- base: ``files`` (atomic writes), ``environment`` (versions, devices), ``plots``, and the
  Keras-free registries ``backbones`` and ``variants``.
- ``data``: decoding, dataset layouts → one manifest, the synthetic default, integrity
  checks, splits, and the ``tf.data`` pipeline (the one way from files to model inputs).
- ``models``: flat Keras models for every backbone × variant, optimisers and schedules.
- ``runs``: ``train``, ``load_run``/``predict``/``evaluate``, run records, metrics, reports.
- ``explain``: activation maps, CAMs, saliency, occlusion and measured explanations.
- ``apps``: the command line, folder diagnosis, the two-stage pneumonia pipeline.
- ``course``: what only the notebooks need (first cells, lesson figures and tables, the
  shortcut experiment, the notebook runner). The library never imports it.

The functions a notebook uses are re-exported here, flat and lazily (:data:`API`): ``import
cxrlib as cx`` then ``cx.load_manifest``, ``cx.make_split``, ``cx.train``, ``cx.load_run``,
``cx.predict``, ``cx.evaluate``, ``cx.heatmap``, ``cx.plot_overlay``, ...
"""

__version__ = "0.1.0"

from cxrlib import quiet as _quiet
from cxrlib.lazy import lazy_api as _lazy_api

_quiet.install()   # before anything imports TensorFlow: no C++ start-up lines (cxrlib/quiet.py)

#: The public API, flat (``import cxrlib as cx; cx.load_manifest(...)``): name → its module. Each
#: name is imported on first use (:func:`cxrlib.lazy.lazy_api`), so ``import cxrlib`` loads neither
#: TensorFlow nor Keras; the modules themselves are where the code and its documentation live.
API: dict[str, str] = {
    # data: files → manifest → split → model inputs
    **dict.fromkeys(("load_manifest", "detect_layout", "class_names"), "cxrlib.data.datasets"),
    **dict.fromkeys(("read_image", "probe_image"), "cxrlib.data.images"),
    "ImageReadError": "cxrlib.data.pixels",
    "generate_synthetic": "cxrlib.data.synthetic",
    "check_manifest": "cxrlib.data.quality",
    **dict.fromkeys(("make_split", "prepare_split", "split_manifest", "sample_per_class", "save_split",
                     "load_split", "subset", "split_summary"), "cxrlib.data.splits"),
    "Prep": "cxrlib.data.prepare",
    **dict.fromkeys(("model_inputs", "make_dataset"), "cxrlib.data.pipeline"),
    # a run: what it is, training it, loading it, predicting and scoring
    **dict.fromkeys(("RunSpec", "Split", "variant_spec", "updated"), "cxrlib.spec"),
    **dict.fromkeys(("train", "run_dir"), "cxrlib.runs.train"),
    **dict.fromkeys(("Run", "load_run", "predict", "evaluate", "evaluate_saved_model"), "cxrlib.runs.evaluate"),
    **dict.fromkeys(("read_record", "find_records"), "cxrlib.runs.records"),
    **dict.fromkeys(("comparison_table", "write_report"), "cxrlib.runs.report"),
    # explanations
    **dict.fromkeys(("heatmap", "activation_maps", "representative_layers", "conv_layers", "default_layer",
                     "occlusion_map", "occlusion_scan", "occlusion_positions", "random_maps",
                     "grey_baseline"), "cxrlib.explain.maps"),
    **dict.fromkeys(("overlay", "plot_overlay", "gallery", "activation_comparison"), "cxrlib.explain.figures"),
    **dict.fromkeys(("prepare_mask", "border_mask", "central_mask"), "cxrlib.explain.masks"),
    **dict.fromkeys(("energy_inside", "pointing_game", "border_share", "lung_share", "lesion_scores",
                     "summarise_scores"), "cxrlib.explain.measures"),
    # plots, files, environment
    **dict.fromkeys(("image_grid", "plot_history", "plot_confusion", "plot_roc", "plot_comparison",
                     "plot_class_counts", "plot_boxes"), "cxrlib.plots"),
    **dict.fromkeys(("read_json", "write_json_atomic"), "cxrlib.files"),
    **dict.fromkeys(("environment_info", "use_mixed_precision"), "cxrlib.environment"),
}

__all__ = ["__version__", *API]


__getattr__, __dir__ = _lazy_api("cxrlib", API, globals())
