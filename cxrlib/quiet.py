"""A quiet TensorFlow start-up: no C++ start-up lines in the terminal or in a notebook.

TensorFlow 2.20+ writes its start-up lines (``oneDNN custom operations are on``, ``Could not
find cuda drivers``, ``failed call to cuInit``, absl's ``All log messages before
absl::InitializeLog()``) from C++ static initialisers and the first device query, straight to
file descriptor 2, before ``TF_CPP_MIN_LOG_LEVEL`` is read. No environment variable turns them
off, so :func:`install` (called when ``cxrlib`` is imported) hooks the import of
``tensorflow``: while it loads and first lists its devices, descriptor 2 goes to a temporary
file; afterwards every line that is not one of :data:`STARTUP_NOISE` is written to the real
stderr, so a real warning or error during the import still shows.

It also sets ``TF_CPP_MIN_LOG_LEVEL=2`` (unless set), which TensorFlow does honour after its
start-up: no INFO or WARNING lines from C++ while it runs, errors still shown. A child process
(a notebook kernel) inherits it.
"""

from __future__ import annotations

import importlib.abc
import importlib.util
import os
import re
import sys
import tempfile
from pathlib import Path

# What TensorFlow prints on every start on a CPU machine, and nothing else.
STARTUP_NOISE = re.compile("|".join([
    r"All log messages before absl::InitializeLog\(\) is called are written to STDERR",
    r"port\.cc:\d+\] oneDNN custom operations are on",
    r"cudart_stub\.cc:\d+\] Could not find cuda drivers",
    r"cpu_feature_guard\.cc:\d+\] This TensorFlow binary is optimized",
    r"^To enable the following instructions: .* rebuild TensorFlow with the appropriate compiler flags",
    r"Unable to register cu(DNN|FFT|BLAS) factory: Attempting to register factory",
    r"computation_placer\.cc:\d+\] computation placer already registered",
]))
# cuInit fails on a machine without an NVIDIA driver: noise there, news where a GPU is present.
NO_GPU_CUINIT = re.compile(r"cuda_(platform|driver|executor)\.cc:\d+\] failed call to cuInit")


def _has_nvidia_device() -> bool:
    return Path("/dev/nvidiactl").exists() or Path("/proc/driver/nvidia").exists()


def is_startup_noise(line: str, gpu_present: bool | None = None) -> bool:
    """Whether ``line`` is one of TensorFlow's start-up lines (the cuInit failure only when
    this machine has no NVIDIA device)."""
    if STARTUP_NOISE.search(line):
        return True
    if NO_GPU_CUINIT.search(line):
        return not (_has_nvidia_device() if gpu_present is None else gpu_present)
    return False


class _QuietStderr:
    """Descriptor 2 into a temporary file for a while; then the lines that are not start-up
    noise to the real stderr."""

    def __enter__(self) -> "_QuietStderr":
        self.saved = None
        try:
            sys.stderr.flush()
            self.file = tempfile.TemporaryFile(mode="w+b")
            self.saved = os.dup(2)
            os.dup2(self.file.fileno(), 2)
        except (OSError, ValueError, AttributeError):   # no usable descriptor 2: leave it alone
            self.saved = None
        return self

    def __exit__(self, *exc) -> None:
        if self.saved is None:
            return
        try:
            sys.stderr.flush()
        except (OSError, ValueError, AttributeError):
            pass
        os.dup2(self.saved, 2)
        os.close(self.saved)
        self.file.seek(0)
        text = self.file.read().decode("utf-8", errors="replace")
        self.file.close()
        kept = [line for line in text.splitlines(keepends=True) if not is_startup_noise(line)]
        if kept:
            os.write(2, "".join(kept).encode("utf-8"))


class _QuietLoader(importlib.abc.Loader):
    """Loads ``tensorflow`` with :class:`_QuietStderr` around it and its first device query."""

    def __init__(self, loader: importlib.abc.Loader) -> None:
        self.loader = loader

    def create_module(self, spec):
        return self.loader.create_module(spec)

    def exec_module(self, module) -> None:
        with _QuietStderr():
            self.loader.exec_module(module)
            try:   # cuInit runs, and complains, at the first device query
                module.config.list_physical_devices()
            except Exception:  # noqa: BLE001 - a device problem shows later, where it matters
                pass

    def __getattr__(self, name: str):
        return getattr(self.loader, name)


class _TensorFlowFinder(importlib.abc.MetaPathFinder):
    """Hands the import of ``tensorflow`` (once) to :class:`_QuietLoader`."""

    def find_spec(self, fullname, path, target=None):
        if fullname != "tensorflow":
            return None
        sys.meta_path[:] = [f for f in sys.meta_path if f is not self]
        spec = importlib.util.find_spec(fullname)
        if spec is not None and spec.loader is not None:
            spec.loader = _QuietLoader(spec.loader)
        return spec


def install() -> None:
    """``TF_CPP_MIN_LOG_LEVEL=2`` unless set, and a quiet ``import tensorflow`` (unless it is
    imported already, or ``CXR_TF_STARTUP_LOG=1`` asks for the start-up lines)."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    if "tensorflow" in sys.modules or os.environ.get("CXR_TF_STARTUP_LOG", "") not in ("", "0"):
        return
    if not any(isinstance(f, _TensorFlowFinder) for f in sys.meta_path):
        sys.meta_path.insert(0, _TensorFlowFinder())
