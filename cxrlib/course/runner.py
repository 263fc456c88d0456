"""Run the notebook series headlessly with papermill (``python -m cxrlib notebooks``).

Each notebook executes in a fresh kernel with the working directory set to ``notebooks/``,
so it behaves exactly as when a student opens it. Executed copies (with outputs) go to an
output folder; the committed notebooks stay output-free.
"""

from __future__ import annotations

import logging
import os
import time
from pathlib import Path
from typing import Sequence

log = logging.getLogger(__name__)

NOTEBOOK_DIR = Path(__file__).resolve().parents[2] / "notebooks"   # cxrlib/course/ → repo root


def list_notebooks(folder: str | Path = NOTEBOOK_DIR, only: Sequence[str] | None = None) -> list[Path]:
    """The numbered notebooks (``NN_name.ipynb``) in order; ``only`` filters by number prefix."""
    found = sorted(p for p in Path(folder).glob("[0-9][0-9]_*.ipynb"))
    if only:
        found = [p for p in found if any(p.name.startswith(str(o).zfill(2)) for o in only)]
    if not found:
        raise FileNotFoundError(f"No numbered notebooks in {folder} (filter: {only}).")
    return found


def run_notebook(path: str | Path, out_dir: str | Path, parameters: dict | None = None,
                 smoke: bool = False, timeout: int = 3600) -> dict:
    """Execute one notebook with papermill; returns {"notebook", "output", "seconds"}."""
    import papermill

    path = Path(path).resolve()
    out = Path(out_dir).resolve() / path.name
    out.parent.mkdir(parents=True, exist_ok=True)
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # the kernel inherits it: quiet TF start-up
    previous = os.environ.get("CXR_SMOKE")
    if smoke:
        os.environ["CXR_SMOKE"] = "1"
    started = time.time()
    try:
        papermill.execute_notebook(str(path), str(out), parameters=parameters or {},
                                   cwd=str(path.parent), kernel_name="python3",
                                   progress_bar=False, execution_timeout=timeout)
    finally:
        if smoke:
            if previous is None:
                os.environ.pop("CXR_SMOKE", None)
            else:
                os.environ["CXR_SMOKE"] = previous
    return {"notebook": path.name, "output": str(out), "seconds": round(time.time() - started, 1)}


def run_series(out_dir: str | Path, only: Sequence[str] | None = None, smoke: bool = False,
               parameters: dict | None = None, folder: str | Path = NOTEBOOK_DIR) -> list[dict]:
    """Run every numbered notebook in order (stopping at the first failure)."""
    results = []
    for path in list_notebooks(folder, only):
        print(f"▶ {path.name}", flush=True)
        result = run_notebook(path, out_dir, parameters, smoke)
        print(f"  done in {result['seconds']} s → {result['output']}", flush=True)
        results.append(result)
    return results
