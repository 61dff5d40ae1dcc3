"""A pass-through file system for subring.fuse: mirrors a directory.

    sudo python -m subring.fuse examples.passthrough:Passthrough /mnt/x --arg /srv/data
    sudo python -m subring.fuse examples.passthrough:Passthrough /mnt/x --arg /srv/data --arg ring

Every operation is the same call on the underlying path.  File handles are
real file descriptors.  With the second argument ``ring``, ``read`` and
``write`` are ``async def`` and go through subring's own kernel ring
(:mod:`subring.aio`) on the mount's event loop: a read that waits for a slow
disk then does not hold a serving thread, and concurrent reads are submitted
to the kernel together.  Without it they are plain ``os.pread``/``os.pwrite``
(cheaper when the data is in the page cache).
"""

from __future__ import annotations

import errno
import os
import stat

from subring.fuse import ROOT_INO, Attr, DirEntry, Entry, Operations, SetAttr, StatFS


def _attr(ino: int, st: os.stat_result) -> Attr:
    return Attr(ino, st.st_mode, st.st_nlink, st.st_uid, st.st_gid, st.st_rdev, st.st_size,
                st.st_blocks, st.st_blksize, st.st_atime_ns, st.st_mtime_ns, st.st_ctime_ns)


class Passthrough(Operations):
    """Inode numbers are ours; each maps to one path under ``root`` (hard
    links share the inode of the first path seen)."""

    def __init__(self, root: str, io: str = "sync") -> None:
        self.root = os.path.realpath(root)
        if not os.path.isdir(self.root):
            raise NotADirectoryError(errno.ENOTDIR, "not a directory", self.root)
        self.paths: dict[int, bytes] = {ROOT_INO: os.fsencode(self.root)}
        self.by_key: dict[tuple[int, int], int] = {}
        self.lookups: dict[int, int] = {}
        self.next_ino = ROOT_INO + 1
        if io == "ring":
            self.read = self._ring_read       # type: ignore[method-assign]
            self.write = self._ring_write     # type: ignore[method-assign]
        elif io != "sync":
            raise ValueError("io must be 'sync' or 'ring'")

    # ---- inode bookkeeping -----------------------------------------------------
    def _path(self, ino: int) -> bytes:
        try:
            return self.paths[ino]
        except KeyError:
            raise OSError(errno.ESTALE, "stale inode") from None

    def _child(self, parent: int, name: bytes) -> bytes:
        if b"/" in name or name in (b"", b".", b".."):
            raise OSError(errno.EINVAL, "bad name")
        return os.path.join(self._path(parent), name)

    def _entry(self, path: bytes) -> Entry:
        st = os.lstat(path)
        key = (st.st_dev, st.st_ino)
        ino = self.by_key.get(key)
        if ino is None:
            ino = self.next_ino
            self.next_ino += 1
            self.by_key[key] = ino
        self.paths[ino] = path
        self.lookups[ino] = self.lookups.get(ino, 0) + 1
        return Entry(ino, _attr(ino, st))

    def forget(self, ino: int, nlookup: int) -> None:
        n = self.lookups.get(ino, 0) - nlookup
        if n > 0 or ino == ROOT_INO:
            self.lookups[ino] = n
            return
        self.lookups.pop(ino, None)
        path = self.paths.pop(ino, None)
        if path is not None:
            self.by_key = {k: v for k, v in self.by_key.items() if v != ino}

    # ---- metadata ------------------------------------------------------------
    def lookup(self, parent: int, name: bytes) -> Entry:
        return self._entry(self._child(parent, name))

    def getattr(self, ino: int, fh: int | None) -> Attr:
        return _attr(ino, os.fstat(fh) if fh is not None else os.lstat(self._path(ino)))

    def setattr(self, ino: int, changes: SetAttr, fh: int | None) -> Attr:
        path = self._path(ino)
        if changes.mode is not None:
            os.chmod(path, stat.S_IMODE(changes.mode))
        if changes.uid is not None or changes.gid is not None:
            os.lchown(path, -1 if changes.uid is None else changes.uid,
                      -1 if changes.gid is None else changes.gid)
        if changes.size is not None:
            if fh is not None:
                os.ftruncate(fh, changes.size)
            else:
                os.truncate(path, changes.size)
        if changes.atime_ns is not None or changes.mtime_ns is not None:
            st = os.lstat(path)
            atime = changes.atime_ns if changes.atime_ns is not None else st.st_atime_ns
            mtime = changes.mtime_ns if changes.mtime_ns is not None else st.st_mtime_ns
            os.utime(path, ns=(atime, mtime), follow_symlinks=False)
        return _attr(ino, os.lstat(path))

    def readlink(self, ino: int) -> bytes:
        return os.readlink(self._path(ino))

    def statfs(self, ino: int) -> StatFS:
        v = os.statvfs(self.root)
        return StatFS(v.f_blocks, v.f_bfree, v.f_bavail, v.f_files, v.f_ffree, v.f_bsize,
                      v.f_namemax, v.f_frsize)

    def access(self, ino: int, mask: int) -> None:
        if not os.access(self._path(ino), mask):
            raise OSError(errno.EACCES, "access denied")

    # ---- namespace -----------------------------------------------------------
    def mknod(self, parent: int, name: bytes, mode: int, rdev: int) -> Entry:
        path = self._child(parent, name)
        os.mknod(path, mode, rdev)
        return self._entry(path)

    def mkdir(self, parent: int, name: bytes, mode: int) -> Entry:
        path = self._child(parent, name)
        os.mkdir(path, mode)
        return self._entry(path)

    def symlink(self, parent: int, name: bytes, target: bytes) -> Entry:
        path = self._child(parent, name)
        os.symlink(target, path)
        return self._entry(path)

    def link(self, ino: int, newparent: int, newname: bytes) -> Entry:
        path = self._child(newparent, newname)
        os.link(self._path(ino), path)
        return self._entry(path)

    def unlink(self, parent: int, name: bytes) -> None:
        os.unlink(self._child(parent, name))

    def rmdir(self, parent: int, name: bytes) -> None:
        os.rmdir(self._child(parent, name))

    def rename(self, parent: int, name: bytes, newparent: int, newname: bytes,
               flags: int) -> None:
        if flags:
            raise OSError(errno.EINVAL, "rename flags are not supported")
        old, new = self._child(parent, name), self._child(newparent, newname)
        os.rename(old, new)
        prefix = old + b"/"
        for ino, p in list(self.paths.items()):   # the renamed entry and everything below
            if p == old:
                self.paths[ino] = new
            elif p.startswith(prefix):
                self.paths[ino] = new + p[len(old):]

    # ---- files -------------------------------------------------------------------
    def open(self, ino: int, flags: int) -> int:
        return os.open(self._path(ino), flags & ~os.O_CREAT)

    def create(self, parent: int, name: bytes, mode: int, flags: int) -> tuple[Entry, int]:
        path = self._child(parent, name)
        fd = os.open(path, flags | os.O_CREAT, mode)
        return self._entry(path), fd

    def read(self, ino: int, fh: int, offset: int, size: int) -> bytes:
        return os.pread(fh, size, offset)

    def write(self, ino: int, fh: int, offset: int, data: bytes) -> int:
        return os.pwrite(fh, data, offset)

    async def _ring_read(self, ino: int, fh: int, offset: int, size: int) -> bytes:
        from subring import aio
        return await aio.get_ring().read(fh, size, offset)

    async def _ring_write(self, ino: int, fh: int, offset: int, data: bytes) -> int:
        from subring import aio
        return await aio.get_ring().write(fh, data, offset)

    def flush(self, ino: int, fh: int) -> None:
        os.close(os.dup(fh))     # like close(2) would: reports deferred write errors

    def release(self, ino: int, fh: int) -> None:
        os.close(fh)

    def fsync(self, ino: int, fh: int, datasync: bool) -> None:
        (os.fdatasync if datasync else os.fsync)(fh)

    # ---- directories ----------------------------------------------------------------
    def opendir(self, ino: int, flags: int) -> int:
        if not os.path.isdir(self._path(ino)):
            raise OSError(errno.ENOTDIR, "not a directory")
        return 0

    def readdir(self, ino: int, fh: int, offset: int):
        path = self._path(ino)
        names = [b".", b".."] + sorted(os.listdir(path))
        for i in range(offset, len(names)):
            name = names[i]
            try:
                st = os.lstat(os.path.join(path, name))
            except FileNotFoundError:
                continue
            yield DirEntry(name, Attr(st.st_ino, st.st_mode), i + 1)

    # ---- xattrs -----------------------------------------------------------------------
    def setxattr(self, ino: int, name: bytes, value: bytes, flags: int) -> None:
        os.setxattr(self._path(ino), name, value, flags, follow_symlinks=False)

    def getxattr(self, ino: int, name: bytes) -> bytes:
        return os.getxattr(self._path(ino), name, follow_symlinks=False)

    def listxattr(self, ino: int) -> list[bytes]:
        return [os.fsencode(n) for n in os.listxattr(self._path(ino), follow_symlinks=False)]

    def removexattr(self, ino: int, name: bytes) -> None:
        os.removexattr(self._path(ino), name, follow_symlinks=False)
