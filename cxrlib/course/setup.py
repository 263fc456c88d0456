"""Helpers the notebooks call in their first cells, so that every notebook starts the same way.

- :func:`apply_smoke`: the last line of every ``parameters`` cell: in smoke mode, the smoke
  settings (:func:`cxrlib.course.runner.smoke_parameters`) over the cell's defaults.
- :func:`output_folders`: the results and figures folders, created.
- :func:`environment_report`: versions, devices, and whether mixed precision would pay off.
- :func:`choose_data`: the real dataset when its path is given and present, else the synthetic
  default, said plainly.
- :func:`usable_weights`: ImageNet weights when they can be had; otherwise a clear message and
  ``None``, so a classroom without internet can still run the notebook top to bottom.
  ``"synthetic"`` (weights pretrained by cxrlib on synthetic films) is always usable offline.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Sequence

from cxrlib.environment import env_path

log = logging.getLogger(__name__)

COURSE_CLASSES: tuple[str, ...] = ("COVID", "Normal", "Viral Pneumonia")
"""The COVID-19 Radiography course's three classes."""
COURSE_BACKBONES: tuple[str, ...] = ("densenet121", "resnet50", "vgg16", "inceptionv3", "xception")
"""The five backbones the course compares."""
BACKBONE_LABELS: dict[str, str] = {"densenet121": "DN", "resnet50": "ResNet50", "vgg16": "VGG16",
                                   "inceptionv3": "InceptionV3", "xception": "Xception",
                                   "efficientnetv2b0": "EffNetV2B0", "scratch": "CNN"}
ALIAS_LABELS: dict[str, str] = {"frozen": "frozen", "finetune": "fine-tuned"}


def run_name(backbone: str, variant: str) -> str:
    """The course's short model name: ``DN-V2-reg``, ``ResNet50-fine-tuned``, ``CNN-scratch``."""
    from cxrlib.variants import get_variant

    label = ALIAS_LABELS.get(variant) or get_variant(variant).label
    return f"{BACKBONE_LABELS.get(backbone, backbone)}-{label}"


def apply_smoke(namespace: dict, notebook: str) -> None:
    """In smoke mode (``CXR_SMOKE=1``), the smoke settings of ``notebook`` (its number, "03")
    over the defaults its ``parameters`` cell just set in ``namespace`` (the cell's
    ``globals()``), said in one line; otherwise nothing.

    The one source of the values is :func:`cxrlib.course.runner.smoke_parameters` (results and
    figures go to ``CXR_SMOKE_DIR``, else ``outputs/smoke``). The runner injects the same values
    as papermill parameters, after this cell; this is for a kernel it did not start (nbval, or
    Jupyter started with ``CXR_SMOKE=1``). Only names the cell defines are set.
    """
    from cxrlib.course.runner import smoke_parameters, smoke_requested

    if not smoke_requested():
        return
    values = {k: v for k, v in smoke_parameters(notebook).items() if k in namespace}
    namespace.update(values)
    print(f"Smoke mode (CXR_SMOKE): {', '.join(f'{k}={v!r}' for k, v in values.items())}.")


def output_folders(results_dir: str | Path, figures_dir: str | Path) -> tuple[Path, Path]:
    """The notebook's results and figures folders as paths, created when missing."""
    folders = Path(results_dir), Path(figures_dir)
    for folder in folders:
        folder.mkdir(parents=True, exist_ok=True)
    return folders


def environment_report() -> dict:
    """Library versions, visible devices, and what mixed precision and XLA would do here."""
    from cxrlib.course.runner import smoke_requested
    from cxrlib.environment import environment_info

    return {**environment_info(detailed=True), "smoke_mode": smoke_requested()}


def choose_data(data_dir: str | None, results_dir: str | Path, per_class: int = 300,
                size: int = 256, seed: int = 0,
                classes: Sequence[str] = COURSE_CLASSES) -> tuple[Path, bool]:
    """(dataset directory, is_real) of the COVID-19 Radiography Database: ``data_dir``, else the
    ``COVID_DIR`` environment variable, else the synthetic default. Prints which and why."""
    folder = env_path("COVID_DIR", data_dir)
    path, real = course_data(folder, Path(results_dir) / "synthetic", per_class=per_class,
                             size=size, seed=seed, classes=classes)
    if real:
        print(f"Using the real dataset in {path}.")
    else:
        reason = f"{folder} was not found" if folder else "no COVID_DIR was given"
        print(f"Using the SYNTHETIC default dataset in {path} ({reason}). The lessons run the same; "
              "the numbers are about procedural images, not patients. See data/README.md to get "
              "the real data.")
    return path, real


def usable_weights(weights: str | None, backbone: str) -> str | None:
    """``weights`` if they can be loaded for ``backbone``; else print why and return ``None``.

    ``"synthetic"`` is returned as it is, with a note on what those weights are: they are
    pretrained (and cached) when a model first needs them, at that model's input size.
    """
    from cxrlib.backbones import (
        SCRATCH,
        SYNTHETIC,
        WeightsUnavailableError,
        get_backbone,
        resolve_weights,
    )

    if weights is None or backbone == SCRATCH or str(weights).lower() == "none":
        return None
    if str(weights).lower() == SYNTHETIC:
        print(f"{get_backbone(backbone).name}: weights='synthetic', pretrained by cxrlib on synthetic "
              "films (a multi-label lung-zone task, not this one), NOT ImageNet. They make the "
              "transfer-learning steps work offline; on a course machine use 'imagenet'.")
        return SYNTHETIC
    try:
        resolved = resolve_weights(backbone, weights)
        if resolved == "imagenet":  # not on disk yet: try the download once, now
            import keras

            entry = get_backbone(backbone)
            keras.utils.get_file(entry.weights_file, entry.weights_url + entry.weights_file,
                                 cache_subdir="models")
        return weights
    except (WeightsUnavailableError, FileNotFoundError, Exception) as error:  # noqa: B014
        from cxrlib.backbones import missing_weights_message

        message = str(error) if isinstance(error, (WeightsUnavailableError, FileNotFoundError)) \
            else missing_weights_message(backbone)
        print(f"NOTE: {message}\n→ Continuing with weights=None: random features, which a "
              "standardised linear head can still use a little; set WEIGHTS = 'synthetic' for "
              "weights that transfer offline.")
        return None


def course_data(path: str | Path | None, synthetic_dir: str | Path, per_class: int = 300,
                size: int = 256, seed: int = 0,
                classes: Sequence[str] = COURSE_CLASSES) -> tuple[Path, bool]:
    """The dataset directory a notebook should use, and whether it is the real one.

    A given path that exists wins. Otherwise the synthetic default is generated into
    ``synthetic_dir`` (once: an existing one with the same parameters is reused).
    """
    from cxrlib.data.synthetic import generate_synthetic

    if path and Path(path).expanduser().is_dir():
        return Path(path).expanduser(), True
    if path:
        log.warning("Dataset path %s not found: using the synthetic default instead.", path)
    synthetic_dir = Path(synthetic_dir)
    meta = synthetic_dir / "synthetic.json"
    wanted = {"per_class": per_class, "size": size, "seed": seed, "classes": list(classes)}
    from cxrlib.files import read_json  # imported here: the first cell stays light

    existing = read_json(meta)
    if all(existing.get(k) == v for k, v in wanted.items()):
        return synthetic_dir, False
    generate_synthetic(synthetic_dir, per_class=per_class, size=size, seed=seed, classes=classes)
    return synthetic_dir, False
