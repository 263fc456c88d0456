"""The notebook series: committed clean, and each one runs top to bottom in a fresh kernel in
smoke mode (``CXR_SMOKE=1``) and produces what it must (run records, figures, tables).

The notebooks run in order and share one smoke results directory, as they do for students:
``04`` reuses what ``03`` trained.
"""

from __future__ import annotations

import json
from pathlib import Path

import nbformat
import pytest

from cxrlib.course.setup import COURSE_BACKBONES
from cxrlib.runs.records import find_records, validate_record
from cxrlib.course.runner import NOTEBOOK_DIR, list_notebooks, run_notebook
from cxrlib.runs.train import run_dir

NOTEBOOKS = list_notebooks(NOTEBOOK_DIR)


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_committed_clean_with_parameters_cell(path: Path) -> None:
    nb = nbformat.read(path, as_version=4)
    code = [c for c in nb.cells if c.cell_type == "code"]
    assert code, "a notebook without code"
    assert "parameters" in code[0].metadata.get("tags", []), "first code cell must be tagged parameters"
    assert all(not c.outputs and c.execution_count is None for c in code), "commit without outputs"
    assert nb.cells[0].cell_type == "markdown" and nb.cells[0].source.lstrip().startswith("#")
    assert "CXR_SMOKE" in "".join(c.source for c in code[:2]) or "smoke_mode" in code[1].source


def test_the_series_is_complete() -> None:
    numbers = [p.name[:2] for p in NOTEBOOKS]
    assert numbers == ["00", "01", "02", "03", "04", "05", "06", "07"]


@pytest.fixture(scope="module")
def smoke_dir(tmp_path_factory) -> Path:
    """One results/figures directory shared by the whole series, as for a student."""
    return tmp_path_factory.mktemp("smoke")


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
    if number in ("03", "04", "06", "07"):
        records = find_records(results)
        assert records and all(validate_record(r) == [] for r in records)


@pytest.mark.slow
@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_notebook_runs_in_smoke_mode(path: Path, smoke_dir: Path, monkeypatch) -> None:
    monkeypatch.setenv("CXR_SMOKE_DIR", str(smoke_dir))
    result = run_notebook(path, smoke_dir / "executed", smoke=True, timeout=900)
    executed = nbformat.read(result["output"], as_version=4)
    errors = [o for c in executed.cells if c.cell_type == "code" for o in c.get("outputs", [])
              if o.get("output_type") == "error"]
    assert not errors
    number = path.name[:2]
    figures = list((smoke_dir / "figures").rglob(f"{number}_*.png"))
    assert figures, f"notebook {number} saved no figure"
    assert all(f.stat().st_size > 1000 for f in figures)
    _expectations(number, smoke_dir / "results")
    timings = smoke_dir / "timings.json"
    seen = json.loads(timings.read_text()) if timings.exists() else {}
    timings.write_text(json.dumps({**seen, path.name: result["seconds"]}, indent=1))
