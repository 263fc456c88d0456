"""The package's shape: no module over :data:`MAX_LINES` lines, a flat public API that imports
cheaply (no TensorFlow, no Keras), and notebook 05 importing from at most four cxrlib modules."""

from __future__ import annotations

import ast
import importlib
import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "cxrlib"
MAX_LINES = 500
#: Modules still to split along their concerns (issue 21), each held to its size today so that
#: none grows; remove a module from here once it is split.
NOT_YET_SPLIT: dict[str, int] = {}


def line_count(path: Path) -> int:
    return len(path.read_text(encoding="utf-8").splitlines())


@pytest.mark.parametrize("path", sorted(PACKAGE.rglob("*.py")), ids=lambda p: str(p.relative_to(PACKAGE)))
def test_no_module_is_over_the_limit(path: Path) -> None:
    name = path.relative_to(PACKAGE).as_posix()
    limit = NOT_YET_SPLIT.get(name, MAX_LINES)
    assert line_count(path) <= limit, (f"cxrlib/{name} has {line_count(path)} lines (at most {limit}): "
                                       "split it along its concerns, into modules named for what they do")


def test_the_not_yet_split_list_is_current() -> None:
    """An entry that is gone, or back under the limit, leaves the list."""
    stale = sorted(n for n in NOT_YET_SPLIT
                   if not (PACKAGE / n).is_file() or line_count(PACKAGE / n) <= MAX_LINES)
    assert not stale, f"remove from NOT_YET_SPLIT: {stale}"


def test_the_limit_can_fail(tmp_path: Path) -> None:
    long = tmp_path / "long.py"
    long.write_text("x = 1\n" * (MAX_LINES + 1))
    assert line_count(long) > MAX_LINES


@pytest.mark.parametrize("package", ["cxrlib", "cxrlib.course"])
def test_every_public_name_resolves(package: str) -> None:
    module = importlib.import_module(package)
    assert set(module.API) <= set(dir(module))
    for name, source in module.API.items():
        value = getattr(module, name)
        assert value is not None and (importlib.import_module(source) is value
                                      or getattr(importlib.import_module(source), name) is value)
    with pytest.raises(AttributeError):
        module.no_such_name  # noqa: B018


@pytest.mark.parametrize("package", ["cxrlib", "cxrlib.course"])
def test_no_public_name_is_shadowed_by_a_submodule(package: str) -> None:
    """Importing ``package.x`` sets the attribute ``x`` to that module, so a public name ``x``
    must be that module itself, never a function of the same name."""
    module = importlib.import_module(package)
    folder = Path(module.__file__).parent
    submodules = {p.stem for p in folder.glob("*.py")} | {p.name for p in folder.iterdir() if (p / "__init__.py").is_file()}
    shadowed = sorted(n for n, source in module.API.items() if n in submodules and source != f"{package}.{n}")
    assert not shadowed


def test_import_cxrlib_is_cheap() -> None:
    """``import cxrlib`` and ``import cxrlib.course`` load neither TensorFlow nor Keras."""
    code = ("import sys, json, cxrlib, cxrlib.course; "
            "print(json.dumps(sorted(m for m in ('tensorflow', 'keras', 'matplotlib') if m in sys.modules)))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=ROOT)
    assert json.loads(out.stdout.strip().splitlines()[-1]) == []


def notebook_modules(path: Path) -> set[str]:
    """The cxrlib modules a notebook's code cells import from (``from a import b``: ``a.b`` when
    that is a module, else ``a``)."""
    cells = [c for c in json.loads(path.read_text(encoding="utf-8"))["cells"] if c["cell_type"] == "code"]
    found = set()
    for cell in cells:
        source = "".join(cell["source"])
        source = "\n".join(line for line in source.splitlines() if not line.lstrip().startswith(("%", "!")))
        for node in ast.walk(ast.parse(source)):
            if isinstance(node, ast.Import):
                found.update(a.name for a in node.names if a.name.startswith("cxrlib"))
            elif isinstance(node, ast.ImportFrom) and (node.module or "").startswith("cxrlib"):
                for alias in node.names:
                    sub = f"{node.module}.{alias.name}"
                    is_module = (PACKAGE.parent / sub.replace(".", "/")).with_suffix(".py").is_file() or \
                        (PACKAGE.parent / sub.replace(".", "/") / "__init__.py").is_file()
                    found.add(sub if is_module else node.module)
    return found


def test_notebook_05_imports_from_at_most_four_modules() -> None:
    modules = notebook_modules(ROOT / "notebooks" / "05_heatmaps.ipynb")
    assert "cxrlib" in modules and len(modules) <= 4, sorted(modules)
