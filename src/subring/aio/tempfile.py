"""``aiofiles.tempfile`` on a ring: the same names, the same two uses
(``async with TemporaryFile() as f`` and ``f = await TemporaryFile()``).

The file is made by the standard ``tempfile.mkstemp`` / ``mkdtemp`` (a plain
call: it needs a loop over random names with O_EXCL) and then read and
written through the ring as a :class:`~subring.aio.AsyncFile`.
``SpooledTemporaryFile`` is a file on disk from the start (no in-memory
phase: nothing here would run the in-memory part off the loop anyway);
``rollover()`` does nothing.  ``TemporaryDirectory`` is removed with
``shutil.rmtree`` (plain calls).
"""

from __future__ import annotations

import os as _os
import shutil
import tempfile as _tempfile
from typing import Any

from .files import AsyncFile
from .opening import open as _aopen

__all__ = [
    "NamedTemporaryFile",
    "SpooledTemporaryFile",
    "TemporaryDirectory",
    "TemporaryFile",
]


class _Maker:
    """Awaitable and async context manager around ``make()``."""

    def __init__(self, make: Any, enter: Any = None) -> None:
        self._make = make
        self._enter = enter
        self._obj: Any = None

    def __await__(self) -> Any:
        return self._make().__await__()

    async def __aenter__(self) -> Any:
        self._obj = await self._make()
        return self._enter(self._obj) if self._enter else self._obj

    async def __aexit__(self, *exc: object) -> None:
        if self._obj is not None:
            await (self._obj.cleanup() if isinstance(self._obj, AsyncTemporaryDirectory)
                   else self._obj.close())


async def _temp(named: bool, mode: str, buffering: int, encoding: str | None,
                newline: str | None, suffix: Any, prefix: Any, dir: Any,
                delete: bool) -> AsyncFile:
    fd, name = _tempfile.mkstemp(suffix, prefix, dir, "b" in mode and False)
    try:
        if not named:
            _os.unlink(name)
        f = await _aopen(fd, mode, buffering, encoding, None, newline)
    except BaseException:
        _os.close(fd)
        if named:
            _os.unlink(name)
        raise
    if named:
        f.name = name
        if delete:
            f.on_close = lambda: _unlink_quietly(name)
    return f


def _unlink_quietly(name: str) -> None:
    try:
        _os.unlink(name)
    except FileNotFoundError:
        pass


def TemporaryFile(mode: str = "w+b", buffering: int = -1, encoding: str | None = None,
                  newline: str | None = None, suffix: Any = None, prefix: Any = None,
                  dir: Any = None, loop: Any = None, executor: Any = None) -> _Maker:
    """An unnamed temporary file (removed from its directory at once)."""
    return _Maker(lambda: _temp(False, mode, buffering, encoding, newline, suffix, prefix,
                                dir, True))


def NamedTemporaryFile(mode: str = "w+b", buffering: int = -1, encoding: str | None = None,
                       newline: str | None = None, suffix: Any = None, prefix: Any = None,
                       dir: Any = None, delete: bool = True, loop: Any = None,
                       executor: Any = None) -> _Maker:
    """A temporary file with a name (``f.name``), removed at close if ``delete``."""
    return _Maker(lambda: _temp(True, mode, buffering, encoding, newline, suffix, prefix,
                                dir, delete))


def SpooledTemporaryFile(max_size: int = 0, mode: str = "w+b", buffering: int = -1,
                         encoding: str | None = None, newline: str | None = None,
                         suffix: Any = None, prefix: Any = None, dir: Any = None,
                         loop: Any = None, executor: Any = None) -> _Maker:
    """A temporary file (on disk from the start: see the module docstring)."""
    async def make() -> AsyncFile:
        f = await _temp(False, mode, buffering, encoding, newline, suffix, prefix, dir, True)
        f.rollover = _rollover  # type: ignore[attr-defined]  # (its one extra method)
        return f
    return _Maker(make)


async def _rollover() -> None:
    """Nothing to do: the file is on disk already."""


class AsyncTemporaryDirectory:
    """What ``await TemporaryDirectory()`` gives: ``name`` and ``cleanup()``."""

    def __init__(self, name: str) -> None:
        self.name = name

    async def cleanup(self) -> None:
        """Remove the directory and everything in it (plain calls)."""
        shutil.rmtree(self.name, ignore_errors=True)

    def __repr__(self) -> str:
        return f"<AsyncTemporaryDirectory {self.name!r}>"


def TemporaryDirectory(suffix: Any = None, prefix: Any = None, dir: Any = None,
                       loop: Any = None, executor: Any = None) -> _Maker:
    """A temporary directory; ``async with`` gives its name and removes it."""
    async def make() -> AsyncTemporaryDirectory:
        return AsyncTemporaryDirectory(_tempfile.mkdtemp(suffix, prefix, dir))
    return _Maker(make, enter=lambda d: d.name)
