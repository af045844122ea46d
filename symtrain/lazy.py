"""Lazy package exports: a name's module is imported on first use, so the command line and storage-only
code start without importing the graph library (or libcst)."""

from __future__ import annotations

import importlib
import sys
from collections.abc import Callable, Iterable, Mapping
from typing import Any


def lazy_exports(package: str, table: Mapping[str, str], submodules: Iterable[str] = ()
                 ) -> tuple[Callable[[str], Any], Callable[[], list[str]]]:
    """Return a module-level ``(__getattr__, __dir__)`` pair for ``package`` serving ``table``
    (public name -> defining module) and the listed ``submodules``."""
    module = sys.modules[package]
    subs = frozenset(submodules)

    def __getattr__(name: str) -> Any:
        if name in table:
            value = getattr(importlib.import_module(table[name]), name)
            setattr(module, name, value)
            return value
        if name in subs:
            return importlib.import_module(f"{package}.{name}")
        raise AttributeError(f"module {package!r} has no attribute {name!r}")

    def __dir__() -> list[str]:
        return sorted(set(vars(module)) | set(table) | subs)

    return __getattr__, __dir__
