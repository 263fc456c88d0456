"""A quiet start-up (cxrlib/quiet.py, the kernels' transport in cxrlib/course/runner.py): no
TensorFlow start-up lines and no kernel transport warning in a CLI command's output or in an
executed notebook; real warnings and errors still show; ``cxr --help`` imports no TensorFlow."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import nbformat
import pytest

from cxrlib import quiet

REPO = Path(__file__).resolve().parents[1]
NOISE = ("oneDNN", "cuda_platform", "cudart_stub", "absl::InitializeLog", "without encryption")
STARTUP = """WARNING: All log messages before absl::InitializeLog() is called are written to STDERR
I0000 00:00:1796284652.385776    4254 port.cc:153] oneDNN custom operations are on. You may see slightly different numerical results.
I0000 00:00:1796284652.386734    4254 cudart_stub.cc:31] Could not find cuda drivers on your machine, GPU will not be used.
E0000 00:00:1796284656.425042    4254 cuda_platform.cc:52] failed call to cuInit: INTERNAL: CUDA error: Failed call to cuInit: UNKNOWN ERROR (303)
"""


def _noise(text: str) -> list[str]:
    return [line for line in text.splitlines() if any(marker in line for marker in NOISE)]


def _cli(*args: str, cwd: Path = REPO, timeout: int = 600) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k not in ("TF_CPP_MIN_LOG_LEVEL", "CXR_TF_STARTUP_LOG")}
    return subprocess.run([sys.executable, "-m", "cxrlib", *args], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=timeout)


def test_startup_lines_are_dropped_and_other_lines_kept(capfd, monkeypatch) -> None:
    monkeypatch.setattr(quiet, "_has_nvidia_device", lambda: False)
    with quiet._QuietStderr():
        os.write(2, STARTUP.encode())
        os.write(2, b"E0000 00:00:1 some_op.cc:12] a real error\n")
        print("a warning from Python", file=sys.stderr)
    err = capfd.readouterr().err
    assert not _noise(err)
    assert "a real error" in err and "a warning from Python" in err


def test_a_failed_cuinit_shows_where_there_is_a_gpu() -> None:
    line = STARTUP.splitlines()[3]
    assert quiet.is_startup_noise(line, gpu_present=False)
    assert not quiet.is_startup_noise(line, gpu_present=True)
    assert not quiet.is_startup_noise("W0000 something else went wrong")


def test_cxr_help_imports_no_tensorflow() -> None:
    code = ("import sys\nfrom cxrlib.apps.cli import build_parser\nbuild_parser().format_help()\n"
            "print(sorted(m for m in ('tensorflow', 'keras', 'IPython', 'papermill', 'pytest') if m in sys.modules))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"


@pytest.mark.slow
def test_a_cli_command_that_imports_tensorflow_is_quiet(tmp_path: Path) -> None:
    data = tmp_path / "synthetic"
    assert _cli("synth", str(data), "--per-class", "6", "--size", "64", "--quiet").returncode == 0
    done = _cli("train", "--data", str(data), "--backbone", "scratch", "--variant", "scratch",
                "--weights", "none", "--image-size", "32", "--epochs", "1", "--out", str(tmp_path / "run"))
    output = done.stdout + done.stderr
    assert done.returncode == 0, output[-3000:]
    assert (tmp_path / "run" / "record.json").is_file()
    assert not _noise(output), _noise(output)


@pytest.mark.slow
def test_the_notebook_runner_and_its_kernel_are_quiet(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("CXR_SMOKE_DIR", str(tmp_path / "smoke"))
    done = _cli("notebooks", "--smoke", "--only", "00", "--out", str(tmp_path / "notebooks"))
    output = done.stdout + done.stderr
    assert done.returncode == 0, output[-3000:]
    assert not _noise(output), _noise(output)
    assert "Input Notebook" not in output, output   # papermill's INFO lines: the runner says it
    cells = nbformat.read(tmp_path / "notebooks" / "00_setup_and_data.ipynb", as_version=4).cells
    streams = "".join(o.get("text", "") for c in cells for o in c.get("outputs", []))
    assert streams and not _noise(streams), _noise(streams)
