"""subring.aio.open: the built-in open()'s arguments, an AsyncFile back."""

from __future__ import annotations

import errno
import os
import stat as stat_mod
from collections.abc import Generator
from typing import Any

from .default import get_ring
from .files import AsyncFile

__all__ = ["open"]


def _flags(mode: str) -> tuple[int, bool, bool]:
    m = set(mode)
    if not m <= set("rwaxbt+") or len(mode) != len(m) or ("b" in m and "t" in m):
        raise ValueError(f"invalid mode: {mode!r}")
    kinds = m & set("rwax")
    if len(kinds) != 1:
        raise ValueError("must have exactly one of create/read/write/append mode")
    kind = kinds.pop()
    flags = {"r": os.O_RDONLY, "w": os.O_WRONLY | os.O_CREAT | os.O_TRUNC,
             "a": os.O_WRONLY | os.O_CREAT | os.O_APPEND,
             "x": os.O_WRONLY | os.O_CREAT | os.O_EXCL}[kind]
    if "+" in m:
        flags = (flags & ~os.O_WRONLY) | os.O_RDWR
    return flags | os.O_CLOEXEC, "b" in m, kind == "a"


async def _open(file: Any, mode: str, buffering: int, encoding: str | None,
                errors: str | None, newline: str | None, closefd: bool, opener: Any,
                ring: Any) -> AsyncFile:
    if not isinstance(file, (str, bytes, int)) and not hasattr(file, "__fspath__"):
        raise TypeError(f"expected str, bytes, os.PathLike or int, not {type(file).__name__}")
    if not isinstance(mode, str):
        raise TypeError(f"open() argument 'mode' must be str, not {type(mode).__name__}")
    flags, binary, append = _flags(mode)
    if binary and (encoding is not None or errors is not None or newline is not None):
        what = ("encoding" if encoding is not None else
                "errors" if errors is not None else "newline")
        raise ValueError(f"binary mode doesn't take an {what} argument")
    if not binary and buffering == 0:
        raise ValueError("can't have unbuffered text I/O")
    if newline not in (None, "", "\n", "\r", "\r\n"):
        raise ValueError(f"illegal newline value: {newline!r}")
    if not closefd and not isinstance(file, int):
        raise ValueError("Cannot use closefd=False with file name")
    aring = ring or get_ring()
    if isinstance(file, int):
        if file < 0:
            raise ValueError("negative file descriptor")
        fd = file
    elif opener is not None:
        fd = opener(file, flags)
        if not isinstance(fd, int) or fd < 0:
            raise ValueError(f"opener returned {fd}")
    else:
        fd = await aring.openat(file, flags, 0o666)
    try:
        st = os.fstat(fd)
        if stat_mod.S_ISDIR(st.st_mode):
            raise IsADirectoryError(errno.EISDIR, os.strerror(errno.EISDIR), file)
        pos: int | None
        if append and stat_mod.S_ISREG(st.st_mode):
            pos = os.lseek(fd, 0, os.SEEK_END)
        elif isinstance(file, int) or opener is not None or not stat_mod.S_ISREG(st.st_mode):
            try:
                pos = os.lseek(fd, 0, os.SEEK_CUR)
            except OSError as e:
                if e.errno != errno.ESPIPE:
                    raise
                pos = None                 # a pipe, socket or terminal: no position
        else:
            pos = 0
        f = AsyncFile(aring, fd, file, mode, binary, encoding, errors, newline, append,
                      closefd, pos)
    except BaseException:
        if closefd:
            os.close(fd)
        raise
    return f


class _Opener:
    """What :func:`open` returns: awaitable (``f = await open(p)``) and an
    async context manager (``async with open(p) as f``).  The coroutine is
    made when awaited, not before: an _Opener dropped unawaited
    (``wait_for(open(p), 0)`` cancels it before it runs) leaves no
    never-awaited coroutine behind."""

    def __init__(self, *args: Any) -> None:
        self._args = args
        self._file: AsyncFile | None = None

    def __await__(self) -> Generator[Any, None, AsyncFile]:
        return _open(*self._args).__await__()

    async def __aenter__(self) -> AsyncFile:
        self._file = await _open(*self._args)
        return self._file

    async def __aexit__(self, *exc: object) -> None:
        if self._file is not None:
            await self._file.close()


def open(file: Any, mode: str = "r", buffering: int = -1, encoding: str | None = None,
         errors: str | None = None, newline: str | None = None, closefd: bool = True,
         opener: Any = None, *, ring: Any = None) -> _Opener:
    """Open a file for async I/O through a ring (default: the loop's ring).

    The built-in ``open``'s arguments: ``file`` may be a path or an fd
    (``closefd=False`` leaves the fd open at close), ``opener(path, flags)``
    is called instead of openat if given.  ``buffering`` is checked
    (``0`` is refused in text mode) and otherwise ignored: reads keep their
    own read-ahead and writes are not buffered.  ``async with
    subring.aio.open(p) as f`` and ``f = await subring.aio.open(p)`` both
    work."""
    return _Opener(file, mode, buffering, encoding, errors, newline, closefd, opener, ring)
