"""The package's layers, as a test: the library never imports the course, and each library
layer imports only the layers below it.

    base  →  data  →  models  →  runs  →  explain  →  apps  →  course

The base holds what every layer may use: ``files``, ``environment``, ``plots`` and the two
Keras-free registries (``backbones``, ``variants``: tables of names, sizes and
defaults, which the data pipeline needs for a backbone's normalisation). ``cxrlib.apps.cli``
is the one library module allowed to reach the course layer (its ``notebooks`` command runs
the course). Imports inside functions count as much as those at the
top of a module.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "cxrlib"
ORDER = ("base", "data", "models", "runs", "explain", "apps", "course")
ALLOWED_UPWARD = {("cxrlib.apps.cli", "course")}


def layer(module: str) -> str:
    """The layer of a dotted ``cxrlib`` module name."""
    if module == "cxrlib.__main__":
        return "apps"
    parts = module.split(".")
    return parts[1] if len(parts) > 2 and parts[1] in ORDER else "base"


def modules() -> dict[str, Path]:
    """Every module of the package by dotted name."""
    found = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        found[name] = path
    return found


def cxrlib_imports(path: Path) -> set[str]:
    """The ``cxrlib`` modules a file imports, anywhere in it."""
    names = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            names.update(a.name for a in node.names if a.name.startswith("cxrlib"))
        elif isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("cxrlib"):
            names.add(node.module)
            names.update(f"{node.module}.{a.name}" for a in node.names)  # "from cxrlib.x import y"
    return {n for n in names if n.split(".")[1:2] != [] or n == "cxrlib"}


MODULES = modules()


def test_the_package_has_its_layers() -> None:
    assert {layer(m) for m in MODULES} == set(ORDER)


@pytest.mark.parametrize("module", sorted(MODULES))
def test_imports_only_its_own_layer_and_those_below(module: str) -> None:
    own = ORDER.index(layer(module))
    wrong = sorted(
        imported for imported in cxrlib_imports(MODULES[module])
        if imported in MODULES and ORDER.index(layer(imported)) > own
        and (module, layer(imported)) not in ALLOWED_UPWARD
    )
    assert not wrong, f"{module} ({layer(module)}) imports from a higher layer: {wrong}"


def test_the_library_never_imports_the_course() -> None:
    offenders = {m: sorted(i for i in cxrlib_imports(p) if layer(i) == "course")
                 for m, p in MODULES.items() if layer(m) != "course"}
    offenders = {m: i for m, i in offenders.items() if i and (m, "course") not in ALLOWED_UPWARD}
    assert not offenders


def test_the_checker_sees_a_violation(tmp_path: Path) -> None:
    """The rule can fail: a library module importing the course, even inside a function."""
    bad = tmp_path / "bad.py"
    bad.write_text("def f():\n    from cxrlib.course.setup import run_name\n    return run_name\n")
    assert "cxrlib.course.setup" in cxrlib_imports(bad)
    assert layer("cxrlib.course.setup") == "course" and layer("cxrlib.files") == "base"
