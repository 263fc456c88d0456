"""The variant registry: what each model variant builds, freezes and trains, and its defaults.

One entry per variant; ``frozen`` and ``finetune`` are aliases (the V2-reg and V3 recipes,
for any backbone), resolved here and nowhere else. Keras-free, so the CLI can list variants
without importing TensorFlow.

The defaults (optimiser, learning rate, decay, whether to augment, epochs) are the
library's, for ``cxr train`` without a preset (:func:`cxrlib.spec.variant_spec` turns them
into a spec): SGD at 0.01 with Nesterov momentum 0.9 and an inverse-time decay of 1e-6 for
20 epochs for the frozen variants; a tenth of that rate for 10 epochs to fine-tune (``v3``),
the usual advice for moving pretrained weights; AdamW at 2e-3 for 20 epochs from scratch (with
the rest of :data:`cxrlib.spec.SCRATCH_RECIPE`).
They are not any course's recipe: a course's settings are its preset
(``cxr train --preset radiography --run v3``), checked against its report.
"""

from __future__ import annotations

from dataclasses import dataclass

from cxrlib.errors import InputError


@dataclass(frozen=True)
class Variant:
    """One registry entry (data only)."""

    name: str
    label: str                # short name for tables: "V2-reg"
    head: str                 # "linear" (softmax on pooled features), "deep" (500-200),
                              # "deep-dropout" (500-dropout-200), "scratch" (256-dropout)
    frozen: bool              # backbone frozen (only the head trains)
    training: str             # "none" (never trained), "features" (head on cached features), "fit"
    augment: bool
    optimizer: str
    learning_rate: float
    decay: float              # InverseTimeDecay rate per step (the old ``decay=`` argument)
    epochs: int


VARIANTS: dict[str, Variant] = {
    v.name: v for v in [
        Variant("v0", "V0", "linear", True, "none", False, "sgd", 0.01, 1e-6, 0),
        Variant("v1", "V1", "linear", True, "features", False, "sgd", 0.01, 1e-6, 20),
        Variant("v2", "V2", "deep", True, "fit", True, "sgd", 0.01, 1e-6, 20),
        Variant("v2reg", "V2-reg", "deep-dropout", True, "fit", True, "sgd", 0.01, 1e-6, 20),
        Variant("v3", "V3", "deep-dropout", False, "fit", True, "sgd", 1e-3, 1e-6, 10),
        Variant("scratch", "scratch", "scratch", False, "fit", True, "adamw", 2e-3, 0.0, 20),
    ]
}
ALIASES: dict[str, str] = {"frozen": "v2reg", "finetune": "v3"}
"""For every backbone, ``frozen`` is the V2-reg recipe and ``finetune`` is V3."""

VARIANT_NAMES: tuple[str, ...] = (*VARIANTS, *ALIASES)
"""Every name a user may give (the CLI's choices)."""


def canonical_variant(name: str) -> str:
    """``name`` with its alias folded (``frozen`` → ``v2reg``, ``finetune`` → ``v3``)."""
    return ALIASES.get(name, name)


def get_variant(name: str) -> Variant:
    """The registry entry for ``name`` (aliases resolved), or a ValueError listing the choices."""
    key = canonical_variant(name)
    if key not in VARIANTS:
        raise InputError(f"Unknown variant {name!r}; choose one of {', '.join(VARIANT_NAMES)}.")
    return VARIANTS[key]
