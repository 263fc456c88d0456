"""The notebook series: committed clean, and each one runs top to bottom in a fresh kernel in
smoke mode (``CXR_SMOKE=1``) and produces what it must (run records, figures, tables), with
no TensorFlow start-up lines or kernel transport warnings in its outputs.

The series runs once, as a reviewer runs it: ``CXR_SMOKE=1 pytest --nbval-lax notebooks/``
(``notebooks/conftest.py`` keeps the executed copies), with the dataset folders pointed at
synthetic copies of the real layouts; the notebooks share one smoke results directory, as
they do for students (``04`` reuses what ``03`` trained).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import nbformat
import pytest

from cxrlib.course.runner import list_notebooks, notebook_dir
from cxrlib.course.setup import COURSE_BACKBONES
from cxrlib.runs.records import find_records, record_json, validate_record
from cxrlib.runs.train import run_dir

NOTEBOOK_DIR = notebook_dir()
NOTEBOOKS = list_notebooks(NOTEBOOK_DIR)
REPO = NOTEBOOK_DIR.parent


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_committed_clean_with_parameters_cell(path: Path) -> None:
    nb = nbformat.read(path, as_version=4)
    code = [c for c in nb.cells if c.cell_type == "code"]
    assert code, "a notebook without code"
    assert "parameters" in code[0].metadata.get("tags", []), "first code cell must be tagged parameters"
    assert all(not c.outputs and c.execution_count is None for c in code), "commit without outputs"
    assert nb.cells[0].cell_type == "markdown" and nb.cells[0].source.lstrip().startswith("#")
    assert "SMOKE = False" in code[0].source, "smoke mode is a parameter"
    assert code[0].source.splitlines()[-1].startswith(f'apply_smoke(globals(), notebook="{path.name[:2]}")'), \
        "the parameters cell ends by applying smoke mode (CXR_SMOKE=1 under nbval)"
    assert not any("smoke_mode(" in c.source or "CXR_SMOKE" in c.source.replace("CXR_SMOKE set to 1", "")
                   for c in code), "smoke mode comes from apply_smoke only: one source of its values"


def test_the_series_is_complete() -> None:
    numbers = [p.name[:2] for p in NOTEBOOKS]
    assert numbers == ["00", "01", "02", "03", "04", "05", "06", "07", "08"]


def test_smoke_parameters_only_where_a_notebook_has_them(tmp_path: Path) -> None:
    from cxrlib.course.runner import notebook_parameters, smoke_parameters

    params = smoke_parameters("05", tmp_path)
    assert params["SMOKE"] is True and params["SCORE_MODELS"] == "scratch"
    assert params["RESULTS_DIR"] == str(tmp_path.resolve() / "results")
    assert "BACKBONE" not in params and smoke_parameters("06", tmp_path)["BACKBONE"] == "scratch"
    for path in NOTEBOOKS:   # every smoke parameter of a notebook names one of its parameters
        known = notebook_parameters(path)
        assert {"SMOKE", "RESULTS_DIR", "FIGURES_DIR"} <= known, path.name
        assert set(smoke_parameters(path.name[:2])) - set(runner_common()) <= known, path.name


def runner_common() -> dict:
    from cxrlib.course.runner import SMOKE_COMMON

    return {**SMOKE_COMMON, "RESULTS_DIR": "", "FIGURES_DIR": ""}


@pytest.fixture(scope="module")
def series(tmp_path_factory) -> dict:
    """``CXR_SMOKE=1 pytest --nbval-lax notebooks/`` once, with the four dataset folders pointed
    at small synthetic copies of the real layouts (Radiography v4 as COVID_DIR, v3 as
    EXTERNAL_DIR, Kermany, SIIM): every notebook runs once, in order, in a fresh kernel,
    sharing one results directory as for a student."""
    from cxrlib.course.layouts import write_layouts

    root = tmp_path_factory.mktemp("series")
    folders = write_layouts(root / "data", per_class=12, size=96)
    smoke = root / "out" / "smoke"
    env = {**os.environ, "CXR_SMOKE": "1", "CXR_SMOKE_DIR": str(smoke),
           **{k: str(v) for k, v in folders.items()}}
    command = [sys.executable, "-m", "pytest", "--nbval-lax", "-q", "-p", "no:cacheprovider",
               str(NOTEBOOK_DIR)]
    done = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, timeout=3600)
    timings = {p.name: nbformat.read(p, as_version=4).metadata.get("cxrlib", {}).get("seconds")
               for p in sorted((smoke / "notebooks").glob("*.ipynb"))}
    (root / "timings.json").write_text(json.dumps(timings, indent=1))
    return {"root": root / "out", "returncode": done.returncode, "log": done.stdout[-3000:] + done.stderr[-3000:],
            "timings": timings}


# What a quiet start-up never shows (cxrlib/quiet.py; the kernels' transport in cxrlib/course/runner.py).
NOISE = ("oneDNN", "cuda_platform", "cudart_stub", "absl::InitializeLog", "without encryption")


def noise_in(text: str) -> list[str]:
    """The lines of ``text`` with a :data:`NOISE` marker."""
    return [line for line in text.splitlines() if any(marker in line for marker in NOISE)]


def output_text(cells) -> str:
    """Every stream and error output of ``cells``, as text."""
    parts = []
    for cell in cells:
        for output in cell.get("outputs", []):
            parts.append(output.get("text", "") if output.get("output_type") == "stream"
                         else "\n".join(output.get("traceback", []) + [output.get("evalue", "")]))
    return "\n".join(parts)


def test_apply_smoke_sets_only_the_cells_names(tmp_path: Path, monkeypatch) -> None:
    from cxrlib.course.setup import apply_smoke

    namespace = {"IMAGE_SIZE": 224, "RESULTS_DIR": "../outputs/results", "FIGURES_DIR": "../figures",
                 "SMOKE": False, "SCORE_MODELS": "scratch,fine-tuned"}
    monkeypatch.delenv("CXR_SMOKE", raising=False)
    apply_smoke(namespace, notebook="05")
    assert namespace["IMAGE_SIZE"] == 224 and namespace["SMOKE"] is False
    monkeypatch.setenv("CXR_SMOKE", "1")
    monkeypatch.setenv("CXR_SMOKE_DIR", str(tmp_path))
    apply_smoke(namespace, notebook="05")
    assert namespace["SMOKE"] is True and namespace["IMAGE_SIZE"] == 64
    assert namespace["SCORE_MODELS"] == "scratch"          # the notebook's own smoke entry
    assert namespace["RESULTS_DIR"] == str(tmp_path.resolve() / "results")   # never the course's
    assert "EPOCHS" not in namespace and "BOOTSTRAP" not in namespace        # not the cell's names


def test_make_notebooks_passes_the_dataset_folders() -> None:
    dry = subprocess.run(["make", "-C", str(REPO), "-n", "notebooks", "COVID_DIR=/c", "KERMANY_DIR=/k",
                          "SIIM_DIR=/s", "EXTERNAL_DIR=/e", "PRESET=siim"], capture_output=True, text=True)
    assert "COVID_DIR=/c KERMANY_DIR=/k SIIM_DIR=/s EXTERNAL_DIR=/e" in dry.stdout
    assert "--preset siim" in dry.stdout


def _expectations(number: str, results: Path) -> None:
    """What each notebook must leave behind, beyond running without an error."""
    if number == "02":
        assert (results / "split.csv").is_file()
    if number == "03":
        for variant in ("v0", "v1", "v2", "v2reg", "v3"):
            assert (run_dir(results, "densenet121", variant) / "record.json").is_file(), variant
    if number == "04":
        for backbone in COURSE_BACKBONES:
            assert (run_dir(results, backbone, "frozen") / "record.json").is_file(), backbone
    if number in ("06", "07", "08"):   # every run of the notebook's course preset, with its record
        from cxrlib.course.presets import NOTEBOOK_PRESETS, get_preset

        runs = {(r.dataset.preset, r.dataset.run) for r in find_records(results)}
        for name in NOTEBOOK_PRESETS[number]:
            assert {(name, key) for key in get_preset(name).keys()} <= runs, name
    if number in ("03", "04", "06", "07", "08"):
        records = find_records(results)
        assert records and all(validate_record(record_json(r)) == [] for r in records)


@pytest.mark.slow
def test_the_series_passes_under_nbval(series: dict) -> None:
    assert series["returncode"] == 0, series["log"]


@pytest.mark.slow
@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_notebook_runs_in_smoke_mode(path: Path, series: dict) -> None:
    executed = series["root"] / "smoke" / "notebooks" / path.name
    assert executed.is_file(), f"{path.name} did not run:\n{series['log']}"
    cells = nbformat.read(executed, as_version=4).cells
    errors = [o for c in cells if c.cell_type == "code" for o in c.get("outputs", [])
              if o.get("output_type") == "error"]
    assert not errors, output_text(cells)[-3000:]
    assert all(c.get("execution_count") for c in cells if c.cell_type == "code"), series["log"]
    assert not noise_in(output_text(cells)), noise_in(output_text(cells))
    number = path.name[:2]
    smoke = series["root"] / "smoke"
    figures = list((smoke / "figures").rglob(f"{number}_*.png"))
    assert figures, f"notebook {number} saved no figure"
    assert all(f.stat().st_size > 1000 for f in figures)
    _expectations(number, smoke / "results")
