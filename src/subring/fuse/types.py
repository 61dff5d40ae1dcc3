"""The values a file system's handlers return (and a few they receive).

They are ``NamedTuple`` s: immutable, cheap to build in a handler, and read by
the C dispatcher by position with no attribute lookups.
"""

from __future__ import annotations

import stat as _stat
from typing import NamedTuple

ROOT_INO = 1
"""The inode number the kernel uses for the mount's root directory."""


class Attr(NamedTuple):
    """The attributes of one inode (what ``stat(2)`` shows).

    Times are integers in nanoseconds since the epoch (``time.time_ns()``).
    ``ino`` is the number ``stat`` reports; the kernel addresses inodes by the
    number in :class:`Entry`, which is normally the same."""

    ino: int = 0
    mode: int = _stat.S_IFREG | 0o644
    nlink: int = 1
    uid: int = 0
    gid: int = 0
    rdev: int = 0
    size: int = 0
    blocks: int = 0
    blksize: int = 4096
    atime_ns: int = 0
    mtime_ns: int = 0
    ctime_ns: int = 0


class Entry(NamedTuple):
    """The answer of ``lookup`` (and of ``mkdir``, ``create``, ...): the inode
    the name refers to and its attributes.  Each Entry returned counts one
    lookup of ``ino``; the kernel gives them back with ``forget``.  Returning
    ``ino=0`` is a "negative entry": the name does not exist (cached for
    ``entry_timeout``)."""

    ino: int
    attr: Attr
    generation: int = 0


class StatFS(NamedTuple):
    """The answer of ``statfs`` (what ``statvfs(3)``/``df`` show)."""

    blocks: int = 0
    bfree: int = 0
    bavail: int = 0
    files: int = 0
    ffree: int = 0
    bsize: int = 4096
    namelen: int = 255
    frsize: int = 4096


class SetAttr(NamedTuple):
    """What ``setattr`` is asked to change; a field is ``None`` when it is to
    stay as it is (``chmod`` sets ``mode``, ``truncate`` sets ``size``,
    ``utimensat`` sets the times; ``UTIME_NOW`` arrives as the server's
    current time)."""

    mode: int | None = None
    uid: int | None = None
    gid: int | None = None
    size: int | None = None
    atime_ns: int | None = None
    mtime_ns: int | None = None
    ctime_ns: int | None = None


class DirEntry(NamedTuple):
    """One item of a ``readdir`` listing.

    ``offset`` is the cookie of the *next* item: the kernel passes it back as
    the ``offset`` argument of the next ``readdir`` call when the listing did
    not fit in one reply.  ``attr`` needs only ``ino`` and the file type bits
    of ``mode`` for ``readdir``; ``readdirplus`` items carry an
    :class:`Entry` in ``attr`` instead (full attributes, counts a lookup)."""

    name: bytes
    attr: object
    offset: int


__all__ = ["ROOT_INO", "Attr", "Entry", "StatFS", "SetAttr", "DirEntry"]
