"""Run the notebook series headlessly with papermill (``python -m cxrlib notebooks``).

Each notebook executes in a fresh kernel with the working directory set to ``notebooks/``,
so it behaves exactly as when a student opens it. Executed copies (with outputs) go to an
output folder; the committed notebooks stay output-free.

Smoke mode (``--smoke`` or ``CXR_SMOKE=1``) has its values here and nowhere else
(:func:`smoke_parameters`): the runner injects them as papermill parameters, and the last line
of each notebook's parameters cell (:func:`cxrlib.course.setup.apply_smoke`) applies them when
``CXR_SMOKE=1`` in a kernel the runner did not start (nbval). A student opening a notebook in
Jupyter gets the course as taught.
"""

from __future__ import annotations

import ast
import logging
import os
import time
from pathlib import Path
from typing import Any, Sequence

from cxrlib.environment import env_flag, env_path

log = logging.getLogger(__name__)

SMOKE_DIR = Path("outputs") / "smoke"   # relative to the working folder, as the Makefile's


def notebook_dir() -> Path:
    """The course's notebooks: ``$CXR_NOTEBOOKS`` when set, else the ``notebooks/`` folder of
    the checkout cxrlib runs from (an installed package has none: set the variable, or pass
    ``folder``)."""
    return env_path("CXR_NOTEBOOKS") or Path(__file__).resolve().parents[2] / "notebooks"

# Smoke mode: about a minute per notebook on a CPU. Applied to every notebook that has the
# parameter, then the notebook's own entries; what the caller passes with -p wins over both.
SMOKE_COMMON: dict[str, Any] = {"SMOKE": True, "IMAGE_SIZE": 64, "SAMPLES_PER_CLASS": 12,
                                "EPOCHS": 1, "WEIGHTS": None, "BOOTSTRAP": 100}
SMOKE_BY_NOTEBOOK: dict[str, dict[str, Any]] = {
    "04": {"FINETUNE_BACKBONES": "densenet121"},   # frozen for all five, fine-tuned for one
    "05": {"N_EXAMPLES": 2, "MAX_N": 4, "SMOOTH_SAMPLES": 3, "SCORE_IMAGES": 6, "SCRATCH_EPOCHS": 2,
           "SHORTCUT_PER_CLASS": 12, "SHORTCUT_EPOCHS": 2, "SCORE_MODELS": "scratch"},
    # building a pretrained backbone's graph alone takes a minute on a CPU: the scratch CNN
    "06": {"BACKBONE": "scratch"},
    "07": {"BACKBONE": "scratch"},
}


def smoke_requested(smoke: bool = False) -> bool:
    """``smoke`` or ``CXR_SMOKE=1`` in the environment."""
    return smoke or env_flag("CXR_SMOKE")


def smoke_parameters(number: str, smoke_dir: str | Path | None = None) -> dict[str, Any]:
    """The papermill parameters that put notebook ``number`` in smoke mode.

    Results and figures go to ``smoke_dir`` (default ``CXR_SMOKE_DIR``, else ``outputs/smoke``),
    never into the course's folders.
    """
    folder = (env_path("CXR_SMOKE_DIR", smoke_dir) or SMOKE_DIR).resolve()
    return {**SMOKE_COMMON, "RESULTS_DIR": str(folder / "results"),
            "FIGURES_DIR": str(folder / "figures"), **SMOKE_BY_NOTEBOOK.get(number, {})}


def dataset_folders() -> dict[str, str]:
    """``COVID_DIR``, ``KERMANY_DIR``, ``SIIM_DIR``, ``EXTERNAL_DIR`` from the environment, as
    parameters (a ``-p`` of the same name wins)."""
    from cxrlib.course.presets import FOLDER_VARIABLES

    return {v: os.environ[v] for v in FOLDER_VARIABLES.values() if os.environ.get(v)}


def notebook_parameters(path: str | Path) -> set[str]:
    """The names defined in a notebook's ``parameters`` cell."""
    return set(notebook_defaults(path))


def notebook_defaults(path: str | Path) -> dict[str, Any]:
    """A notebook's parameters with their defaults as values (``...`` for a default that is an
    expression rather than a literal)."""
    import papermill

    _quiet_papermill()
    defaults = {}
    for name, spec in papermill.inspect_notebook(str(path)).items():
        try:
            defaults[name] = ast.literal_eval(spec["default"])
        except (ValueError, SyntaxError, TypeError):
            defaults[name] = ...
    return defaults


def _quiet_papermill() -> None:
    """papermill's own INFO lines ("Input Notebook: …", logged by every inspection and run)
    off, unless the runner logs at DEBUG: the runner says which notebook runs."""
    if not log.isEnabledFor(logging.DEBUG):
        logging.getLogger("papermill").setLevel(logging.WARNING)


class NotebookFailed(RuntimeError):
    """A notebook that raised while it ran: the message names it, the cell, the error, and the
    executed copy to open. Not a user error (the CLI exits 1), not a bug in the runner."""


#: What a parameters cell's default says a value must be, in words, by the default's type.
_KINDS: dict[type, str] = {bool: "True or False", int: "a whole number", float: "a number",
                           str: "text"}


def _fits(value: Any, default: Any) -> bool:
    """Whether ``value`` can stand where a parameters cell has ``default`` (``None`` always can;
    a default that is None, an expression or a container says nothing)."""
    if value is None or default is None or type(default) not in _KINDS:
        return True
    if isinstance(default, float):
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    return type(value) is type(default)


def _as_default_type(value: Any, defaults: list[Any]) -> Any:
    """A number given where the parameters cells hold text, as that text (``-p RESULTS_DIR 2024``)."""
    if isinstance(value, (int, float)) and not isinstance(value, bool) and any(
            isinstance(d, str) for d in defaults):
        return str(value)
    return value


def check_parameters(paths: Sequence[Path], given: dict[str, Any]) -> dict[str, Any]:
    """``given`` (the caller's parameters) checked against the parameters cells of ``paths``
    before anything runs; returns them with numbers turned into text where the cells hold text.

    Raises :class:`InputError` for a name that no notebook of the run defines (with the closest
    ones), or a value of another type than the cells' default (a number for ``EPOCHS = 20``).
    """
    import difflib

    from cxrlib.errors import InputError

    defaults = {path.name: notebook_defaults(path) for path in paths}
    known = sorted({name for cell in defaults.values() for name in cell})
    unknown = [name for name in given if name not in known]
    if unknown:
        parts = []
        for name in unknown:
            close = difflib.get_close_matches(name, known, n=3, cutoff=0.6)
            parts.append(f"{name} (did you mean {' or '.join(close)}?)" if close else name)
        listed = "" if all("did you mean" in part for part in parts) else f" (theirs: {', '.join(known)})"
        raise InputError(f"No notebook of this run has the parameter {', '.join(parts)}; check "
                         f"-p{listed}.")
    checked = {}
    for name, value in given.items():
        value = _as_default_type(value, [cell[name] for cell in defaults.values() if name in cell])
        for notebook, cell in defaults.items():
            if name in cell and not _fits(value, cell[name]):
                kind = _KINDS[type(cell[name])]
                raise InputError(f"-p {name} {value!r}: {notebook}'s parameters cell has {name} = "
                                 f"{cell[name]!r}, {kind}; give {kind} (or none).")
        checked[name] = value
    return checked


def check_data_folders(paths: Sequence[Path], given: dict[str, Any]) -> None:
    """Refuse a dataset folder (``COVID_DIR`` …, from -p or the environment) that does not exist,
    and say on the terminal which notebooks fall back to synthetic data for want of one."""
    from cxrlib.course.presets import FOLDER_VARIABLES
    from cxrlib.errors import InputError

    from_env = dataset_folders()
    names = {path.name[:2]: notebook_parameters(path) for path in paths}
    for variable in FOLDER_VARIABLES.values():
        users = [number for number, known in names.items() if variable in known]
        if not users:
            continue
        source = "-p" if variable in given else "the environment variable"
        value = given[variable] if variable in given else from_env.get(variable)
        if value is None:
            which = f"notebooks {', '.join(users)} use" if len(users) > 1 else f"notebook {users[0]} uses"
            print(f"No {variable} given: {which} synthetic data (-p {variable} FOLDER, or the "
                  f"{variable} variable, for the real dataset).", flush=True)
        elif not Path(str(value)).expanduser().is_dir():
            raise InputError(f"{source} {variable} {value}: no such folder. Give the dataset's "
                             f"folder, or leave {variable} out for synthetic data.")


def run_notebook(path: str | Path, out_dir: str | Path, parameters: dict | None = None,
                 smoke: bool = False, timeout: int = 3600) -> dict:
    """Execute one notebook with papermill; returns {"notebook", "output", "seconds", "parameters"}.

    In smoke mode the smoke parameters the notebook defines are injected under ``parameters``.
    """
    import papermill

    path = Path(path).resolve()
    out = Path(out_dir).resolve() / path.name
    out.parent.mkdir(parents=True, exist_ok=True)
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # the kernel inherits it: quiet TF start-up
    _quiet_papermill()
    known = notebook_parameters(path)
    injected = {**(smoke_parameters(path.name[:2]) if smoke_requested(smoke) else {}),
                **dataset_folders(), **(parameters or {})}
    unused = sorted(set(injected) - known)
    if unused:   # the series shares one set of parameters; each notebook takes its own
        log.debug("%s has no parameter %s: not passed.", path.name, ", ".join(unused))
    injected = {k: v for k, v in injected.items() if k in known}
    started = time.time()
    try:
        papermill.execute_notebook(str(path), str(out), parameters=injected, cwd=str(path.parent),
                                   kernel_name="python3", progress_bar=False,
                                   execution_timeout=timeout, **kernel_options())
    except papermill.PapermillExecutionError as error:
        from cxrlib.text import one_line

        raise NotebookFailed(f"{path.name} failed in cell {error.cell_index} ({error.ename}: "
                             f"{one_line(error.evalue, 300)}); open {out} to see the cell and "
                             "its traceback.") from None
    return {"notebook": path.name, "output": str(out), "seconds": round(time.time() - started, 1),
            "parameters": injected}


def kernel_options() -> dict[str, Any]:
    """papermill's kernel settings: the kernel's channels encrypted (CurveZMQ, which the
    kernel then does not warn about as "running over TCP without encryption"); where pyzmq
    has no CurveZMQ, the kernel's own log at errors only, for the same warning."""
    import zmq
    from traitlets.config import Config

    if zmq.has("curve"):
        return {"config": Config({"KernelManager": {"transport_encryption": "auto"}})}
    return {"extra_arguments": ["--IPKernelApp.log_level=ERROR"]}


def list_notebooks(folder: str | Path | None = None, only: Sequence[str] | None = None) -> list[Path]:
    """The numbered notebooks (``NN_name.ipynb``) in ``folder`` (default :func:`notebook_dir`),
    in order; ``only`` filters by number prefix."""
    folder = Path(folder) if folder else notebook_dir()
    found = sorted(p for p in Path(folder).glob("[0-9][0-9]_*.ipynb"))
    if only:
        found = [p for p in found if any(p.name.startswith(str(o).zfill(2)) for o in only)]
    if not found:
        raise FileNotFoundError(f"No numbered notebooks in {folder} (filter: {only}); "
                                "set CXR_NOTEBOOKS to the course's notebooks folder.")
    return found


def run_series(out_dir: str | Path, only: Sequence[str] | None = None, smoke: bool = False,
               parameters: dict | None = None, folder: str | Path | None = None,
               preset: str | None = None) -> list[dict]:
    """Run every numbered notebook in order (stopping at the first failure: :class:`NotebookFailed`).

    ``preset`` runs the notebooks of that course preset (those of ``only`` if given) with
    ``PRESET`` set to it. The parameters and the dataset folders are checked before the first
    notebook starts (:func:`check_parameters`, :func:`check_data_folders`).
    """
    from cxrlib.course.presets import get_preset, notebooks_of

    if preset:
        get_preset(preset)
        only = only or notebooks_of(preset)
    paths = list_notebooks(folder, only)
    parameters = check_parameters(paths, dict(parameters or {}))
    check_data_folders(paths, parameters)
    if preset:
        parameters["PRESET"] = preset
    results = []
    for path in paths:
        print(f"▶ {path.name}", flush=True)
        result = run_notebook(path, out_dir, parameters, smoke)
        print(f"  done in {result['seconds']} s → {result['output']}", flush=True)
        results.append(result)
    return results
