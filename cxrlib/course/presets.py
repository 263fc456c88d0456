"""Course presets: each source course as it was taught, one readable entry per course.

A :class:`Preset` holds a course's data (dataset, database version, split), and its runs
(:class:`Run`: backbone, head, optimiser and schedule, epochs, augmentation), each with the
number the course reported. The notebooks take their defaults from their course's preset
(``PRESET`` parameter, ``python -m cxrlib notebooks --preset NAME``); :func:`train_kwargs`
turns a run into the exact arguments of :func:`cxrlib.runs.train.train`, and every record
carries the preset, the run and the split it was trained with (``record["dataset"]["preset"]``).

Where a course's report does not say (an optimiser, an epoch count), the entry says so in
``assumed``: the numbers there are ours, not the course's.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field, replace
from typing import Any, Mapping

from cxrlib.data.pipeline import NO_AUGMENT, Augment

# The DenseNet121 course's V2 augmentation: flip, brightness 0.8–1.25, zoom 1–1.2 (it rejected
# rotation); the two-stage pneumonia course's: flip, brightness ±10 %, contrast up to 10 %.
RADIOGRAPHY_AUGMENT = Augment(flip=True, brightness=(0.8, 1.25), contrast=None, zoom=(1.0, 1.2),
                              rotation=None)
TWO_STAGE_AUGMENT = Augment(flip=True, brightness=(0.9, 1.1), contrast=0.1, zoom=None, rotation=None)

# The COVID-19 Radiography Database as the DenseNet121 course used it (version 3); from v4 on,
# Normal is mostly adult films from other sources.
RADIOGRAPHY_VERSIONS: dict[str, dict[str, int]] = {
    "v3": {"COVID": 1200, "Normal": 1341, "Viral Pneumonia": 1345},
}


@dataclass(frozen=True)
class Run:
    """One experiment of a course and what the course reported for it."""

    key: str                         # short id, unique in its preset: "v2", "xception-finetune"
    backbone: str
    variant: str
    epochs: int
    optimizer: str
    learning_rate: float
    decay: float = 0.0               # old-style Keras decay: lr / (1 + decay · step)
    augment: Augment = NO_AUGMENT
    image_size: int | None = None    # None: the preset's
    head: str = "course"             # see cxrlib.models.build.HEADS
    channels: int = 3
    crop: bool = False
    equalize: str | None = None
    early_stopping: int | None = None
    init_from: str | None = None     # the key of the run this one starts from
    data: str = "main"               # which of the preset's data sets it trains on
    reported: Mapping[str, float] = field(default_factory=dict)   # accuracy, loss, …


@dataclass(frozen=True)
class Preset:
    """A course: its data, its split, its runs."""

    name: str
    course: str
    notebook: str
    dataset: str                     # the layout: covid19-radiography, kermany, siim
    classes: tuple[str, ...]
    val: float                       # validation share of the images outside the test split
    test: float                      # test share of all images (when there is no official test split)
    image_size: int
    runs: tuple[Run, ...]
    batch_size: int = 32
    official_test: bool = False      # keep the dataset's own test split (Kermany's 624)
    version: str | None = None       # a pinned database version (RADIOGRAPHY_VERSIONS)
    binary: bool = False             # one sigmoid unit (two classes)
    class_weight: bool = False
    reported: Mapping[str, float] = field(default_factory=dict)   # results beyond single runs
    assumed: str = ""                # what the course's report leaves open, and our choice

    def run(self, key: str) -> Run:
        """The run called ``key``."""
        for run in self.runs:
            if run.key == key:
                return run
        raise KeyError(f"No run {key!r} in preset {self.name!r}; runs: {', '.join(self.keys())}.")

    def keys(self) -> list[str]:
        return [run.key for run in self.runs]

    @property
    def split(self) -> dict[str, Any]:
        """The split fractions as recorded with every run."""
        return {"val": self.val, "test": "official" if self.official_test else self.test}


def _radiography_runs() -> tuple[Run, ...]:
    sgd = dict(optimizer="sgd", learning_rate=0.01, decay=1e-6, epochs=20)
    runs = [Run("v0", "densenet121", "v0", **{**sgd, "epochs": 0}, reported={"accuracy": 0.3264}),
            Run("v1", "densenet121", "v1", **sgd, reported={"accuracy": 0.8361}),
            Run("v2", "densenet121", "v2", **sgd, augment=RADIOGRAPHY_AUGMENT,
                reported={"accuracy": 0.9597}),
            Run("v2reg", "densenet121", "v2reg", **sgd, augment=RADIOGRAPHY_AUGMENT,
                reported={"accuracy": 0.9569}),
            Run("v3", "densenet121", "v3", **sgd, augment=RADIOGRAPHY_AUGMENT, init_from="v2reg",
                reported={"accuracy": 0.9736})]
    finetuned = {"xception": 0.9875, "vgg16": 0.3388}
    for backbone in ("resnet50", "vgg16", "inceptionv3", "xception"):
        runs.append(Run(f"{backbone}-frozen", backbone, "frozen", **sgd, augment=RADIOGRAPHY_AUGMENT))
        runs.append(Run(f"{backbone}-finetune", backbone, "finetune", **sgd, augment=RADIOGRAPHY_AUGMENT,
                        init_from=f"{backbone}-frozen",
                        reported={"accuracy": finetuned[backbone]} if backbone in finetuned else {}))
    return tuple(runs)


def _siim_runs() -> tuple[Run, ...]:
    xception = dict(backbone="xception", head="batchnorm", equalize="hist")
    nadam = dict(optimizer="nadam", learning_rate=1e-3, epochs=20)
    return (
        Run("study-sgd", variant="frozen", optimizer="sgd", learning_rate=0.2, epochs=100,
            early_stopping=10, data="study", reported={"accuracy": 0.517}, **xception),
        Run("study-adam", variant="frozen", optimizer="adam", learning_rate=1e-3, epochs=100,
            early_stopping=10, data="study", reported={"accuracy": 0.593}, **xception),
        Run("opacity-frozen", variant="frozen", reported={"accuracy": 0.750}, **nadam, **xception),
        Run("opacity-finetune", variant="finetune", init_from="opacity-frozen",
            reported={"accuracy": 0.802}, **nadam, **xception),
        Run("phase1-frozen-union", variant="frozen", data="union", reported={"accuracy": 0.752},
            **nadam, **xception),
        Run("phase2-finetune-union", variant="finetune", data="union", init_from="phase1-frozen-union",
            reported={"accuracy": 0.737}, **nadam, **xception),
        Run("phase3-finetune-competition", variant="finetune", optimizer="nadam", learning_rate=0.01,
            epochs=15, init_from="phase2-finetune-union", reported={"accuracy": 0.778}, **xception),
    )


PRESETS: dict[str, Preset] = {p.name: p for p in [
    Preset(
        name="radiography", course="COVID-19 Radiography (DenseNet121 course)",
        notebook="03 04 05", dataset="covid19-radiography", version="v3",
        classes=("COVID", "Normal", "Viral Pneumonia"),
        val=0.1, test=0.2,           # 80/20 train/test, 10 % of train for validation
        image_size=224,              # every backbone at 224 px, InceptionV3 and Xception included
        runs=_radiography_runs(),
        assumed="V2's feature-wise mean/std normalisation is not reproduced: each backbone's own "
                "preprocess_input is used. Whether V3 and the fine-tuned backbones start from the "
                "frozen run's head is not said; they do here (notebook 03 explains why)."),
    Preset(
        name="kermany-transfer", course="Kermany pneumonia (scratch CNN vs InceptionV3 vs ResNet50)",
        notebook="08", dataset="kermany", classes=("Normal", "Pneumonia"), binary=True,
        val=0.2, test=0.2, official_test=True,   # train+val re-split 80:20; the official 624 test
        image_size=224,
        runs=(Run("cnn", "scratch", "scratch", epochs=12, optimizer="rmsprop", learning_rate=1e-3,
                  reported={"accuracy": 0.625}),
              Run("inceptionv3", "inceptionv3", "frozen", epochs=35, optimizer="rmsprop",
                  learning_rate=1e-3, reported={"accuracy": 0.868}),
              Run("resnet50", "resnet50", "frozen", epochs=35, optimizer="rmsprop",
                  learning_rate=1e-3, reported={"accuracy": 0.625})),
        assumed="Image size (224), RMSprop's learning rate (Keras' 1e-3) and frozen backbones "
                "are not in the report."),
    Preset(
        name="pneumonia-two-stage", course="Pneumonia two-stage course (VGG16)", notebook="06",
        dataset="kermany", classes=("Normal", "Bacterial Pneumonia", "Viral Pneumonia"),
        binary=True, class_weight=True, val=0.15, test=0.2, official_test=True, image_size=224,
        runs=tuple(Run(key, "vgg16", "frozen", epochs=20, optimizer="adam", learning_rate=1e-3,
                       augment=TWO_STAGE_AUGMENT, channels=1, crop=True, equalize="hist",
                       data=key, reported=reported)
                   for key, reported in (("stage1", {"accuracy": 0.92}), ("stage2", {}))),
        reported={"two_stage_accuracy": 0.86, "healthy_share_of_positive_calls": 0.40},
        assumed="The optimiser (Adam 1e-3), the epochs (20) and the validation fraction are not "
                "in the report."),
    Preset(
        name="siim", course="SIIM-FISABIO-RSNA (Xception)", notebook="07", dataset="siim",
        classes=("No Opacity", "Opacity"), val=0.15, test=0.15, image_size=224, runs=_siim_runs(),
        assumed="Epochs of the opacity runs and of phases 1–2 (20), the split fractions, the "
                "image size and the frozen backbone of the 4-class runs are not in the report."),
    Preset(
        name="kermany-3class", course="3-class Kermany scratch course", notebook="08",
        dataset="kermany", classes=("Normal", "Bacterial Pneumonia", "Viral Pneumonia"),
        val=0.1, test=0.2, official_test=True, image_size=256,
        runs=(Run("cnn", "scratch", "scratch", epochs=20, optimizer="adam", learning_rate=1e-3,
                  head="flat", channels=1, reported={"accuracy": 0.82}),),
        assumed="The optimiser (Adam 1e-3), the epochs (20) and the validation fraction are not "
                "in the report."),
]}

NOTEBOOK_PRESETS: dict[str, tuple[str, ...]] = {
    "03": ("radiography",), "04": ("radiography",), "05": ("radiography",),
    "06": ("pneumonia-two-stage",), "07": ("siim",), "08": ("kermany-transfer", "kermany-3class"),
}


def get_preset(name: str) -> Preset:
    """The preset called ``name``, or a ValueError listing them."""
    if name not in PRESETS:
        raise ValueError(f"Unknown preset {name!r}; choose one of {', '.join(PRESETS)}.")
    return PRESETS[name]


def notebooks_of(name: str) -> list[str]:
    """The numbers of the notebooks that follow preset ``name``."""
    return [number for number, names in NOTEBOOK_PRESETS.items() if name in names]


def scaled(preset: Preset, image_size: int | None = None, epochs: int | None = None,
           backbone: str | None = None, finetune_learning_rate: float | None = None) -> Preset:
    """The preset with every run's image size, (non-zero) epochs or backbone replaced: smoke
    and demo settings (``backbone="scratch"``: the CPU stand-in). ``finetune_learning_rate``
    replaces the learning rate of the fine-tuning runs only (a trainable backbone that starts
    from another run): the course's 0.01 suits ImageNet weights and thousands of films, and
    scrambles the features of a demo's few hundred. Everything else (optimiser, schedule,
    augmentation, split) stays the course's."""
    from cxrlib.models.variants import get_variant

    def swap(run: Run) -> Run:
        if not backbone:
            return run
        variant = "scratch" if backbone == "scratch" else run.variant
        return replace(run, backbone=backbone, variant=variant,
                       head=run.head if backbone != "scratch" or run.head == "flat" else "course")

    def rate(run: Run) -> float:
        finetuning = run.init_from is not None and not get_variant(run.variant).frozen
        return finetune_learning_rate if finetuning and finetune_learning_rate else run.learning_rate

    runs = tuple(replace(swap(run), image_size=image_size or run.image_size,
                         epochs=run.epochs if not epochs or run.epochs == 0 else epochs,
                         learning_rate=rate(run))
                 for run in preset.runs)
    return replace(preset, runs=runs, image_size=image_size or preset.image_size)


FLAT_MIN_SIZE = 94   # the flat CNN's five valid convolutions and poolings need 94 px


def run_size(preset: Preset, run: Run) -> int:
    """The run's input size, raised to what its network accepts (InceptionV3 75 px, Xception 71,
    the flat CNN 94)."""
    from cxrlib.models.backbones import SCRATCH, get_backbone

    size = run.image_size or preset.image_size
    if run.backbone == SCRATCH:
        return max(size, FLAT_MIN_SIZE) if run.head == "flat" else size
    return max(size, get_backbone(run.backbone).min_size)


def train_kwargs(preset: Preset, key: str, run_dirs: Mapping[str, str] | None = None) -> dict[str, Any]:
    """The arguments of :func:`cxrlib.runs.train.train` for run ``key``, exactly as the preset says.

    ``run_dirs`` maps run keys to their folders (for ``init_from``).
    """
    run = preset.run(key)
    init = None
    if run.init_from:
        init = str(f"{(run_dirs or {})[run.init_from]}/model.keras")
    return dict(backbone=run.backbone, variant=run.variant, image_size=run_size(preset, run),
                epochs=run.epochs, batch_size=preset.batch_size, optimizer=run.optimizer,
                learning_rate=run.learning_rate, decay=run.decay, augment=run.augment,
                head=run.head, channels=run.channels, crop=run.crop, equalize=run.equalize,
                early_stopping=run.early_stopping, init_from=init, class_weight=preset.class_weight,
                binary=preset.binary and run.data != "study",
                dataset_info={"preset": preset.name, "run": key, "split": preset.split,
                              "version": preset.version})


def recorded_settings(record: dict) -> dict[str, Any]:
    """What a record says was trained, in :func:`expected_settings`' terms (for checks and tables)."""
    hyper, model, prep, data = record["hyperparameters"], record["model"], record["prep"], record["dataset"]
    return _as_json({"preset": data.get("preset"), "run": data.get("run"), "split": data.get("split"),
            "version": data.get("version"), "backbone": model["backbone"], "variant": model["variant"],
            "head": model.get("head", "course"), "image_size": model["image_size"],
            "channels": model["channels"], "crop": prep["crop"], "equalize": prep["equalize"],
            **{k: hyper[k] for k in ("epochs", "optimizer", "learning_rate", "decay", "augment",
                                     "early_stopping", "batch_size", "class_weight")}})


def expected_settings(preset: Preset, key: str) -> dict[str, Any]:
    """What the record of run ``key`` must say, from the preset alone."""
    run = preset.run(key)
    return _as_json({"preset": preset.name, "run": key, "split": preset.split, "version": preset.version,
            "backbone": run.backbone, "variant": run.variant, "head": run.head,
            "image_size": run_size(preset, run), "channels": run.channels, "crop": run.crop,
            "equalize": run.equalize, "epochs": run.epochs, "optimizer": run.optimizer,
            "learning_rate": run.learning_rate, "decay": run.decay, "augment": asdict(run.augment),
            "early_stopping": run.early_stopping, "batch_size": preset.batch_size,
            "class_weight": preset.class_weight})


def _as_json(settings: dict[str, Any]) -> dict[str, Any]:
    """As a record stores it (tuples become lists)."""
    return json.loads(json.dumps(settings))


def preset_table(preset: Preset) -> "pd.DataFrame":  # noqa: F821
    """One row per run: the settings a student would look up in the course's report."""
    import pandas as pd

    rows = [{"run": r.key, "backbone": r.backbone, "variant": r.variant, "head": r.head,
             "size": run_size(preset, r), "epochs": r.epochs, "optimizer": r.optimizer,
             "lr": r.learning_rate, "decay": r.decay, "early stop": r.early_stopping,
             "augment": "none" if r.augment == NO_AUGMENT else "yes", "from": r.init_from or "",
             "data": r.data, **{f"course {k}": v for k, v in r.reported.items()}}
            for r in preset.runs]
    return pd.DataFrame(rows).set_index("run")
