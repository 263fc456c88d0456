"""Flat, lazy re-exports: a package's public names, each imported from its module on first use.

``cxrlib`` and ``cxrlib.course`` list their public API as ``{name: module}``; :func:`lazy_api`
gives the package the module ``__getattr__`` and ``__dir__`` (PEP 562) that import a name when it
is first asked for, so that importing the package stays cheap (no TensorFlow, no Keras).
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping
from typing import Any


def lazy_api(package: str, api: Mapping[str, str], namespace: dict[str, Any]
             ) -> tuple[Callable[[str], Any], Callable[[], list[str]]]:
    """``(__getattr__, __dir__)`` for ``package``: a name of ``api`` is imported from its module
    (a module itself when the name is the module's last part) and kept in ``namespace``."""
    def __getattr__(name: str) -> Any:
        module = api.get(name)
        if module is None:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        imported = importlib.import_module(module)
        value = imported if module.rsplit(".", 1)[-1] == name else getattr(imported, name)
        namespace[name] = value
        return value

    def __dir__() -> list[str]:
        return sorted({*namespace, *api})

    return __getattr__, __dir__
