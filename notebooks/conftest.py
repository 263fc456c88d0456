"""nbval over the series: ``CXR_SMOKE=1 pytest --nbval-lax notebooks/``.

Each notebook runs top to bottom in a fresh kernel; with ``CXR_SMOKE=1`` its ``parameters``
cell applies the smoke settings (``apply_smoke``), so results and figures go to
``CXR_SMOKE_DIR`` (default ``outputs/smoke``), never into the course's folders. In smoke
mode this plugin also writes each executed copy, with the outputs nbval saw, to
``<smoke dir>/notebooks/`` (as ``python -m cxrlib notebooks --smoke`` does); a failed cell
keeps its error there.
"""

from __future__ import annotations

import copy
from pathlib import Path

import pytest

_EXECUTED: dict[str, object] = {}   # notebook path → its executed copy (nbformat node)


def _smoke_dir() -> Path | None:
    from cxrlib.course.runner import smoke_parameters, smoke_requested

    return Path(smoke_parameters("00")["RESULTS_DIR"]).parent if smoke_requested() else None


def pytest_report_header(config) -> str | None:
    if config.getoption("nbval_lax", default=False) or config.getoption("nbval", default=False):
        folder = _smoke_dir()
        return (f"cxrlib: smoke mode, results and executed notebooks in {folder}" if folder else
                "cxrlib: the course's settings (hours on a CPU); CXR_SMOKE=1 for smoke mode")
    return None


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    folder = _smoke_dir()
    if call.when != "call" or folder is None or not hasattr(item, "test_outputs"):
        return
    import nbformat

    source = Path(str(item.parent.fspath))
    executed = _EXECUTED.setdefault(str(source), copy.deepcopy(item.parent.nb))
    index = next(i for i, c in enumerate(item.parent.nb.cells) if c is item.cell)
    cell = executed.cells[index]
    cell.outputs = [nbformat.from_dict(dict(o)) for o in (item.test_outputs or [])]
    cell.execution_count = sum(1 for c in executed.cells[:index + 1] if c.cell_type == "code")
    report = outcome.get_result()
    timing = executed.metadata.setdefault("cxrlib", {})
    timing["seconds"] = round(timing.get("seconds", 0) + report.duration, 1)
    if report.failed and not any(o.get("output_type") == "error" for o in cell.outputs):
        cell.outputs.append(nbformat.v4.new_output("error", ename="nbval", evalue=str(report.longrepr)[-2000:],
                                                   traceback=[]))
    out = folder / "notebooks" / source.name
    out.parent.mkdir(parents=True, exist_ok=True)
    nbformat.write(executed, out)
