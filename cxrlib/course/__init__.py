"""The course layer: what the notebooks need and the library does not.

The library (``cxrlib.data``, ``models``, ``runs``, ``explain``, ``apps``) never imports
this package (``tests/test_architecture.py`` checks it). Here live the notebooks' first
cells, the lessons' figures and tables, the shortcut experiment, the notebook runner, the
source courses as presets (``presets``) and their reproduction (``reproduce``), and the
conclusions as markdown templates (``conclusions``).

The functions the notebooks call are re-exported here, flat and lazily (:data:`API`; ``import
cxrlib.course`` imports none of them until used): ``from cxrlib import course`` then
``course.course_split(...)``, ``course.preset_run(...)``, ``course.heatmaps.overlay_grid(...)``.
"""

from cxrlib.lazy import lazy_api as _lazy_api

#: The course's notebook-facing names → their modules (a lesson module by its own name).
API: dict[str, str] = {
    **dict.fromkeys(("apply_smoke", "output_folders", "choose_data", "usable_weights"), "cxrlib.course.setup"),
    **dict.fromkeys(("get_preset", "scaled"), "cxrlib.course.presets"),
    **dict.fromkeys(("as_list", "course_split", "preset_run", "train_or_reuse"), "cxrlib.course.progression"),
    "shortcut_experiment": "cxrlib.course.shortcut",
    **dict.fromkeys(("HEATMAPS", "heatmap_facts"), "cxrlib.course.conclusions"),
    # a lesson module by its name (never a function of the same name: importing the module would
    # replace it here), e.g. course.conclusions.conclusions(...)
    **{name: f"cxrlib.course.{name}" for name in ("conclusions", "heatmaps", "eda", "pneumonia", "summary",
                                                  "tables")},
}

__all__ = list(API)
__getattr__, __dir__ = _lazy_api("cxrlib.course", API, globals())
