"""Package names imported on first use, so a light module of a heavy package stays light to import.

``cloudlulc --help`` and a command's option checks read light modules (options, layouts) of packages
whose other modules pull in torch, MLflow or Triton's client; importing each package's names eagerly made
every command pay for all of them before doing anything.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping


def lazy_names(package: str, homes: Mapping[str, list[str]]) -> Callable[[str], object]:
    """A module ``__getattr__`` for ``package``: each name in ``homes[module]`` is imported from that module on use.

    A value of ``homes`` may name another package's module by its full dotted name.
    """
    module_of = {
        name: module if "." in module else f"{package}.{module}" for module, names in homes.items() for name in names
    }

    def attribute(name: str) -> object:
        if name not in module_of:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        return getattr(importlib.import_module(module_of[name]), name)

    return attribute
