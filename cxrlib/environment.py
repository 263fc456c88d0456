"""What this process runs on: library versions, devices, and what the GPU options would do.

The one place cxrlib asks TensorFlow about devices; run records and notebook 00 read it.
"""

from __future__ import annotations

import logging
import os
import platform
from pathlib import Path
from typing import Any

import numpy as np

log = logging.getLogger(__name__)


def env_flag(variable: str) -> bool:
    """Whether ``$variable`` is on: set, and neither empty nor ``0``."""
    return os.environ.get(variable, "") not in ("", "0")


def env_path(variable: str, given: str | os.PathLike | None = None) -> Path | None:
    """``given``, else ``$variable``, as a path (``~`` expanded); None when neither is set."""
    value = given or os.environ.get(variable)
    return Path(value).expanduser() if value else None


def user_folder(variable: str, name: str) -> Path:
    """``$variable`` when it is set, else cxrlib's ``name`` folder in the user's cache folder
    (platformdirs: ``$XDG_CACHE_HOME/cxrlib/<name>``, else ``~/.cache/cxrlib/<name>``, on Linux)."""
    from platformdirs import user_cache_path

    return env_path(variable) or user_cache_path("cxrlib", appauthor=False) / name


def gpu_details() -> list[dict[str, Any]]:
    """One dict per visible GPU (``device_name``, ``compute_capability``); [] without
    TensorFlow, without GPUs, or when the driver cannot be queried (logged)."""
    try:
        import tensorflow as tf
    except ImportError:
        return []
    try:
        return [tf.config.experimental.get_device_details(g) or {"device_name": g.name}
                for g in tf.config.list_physical_devices("GPU")]
    except Exception as error:  # a broken driver must not stop a record being written
        log.warning("Could not query the GPU: %s", error)
        return []


MIXED_PRECISION_CAPABILITY = (7, 0)
"""The compute capability from which a GPU has float16 tensor cores (Volta and later): where
mixed precision is worth turning on. On a CPU or an older GPU it only costs time."""


def mixed_precision_pays(gpus: list[dict[str, Any]] | None = None) -> bool:
    """Whether mixed precision (``mixed_float16``) speeds training up here: a visible GPU of
    compute capability 7.0 or more (``gpus``: :func:`gpu_details`'s answer, asked when None).
    What notebook 00 reports as ``mixed_precision_useful``."""
    gpus = gpu_details() if gpus is None else gpus
    capability = max((tuple(g.get("compute_capability") or (0, 0)) for g in gpus), default=(0, 0))
    return bool(gpus) and capability >= MIXED_PRECISION_CAPABILITY


def use_mixed_precision(setting: bool | None = None) -> bool:
    """A notebook's ``MIXED_PRECISION`` parameter as ``train``'s ``mixed_precision``: True or
    False as given; None → :func:`mixed_precision_pays` (on where a GPU has tensor cores)."""
    if setting is None:
        return mixed_precision_pays()
    if not isinstance(setting, bool):
        raise ValueError(f"MIXED_PRECISION must be None (automatic), True or False, not {setting!r}.")
    return setting


def environment_info(detailed: bool = False) -> dict[str, Any]:
    """Library versions, device and platform, for ``record["environment"]``.

    ``detailed`` adds the CPU count, every GPU's name, and whether mixed precision (float16
    tensor cores, compute capability ≥ 7.0) and XLA are worth turning on here.
    """
    import cxrlib

    info: dict[str, Any] = {"python": platform.python_version(), "tensorflow": "not installed",
                            "keras": "not installed", "cxrlib": cxrlib.__version__,
                            "numpy": np.__version__, "device": "CPU",
                            "platform": platform.platform()}
    try:
        import keras
        info["keras"] = str(keras.__version__)
        import tensorflow as tf
        info["tensorflow"] = str(tf.__version__)
    except ImportError:
        return info
    gpus = gpu_details()
    if gpus:
        info["device"] = f"GPU: {gpus[0].get('device_name', 'GPU')}"
    if detailed:
        info.update({"cpus": os.cpu_count(), "gpus": [g.get("device_name", "GPU") for g in gpus],
                     "mixed_precision_useful": mixed_precision_pays(gpus),
                     "xla_available": bool(getattr(tf.test, "is_built_with_xla", lambda: True)())})
    return info
