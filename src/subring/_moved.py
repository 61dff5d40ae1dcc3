"""Old module paths that keep working for one release, with a DeprecationWarning.

A module that moved leaves a small shim at its old path whose module-level
``__getattr__`` calls :func:`forward`: ``from subring.client import connect``
still finds ``connect`` (in :mod:`subring.subsystem.client`) and warns once per
call site, naming the new path.  Remove a shim one release after its move.
"""

from __future__ import annotations

import importlib
import warnings
from typing import Any

__all__ = ["forward", "names"]


def forward(old: str, new: str, name: str) -> Any:
    """Attribute ``name`` of module ``new``, asked for through ``old``."""
    if name.startswith("__"):
        raise AttributeError(f"module {old!r} has no attribute {name!r}")
    target = importlib.import_module(new)
    try:
        value = getattr(target, name)
    except AttributeError:
        raise AttributeError(f"module {old!r} has no attribute {name!r} (it moved to "
                             f"{new!r}, which has none either)") from None
    # stacklevel 3: past this function and the shim's __getattr__, to the
    # line that imported or used the old name
    top = importlib.import_module("subring")
    also = " (or from subring)" if getattr(top, name, None) is value else ""
    warnings.warn(f"{old} is deprecated and will be removed in the next release: "
                  f"import {name} from {new}{also}", DeprecationWarning, stacklevel=3)
    return value


def names(new: str) -> list[str]:
    """What ``dir()`` of the old module shows: the new module's public names."""
    target = importlib.import_module(new)
    return sorted(getattr(target, "__all__", [n for n in dir(target) if not n.startswith("_")]))
