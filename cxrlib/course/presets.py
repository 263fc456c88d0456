"""Course presets: each source course as its report teaches it, as a list of named run specs.

A :class:`Preset` holds a course's data (dataset, classes, how it was split) and its runs.
Each :class:`Run` is a name and a :class:`cxrlib.spec.RunSpec` (everything the run is),
plus which of the preset's data sets it trains on and which earlier run it starts from.
The numbers a course reported are not typed here: they come from its report's table
(:mod:`cxrlib.course.reports`), and ``tests/test_presets.py`` checks every preset run
against its report's settings. Where a run does something else on purpose, ``differs``
names the setting and why; what the report does not say is in ``assumed``.

The notebooks take their runs from their course's preset (``PRESET`` parameter, ``python -m
cxrlib notebooks --preset NAME``), scaled for smoke or demo settings by :func:`scaled`, and
``python -m cxrlib presets`` prints every run's full spec.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any, Callable, Mapping

from cxrlib.course.reports import report_of, results_of
from cxrlib.errors import InputError
from cxrlib.spec import NO_AUGMENT, Augment, RunSpec, Split, flat_items, make_spec, scaled_spec

# each dataset's folder, when given in the environment (the runner and the recipes read it)
FOLDER_VARIABLES: dict[str, str] = {"covid19-radiography": "COVID_DIR", "kermany": "KERMANY_DIR",
                                    "siim": "SIIM_DIR", "external": "EXTERNAL_DIR"}

# The COVID-19 Radiography Database as the DenseNet121 course used it (version 3); from v4 on,
# Normal is mostly adult films from other sources.
RADIOGRAPHY_VERSIONS: dict[str, dict[str, int]] = {
    "v3": {"COVID": 1200, "Normal": 1341, "Viral Pneumonia": 1345},
}

#: The library's changes to what the courses did, off in every preset; what a preset keeps on
#: says why in its runs' ``differs``.
COURSE_FAITHFUL: dict[str, Any] = {"normalization": "none", "head_norm": False, "keep_best": False,
                                   "clipnorm": None}
BN_REASON = ("kept in inference mode (the project's rule for fine-tuning, and Keras' advice): the "
             "course let BatchNormalization re-estimate its statistics on small batches")


@dataclass(frozen=True)
class Run:
    """One experiment of a course: its name, its spec, its data, and what it starts from."""

    key: str                              # unique in its preset: "v2", "xception-finetune"
    spec: RunSpec
    data: str = "main"                    # which of the preset's data sets it trains on
    init_from: str | None = None          # the key of the run whose model it starts from
    differs: Mapping[str, str] = field(default_factory=dict)   # spec field → why not the report's
    reported: Mapping[str, float] = field(default_factory=dict)  # from the report's table

    @property
    def backbone(self) -> str:
        return self.spec.backbone

    @property
    def variant(self) -> str:
        return self.spec.variant

    @property
    def epochs(self) -> int:
        return self.spec.epochs


@dataclass(frozen=True)
class Preset:
    """A course: its data, its runs, and what its report leaves open."""

    name: str
    course: str
    notebook: str
    dataset: str                          # the layout: covid19-radiography, kermany, siim
    classes: tuple[str, ...]
    image_size: int                       # the runs' size (each spec has it too)
    runs: tuple[Run, ...]
    findings: Mapping[str, float] = field(default_factory=dict)   # results beyond single runs
    assumed: str = ""                     # what the report leaves open, and our choice
    scaling: tuple[str, ...] = ()         # what :func:`scaled` changed, and why

    def run(self, key: str) -> Run:
        """The run called ``key``."""
        for run in self.runs:
            if run.key == key:
                return run
        raise KeyError(f"No run {key!r} in preset {self.name!r}; runs: {', '.join(self.keys())}.")

    def keys(self) -> list[str]:
        return [run.key for run in self.runs]

    @property
    def split(self) -> Split:
        """How the main data set is split (the first run's; the spec of every run says its own)."""
        return self.runs[0].spec.split

    @property
    def version(self) -> str | None:
        return self.split.pinned


def _runs(preset: str, common: Mapping[str, Any], entries) -> tuple[Run, ...]:
    """Runs from (key, settings, extras) entries over ``common`` settings, each with the
    numbers its report gives."""
    out = []
    for key, settings, extras in entries:
        spec = make_spec(**{**common, **settings})
        out.append(Run(key, spec, reported=results_of(preset, key), **extras))
    return tuple(out)


# --------------------------------------------------------------------- radiography

_FEATUREWISE = dict(normalization="featurewise",
                    augment=Augment(flip=True, brightness=(0.8, 1.25), zoom=(1.0, 1.2)))


def _radiography_runs() -> tuple[Run, ...]:
    common = dict(COURSE_FAITHFUL, optimizer="sgd", learning_rate=0.01, momentum=0.9, nesterov=True,
                  decay=1e-6, epochs=20, batch_size=32, image_size=224,
                  split=Split(samples_per_class=1200, test=0.2, val=0.1, pinned="v3"))
    bn = {"freeze_bn": BN_REASON}
    entries = [("v0", dict(backbone="densenet121", variant="v0", epochs=0, normalization="none"), {}),
               ("v1", dict(backbone="densenet121", variant="v1", normalization="none"), {}),
               ("v2", dict(backbone="densenet121", variant="v2", **_FEATUREWISE), {}),
               ("v2reg", dict(backbone="densenet121", variant="v2reg", **_FEATUREWISE), {}),
               ("v3", dict(backbone="densenet121", variant="v3", **_FEATUREWISE),
                {"init_from": "v2reg", "differs": bn})]
    for backbone in ("resnet50", "vgg16", "inceptionv3", "xception"):
        entries.append((f"{backbone}-frozen", dict(backbone=backbone, variant="frozen", **_FEATUREWISE), {}))
        vgg = backbone == "vgg16"   # VGG16 has no BatchNorm: nothing to keep frozen
        entries.append((f"{backbone}-finetune", dict(backbone=backbone, variant="finetune",
                                                     freeze_bn=not vgg, **_FEATUREWISE),
                        {"init_from": f"{backbone}-frozen", "differs": {} if vgg else bn}))
    return _runs("radiography", common, entries)


# --------------------------------------------------------------------- kermany-transfer

_KERMANY_TRANSFER_AUGMENT = Augment(flip=True, zoom=(0.8, 1.2), rotation=10.0)


def _kermany_transfer_runs() -> tuple[Run, ...]:
    common = dict(COURSE_FAITHFUL, optimizer="rmsprop", learning_rate=1e-3, binary=True,
                  class_weight=True, image_size=224, augment=_KERMANY_TRANSFER_AUGMENT,
                  split=Split(val=0.2, official_test=True, test=0.2))
    return _runs("kermany-transfer", common, [
        ("cnn", dict(backbone="scratch", variant="scratch", weights=None, epochs=12), {}),
        ("inceptionv3", dict(backbone="inceptionv3", variant="frozen", epochs=35), {}),
        ("resnet50", dict(backbone="resnet50", variant="frozen", epochs=35), {})])


# --------------------------------------------------------------------- siim

_SIIM_AUGMENT = Augment(flip=True, zoom=(0.9, 1.1), shear=0.05, brightness=(0.8, 1.1))


def _siim_runs() -> tuple[Run, ...]:
    common = dict(COURSE_FAITHFUL, backbone="xception", equalize="hist", augment=_SIIM_AUGMENT,
                  image_size=224, head="batchnorm", optimizer="nadam", learning_rate=1e-3)
    competition = Split(val=0.2, test=0.0)         # 80/20, validation only
    held_out = Split(val=0.2, test=0.2)             # the union: 1267 competition films held out
    bn = {"freeze_bn": BN_REASON}
    return _runs("siim", common, [
        ("study-sgd", dict(variant="frozen", head="linear", optimizer="sgd", learning_rate=0.2,
                           momentum=0.9, nesterov=False, decay=0.001, epochs=5, split=competition),
         {"data": "study"}),
        ("study-adam", dict(variant="finetune", head="linear", optimizer="adam", epochs=100,
                            early_stopping=10, split=competition),
         {"data": "study", "init_from": "study-sgd", "differs": bn}),
        ("opacity-frozen", dict(variant="frozen", epochs=10, split=competition), {}),
        ("opacity-finetune", dict(variant="finetune", epochs=100, early_stopping=10, split=competition),
         {"init_from": "opacity-frozen", "differs": bn}),
        ("phase1-frozen-union", dict(variant="frozen", epochs=20, split=held_out), {"data": "union"}),
        ("phase2-finetune-union", dict(variant="finetune", epochs=100, early_stopping=10, split=held_out),
         {"data": "union", "init_from": "phase1-frozen-union", "differs": bn}),
        ("phase3-finetune-competition", dict(variant="finetune", learning_rate=0.01, epochs=15,
                                             split=Split(val=0.0, test=0.2)),
         {"data": "competition", "init_from": "phase1-frozen-union", "differs": bn}),
    ])


# --------------------------------------------------------------------- pneumonia two-stage

_TWO_STAGE_AUGMENT = Augment(flip=True, brightness=(0.9, 1.1), contrast=(1.0, 1.1))


def _two_stage_runs() -> tuple[Run, ...]:
    common = dict(COURSE_FAITHFUL, backbone="vgg16", variant="frozen", head="vgg", channels=1,
                  image_size=224, crop=True, augment=_TWO_STAGE_AUGMENT, class_weight=True,
                  optimizer="adam", learning_rate=1e-3, epochs=20,
                  split=Split(val=0.15, official_test=True, test=0.2))
    sigmoid = {"binary": "one sigmoid unit instead of the report's two outputs: the same "
                         "classifier for two classes, and the ROC operating points read one probability"}
    return _runs("pneumonia-two-stage", common, [
        ("stage1", dict(binary=True), {"data": "stage1", "differs": sigmoid}),
        ("stage2", dict(binary=True), {"data": "stage2", "differs": sigmoid})])


# --------------------------------------------------------------------- kermany 3-class

def _kermany_3class_runs() -> tuple[Run, ...]:
    return _runs("kermany-3class", dict(COURSE_FAITHFUL), [
        ("cnn", dict(backbone="scratch", variant="scratch", weights=None, head="flat", channels=1,
                     image_size=256, optimizer="adam", learning_rate=1e-3, epochs=20,
                     augment=NO_AUGMENT, split=Split(test=0.2, val=0.1)), {})])


KERMANY_CLASSES = ("Normal", "Bacterial Pneumonia", "Viral Pneumonia")
"""The three classes of the Kermany courses that tell bacterial from viral pneumonia."""
UNNORMALISED = "the input normalisation (none: the pixels as read)"
"""What a preset assumes where its report names no input normalisation."""


def _not_in(report: str, *choices: str) -> str:
    """A preset's ``assumed``: "The first, the second … and the last are not in ``report``."."""
    listed = ", ".join(choices[:-1]) + " and " + choices[-1]
    return f"{listed[0].upper()}{listed[1:]} are not in {report}."


def _preset(name: str, runs: Callable[[], tuple[Run, ...]], **about: Any) -> Preset:
    """Preset ``name``: its runs, the findings its report gives beyond single runs, ``about``."""
    findings = {key: item.value for key, item in report_of(name).findings.items()}
    return Preset(name=name, runs=runs(), findings=findings, **about)


PRESETS: dict[str, Preset] = {p.name: p for p in [
    _preset(
        "radiography", _radiography_runs, course="COVID-19 Radiography (DenseNet121 course)",
        notebook="03 04 05", dataset="covid19-radiography",
        classes=("COVID", "Normal", "Viral Pneumonia"), image_size=224,
        assumed="Whether V3 and the fine-tuned backbones start from the frozen run's head is not "
                "said; they do here (notebook 03 explains why). The heads of the four other "
                "backbones are V2-reg's ('the same modifications')."),
    _preset(
        "kermany-transfer", _kermany_transfer_runs,
        course="Kermany pneumonia (scratch CNN vs InceptionV3 vs ResNet50)",
        notebook="08", dataset="kermany", classes=("Normal", "Pneumonia"), image_size=224,
        assumed=_not_in("the report's text", UNNORMALISED,
                        "the augmentation's parameters (flip, zoom ±20 %, rotation ±10°: the common "
                        "ImageDataGenerator settings for this dataset)",
                        "RMSprop's learning rate (Keras' 1e-3)", "the image size (224)", "frozen backbones",
                        "the scratch CNN's layers (the library's five-block CNN: the report shows them "
                        "only in a figure)")),
    _preset(
        "pneumonia-two-stage", _two_stage_runs, course="Pneumonia two-stage course (VGG16)",
        notebook="06", dataset="kermany", classes=KERMANY_CLASSES, image_size=224,
        assumed=_not_in("the report", "the optimiser (Adam 1e-3)", "the epochs (20)",
                        "the validation share (15 %)", UNNORMALISED)),
    _preset(
        "siim", _siim_runs, course="SIIM-FISABIO-RSNA (Xception)", notebook="07", dataset="siim",
        classes=("No Opacity", "Opacity"), image_size=224,
        assumed=_not_in("the report", UNNORMALISED, "the image size (224)",
                        "phase 2's optimiser and epochs (Nadam 1e-3, up to 100 with early stopping 10, "
                        "as the other fine-tuning runs)", "how the 20 % shares were drawn (stratified here)")),
    _preset(
        "kermany-3class", _kermany_3class_runs, course="3-class Kermany scratch course",
        notebook="08", dataset="kermany", classes=KERMANY_CLASSES, image_size=256,
        assumed=_not_in("the report", "the optimiser (Adam 1e-3)", "the epochs (20)",
                        "the validation share (10 % of the rest)", UNNORMALISED,
                        "the two Dropout layers' rate (0.5)")),
]}

NOTEBOOK_PRESETS: dict[str, tuple[str, ...]] = {
    "03": ("radiography",), "04": ("radiography",), "05": ("radiography",),
    "06": ("pneumonia-two-stage",), "07": ("siim",), "08": ("kermany-transfer", "kermany-3class"),
}


def get_preset(name: str) -> Preset:
    """The preset called ``name``, or a ValueError listing them."""
    if name not in PRESETS:
        raise InputError(f"Unknown preset {name!r}; choose one of {', '.join(PRESETS)}.")
    return PRESETS[name]


def notebooks_of(name: str) -> list[str]:
    """The numbers of the notebooks that follow preset ``name``."""
    return [number for number, names in NOTEBOOK_PRESETS.items() if name in names]


def scaled(preset: Preset, image_size: int | None = None, epochs: int | None = None,
           backbone: str | None = None, finetune_learning_rate: float | None = None,
           weights: str | None = "imagenet", samples_per_class: int | None = None) -> Preset:
    """The preset with every run's spec scaled for smoke or demo settings
    (:func:`cxrlib.spec.scaled_spec`), and what changed in ``scaling``."""
    runs = []
    changes: list[str] = []
    for run in preset.runs:
        spec, why = scaled_spec(run.spec, image_size=image_size, epochs=epochs, backbone=backbone,
                                finetune_learning_rate=finetune_learning_rate if run.init_from else None,
                                weights=weights, samples_per_class=samples_per_class)
        runs.append(replace(run, spec=spec))
        changes += [line for line in why if line not in changes]
    return replace(preset, runs=tuple(runs), image_size=image_size or preset.image_size,
                   scaling=tuple(changes))


def run_size(preset: Preset, run: Run) -> int:
    """The run's input size (the spec's, else the preset's), raised to what its network
    accepts (InceptionV3 75 px, Xception 71, the flat CNN 94)."""
    from cxrlib.backbones import fit_size

    return fit_size(run.backbone, run.spec.image_size or preset.image_size, run.spec.head)


def run_spec(preset: Preset, key: str, run_dirs: Mapping[str, Any] | None = None) -> RunSpec:
    """The spec of run ``key`` as :func:`cxrlib.runs.train.train` takes it: its size raised to
    the network's minimum, and ``init_from`` the model file of the run it starts from
    (``run_dirs`` maps run keys to their folders)."""
    run = preset.run(key)
    changes: dict[str, Any] = {"image_size": run_size(preset, run)}
    if run.init_from:
        changes["init_from"] = str(f"{(run_dirs or {})[run.init_from]}/model.keras")
    return run.spec.model_copy(update=changes)


def run_info(preset: Preset, key: str) -> dict[str, Any]:
    """What a record's ``dataset`` section says of the preset run it was trained for."""
    run = preset.run(key)
    return {"preset": preset.name, "run": key, "data": run.data, "starts_from": run.init_from}


def preset_table(preset: Preset) -> "pd.DataFrame":  # noqa: F821
    """One row per run: the settings a student would look up in the course's report, and the
    numbers it reported."""
    import pandas as pd

    rows = []
    for run in preset.runs:
        spec = run.spec
        rows.append({
            "run": run.key, "backbone": spec.backbone, "variant": spec.variant, "head": spec.head,
            "size": run_size(preset, run), "epochs": spec.epochs, "optimizer": spec.optimizer,
            "lr": spec.learning_rate, "decay": spec.decay, "early stop": spec.early_stopping,
            "normalisation": spec.normalization,
            "augment": describe_augment(spec.augment), "class weights": spec.class_weight,
            "from": run.init_from or "", "data": run.data,
            "differs": "; ".join(run.differs) or "",
            **{f"course {k}": v for k, v in run.reported.items()}})
    return pd.DataFrame(rows).set_index("run")


def describe_augment(augment: Augment) -> str:
    """The augmentation in a few words, from its settings: ``flip, brightness ×0.8–1.25, …``."""
    if not augment.active:
        return "none"
    parts = ["flip"] if augment.flip else []
    if augment.brightness:
        parts.append(f"brightness ×{augment.brightness[0]:g}–{augment.brightness[1]:g}")
    if augment.contrast:
        parts.append(f"contrast ×{augment.contrast[0]:g}–{augment.contrast[1]:g}")
    if augment.zoom:
        low, high = augment.zoom
        kind = "out" if low >= 1 else ("in" if high <= 1 else "in or out")
        parts.append(f"zoom {kind} (field ×{low:g}–{high:g})")
    if augment.shear:
        parts.append(f"shear ±{augment.shear:g}°")
    if augment.rotation:
        parts.append(f"rotation ±{augment.rotation:g}°")
    return ", ".join(parts)


def differences(preset: Preset) -> list[str]:
    """Every way the preset departs from its report, with its reason: one line each."""
    lines = []
    for run in preset.runs:
        for name, why in run.differs.items():
            lines.append(f"{run.key}: {name} = {flat_items(run.spec).get(name)!r}: {why}")
    return lines


def as_json(preset: Preset) -> dict[str, Any]:
    """``{"name", "course", "notebooks", "runs": [{"name", "spec", "reported", ...}]}``: the
    shape ``python -m cxrlib presets --json`` prints."""
    return {"name": preset.name, "course": preset.course, "notebooks": preset.notebook.split(),
            "report": report_of(preset.name).file, "assumed": preset.assumed,
            "findings": dict(preset.findings),
            "runs": [{"name": run.key, "spec": run.spec.model_dump(mode="json"),
                      "reported": dict(run.reported), "data": run.data, "starts_from": run.init_from,
                      "differs": dict(run.differs)} for run in preset.runs]}
