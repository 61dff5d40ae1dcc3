"""Deprecated, private alias of :mod:`subring.subsystem.attach` (kept only while
old test code imports it; removed in the next release)."""

from __future__ import annotations

from typing import Any

from . import _moved


def __getattr__(name: str) -> Any:
    return _moved.forward(__name__, "subring.subsystem.attach", name)


def __dir__() -> list[str]:
    return _moved.names("subring.subsystem.attach")
