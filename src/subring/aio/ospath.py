"""``aiofiles.ospath`` on a ring: the same names and signatures.

On io_uring (statx): ``exists``, ``isfile``, ``isdir``, ``islink``,
``getsize``, ``getmtime``, ``getatime``, ``getctime``, ``samefile``.
Plain calls: ``ismount`` (needs the parent too: ``os.path.ismount``),
``sameopenfile`` (fstat), ``abspath`` (no I/O at all).
"""

from __future__ import annotations

import os as _os
import stat as _stat
from typing import Any, cast

from .default import get_ring

__all__ = [
    "abspath",
    "exists",
    "getatime",
    "getctime",
    "getmtime",
    "getsize",
    "isdir",
    "isfile",
    "islink",
    "ismount",
    "samefile",
    "sameopenfile",
]

_AT_SYMLINK_NOFOLLOW = 0x100
_AT_EMPTY_PATH = 0x1000


async def _statx(path: Any, follow: bool = True) -> Any:
    flags = 0 if follow else _AT_SYMLINK_NOFOLLOW
    if isinstance(path, int):
        return await get_ring().statx("", dir_fd=path, at_flags=flags | _AT_EMPTY_PATH)
    return await get_ring().statx(path, at_flags=flags)


async def _mode(path: Any, follow: bool = True) -> int | None:
    try:
        return cast("int | None", (await _statx(path, follow)).mode)
    except (OSError, ValueError):
        return None


async def exists(path: Any) -> bool:
    """Does ``path`` exist (False on any OSError or ValueError, like os.path)?"""
    return await _mode(path) is not None


async def isfile(path: Any) -> bool:
    """Is ``path`` a regular file (following symlinks)?"""
    m = await _mode(path)
    return m is not None and _stat.S_ISREG(m)


async def isdir(path: Any) -> bool:
    """Is ``path`` a directory (following symlinks)?"""
    m = await _mode(path)
    return m is not None and _stat.S_ISDIR(m)


async def islink(path: Any) -> bool:
    """Is ``path`` a symbolic link?"""
    m = await _mode(path, follow=False)
    return m is not None and _stat.S_ISLNK(m)


async def getsize(path: Any) -> int:
    """Size of ``path`` in bytes (OSError if it does not exist)."""
    return cast("int", (await _statx(path)).size)


async def _time(path: Any, field: str) -> float:
    from .os import stat_result
    return cast("float", getattr(stat_result(await _statx(path)), field))


async def getmtime(path: Any) -> float:
    """Last modification time of ``path``."""
    return await _time(path, "st_mtime")


async def getatime(path: Any) -> float:
    """Last access time of ``path``."""
    return await _time(path, "st_atime")


async def getctime(path: Any) -> float:
    """Last metadata change time of ``path``."""
    return await _time(path, "st_ctime")


async def samefile(path1: Any, path2: Any) -> bool:
    """Do both paths name the same file (same device and inode)?"""
    a, b = await _statx(path1), await _statx(path2)
    return (a.dev, a.ino) == (b.dev, b.ino)


async def sameopenfile(fp1: int, fp2: int) -> bool:
    """Do both fds refer to the same file (plain fstat)?"""
    return _os.path.sameopenfile(fp1, fp2)


async def ismount(path: Any) -> bool:
    """Is ``path`` a mount point (plain call: os.path.ismount)?"""
    return _os.path.ismount(path)


async def abspath(path: Any) -> Any:
    """``os.path.abspath`` (no I/O beyond getcwd)."""
    return _os.path.abspath(path)
