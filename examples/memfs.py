"""An in-memory file system for subring.fuse.

    sudo python -m subring.fuse examples.memfs:MemFS /mnt/x --enable-uring

Directories, regular files, hard and symbolic links, xattrs, rename; all data
lives in this process and disappears at unmount.
"""

from __future__ import annotations

import errno
import os
import stat
import time

from subring.fuse import ROOT_INO, Attr, DirEntry, Entry, Operations, SetAttr, StatFS


class Node:
    __slots__ = ("ino", "mode", "nlink", "uid", "gid", "rdev", "data", "children",
                 "target", "xattrs", "atime", "mtime", "ctime", "lookups")

    def __init__(self, ino: int, mode: int, uid: int = 0, gid: int = 0) -> None:
        now = time.time_ns()
        self.ino, self.mode, self.uid, self.gid = ino, mode, uid, gid
        self.nlink = 2 if stat.S_ISDIR(mode) else 1
        self.rdev = 0
        self.data = bytearray()
        self.children: dict[bytes, int] | None = {} if stat.S_ISDIR(mode) else None
        self.target = b""
        self.xattrs: dict[bytes, bytes] = {}
        self.atime = self.mtime = self.ctime = now
        self.lookups = 0

    def attr(self) -> Attr:
        size = len(self.target) if stat.S_ISLNK(self.mode) else (
            len(self.children) if self.children is not None else len(self.data))
        return Attr(self.ino, self.mode, self.nlink, self.uid, self.gid, self.rdev, size,
                    (size + 511) // 512, 4096, self.atime, self.mtime, self.ctime)


class MemFS(Operations):
    """Every inode is a :class:`Node` in ``self.nodes``; directories map
    names to inode numbers."""

    def __init__(self) -> None:
        self.nodes: dict[int, Node] = {ROOT_INO: Node(ROOT_INO, stat.S_IFDIR | 0o755)}
        self.next_ino = ROOT_INO + 1

    # ---- helpers ----------------------------------------------------------
    def _node(self, ino: int) -> Node:
        try:
            return self.nodes[ino]
        except KeyError:
            raise OSError(errno.ENOENT, "no such inode") from None

    def _dir(self, ino: int) -> Node:
        d = self._node(ino)
        if d.children is None:
            raise OSError(errno.ENOTDIR, "not a directory")
        return d

    def _entry(self, node: Node) -> Entry:
        node.lookups += 1
        return Entry(node.ino, node.attr())

    def _new(self, parent: int, name: bytes, mode: int) -> Node:
        d = self._dir(parent)
        if name in d.children:
            raise OSError(errno.EEXIST, "exists")
        node = Node(self.next_ino, mode, *(os.getuid(), os.getgid()))
        self.next_ino += 1
        self.nodes[node.ino] = node
        d.children[name] = node.ino
        if stat.S_ISDIR(mode):
            d.nlink += 1
        d.mtime = d.ctime = time.time_ns()
        return node

    def _drop(self, node: Node) -> None:
        if node.nlink <= 0 and node.lookups <= 0:
            self.nodes.pop(node.ino, None)

    # ---- operations --------------------------------------------------------
    def lookup(self, parent: int, name: bytes) -> Entry:
        d = self._dir(parent)
        if name == b".":
            return self._entry(d)
        ino = d.children.get(name)
        if ino is None:
            raise OSError(errno.ENOENT, "no such file")
        return self._entry(self.nodes[ino])

    def forget(self, ino: int, nlookup: int) -> None:
        node = self.nodes.get(ino)
        if node is not None and ino != ROOT_INO:
            node.lookups -= nlookup
            self._drop(node)

    def getattr(self, ino: int, fh: int | None) -> Attr:
        return self._node(ino).attr()

    def setattr(self, ino: int, changes: SetAttr, fh: int | None) -> Attr:
        node = self._node(ino)
        if changes.mode is not None:
            node.mode = (node.mode & ~0o7777) | (changes.mode & 0o7777)
        if changes.uid is not None:
            node.uid = changes.uid
        if changes.gid is not None:
            node.gid = changes.gid
        if changes.size is not None:
            if node.children is not None:
                raise OSError(errno.EISDIR, "is a directory")
            del node.data[changes.size:]
            node.data.extend(bytes(changes.size - len(node.data)))
            node.mtime = time.time_ns()
        if changes.atime_ns is not None:
            node.atime = changes.atime_ns
        if changes.mtime_ns is not None:
            node.mtime = changes.mtime_ns
        node.ctime = changes.ctime_ns if changes.ctime_ns is not None else time.time_ns()
        return node.attr()

    def readlink(self, ino: int) -> bytes:
        return self._node(ino).target

    def mknod(self, parent: int, name: bytes, mode: int, rdev: int) -> Entry:
        node = self._new(parent, name, mode)
        node.rdev = rdev
        return self._entry(node)

    def mkdir(self, parent: int, name: bytes, mode: int) -> Entry:
        return self._entry(self._new(parent, name, stat.S_IFDIR | (mode & 0o7777)))

    def create(self, parent: int, name: bytes, mode: int, flags: int) -> tuple[Entry, int]:
        return self._entry(self._new(parent, name, stat.S_IFREG | (mode & 0o7777))), 0

    def symlink(self, parent: int, name: bytes, target: bytes) -> Entry:
        node = self._new(parent, name, stat.S_IFLNK | 0o777)
        node.target = target
        return self._entry(node)

    def link(self, ino: int, newparent: int, newname: bytes) -> Entry:
        node = self._node(ino)
        d = self._dir(newparent)
        if newname in d.children:
            raise OSError(errno.EEXIST, "exists")
        d.children[newname] = ino
        node.nlink += 1
        node.ctime = time.time_ns()
        return self._entry(node)

    def _remove(self, parent: int, name: bytes, want_dir: bool) -> None:
        d = self._dir(parent)
        ino = d.children.get(name)
        if ino is None:
            raise OSError(errno.ENOENT, "no such file")
        node = self.nodes[ino]
        if want_dir:
            if node.children is None:
                raise OSError(errno.ENOTDIR, "not a directory")
            if node.children:
                raise OSError(errno.ENOTEMPTY, "directory not empty")
            d.nlink -= 1
            node.nlink = 0
        else:
            if node.children is not None:
                raise OSError(errno.EISDIR, "is a directory")
            node.nlink -= 1
        del d.children[name]
        d.mtime = d.ctime = node.ctime = time.time_ns()
        self._drop(node)

    def unlink(self, parent: int, name: bytes) -> None:
        self._remove(parent, name, False)

    def rmdir(self, parent: int, name: bytes) -> None:
        self._remove(parent, name, True)

    def rename(self, parent: int, name: bytes, newparent: int, newname: bytes,
               flags: int) -> None:
        src, dst = self._dir(parent), self._dir(newparent)
        ino = src.children.get(name)
        if ino is None:
            raise OSError(errno.ENOENT, "no such file")
        node = self.nodes[ino]
        old = dst.children.get(newname)
        if old is not None and old != ino:
            if flags & 1:                      # RENAME_NOREPLACE
                raise OSError(errno.EEXIST, "exists")
            victim = self.nodes[old]
            if victim.children is not None:
                if node.children is None:
                    raise OSError(errno.EISDIR, "is a directory")
                if victim.children:
                    raise OSError(errno.ENOTEMPTY, "directory not empty")
                dst.nlink -= 1
                victim.nlink = 0
            else:
                if node.children is not None:
                    raise OSError(errno.ENOTDIR, "not a directory")
                victim.nlink -= 1
            self._drop(victim)
        del src.children[name]
        dst.children[newname] = ino
        if node.children is not None and src is not dst:
            src.nlink -= 1
            dst.nlink += 1
        src.mtime = dst.mtime = node.ctime = time.time_ns()

    def open(self, ino: int, flags: int) -> int:
        node = self._node(ino)
        if flags & os.O_TRUNC:
            node.data.clear()
        return 0

    def read(self, ino: int, fh: int, offset: int, size: int) -> bytes:
        return bytes(self._node(ino).data[offset:offset + size])

    def write(self, ino: int, fh: int, offset: int, data: bytes) -> int:
        buf = self._node(ino).data
        end = offset + len(data)
        if offset > len(buf):
            buf.extend(bytes(offset - len(buf)))
        buf[offset:end] = data
        return len(data)

    def opendir(self, ino: int, flags: int) -> int:
        self._dir(ino)
        return 0

    def readdir(self, ino: int, fh: int, offset: int):
        d = self._dir(ino)
        items = [(b".", d.ino), (b"..", d.ino)] + list(d.children.items())
        for i in range(offset, len(items)):
            name, child = items[i]
            node = self.nodes.get(child)
            if node is not None:
                yield DirEntry(name, node.attr(), i + 1)

    def statfs(self, ino: int) -> StatFS:
        used = sum(len(n.data) for n in self.nodes.values()) // 4096
        return StatFS(blocks=1 << 20, bfree=(1 << 20) - used, bavail=(1 << 20) - used,
                      files=1 << 20, ffree=(1 << 20) - len(self.nodes))

    def setxattr(self, ino: int, name: bytes, value: bytes, flags: int) -> None:
        node = self._node(ino)
        if flags & 1 and name in node.xattrs:        # XATTR_CREATE
            raise OSError(errno.EEXIST, "exists")
        if flags & 2 and name not in node.xattrs:    # XATTR_REPLACE
            raise OSError(errno.ENODATA, "no such attribute")
        node.xattrs[name] = value

    def getxattr(self, ino: int, name: bytes) -> bytes:
        try:
            return self._node(ino).xattrs[name]
        except KeyError:
            raise OSError(errno.ENODATA, "no such attribute") from None

    def listxattr(self, ino: int) -> list[bytes]:
        return list(self._node(ino).xattrs)

    def removexattr(self, ino: int, name: bytes) -> None:
        if self._node(ino).xattrs.pop(name, None) is None:
            raise OSError(errno.ENODATA, "no such attribute")
