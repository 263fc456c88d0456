"""The run spec: one typed value that is everything a training run is.

:class:`RunSpec` says what is trained and how: backbone, variant, head, weights, input
size and channels; preprocessing (border crop, equalisation, normalisation); augmentation;
the optimiser and its schedule; epochs, early stopping, batch size, class weights, the
model it starts from; and how the data was split. ``train(manifest, classes, spec, out)``
takes it, the CLI maps its flags onto it (:data:`cxrlib.apps.train_flags.TRAIN_FLAGS`), a course
preset is a list of named specs, and every run record stores it as it is.

The defaults are the **library's**, not any course's: a course's settings live in its
preset (:mod:`cxrlib.course.presets`), checked against its report
(:mod:`cxrlib.course.reports`). Five settings are changes the library makes to what the
courses did, each a field here so that a preset can turn it off: ``normalization``
(each backbone's own ``preprocess_input``), ``head_norm`` (standardised pooled features in
the frozen heads), ``keep_best`` (score the epoch with the best validation loss),
``freeze_bn`` (pretrained BatchNormalization kept in inference mode) and ``clipnorm``.

Keras-free and TensorFlow-free (pydantic only), so the CLI and the presets can build and
print specs without importing TensorFlow.
"""

from __future__ import annotations

import math
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from cxrlib.errors import InputError

OPTIMIZERS = ("sgd", "adam", "adamw", "nadam", "rmsprop")
SCHEDULES = ("inverse-time", "cosine")
"""``inverse-time``: lr / (1 + decay · step) (``decay`` 0: constant); ``cosine``: from lr to 0 over the run."""
HEADS = ("course", "linear", "batchnorm", "flat", "vgg")
"""``course``: the variant's own head; ``linear``: pooling and the output; ``batchnorm``: pooling,
BatchNorm, output; ``flat``: the 3-class Kermany course's CNN; ``vgg``: VGG16's own classifier."""
NORMALIZATIONS = ("backbone", "featurewise", "none")


class _Spec(BaseModel):
    """Frozen, strict about unknown keys: a misspelt setting fails instead of being ignored."""

    model_config = ConfigDict(frozen=True, extra="forbid")


class Augment(_Spec):
    """Train-time augmentation. Everything off by default.

    The ranges follow ``ImageDataGenerator``'s meaning, so a course's settings read as written:

    - ``brightness``: a factor range; each film's pixels are multiplied by a factor drawn from it
      (``brightness_range=[0.8, 1.25]``).
    - ``contrast``: a factor range for the spread around each film's mean; ``(0.9, 1.1)`` is
      ±10 %, ``(1.0, 1.1)`` the one-sided "0 to +10 %".
    - ``zoom``: a scale range for the field of view, drawn independently for width and height
      as ``ImageDataGenerator`` did: above 1 zooms *out* (the film shrinks inside the frame),
      below 1 zooms in. ``zoom_range=[1, 1.2]`` is ``(1.0, 1.2)``: up to 20 % out, never in;
      a float ``z`` there meant ``(1 - z, 1 + z)``.
    - ``shear``: the shear angle in degrees, either way (``shear_range``).
    - ``rotation``: degrees, either way.
    - ``gamma``: an exponent range; each film's pixels become 255·(x/255)^γ (exposure jitter).
    """

    flip: bool = False
    brightness: tuple[float, float] | None = None
    contrast: tuple[float, float] | None = None
    zoom: tuple[float, float] | None = None
    shear: float | None = Field(default=None, ge=0, lt=90)
    rotation: float | None = Field(default=None, ge=0, le=180)
    gamma: tuple[float, float] | None = None

    @model_validator(mode="after")
    def _ranges(self) -> "Augment":
        for name in ("brightness", "contrast", "zoom", "gamma"):
            low_high = getattr(self, name)
            if low_high is not None and not 0 < low_high[0] <= low_high[1]:
                raise ValueError(f"augment.{name} must be a range (low, high) with 0 < low ≤ high, "
                                 f"not {low_high}")
        return self

    @property
    def active(self) -> bool:
        """True when any augmentation is on."""
        return self != NO_AUGMENT


NO_AUGMENT = Augment()

LIBRARY_AUGMENT = Augment(flip=True, brightness=(0.8, 1.25), contrast=(0.9, 1.1),
                          zoom=(round(1 / 1.2, 4), 1.0), rotation=5.0)
"""The library's augmentation for the variants that augment (``cxr train`` without a preset):
horizontal flip, brightness ×0.8–1.25, contrast ±10 %, zoom in by up to 20 %, rotation ±5°.
A general-purpose choice, not any course's; each preset gives its course's own."""


class Split(_Spec):
    """How the images were split (the record keeps it; the split makers read it).

    ``test`` is the share of all images held out for testing (unless ``official_test``:
    the dataset's own test split is kept, and its validation folder joins training);
    ``val`` is the share of the *rest* used for validation (a course's "80/20, then 10 % of
    training for validation" is ``test=0.2, val=0.1``). ``samples_per_class`` caps each
    class (a balanced sample, before splitting); ``pinned`` names a database version
    (``"v3"``) or a file listing the images to use.
    """

    samples_per_class: int | None = Field(default=None, ge=1)
    test: float = Field(default=0.15, ge=0, lt=1)
    val: float = Field(default=0.15, ge=0, lt=1)
    official_test: bool = False
    pinned: str | None = None


class RunSpec(_Spec):
    """Everything a training run is. See the module docstring for what the defaults are."""

    backbone: str
    variant: str
    head: Literal[HEADS] = "course"
    weights: str | None = "imagenet"
    image_size: int | None = Field(default=None, ge=8)
    channels: Literal[1, 3] = 3
    binary: bool = False

    crop: bool = False
    equalize: Literal["hist", "clahe"] | None = None
    normalization: Literal[NORMALIZATIONS] = "backbone"
    augment: Augment = NO_AUGMENT

    optimizer: Literal[OPTIMIZERS] = "sgd"
    learning_rate: float = Field(default=0.01, gt=0)
    momentum: float = Field(default=0.9, ge=0, lt=1)
    nesterov: bool = True
    decay: float = Field(default=0.0, ge=0)
    schedule: Literal[SCHEDULES] = "inverse-time"
    weight_decay: float = Field(default=0.0, ge=0)   # decoupled (AdamW's), any optimizer
    label_smoothing: float = Field(default=0.0, ge=0, lt=1)
    clipnorm: float | None = Field(default=1.0, gt=0)

    epochs: int = Field(default=20, ge=0)
    early_stopping: int | None = Field(default=None, ge=1)
    keep_best: bool = True
    head_norm: bool = True
    freeze_bn: bool = True
    batch_size: int = Field(default=32, ge=1)   # the global batch: split among all replicas/workers
    class_weight: bool = False
    init_from: str | None = None
    seed: int = 0

    split: Split = Split()

    @model_validator(mode="after")
    def _consistent(self) -> "RunSpec":
        if self.head == "flat" and self.backbone != "scratch":
            raise ValueError("head 'flat' is the from-scratch CNN's; use it with backbone 'scratch'")
        if self.head == "vgg" and self.backbone != "vgg16":
            raise ValueError("head 'vgg' is VGG16's own classifier; use it with backbone 'vgg16'")
        if not math.isfinite(self.learning_rate):
            raise ValueError("learning_rate must be a finite number")
        return self


def spec_problems(error: ValidationError) -> list[str]:
    """One readable line per problem of a spec's validation error: ``where: what``."""
    lines = []
    for item in error.errors():
        where = ".".join(str(part) for part in item["loc"]) or "spec"
        lines.append(f"{where}: {item['msg'].removeprefix('Value error, ')}")
    return lines


def make_spec(**settings: Any) -> RunSpec:
    """A :class:`RunSpec` from keyword settings; ValueError with one line per problem."""
    try:
        return RunSpec.model_validate(settings)
    except ValidationError as error:
        raise InputError("Invalid run settings: " + "; ".join(spec_problems(error))) from None


def updated(spec: RunSpec, changes: dict[str, Any]) -> RunSpec:
    """``spec`` with ``changes`` applied and validated; dotted keys reach the nested sections
    (``{"split.val": 0.2, "augment.flip": True}``)."""
    data = spec.model_dump()
    for key, value in changes.items():
        *parents, leaf = key.split(".")
        target = data
        for parent in parents:
            target = target[parent]
        if leaf not in target:
            raise InputError(f"Unknown run setting {key!r}.")
        target[leaf] = value
    return make_spec(**data)


def flat_items(spec: RunSpec) -> dict[str, Any]:
    """Every setting of ``spec`` as a dotted key → value (``augment.flip``, ``split.val``)."""
    out: dict[str, Any] = {}

    def walk(prefix: str, value: Any) -> None:
        if isinstance(value, dict):
            for key, inner in value.items():
                walk(f"{prefix}{key}.", inner)
        else:
            out[prefix[:-1]] = value

    walk("", spec.model_dump(mode="json"))
    return out


SCRATCH_AUGMENT = Augment(flip=True, brightness=(0.8, 1.25), contrast=(0.8, 1.25),
                          zoom=(0.85, 1.0), rotation=10.0, gamma=(0.8, 1.25))
"""The from-scratch recipe's augmentation: the library's, with wider contrast, zoom in by up
to 15 % (a random crop of the film), rotation ±10° and gamma ×0.8–1.25 (exposure jitter)."""

SCRATCH_RECIPE: dict[str, Any] = {
    "channels": 1, "equalize": "hist", "augment": SCRATCH_AUGMENT, "schedule": "cosine",
    "weight_decay": 0.05, "label_smoothing": 0.1}
"""The library's from-scratch recipe for real films (issue 22; ``docs/real_films.md`` has its
measurements against the earlier one): grey input, each film histogram-equalised (one
intensity scale whatever the hospital's exposure), :data:`SCRATCH_AUGMENT`, AdamW (the
variant's optimiser) with decoupled weight decay, a cosine schedule to 0 and label smoothing."""


def variant_spec(backbone: str, variant: str, **settings: Any) -> RunSpec:
    """The library's spec for ``backbone`` × ``variant``: the variant's registry defaults
    (:mod:`cxrlib.variants`: optimiser, learning rate, decay, epochs, and
    :data:`LIBRARY_AUGMENT` where it augments), then ``settings`` over them.

    The from-scratch CNN has no pretrained weights: its ``weights`` default is None, and its
    defaults are :data:`SCRATCH_RECIPE` (real films without ImageNet).
    """
    from cxrlib.variants import get_variant

    recipe = get_variant(variant)
    defaults: dict[str, Any] = {
        "optimizer": recipe.optimizer, "learning_rate": recipe.learning_rate, "decay": recipe.decay,
        "epochs": 0 if recipe.training == "none" else recipe.epochs,
        "augment": LIBRARY_AUGMENT if recipe.augment else NO_AUGMENT,
        "weights": None if backbone == "scratch" else "imagenet",
        **(SCRATCH_RECIPE if backbone == "scratch" else {})}
    return make_spec(**{"backbone": backbone, "variant": variant, **defaults, **settings})


STAND_IN_AIDS: dict[str, Any] = {"normalization": "backbone", "head_norm": True, "keep_best": True,
                                 "clipnorm": 1.0}
"""The library's changes that a pretrained backbone without ImageNet weights needs (the demo's
``synthetic`` weights, or random ones): the normalisation the synthetic weights were pretrained
with, standardised head features (a small source task's features have tiny spreads), the best
epoch, and clipped gradients (fine-tuning them at a course's rate blew up without it)."""


def scaled_spec(spec: RunSpec, image_size: int | None = None, epochs: int | None = None,
                backbone: str | None = None, finetune_learning_rate: float | None = None,
                weights: str | None = "imagenet", samples_per_class: int | None = None
                ) -> tuple[RunSpec, list[str]]:
    """``spec`` scaled for smoke or demo settings, and one line per change saying why.

    ``image_size``, ``epochs`` (a non-zero count only: V0 stays untrained),
    ``samples_per_class`` and ``finetune_learning_rate`` replace the spec's when given;
    ``backbone="scratch"`` swaps in the from-scratch CNN (the CPU stand-in for a pretrained
    backbone); ``weights`` is the weights the run will have. When they are not ImageNet's for a
    pretrained backbone, :data:`STAND_IN_AIDS` are switched on. This is the one place where
    smoke and demo settings change a course's spec.
    """
    changes: dict[str, Any] = {}
    why: list[str] = []
    if backbone and backbone != spec.backbone:
        changes["backbone"] = backbone
        if backbone == "scratch":
            changes.update(variant="scratch", weights=None,
                           head="flat" if spec.head == "flat" else "course")
        why.append(f"backbone {backbone}: the CPU stand-in for {spec.backbone}")
    if image_size and image_size != spec.image_size:
        changes["image_size"] = image_size
        why.append(f"image size {image_size} px (the course: {spec.image_size})")
    if epochs and spec.epochs and epochs != spec.epochs:
        changes["epochs"] = epochs
        why.append(f"{epochs} epochs (the course: {spec.epochs})")
    if finetune_learning_rate and finetune_learning_rate != spec.learning_rate:
        changes["learning_rate"] = finetune_learning_rate
        why.append(f"fine-tuning at learning rate {finetune_learning_rate:g} (the course: "
                   f"{spec.learning_rate:g}), for a few hundred films")
    if samples_per_class and samples_per_class != spec.split.samples_per_class:
        changes["split.samples_per_class"] = samples_per_class
        why.append(f"{samples_per_class} films per class (the course: "
                   f"{spec.split.samples_per_class or 'all'})")
    pretrained = changes.get("backbone", spec.backbone) != "scratch"
    if pretrained and weights != spec.weights:
        changes["weights"] = weights
    if pretrained and weights != "imagenet":
        aids = {k: v for k, v in STAND_IN_AIDS.items() if getattr(spec, k) != v}
        if aids:
            changes.update(aids)
            why.append(f"{', '.join(aids)} switched on: the library's changes that "
                       f"{weights or 'random'} weights need (not ImageNet's)")
    return (updated(spec, changes) if changes else spec), why
