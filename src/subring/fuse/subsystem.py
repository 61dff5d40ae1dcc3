"""A file system with no mount: an :class:`Operations` class served as a
subring :class:`~subring.Subsystem` (user-space rings, no root, no
``/dev/fuse``), and :class:`FuseClient`, which calls it with the same
signatures the kernel would use.

    # server process
    FuseSubsystem(MemFS()).serve("/tmp/memfs.sock")

    # any other process (no privileges)
    fs = FuseClient.connect("/tmp/memfs.sock")
    e = fs.mkdir(ROOT_INO, b"docs", 0o755)
    entry, fh = fs.create(e.ino, b"a.txt", 0o644, os.O_WRONLY)
    fs.write(entry.ino, fh, 0, b"hello")

The wire format of each op (``arg0``, ``arg1``, payload) is fixed below; the
results travel as small packed structs that :class:`FuseClient` turns back
into :class:`Attr`, :class:`Entry`, :class:`StatFS` and :class:`DirEntry`.
An ``async def`` handler runs to completion on a private event loop (the
subsystem serves one request at a time).
"""

from __future__ import annotations

import asyncio
import errno
import inspect
import struct
from collections.abc import Iterable
from typing import Any

from ..subsystem import Subsystem, SubsystemClient, connect, op
from .types import Attr, DirEntry, Entry, SetAttr, StatFS

_ATTR = struct.Struct("<12q")
_ENTRY_HEAD = struct.Struct("<QQ")          # ino, generation (then an Attr)
_STATFS = struct.Struct("<8Q")
_DIRENT_HEAD = struct.Struct("<HQ")         # name length, next offset (then name, attr/entry)
_SETATTR = struct.Struct("<I7q")            # mask of set fields, then the 7 values
_Q = struct.Struct("<Q")
_QI = struct.Struct("<QI")
_II = struct.Struct("<II")
_I = struct.Struct("<I")


def _pack_attr(a: Attr) -> bytes:
    return _ATTR.pack(*a)


def _pack_entry(e: Entry) -> bytes:
    return _ENTRY_HEAD.pack(e.ino, e.generation) + _pack_attr(e.attr)


def _unpack_entry(b: bytes, off: int = 0) -> Entry:
    ino, gen = _ENTRY_HEAD.unpack_from(b, off)
    return Entry(ino, Attr(*_ATTR.unpack_from(b, off + _ENTRY_HEAD.size)), gen)


_ENTRY_SIZE = _ENTRY_HEAD.size + _ATTR.size


def _split_name(data: bytes) -> tuple[bytes, bytes]:
    name, sep, rest = data.partition(b"\0")
    if not sep:
        raise OSError(errno.EINVAL, "malformed request: name without NUL")
    return name, rest


class FuseSubsystem(Subsystem):
    """Serve ``fs`` (an :class:`~subring.fuse.Operations`) to subring
    clients.  An op the file system does not define answers ENOSYS."""

    name = "fuse"

    def __init__(self, fs: Any) -> None:
        super().__init__()
        self.fs = fs
        self._aloop: asyncio.AbstractEventLoop | None = None

    def serve(self, address: str, **kw: Any) -> None:
        """:meth:`Subsystem.serve`; also closes the event loop of async
        handlers when serving ends."""
        try:
            super().serve(address, **kw)
        finally:
            if self._aloop is not None:
                self._aloop.run_until_complete(self._aloop.shutdown_asyncgens())
                self._aloop.close()
                self._aloop = None

    def _call(self, name: str, *args: Any) -> Any:
        fn = getattr(self.fs, name, None)
        if not callable(fn):
            raise OSError(errno.ENOSYS, f"the file system does not implement {name}")
        res = fn(*args)
        if inspect.isawaitable(res):
            if self._aloop is None:
                self._aloop = asyncio.new_event_loop()
            res = self._aloop.run_until_complete(res)
        return res

    @op(name="lookup")
    def _lookup(self, req: Any) -> bytes:
        return _pack_entry(self._call("lookup", req.arg0, bytes(req.data)))

    @op(name="forget")
    def _forget(self, req: Any) -> None:
        fn = getattr(self.fs, "forget", None)
        if callable(fn):
            fn(req.arg0, req.arg1)

    @op(name="getattr")
    def _getattr(self, req: Any) -> bytes:
        return _pack_attr(self._call("getattr", req.arg0, req.arg1 - 1 if req.arg1 else None))

    @op(name="setattr")
    def _setattr(self, req: Any) -> bytes:
        mask, *vals = _SETATTR.unpack(bytes(req.data))
        changes = SetAttr(*(v if mask & (1 << i) else None for i, v in enumerate(vals)))
        return _pack_attr(self._call("setattr", req.arg0, changes,
                                     req.arg1 - 1 if req.arg1 else None))

    @op(name="readlink")
    def _readlink(self, req: Any) -> bytes:
        return bytes(self._call("readlink", req.arg0))

    @op(name="mknod")
    def _mknod(self, req: Any) -> bytes:
        data = bytes(req.data)
        mode, rdev = _II.unpack_from(data)
        return _pack_entry(self._call("mknod", req.arg0, data[_II.size:], mode, rdev))

    @op(name="mkdir")
    def _mkdir(self, req: Any) -> bytes:
        return _pack_entry(self._call("mkdir", req.arg0, bytes(req.data), req.arg1))

    @op(name="unlink")
    def _unlink(self, req: Any) -> None:
        self._call("unlink", req.arg0, bytes(req.data))

    @op(name="rmdir")
    def _rmdir(self, req: Any) -> None:
        self._call("rmdir", req.arg0, bytes(req.data))

    @op(name="symlink")
    def _symlink(self, req: Any) -> bytes:
        name, target = _split_name(bytes(req.data))
        return _pack_entry(self._call("symlink", req.arg0, name, target))

    @op(name="rename")
    def _rename(self, req: Any) -> None:
        data = bytes(req.data)
        (flags,) = _I.unpack_from(data)
        name, newname = _split_name(data[_I.size:])
        self._call("rename", req.arg0, name, req.arg1, newname, flags)

    @op(name="link")
    def _link(self, req: Any) -> bytes:
        return _pack_entry(self._call("link", req.arg0, req.arg1, bytes(req.data)))

    def _open_common(self, name: str, req: Any) -> bytes:
        fn = getattr(self.fs, name, None)
        fh = self._call(name, req.arg0, req.arg1) if callable(fn) else 0
        return _Q.pack(fh or 0)

    @op(name="open")
    def _open(self, req: Any) -> bytes:
        return self._open_common("open", req)

    @op(name="opendir")
    def _opendir(self, req: Any) -> bytes:
        return self._open_common("opendir", req)

    @op(name="read")
    def _read(self, req: Any) -> bytes:
        offset, size = _QI.unpack(bytes(req.data))
        return bytes(self._call("read", req.arg0, req.arg1, offset, size))[:size]

    @op(name="write")
    def _write(self, req: Any) -> int:
        data = bytes(req.data)
        (offset,) = _Q.unpack_from(data)
        return int(self._call("write", req.arg0, req.arg1, offset, data[_Q.size:]))

    @op(name="statfs")
    def _statfs(self, req: Any) -> bytes:
        fn = getattr(self.fs, "statfs", None)
        s = self._call("statfs", req.arg0) if callable(fn) else StatFS(bsize=512, frsize=512)
        return _STATFS.pack(*s)

    def _maybe(self, name: str, *args: Any) -> None:
        if callable(getattr(self.fs, name, None)):
            self._call(name, *args)

    @op(name="flush")
    def _flush(self, req: Any) -> None:
        self._maybe("flush", req.arg0, req.arg1)

    @op(name="release")
    def _release(self, req: Any) -> None:
        self._maybe("release", req.arg0, req.arg1)

    @op(name="releasedir")
    def _releasedir(self, req: Any) -> None:
        self._maybe("releasedir", req.arg0, req.arg1)

    @op(name="fsync")
    def _fsync(self, req: Any) -> None:
        self._maybe("fsync", req.arg0, req.arg1, bool(bytes(req.data)[:1] == b"\1"))

    @op(name="fsyncdir")
    def _fsyncdir(self, req: Any) -> None:
        self._maybe("fsyncdir", req.arg0, req.arg1, bool(bytes(req.data)[:1] == b"\1"))

    @op(name="setxattr")
    def _setxattr(self, req: Any) -> None:
        name, value = _split_name(bytes(req.data))
        self._call("setxattr", req.arg0, name, value, req.arg1)

    @op(name="getxattr")
    def _getxattr(self, req: Any) -> bytes:
        return bytes(self._call("getxattr", req.arg0, bytes(req.data)))

    @op(name="listxattr")
    def _listxattr(self, req: Any) -> bytes:
        return b"".join(bytes(n) + b"\0" for n in self._call("listxattr", req.arg0))

    @op(name="removexattr")
    def _removexattr(self, req: Any) -> None:
        self._call("removexattr", req.arg0, bytes(req.data))

    def _readdir_common(self, name: str, req: Any) -> bytes:
        offset, limit = _QI.unpack(bytes(req.data))
        out = bytearray()
        for item in self._call(name, req.arg0, req.arg1, offset):
            nm = bytes(item.name)
            body = _pack_entry(item.attr) if name == "readdirplus" else _pack_attr(item.attr)
            rec = _DIRENT_HEAD.pack(len(nm), item.offset) + nm + body
            if len(out) + len(rec) > limit:
                break
            out += rec
        return bytes(out)

    @op(name="readdir")
    def _readdir(self, req: Any) -> bytes:
        return self._readdir_common("readdir", req)

    @op(name="readdirplus")
    def _readdirplus(self, req: Any) -> bytes:
        return self._readdir_common("readdirplus", req)

    @op(name="access")
    def _access(self, req: Any) -> None:
        self._maybe("access", req.arg0, req.arg1)

    @op(name="create")
    def _create(self, req: Any) -> bytes:
        data = bytes(req.data)
        (mode,) = _I.unpack_from(data)
        entry, fh = self._call("create", req.arg0, data[_I.size:], mode, req.arg1)
        return _pack_entry(entry) + _Q.pack(fh or 0)


class FuseClient:
    """Call a :class:`FuseSubsystem` with the :class:`Operations`
    signatures; errors arrive as ``OSError`` with the handler's errno."""

    def __init__(self, client: SubsystemClient, *, slot_size: int = 4096,
                 timeout: float = 30.0) -> None:
        self.client = client
        self.slot_size = slot_size
        self.timeout = timeout

    @classmethod
    def connect(cls, address: str, *, slot_size: int = 1 << 17, timeout: float = 5.0,
                wait: bool = False) -> FuseClient:
        """Attach to the FuseSubsystem serving the Unix socket ``address``
        (``slot_size`` bounds one read/readdir result).  ``wait=True``: keep
        trying for ``timeout`` seconds while nothing serves it yet."""
        kw: dict[str, Any] = {"wait": True} if wait else {}
        return cls(connect(address, slot_size=slot_size, timeout=timeout, **kw),
                   slot_size=slot_size)

    def close(self) -> None:
        """Detach from the subsystem."""
        self.client.close()

    def __enter__(self) -> FuseClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _c(self, name: str, data: Any = None, arg0: int = 0, arg1: int = 0) -> Any:
        return self.client.call(name, data, arg0, arg1, timeout=self.timeout)

    def lookup(self, parent: int, name: bytes) -> Entry:
        """Resolve ``name`` in directory ``parent``."""
        return _unpack_entry(self._c("lookup", name, parent))

    def forget(self, ino: int, nlookup: int) -> None:
        """Give back ``nlookup`` lookups of ``ino``."""
        self._c("forget", None, ino, nlookup)

    def getattr(self, ino: int, fh: int | None = None) -> Attr:
        """Attributes of ``ino``."""
        return Attr(*_ATTR.unpack(self._c("getattr", None, ino, 0 if fh is None else fh + 1)))

    def setattr(self, ino: int, changes: SetAttr, fh: int | None = None) -> Attr:
        """Change the fields of ``changes`` that are not None; returns the new attributes."""
        mask = sum(1 << i for i, v in enumerate(changes) if v is not None)
        data = _SETATTR.pack(mask, *(v or 0 for v in changes))
        return Attr(*_ATTR.unpack(self._c("setattr", data, ino, 0 if fh is None else fh + 1)))

    def readlink(self, ino: int) -> bytes:
        """Target of symbolic link ``ino``."""
        return self._c("readlink", None, ino) or b""

    def mknod(self, parent: int, name: bytes, mode: int, rdev: int = 0) -> Entry:
        """Create a node (file, FIFO, device) named ``name`` in ``parent``."""
        return _unpack_entry(self._c("mknod", _II.pack(mode, rdev) + name, parent))

    def mkdir(self, parent: int, name: bytes, mode: int) -> Entry:
        """Create directory ``name`` in ``parent``."""
        return _unpack_entry(self._c("mkdir", name, parent, mode))

    def unlink(self, parent: int, name: bytes) -> None:
        """Remove the non-directory ``name`` from ``parent``."""
        self._c("unlink", name, parent)

    def rmdir(self, parent: int, name: bytes) -> None:
        """Remove the empty directory ``name`` from ``parent``."""
        self._c("rmdir", name, parent)

    def symlink(self, parent: int, name: bytes, target: bytes) -> Entry:
        """Create symbolic link ``name`` -> ``target`` in ``parent``."""
        return _unpack_entry(self._c("symlink", name + b"\0" + target, parent))

    def rename(self, parent: int, name: bytes, newparent: int, newname: bytes,
               flags: int = 0) -> None:
        """Move ``parent/name`` to ``newparent/newname``."""
        self._c("rename", _I.pack(flags) + name + b"\0" + newname, parent, newparent)

    def link(self, ino: int, newparent: int, newname: bytes) -> Entry:
        """Create hard link ``newparent/newname`` to ``ino``."""
        return _unpack_entry(self._c("link", newname, ino, newparent))

    def open(self, ino: int, flags: int) -> int:
        """Open file ``ino``; returns the file handle."""
        return int(_Q.unpack(self._c("open", None, ino, flags))[0])

    def opendir(self, ino: int, flags: int = 0) -> int:
        """Open directory ``ino``; returns the handle."""
        return int(_Q.unpack(self._c("opendir", None, ino, flags))[0])

    def read(self, ino: int, fh: int, offset: int, size: int) -> bytes:
        """Up to ``size`` bytes of ``ino`` from ``offset``."""
        return self._c("read", _QI.pack(offset, size), ino, fh) or b""

    def write(self, ino: int, fh: int, offset: int, data: bytes) -> int:
        """Write ``data`` at ``offset``; returns the bytes written."""
        return int(self._c("write", _Q.pack(offset) + bytes(data), ino, fh))

    def statfs(self, ino: int = 1) -> StatFS:
        """File-system statistics."""
        return StatFS(*_STATFS.unpack(self._c("statfs", None, ino)))

    def flush(self, ino: int, fh: int) -> None:
        """The file handle is being closed (once per close of a duplicate)."""
        self._c("flush", None, ino, fh)

    def release(self, ino: int, fh: int) -> None:
        """The last reference to the file handle is gone."""
        self._c("release", None, ino, fh)

    def releasedir(self, ino: int, fh: int) -> None:
        """The last reference to the directory handle is gone."""
        self._c("releasedir", None, ino, fh)

    def fsync(self, ino: int, fh: int, datasync: bool = False) -> None:
        """Flush ``ino``'s data (and metadata unless ``datasync``)."""
        self._c("fsync", b"\1" if datasync else b"\0", ino, fh)

    def fsyncdir(self, ino: int, fh: int, datasync: bool = False) -> None:
        """Flush directory ``ino``."""
        self._c("fsyncdir", b"\1" if datasync else b"\0", ino, fh)

    def setxattr(self, ino: int, name: bytes, value: bytes, flags: int = 0) -> None:
        """Set extended attribute ``name``."""
        self._c("setxattr", name + b"\0" + value, ino, flags)

    def getxattr(self, ino: int, name: bytes) -> bytes:
        """Value of extended attribute ``name``."""
        return self._c("getxattr", name, ino) or b""

    def listxattr(self, ino: int) -> list[bytes]:
        """Names of ``ino``'s extended attributes."""
        raw = self._c("listxattr", None, ino) or b""
        return raw.split(b"\0")[:-1] if raw else []

    def removexattr(self, ino: int, name: bytes) -> None:
        """Remove extended attribute ``name``."""
        self._c("removexattr", name, ino)

    def _dir(self, name: str, ino: int, fh: int, offset: int, plus: bool) -> Iterable[DirEntry]:
        limit = self.slot_size
        while True:
            raw = self._c(name, _QI.pack(offset, limit), ino, fh) or b""
            if not raw:
                return
            pos = 0
            while pos < len(raw):
                nl, nxt = _DIRENT_HEAD.unpack_from(raw, pos)
                pos += _DIRENT_HEAD.size
                nm = raw[pos:pos + nl]
                pos += nl
                if plus:
                    attr: Any = _unpack_entry(raw, pos)
                    pos += _ENTRY_SIZE
                else:
                    attr = Attr(*_ATTR.unpack_from(raw, pos))
                    pos += _ATTR.size
                yield DirEntry(nm, attr, nxt)
                offset = nxt

    def readdir(self, ino: int, fh: int = 0, offset: int = 0) -> list[DirEntry]:
        """The whole listing from ``offset`` (as many round trips as needed)."""
        return list(self._dir("readdir", ino, fh, offset, False))

    def readdirplus(self, ino: int, fh: int = 0, offset: int = 0) -> list[DirEntry]:
        """The listing with an Entry per item (each counts a lookup)."""
        return list(self._dir("readdirplus", ino, fh, offset, True))

    def access(self, ino: int, mask: int) -> None:
        """Check ``mask`` (``os.R_OK``...) for the caller."""
        self._c("access", None, ino, mask)

    def create(self, parent: int, name: bytes, mode: int, flags: int) -> tuple[Entry, int]:
        """Create and open file ``name`` in ``parent``; returns (Entry, fh)."""
        raw = self._c("create", _I.pack(mode) + name, parent, flags)
        return _unpack_entry(raw), _Q.unpack_from(raw, _ENTRY_SIZE)[0]


__all__ = ["FuseSubsystem", "FuseClient"]
