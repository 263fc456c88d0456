"""Helpers the notebooks call in their first cells, so that every notebook starts the same way.

- :func:`smoke_mode`: ``CXR_SMOKE=1`` in the environment makes every notebook finish in about a
  minute on a CPU (synthetic data, small images, one epoch, ``weights=None``). Reviewers and
  the test suite run the series this way.
- :func:`environment_report`: versions, devices, and whether mixed precision would pay off.
- :func:`choose_data`: the real dataset when its path is given and present, else the synthetic
  default, said plainly.
- :func:`usable_weights`: ImageNet weights when they can be had; otherwise a clear message and
  ``None``, so a classroom without internet can still run the notebook top to bottom.
  ``"synthetic"`` (weights pretrained by cxrlib on synthetic films) is always usable offline.
"""

from __future__ import annotations

import json
import logging
import os
import platform
from pathlib import Path
from typing import Sequence

log = logging.getLogger(__name__)


def smoke_mode() -> bool:
    """True when ``CXR_SMOKE=1``: the quick, CPU-sized settings."""
    return os.environ.get("CXR_SMOKE", "") not in ("", "0")


def environment_report() -> dict:
    """Library versions, visible devices, and what mixed precision and XLA would do here."""
    import keras
    import numpy
    import tensorflow as tf

    import cxrlib

    gpus = tf.config.list_physical_devices("GPU")
    details = [tf.config.experimental.get_device_details(g) for g in gpus]
    capability = max((d.get("compute_capability", (0, 0)) for d in details), default=(0, 0))
    return {
        "python": platform.python_version(), "platform": platform.platform(),
        "tensorflow": tf.__version__, "keras": keras.__version__, "numpy": numpy.__version__,
        "cxrlib": cxrlib.__version__, "cpus": os.cpu_count(),
        "gpus": [d.get("device_name", "GPU") for d in details],
        # float16 tensor cores arrived with compute capability 7.0 (Volta)
        "mixed_precision_useful": bool(gpus) and tuple(capability) >= (7, 0),
        "xla_available": tf.test.is_built_with_xla() if hasattr(tf.test, "is_built_with_xla") else True,
        "smoke_mode": smoke_mode(),
    }


def choose_data(data_dir: str | None, results_dir: str | Path, per_class: int = 300,
                size: int = 256, seed: int = 0,
                classes: Sequence[str] = ("COVID", "Normal", "Viral Pneumonia")) -> tuple[Path, bool]:
    """(dataset directory, is_real). Prints which one the notebook is using and why."""
    path, real = course_data(data_dir, Path(results_dir) / "synthetic", per_class=per_class,
                             size=size, seed=seed, classes=classes)
    if real:
        print(f"Using the real dataset in {path}.")
    else:
        reason = f"{data_dir} was not found" if data_dir else "no DATA_DIR was given"
        print(f"Using the SYNTHETIC default dataset in {path} ({reason}). The lessons run the same; "
              "the numbers are about procedural images, not patients. See data/README.md to get "
              "the real data.")
    return path, real


def usable_weights(weights: str | None, backbone: str) -> str | None:
    """``weights`` if they can be loaded for ``backbone``; else print why and return ``None``.

    ``"synthetic"`` is returned as it is, with a note on what those weights are: they are
    pretrained (and cached) when a model first needs them, at that model's input size.
    """
    from cxrlib.models.backbones import (SCRATCH, SYNTHETIC, WeightsUnavailableError, get_backbone,
                                         resolve_weights)

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
        from cxrlib.models.backbones import missing_weights_message

        message = str(error) if isinstance(error, (WeightsUnavailableError, FileNotFoundError)) \
            else missing_weights_message(backbone)
        print(f"NOTE: {message}\n→ Continuing with weights=None: random features, which a "
              "standardised linear head can still use a little; set WEIGHTS = 'synthetic' for "
              "weights that transfer offline.")
        return None


def course_data(path: str | Path | None, synthetic_dir: str | Path, per_class: int = 300,
                size: int = 256, seed: int = 0,
                classes: Sequence[str] = ("COVID", "Normal", "Viral Pneumonia")) -> tuple[Path, bool]:
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
    if meta.is_file():
        existing = json.loads(meta.read_text())
        if all(existing.get(k) == v for k, v in wanted.items()):
            return synthetic_dir, False
    generate_synthetic(synthetic_dir, per_class=per_class, size=size, seed=seed, classes=classes)
    return synthetic_dir, False
