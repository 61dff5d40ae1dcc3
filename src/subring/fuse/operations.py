"""The base class of a file system: one method per FUSE operation.

Only the methods a subclass defines are ever called; every other operation is
answered ``ENOSYS`` without calling Python (for ``open``/``opendir``/
``flush``/``release``/``access``/``*xattr`` the kernel then stops asking and
behaves as "nothing to do"/"not supported"; an undefined ``statfs`` answers a
neutral default).  Names arrive as ``bytes``.  Inode numbers are the kernel's
node ids: :data:`ROOT_INO` (1) is the root; the ``ino`` of each
:class:`Entry` returned becomes the node id the kernel passes to later calls
until it ``forget`` s it.

Answering: return the value documented per method.  ``raise
OSError(errno.ENOENT, ...)`` answers that errno; any other exception answers
``EIO`` and is logged on the ``subring.fuse`` logger (the server keeps
serving).  A handler may be ``async def``: it runs on the mount's asyncio loop
(one thread), and the request is answered when it finishes, while other
requests proceed.

The signatures (``fh`` is the integer returned by ``open``/``opendir``/
``create``; it is 0 if those are not defined)::

    lookup(parent, name) -> Entry
    forget(ino, nlookup) -> None
    getattr(ino, fh) -> Attr                     # fh None if no open file
    setattr(ino, changes: SetAttr, fh) -> Attr   # fh None if no open file
    readlink(ino) -> bytes
    mknod(parent, name, mode, rdev) -> Entry
    mkdir(parent, name, mode) -> Entry
    unlink(parent, name) -> None
    rmdir(parent, name) -> None
    symlink(parent, name, target) -> Entry
    rename(parent, name, newparent, newname, flags) -> None
    link(ino, newparent, newname) -> Entry
    open(ino, flags) -> fh
    read(ino, fh, offset, size) -> bytes         # shorter = end of file
    write(ino, fh, offset, data: bytes) -> int   # bytes written
    statfs(ino) -> StatFS
    flush(ino, fh) -> None
    release(ino, fh) -> None
    fsync(ino, fh, datasync) -> None
    setxattr(ino, name, value, flags) -> None
    getxattr(ino, name) -> bytes
    listxattr(ino) -> list of bytes
    removexattr(ino, name) -> None
    opendir(ino, flags) -> fh
    readdir(ino, fh, offset) -> iterable of DirEntry(name, Attr, next_offset)
    readdirplus(ino, fh, offset) -> iterable of DirEntry(name, Entry, next_offset)
    releasedir(ino, fh) -> None
    fsyncdir(ino, fh, datasync) -> None
    access(ino, mask) -> None
    create(parent, name, mode, flags) -> (Entry, fh)

``readdir`` is called with the offset where the previous reply stopped; items
that do not fit into the kernel's buffer are dropped and asked for again with
the ``offset`` of the last item sent.  Defining ``readdirplus`` makes the
kernel ask for listings with attributes (one round trip instead of a
``lookup`` per name, as ``ls -l`` needs).

``self.context`` is not available: a file system that needs the caller's
uid/gid/pid calls :func:`subring.fuse.request_context` inside the handler.
"""

from __future__ import annotations

from .types import ROOT_INO

#: Names of the operations a subclass may define, in FUSE order.
OPERATIONS = (
    "lookup", "forget", "getattr", "setattr", "readlink", "symlink", "mknod", "mkdir",
    "unlink", "rmdir", "rename", "link", "open", "read", "write", "statfs", "release",
    "fsync", "setxattr", "getxattr", "listxattr", "removexattr", "flush", "opendir",
    "readdir", "releasedir", "fsyncdir", "access", "create", "readdirplus",
)


class Operations:
    """Subclass and define the operations your file system supports (see the
    module documentation for each signature).  The same class serves a real
    mount (:func:`subring.fuse.mount`) over either transport, and a
    :class:`subring.fuse.FuseSubsystem` with no mount at all."""

    ROOT_INO = ROOT_INO

    def init(self) -> None:
        """Called once when the kernel has connected (before any request)."""

    def destroy(self) -> None:
        """Called once after the file system is unmounted."""


__all__ = ["Operations", "OPERATIONS"]
