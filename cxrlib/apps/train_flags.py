"""The ``cxr train`` flags: the argparse types, and :data:`TRAIN_FLAGS`, the one table that maps
each run-spec flag onto a field of :class:`cxrlib.spec.RunSpec` (:func:`cxrlib.apps.cli.spec_from_args`
applies it), and the check of ``--split-file`` against the flags it fixes.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Callable

from cxrlib.errors import InputError
from cxrlib.spec import HEADS, NORMALIZATIONS, OPTIMIZERS, SCHEDULES

#: A flag not given (argparse's default for every TRAIN_FLAGS flag): the spec keeps its value.
UNSET = object()


def dest(flag: str) -> str:
    """The argparse attribute of ``flag``: ``--image-size`` → ``image_size``."""
    return flag.lstrip("-").replace("-", "_")


def positive_int(text: str) -> int:
    """An argparse type: an integer of at least 1."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, not {value}")
    return value


def check_split_file(args: argparse.Namespace) -> None:
    """``--split-file`` fixes the images and their split: refuse the flags it would ignore, and a
    ``--data`` that is not the folder the split was made from."""
    ignored = [flag for flag in ("--samples-per-class", "--val", "--test", "--official-test")
               if getattr(args, dest(flag)) is not UNSET]
    if ignored:
        raise InputError(f"--split-file fixes the images and their split, so {', '.join(ignored)} "
                         "would be ignored; drop them, or drop --split-file to split again.")
    from cxrlib.data.splits import load_split

    split = load_split(args.split_file)
    data = Path(args.data).resolve()
    outside = [p for p in split["path"].astype(str) if not Path(p).resolve().is_relative_to(data)]
    if outside:
        raise InputError(f"--split-file {args.split_file} lists images outside --data {args.data} "
                         f"(e.g. {outside[0]}); give the --data folder the split was made from.")


def _none_or(kind: Callable) -> Callable:
    """An argparse type: ``none`` → None, anything else ``kind(text)``."""
    def parse(text: str):
        return None if text.lower() == "none" else kind(text)
    parse.__name__ = getattr(kind, "__name__", "value")
    return parse


def _pair(text: str) -> tuple[float, float]:
    """An argparse type: ``LOW,HIGH`` → (low, high)."""
    try:
        low, high = (float(part) for part in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a range LOW,HIGH (e.g. 0.8,1.25)") from None
    return low, high


def non_negative_float(text: str) -> float:
    """An argparse type: a number of at least 0 (finite)."""
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not 0 <= value < float("inf"):
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of seconds of at least 0")
    return value


def _flag(value: str) -> bool:
    """An argparse type: yes/no, true/false, on/off, 1/0."""
    if value.lower() in ("yes", "true", "on", "1"):
        return True
    if value.lower() in ("no", "false", "off", "0"):
        return False
    raise argparse.ArgumentTypeError(f"{value!r} is not yes or no")


#: The train command's flags for the run spec (cxrlib.spec.RunSpec): flag → (spec field,
#: argparse options). The one place the CLI maps flags onto the spec: a flag not given leaves
#: the spec's value (the variant's library default, or the preset run's with --preset).
TRAIN_FLAGS: dict[str, tuple[str, dict]] = {
    "--weights": ("weights", dict(type=_none_or(str), help="imagenet, synthetic (pretrained by cxrlib "
                                  "on synthetic films), none, or a weights file")),
    "--image-size": ("image_size", dict(type=positive_int, help="input size (default: the backbone's)")),
    "--channels": ("channels", dict(type=int, choices=(1, 3), help="1: grayscale input adapter")),
    "--head": ("head", dict(choices=HEADS)),
    "--binary": ("binary", dict(type=_flag, help="yes: one sigmoid unit (two classes)")),
    "--crop": ("crop", dict(type=_flag, help="yes: the proportional border crop")),
    "--equalize": ("equalize", dict(type=_none_or(str), choices=("hist", "clahe", None))),
    "--normalization": ("normalization", dict(choices=NORMALIZATIONS)),
    "--flip": ("augment.flip", dict(type=_flag)),
    "--brightness": ("augment.brightness", dict(type=_none_or(_pair), metavar="LOW,HIGH")),
    "--contrast": ("augment.contrast", dict(type=_none_or(_pair), metavar="LOW,HIGH")),
    "--zoom": ("augment.zoom", dict(type=_none_or(_pair), metavar="LOW,HIGH",
                                    help="field-of-view scale range; above 1 zooms out")),
    "--shear": ("augment.shear", dict(type=_none_or(float), metavar="DEGREES")),
    "--rotation": ("augment.rotation", dict(type=_none_or(float), metavar="DEGREES")),
    "--gamma": ("augment.gamma", dict(type=_none_or(_pair), metavar="LOW,HIGH",
                                      help="exponent range: 255·(x/255)^γ")),
    "--optimizer": ("optimizer", dict(choices=OPTIMIZERS)),
    "--learning-rate": ("learning_rate", dict(type=float)),
    "--momentum": ("momentum", dict(type=float, help="SGD momentum")),
    "--nesterov": ("nesterov", dict(type=_flag)),
    "--decay": ("decay", dict(type=float, help="inverse-time decay rate per step")),
    "--clipnorm": ("clipnorm", dict(type=_none_or(float))),
    "--schedule": ("schedule", dict(choices=SCHEDULES, help="cosine: the rate to 0 over the run")),
    "--weight-decay": ("weight_decay", dict(type=float, help="decoupled weight decay")),
    "--label-smoothing": ("label_smoothing", dict(type=float)),
    "--epochs": ("epochs", dict(type=positive_int)),
    "--early-stopping": ("early_stopping", dict(type=_none_or(positive_int), metavar="PATIENCE")),
    "--keep-best": ("keep_best", dict(type=_flag, help="yes: score the best validation epoch")),
    "--head-norm": ("head_norm", dict(type=_flag, help="yes: standardise the frozen heads' features")),
    "--freeze-bn": ("freeze_bn", dict(type=_flag, help="yes: pretrained BatchNorm in inference mode")),
    "--batch-size": ("batch_size", dict(type=positive_int)),
    "--class-weight": ("class_weight", dict(type=_flag, help="yes: weight the loss n_total/(k*n_class)")),
    "--init-from": ("init_from", dict(help="copy matching weights from this .keras model first")),
    "--seed": ("seed", dict(type=int)),
    "--samples-per-class": ("split.samples_per_class", dict(type=positive_int,
                                                            help="balanced sample of N per class")),
    "--val": ("split.val", dict(type=float, help="validation share of what the test leaves")),
    "--test": ("split.test", dict(type=float, help="test share")),
    "--official-test": ("split.official_test", dict(type=_flag, help="yes: keep the data's own "
                                                    "test split (Kermany); --test is then unused")),
}
