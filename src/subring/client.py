"""Deprecated alias of :mod:`subring.subsystem.client` (moved there; this path is removed in
the next release).  Every name still resolves, with a DeprecationWarning."""

from __future__ import annotations

from typing import Any

from . import _moved


def __getattr__(name: str) -> Any:
    return _moved.forward(__name__, "subring.subsystem.client", name)


def __dir__() -> list[str]:
    return _moved.names("subring.subsystem.client")
