"""What this process runs on: library versions, devices, and what the GPU options would do.

The one place cxrlib asks TensorFlow about devices; run records and notebook 00 read it.
"""

from __future__ import annotations

import logging
import os
import platform
from typing import Any

import numpy as np

log = logging.getLogger(__name__)


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
        capability = max((tuple(g.get("compute_capability", (0, 0))) for g in gpus), default=(0, 0))
        info.update({"cpus": os.cpu_count(), "gpus": [g.get("device_name", "GPU") for g in gpus],
                     "mixed_precision_useful": bool(gpus) and capability >= (7, 0),
                     "xla_available": bool(getattr(tf.test, "is_built_with_xla", lambda: True)())})
    return info
