"""The five source course reports as data: what each one says a run was, and what it got.

One :class:`Report` per report in ``../shared/courses`` (its README maps them to presets).
Every value carries the section of the report it comes from (:class:`Reported`), so a
reader can check it. ``settings`` uses the run spec's dotted field names
(:mod:`cxrlib.spec`: ``learning_rate``, ``augment.zoom``, ``split.val``); ``results`` the
names of a run record's numbers (``test_accuracy``, ``test_loss``, ``loss``, ``accuracy``,
``val_loss``, ``val_accuracy``, ``epochs_run``). ``absent`` lists what a report does not say.

These tables are written from the reports, never from the presets: ``tests/test_presets.py``
checks that every preset run equals its report's settings, or names the difference and why.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Mapping, NamedTuple


class Reported(NamedTuple):
    """A value as the report gives it, and where (section, table or figure)."""

    value: Any
    section: str


@dataclass(frozen=True)
class Report:
    """One course report: per run, the settings it states and the results it reports."""

    file: str                                              # in ../shared/courses
    preset: str
    settings: Mapping[str, Mapping[str, Reported]]         # run key → spec field → value
    results: Mapping[str, Mapping[str, Reported]]          # run key → record number → value
    findings: Mapping[str, Reported] = field(default_factory=dict)   # results beyond one run
    absent: Mapping[str, str] = field(default_factory=dict)          # field → what is not said


def _each(runs: tuple[str, ...], settings: Mapping[str, Reported]) -> dict[str, dict[str, Reported]]:
    """The same settings for every run of ``runs``."""
    return {run: dict(settings) for run in runs}


def _merge(*tables: Mapping[str, Mapping[str, Reported]]) -> dict[str, dict[str, Reported]]:
    """Per-run settings tables merged (later tables add or override keys)."""
    out: dict[str, dict[str, Reported]] = {}
    for table in tables:
        for run, settings in table.items():
            out.setdefault(run, {}).update(settings)
    return out


def _table_row(section: str, loss, accuracy, val_loss, val_accuracy, test_accuracy, epochs):
    """One row of a results table: last-epoch train and validation numbers, test accuracy."""
    row = {"loss": loss, "accuracy": accuracy, "val_loss": val_loss, "val_accuracy": val_accuracy,
           "test_accuracy": test_accuracy, "epochs_run": epochs}
    return {k: Reported(v, section) for k, v in row.items() if v is not None}


# --------------------------------------------------------------------- 000: radiography (DenseNet121)

_R_BACKBONES = ("resnet50", "vgg16", "inceptionv3", "xception")
_R_RUNS = ("v0", "v1", "v2", "v2reg", "v3",
           *(f"{b}-{kind}" for b in _R_BACKBONES for kind in ("frozen", "finetune")))
_R_AUGMENTED = tuple(r for r in _R_RUNS if r not in ("v0", "v1"))
_R_FINETUNED = ("v3", *(f"{b}-finetune" for b in _R_BACKBONES))
_R_NO_AUGMENT = {"augment.flip": Reported(False, "4.1.2: no treatment beyond V0"),
                 "augment.brightness": Reported(None, "4.1.2"), "augment.zoom": Reported(None, "4.1.2")}

RADIOGRAPHY = Report(
    file="000_c7f65d4672b681f0.txt", preset="radiography",
    settings=_merge(
        _each(_R_RUNS, {
            "optimizer": Reported("sgd", "4.1.1"), "learning_rate": Reported(0.01, "4.1.1"),
            "momentum": Reported(0.9, "4.1.1"), "nesterov": Reported(True, "4.1.1"),
            "decay": Reported(1e-6, "4.1.1"), "clipnorm": Reported(None, "4.1.1: SGD as given, no clipping"),
            "batch_size": Reported(32, "4.1.2"), "image_size": Reported(224, "3.2"),
            "epochs": Reported(20, "Tablas 3-25"),
            "head_norm": Reported(False, "4.1.2-4.1.3: dense layers on the features as they come"),
            "keep_best": Reported(False, "Tablas 3-25: the model after its 20 epochs"),
            "split.samples_per_class": Reported(1200, "3.2"), "split.pinned": Reported("v3", "3.1"),
            "split.test": Reported(0.2, "3.3: 2880 train, 720 test"),
            "split.val": Reported(0.1, "4.1.2: validation_split=0.1"),
            "split.official_test": Reported(False, "3.3: a random permutation"),
            "augment.rotation": Reported(None, "4.1.3: no rotations (the lungs are always upright)"),
            "augment.contrast": Reported(None, "4.1.3"), "augment.shear": Reported(None, "4.1.3")}),
        {"v0": {"epochs": Reported(0, "4.1.1: no weight is trained"),
                "normalization": Reported("none", "3.2: img_to_array, no preprocess_input"), **_R_NO_AUGMENT},
         "v1": {"normalization": Reported("none", "4.1.2: no treatment beyond V0"), **_R_NO_AUGMENT}},
        _each(_R_AUGMENTED, {
            "normalization": Reported("featurewise", "4.1.3: featurewise_center and std_normalization"),
            "augment.flip": Reported(True, "4.1.3: horizontal_flip"),
            "augment.brightness": Reported((0.8, 1.25), "4.1.3: brightness_range"),
            "augment.zoom": Reported((1.0, 1.2), "4.1.3: zoom_range=[1, 1.2]")}),
        _each(_R_FINETUNED, {"freeze_bn": Reported(False, "4.1.4: the whole network trains")}),
    ),
    results={
        "v0": _table_row("Tabla 1", None, None, None, None, 0.3264, None),
        "v1": _table_row("Tabla 3", 0.6501, 0.9588, 3.1393, 0.8333, 0.8361, 20),
        "v2": _table_row("Tabla 5", 0.0109, 0.9973, 0.1146, 0.9583, 0.9597, 20),
        "v2reg": _table_row("Tabla 7", 0.0883, 0.9683, 0.1494, 0.9583, 0.9569, 20),
        "v3": _table_row("Tabla 9", 0.0089, 0.9964, 0.0924, 0.9826, 0.9736, 20),
        "resnet50-frozen": _table_row("Tabla 11", 0.2519, 0.9063, 0.2134, 0.9236, 0.8805, 20),
        "resnet50-finetune": _table_row("Tabla 13", 0.0102, 0.9952, 0.5594, 0.8576, 0.8736, 20),
        "vgg16-frozen": _table_row("Tabla 15", 0.1057, 0.9626, 0.1063, 0.9618, 0.9375, 20),
        "vgg16-finetune": _table_row("Tabla 17", 1.099, 0.3159, 1.0977, 0.3576, 0.3388, 20),
        "inceptionv3-frozen": _table_row("Tabla 19", 0.2194, 0.9231, 0.2337, 0.9201, 0.8903, 20),
        "inceptionv3-finetune": _table_row("Tabla 21", 0.0146, 0.9953, 0.1142, 0.9688, 0.9792, 20),
        "xception-frozen": _table_row("Tabla 23", 0.1746, 0.9405, 0.1319, 0.9618, 0.9153, 20),
        "xception-finetune": _table_row("Tabla 25", 0.0157, 0.9946, 0.0352, 0.9861, 0.9875, 20),
    },
    findings={"frozen_heat_maps_outside_lungs": Reported(True, "6: frozen feature extractors often "
                                                               "look away from the lungs; fine-tuned ones at them")},
    absent={"init_from": "whether V3 and the fine-tuned backbones start from the frozen run's head",
            "head": "the heads of the four other backbones (1: 'the same modifications')"},
)

# --------------------------------------------------------------------- 001: kermany-transfer

_KT_RUNS = ("cnn", "inceptionv3", "resnet50")
KERMANY_TRANSFER = Report(
    file="001_920dbe0f95fe572e.txt", preset="kermany-transfer",
    settings=_merge(
        _each(_KT_RUNS, {
            "optimizer": Reported("rmsprop", "4.4.1-4.4.3"), "binary": Reported(True, "4.4: sigmoid, binary cross-entropy"),
            "class_weight": Reported(True, "4.3: (1/count) × total / 2 per class"),
            "split.official_test": Reported(True, "3, 5: the test folder"),
            "split.val": Reported(0.2, "4.1: train+val re-split 80:20 (4185 / 1047)")}),
        {"cnn": {"epochs": Reported(12, "Tabla 1")}, "inceptionv3": {"epochs": Reported(35, "Tabla 1")},
         "resnet50": {"epochs": Reported(35, "Tabla 1")}},
    ),
    results={
        "cnn": {"test_accuracy": Reported(0.625, "Tabla 1"), "test_loss": Reported(9.311, "Tabla 1"),
                "epochs_run": Reported(12, "Tabla 1")},
        "inceptionv3": {"test_accuracy": Reported(0.868, "Tabla 1"), "test_loss": Reported(0.915, "Tabla 1"),
                        "epochs_run": Reported(35, "Tabla 1")},
        "resnet50": {"test_accuracy": Reported(0.625, "Tabla 1"), "test_loss": Reported(131.042, "Tabla 1"),
                     "epochs_run": Reported(35, "Tabla 1")},
    },
    findings={"all_pneumonia_rate": Reported(0.625, "0.625 is 390 / 624, the test set's pneumonia share")},
    absent={"augment": "which augmentations (4.2 names ImageDataGenerator, no parameters)",
            "learning_rate": "RMSprop's learning rate", "image_size": "the input size",
            "variant": "whether the two backbones were frozen",
            "head": "the scratch CNN's layers (4.4.1: in Figura 1, an image not in the text)"},
)

# --------------------------------------------------------------------- 002: SIIM (Xception)

_S_RUNS = ("study-sgd", "study-adam", "opacity-frozen", "opacity-finetune", "phase1-frozen-union",
           "phase2-finetune-union", "phase3-finetune-competition")
SIIM = Report(
    file="002_1347a1d9bcc56a82.txt", preset="siim",
    settings=_merge(
        _each(_S_RUNS, {
            "backbone": Reported("xception", "6.2-10"), "equalize": Reported("hist", "Preprocesamiento: equalize_hist"),
            "augment.flip": Reported(True, "Aumento de datos: horizontal_flip"),
            "augment.zoom": Reported((0.9, 1.1), "Aumento de datos: zoom_range=0.1"),
            "augment.shear": Reported(0.05, "Aumento de datos: shear_range=0.05 (degrees)"),
            "augment.brightness": Reported((0.8, 1.1), "Aumento de datos: brightness_range=[0.8, 1.1]"),
            "class_weight": Reported(False, "6.2-10: none used")}),
        {"study-sgd": {"optimizer": Reported("sgd", "6.2-6.3, 1º"), "learning_rate": Reported(0.2, "6.2-6.3, 1º"),
                       "momentum": Reported(0.9, "6.2-6.3, 1º"), "decay": Reported(0.001, "6.2-6.3, 1º"),
                       "epochs": Reported(5, "6.2-6.3, 1º"), "variant": Reported("frozen", "6.2-6.3: trainable False"),
                       "head": Reported("linear", "6.2-6.3: GlobalAveragePooling + Dense(4)"),
                       "split.val": Reported(0.2, "Partición: 5068 / 1266"), "split.test": Reported(0.0, "Partición")},
         "study-adam": {"optimizer": Reported("adam", "6.2-6.3, 2º"), "learning_rate": Reported(0.001, "6.2-6.3, 2º"),
                        "epochs": Reported(100, "6.2-6.3, 2º"), "early_stopping": Reported(10, "6.2-6.3, 2º"),
                        "variant": Reported("finetune", "6.2-6.3, 2º: trainable True"),
                        "init_from": Reported("study-sgd", "6.2-6.3, 2º: a second training"),
                        "head": Reported("linear", "6.2-6.3"),
                        "split.val": Reported(0.2, "Partición"), "split.test": Reported(0.0, "Partición")},
         "opacity-frozen": {"optimizer": Reported("nadam", "6.10, 1º"), "learning_rate": Reported(0.001, "6.10, 1º"),
                            "epochs": Reported(10, "6.10, 1º"), "variant": Reported("frozen", "6.10, 1º"),
                            "head": Reported("batchnorm", "6.10: pooling + BatchNormalization + Dense(2)"),
                            "split.val": Reported(0.2, "Partición"), "split.test": Reported(0.0, "Partición")},
         "opacity-finetune": {"optimizer": Reported("nadam", "6.10, 2º"), "learning_rate": Reported(0.001, "6.10, 2º"),
                              "epochs": Reported(100, "6.10, 2º"), "early_stopping": Reported(10, "6.10, 2º"),
                              "variant": Reported("finetune", "6.10, 2º"), "init_from": Reported("opacity-frozen", "6.10, 2º"),
                              "head": Reported("batchnorm", "6.10"),
                              "split.val": Reported(0.2, "Partición"), "split.test": Reported(0.0, "Partición")},
         "phase1-frozen-union": {"optimizer": Reported("nadam", "union, 1º"), "learning_rate": Reported(0.001, "union, 1º"),
                                 "epochs": Reported(20, "union, 1º"), "variant": Reported("frozen", "union, 1º"),
                                 "head": Reported("batchnorm", "union"),
                                 "split.val": Reported(0.2, "Partición: 20986 / 5246"),
                                 "split.test": Reported(0.2, "Partición: 1267 competition films held out")},
         "phase2-finetune-union": {"variant": Reported("finetune", "9.1: fine-tuning, a 2º training"),
                                   "init_from": Reported("phase1-frozen-union", "9.1"), "head": Reported("batchnorm", "9.1"),
                                   "split.val": Reported(0.2, "Partición"), "split.test": Reported(0.2, "Partición")},
         "phase3-finetune-competition": {
             "optimizer": Reported("nadam", "10"), "learning_rate": Reported(0.01, "10"), "epochs": Reported(15, "10"),
             "variant": Reported("finetune", "10: trainable True"), "head": Reported("batchnorm", "10"),
             "init_from": Reported("phase1-frozen-union", "10: the weights of the union's first training"),
             "split.val": Reported(0.0, "10: 5067 train, 1267 test final"), "split.test": Reported(0.2, "10")}},
    ),
    results={
        "study-sgd": {"val_accuracy": Reported(0.5174, "6.2-6.3, 1º")},
        "study-adam": {"val_accuracy": Reported(0.5932, "6.2-6.3, 2º")},
        "opacity-frozen": {"val_accuracy": Reported(0.7496, "6.10, 1º")},
        "opacity-finetune": {"val_accuracy": Reported(0.8017, "6.10, 2º")},
        "phase1-frozen-union": {"val_accuracy": Reported(0.7667, "union, 1º"),
                                "test_accuracy": Reported(0.7520, "union: Test Final")},
        "phase2-finetune-union": {"val_accuracy": Reported(0.7417, "9.1"),
                                  "test_accuracy": Reported(0.7368, "9.1: Test Final")},
        "phase3-finetune-competition": {"test_accuracy": Reported(0.7783, "10: Test Final")},
    },
    absent={"image_size": "the input size (the films were 512 px JPGs and 299 px PNGs)",
            "phase2-finetune-union.optimizer": "phase 2's optimiser, rate and epochs",
            "split": "how the 20 % was drawn (stratified or not)"},
)

# --------------------------------------------------------------------- 003: pneumonia two-stage (VGG16)

_P_RUNS = ("stage1", "stage2")
PNEUMONIA_TWO_STAGE = Report(
    file="003_450ae9f8031983db.txt", preset="pneumonia-two-stage",
    settings=_each(_P_RUNS, {
        "backbone": Reported("vgg16", "3"), "variant": Reported("frozen", "3: convolutions frozen"),
        "head": Reported("vgg", "3: VGG16's dense layers, the last replaced by 2 outputs"),
        "channels": Reported(1, "3: a 1 → 3 convolution in front"), "image_size": Reported(224, "3"),
        "crop": Reported(True, "2: α = 1 − 0.35·w/w_max, 1 − 0.20·h/h_max"),
        "equalize": Reported(None, "2: no equalisation"),
        "augment.flip": Reported(True, "2.1: 50 % horizontal reflection"),
        "augment.brightness": Reported((0.9, 1.1), "2.1: brightness −10 % to +10 %"),
        "augment.contrast": Reported((1.0, 1.1), "2.1: contrast 0 % to +10 %"),
        "augment.zoom": Reported(None, "2.1"), "augment.rotation": Reported(None, "2.1"),
        "class_weight": Reported(True, "3: misclassifying the minority costs 0.73/0.27 ≈ 2.7 ×"),
        "split.official_test": Reported(True, "5: 624 test films")}),
    results={"stage1": {"test_accuracy": Reported(0.92, "5")}},
    findings={"two_stage_accuracy": Reported(0.86, "5: the pipeline, normal / bacterial / viral"),
              "fpr_at_99_sensitivity": Reported(0.40, "5: read off the ROC curve at 99 % sensitivity"),
              "bacterial_viral_confusions": Reported(30, "5, Figura 8"),
              "viral_called_normal": Reported(20, "5, Figura 8"),
              "occlusion_window": Reported(15, "4: a 15 × 15 window"),
              "occlusion_stride": Reported(10, "4: moved in steps of 10")},
    absent={"optimizer": "the optimiser and its rate (the work used PyTorch and Captum)",
            "epochs": "the epochs", "split.val": "the validation share",
            "binary": "whether the 2 outputs were a softmax (the text says 2 output neurons)"},
)

# --------------------------------------------------------------------- 004: kermany 3-class CNN

KERMANY_3CLASS = Report(
    file="004_0b53a54684f62888.txt", preset="kermany-3class",
    settings={"cnn": {
        "backbone": Reported("scratch", "5"), "head": Reported("flat", "Figura 6"),
        "channels": Reported(1, "Figura 6: 256 × 256 × 1"), "image_size": Reported(256, "Figura 6"),
        "split.official_test": Reported(False, "Figura 3: 317 / 558 / 300 held out"),
        "split.test": Reported(0.2, "Figura 3: about 20 % of each class")}},
    results={"cnn": {"test_accuracy": Reported(0.82, "5")}},
    findings={"parameters": Reported(1_583_011, "Figura 6"),
              "test_counts": Reported({"Normal": 317, "Bacterial Pneumonia": 558, "Viral Pneumonia": 300},
                                      "Figura 3")},
    absent={"optimizer": "the optimiser", "epochs": "the epochs", "split.val": "the validation share",
            "dropout": "the two Dropout layers' rates (Figura 6 lists the layers only)"},
)

REPORTS: dict[str, Report] = {r.preset: r for r in
                              (RADIOGRAPHY, KERMANY_TRANSFER, SIIM, PNEUMONIA_TWO_STAGE, KERMANY_3CLASS)}


def report_of(preset: str) -> Report:
    """The report behind preset ``preset``."""
    if preset not in REPORTS:
        raise ValueError(f"No report for preset {preset!r}; reports: {', '.join(REPORTS)}.")
    return REPORTS[preset]


def results_of(preset: str, run: str) -> dict[str, float]:
    """What the report got for ``run``: record number name → value (no sections)."""
    return {name: item.value for name, item in report_of(preset).results.get(run, {}).items()}
