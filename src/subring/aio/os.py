"""``aiofiles.os`` on a ring: the same names and signatures, as coroutines.

On io_uring ops (the loop's default ring): ``stat`` (statx), ``remove`` /
``unlink`` / ``rmdir`` (unlinkat), ``rename`` / ``replace`` (renameat),
``mkdir`` (mkdirat), ``makedirs`` / ``renames`` / ``removedirs`` (made of
those), ``sendfile`` (splice through a pipe).

Plain calls on the loop thread (io_uring has no op for them, or this ring no
prep yet; all are metadata calls that do not wait for devices or peers):
``link``, ``symlink``, ``readlink``, ``listdir``, ``scandir``, ``access``,
``getcwd``, ``statvfs``.  ``wrap(func)`` runs ``func`` on the default
executor, as aiofiles does.
"""

from __future__ import annotations

import asyncio
import errno
import fcntl
import functools
import os as _os
import struct
from collections.abc import Callable
from typing import Any

from . import ospath as path
from .default import get_ring

__all__ = [
    "access",
    "getcwd",
    "link",
    "listdir",
    "makedirs",
    "mkdir",
    "path",
    "readlink",
    "remove",
    "removedirs",
    "rename",
    "renames",
    "replace",
    "rmdir",
    "scandir",
    "sendfile",
    "stat",
    "statvfs",
    "symlink",
    "unlink",
    "wrap",
]

_AT_FDCWD = -100
_AT_SYMLINK_NOFOLLOW = 0x100
_AT_EMPTY_PATH = 0x1000


def _dir(dir_fd: int | None) -> int:
    return _AT_FDCWD if dir_fd is None else dir_fd


def stat_result(s: Any) -> _os.stat_result:
    """An ``os.stat_result`` from a :class:`~subring.Statx`, with the float
    times exactly as ``os.stat`` computes them (sec + nsec * 1e-9)."""
    ts = [struct.unpack_from("qI", s, off) for off in (64, 112, 96)]   # atime, mtime, ctime
    return _os.stat_result((s.mode, s.ino, s.dev, s.nlink, s.uid, s.gid, s.size,
                            *(sec for sec, _ in ts), *(sec + nsec * 1e-9 for sec, nsec in ts),
                            *(sec * 1_000_000_000 + nsec for sec, nsec in ts),
                            s.blksize, s.blocks, s.rdev))


async def stat(path: Any, *, dir_fd: int | None = None,
               follow_symlinks: bool = True) -> _os.stat_result:
    """``os.stat`` through the ring (statx); ``path`` may be an fd."""
    flags = 0 if follow_symlinks else _AT_SYMLINK_NOFOLLOW
    if isinstance(path, int):
        s = await get_ring().statx("", dir_fd=path, at_flags=flags | _AT_EMPTY_PATH)
    else:
        s = await get_ring().statx(path, dir_fd=_dir(dir_fd), at_flags=flags)
    return stat_result(s)


async def remove(path: Any, *, dir_fd: int | None = None) -> None:
    """``os.remove`` through the ring (unlinkat)."""
    await get_ring().unlink(path, dir_fd=_dir(dir_fd))


unlink = remove


async def rmdir(path: Any, *, dir_fd: int | None = None) -> None:
    """``os.rmdir`` through the ring (unlinkat with AT_REMOVEDIR)."""
    await get_ring().unlink(path, rmdir=True, dir_fd=_dir(dir_fd))


async def rename(src: Any, dst: Any, *, src_dir_fd: int | None = None,
                 dst_dir_fd: int | None = None) -> None:
    """``os.rename`` through the ring (renameat)."""
    await get_ring().rename(src, dst, old_dir_fd=_dir(src_dir_fd), new_dir_fd=_dir(dst_dir_fd))


replace = rename       # (on POSIX, os.replace and os.rename are the same call)


async def mkdir(path: Any, mode: int = 0o777, *, dir_fd: int | None = None) -> None:
    """``os.mkdir`` through the ring (mkdirat)."""
    await get_ring().mkdir(path, mode, dir_fd=_dir(dir_fd))


async def makedirs(name: Any, mode: int = 0o777, exist_ok: bool = False) -> None:
    """``os.makedirs``: mkdirat for each missing level."""
    name = _os.fspath(name)
    head, tail = _os.path.split(name)
    if not tail:
        head, tail = _os.path.split(head)
    if head and tail and not await path.exists(head):
        try:
            await makedirs(head, exist_ok=exist_ok)
        except FileExistsError:
            pass                                   # made meanwhile
        cdir = _os.curdir.encode() if isinstance(tail, bytes) else _os.curdir
        if tail == cdir:
            return
    try:
        await mkdir(name, mode)
    except OSError:
        if not exist_ok or not await path.isdir(name):
            raise


async def removedirs(name: Any) -> None:
    """``os.removedirs``: rmdir the leaf, then each empty parent."""
    await rmdir(name)
    head, tail = _os.path.split(_os.fspath(name))
    if not tail:
        head, tail = _os.path.split(head)
    while head and tail:
        try:
            await rmdir(head)
        except OSError:
            break
        head, tail = _os.path.split(head)


async def renames(old: Any, new: Any) -> None:
    """``os.renames``: make the new parents, rename, prune the old parents."""
    head, tail = _os.path.split(_os.fspath(new))
    if head and tail and not await path.exists(head):
        await makedirs(head)
    await rename(old, new)
    head, tail = _os.path.split(_os.fspath(old))
    if head and tail:
        try:
            await removedirs(head)
        except OSError:
            pass


async def link(src: Any, dst: Any, *, src_dir_fd: int | None = None,
               dst_dir_fd: int | None = None, follow_symlinks: bool = True) -> None:
    """``os.link`` (plain call: the ring has no linkat prep yet)."""
    _os.link(src, dst, src_dir_fd=src_dir_fd, dst_dir_fd=dst_dir_fd,
             follow_symlinks=follow_symlinks)


async def symlink(src: Any, dst: Any, target_is_directory: bool = False, *,
                  dir_fd: int | None = None) -> None:
    """``os.symlink`` (plain call: the ring has no symlinkat prep yet)."""
    _os.symlink(src, dst, target_is_directory, dir_fd=dir_fd)


async def readlink(path: Any, *, dir_fd: int | None = None) -> Any:
    """``os.readlink`` (plain call: io_uring has no readlink op)."""
    return _os.readlink(path, dir_fd=dir_fd)


async def listdir(path: Any = ".") -> list[Any]:
    """``os.listdir`` (plain call: io_uring has no getdents op)."""
    return _os.listdir(path)


async def scandir(path: Any = ".") -> Any:
    """``os.scandir`` (plain call: io_uring has no getdents op); returns the
    iterator, as aiofiles does."""
    return _os.scandir(path)


async def access(path: Any, mode: int, *, dir_fd: int | None = None,
                 effective_ids: bool = False, follow_symlinks: bool = True) -> bool:
    """``os.access`` (plain call: io_uring has no faccessat op)."""
    return _os.access(path, mode, dir_fd=dir_fd, effective_ids=effective_ids,
                      follow_symlinks=follow_symlinks)


async def getcwd() -> str:
    """``os.getcwd`` (plain call)."""
    return _os.getcwd()


async def statvfs(path: Any) -> _os.statvfs_result:
    """``os.statvfs`` (plain call: io_uring has no statfs op)."""
    return _os.statvfs(path)


_F_SETPIPE_SZ = getattr(fcntl, "F_SETPIPE_SZ", 1031)


async def sendfile(out_fd: int, in_fd: int, offset: int | None, count: int) -> int:
    """``os.sendfile`` through the ring: splice ``in_fd`` -> pipe ->
    ``out_fd``.  ``offset`` None reads from (and moves) ``in_fd``'s
    position.  Returns the bytes sent (fewer than ``count`` at end of file)."""
    ar = get_ring()
    r, w = _os.pipe2(_os.O_CLOEXEC)
    try:
        try:
            cap = fcntl.fcntl(w, _F_SETPIPE_SZ, 1 << 20)
        except OSError:
            cap = 1 << 16
        sent = 0
        off_in = -1 if offset is None else offset
        while sent < count:
            n = await ar.splice(in_fd, off_in, w, -1, min(cap, count - sent))
            if n == 0:
                break
            if off_in >= 0:
                off_in += n
            left = n
            while left:
                m = await ar.splice(r, -1, out_fd, -1, left)
                if m == 0:
                    raise OSError(errno.EPIPE, _os.strerror(errno.EPIPE))
                left -= m
            sent += n
        return sent
    finally:
        _os.close(r)
        _os.close(w)


def wrap(func: Callable[..., Any]) -> Callable[..., Any]:
    """aiofiles' ``wrap``: a coroutine function running ``func`` on the
    loop's default executor (for blocking calls of your own)."""

    @functools.wraps(func)
    async def run(*args: Any, loop: Any = None, executor: Any = None, **kwargs: Any) -> Any:
        loop = loop or asyncio.get_running_loop()
        return await loop.run_in_executor(executor, functools.partial(func, *args, **kwargs))

    return run
