"""Public names that load with their module on first use (PEP 562), for cheap package imports."""

from __future__ import annotations

import importlib
import sys


def lazy_attributes(package: str, homes: dict[str, str]):
    """``__getattr__`` and ``__dir__`` for ``package``: each name of ``homes`` is imported from
    its submodule (``homes[name]``) when first asked for, then kept.

    Example::

        >>> getattr_, dir_ = lazy_attributes("nights", {"load_nights": "table"})
        >>> getattr_("load_nights").__module__
        'nights.table'
    """

    def __getattr__(name: str):
        if name not in homes:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        value = getattr(importlib.import_module(f"{package}.{homes[name]}"), name)
        setattr(sys.modules[package], name, value)
        return value

    def __dir__() -> list[str]:
        return sorted({*vars(sys.modules[package]), *homes})

    return __getattr__, __dir__
