#!/usr/bin/env python3
"""The file system bench/fuse.py measures, written for each Python FUSE
library it compares, and a server entry point that mounts one of them.

The tree (the same as bench/c_fuse.c serves): the root directory (inode 1)
holds one read-only file ``data.bin`` (inode 2) of ``--size`` bytes whose
4 KiB block number b is the little-endian u64 b repeated.  Kernel caching is
off: zero entry and attribute timeouts and direct I/O on open, so every
``stat()`` (LOOKUP + GETATTR) and every ``read()`` reaches the handler.
The handlers are written the way each library's documentation suggests,
with the answers built once up front, so that what is measured is the
library's per-request cost.

    python bench/fuse_fs.py subring MOUNTPOINT --size BYTES \\
        [--transport uring|classic] [--threads auto|per-queue|single] [--gil-spin-us US]
        [--poll-us US]
    python bench/fuse_fs.py mfusepy MOUNTPOINT --size BYTES [--mt]
    python bench/fuse_fs.py pyfuse3 MOUNTPOINT --size BYTES

The server mounts MOUNTPOINT, prints one line ``READY {json}`` on stdout
once it serves (the JSON says which transport and threads it uses), and
serves until the mount goes away (the caller unmounts it) or SIGTERM; the
subring server then prints ``STATS {json}`` (requests answered, how many
through the ring).  It dies with its parent.  Exit 2: the library is missing or the mount failed
(stderr says why).
"""

from __future__ import annotations

import argparse
import ctypes
import errno
import json
import signal
import stat
import struct
import sys
from typing import Any

FILE_NAME = "data.bin"
ROOT_INO = 1
FILE_INO = 2
BLOCK = 4096


def make_data(size: int) -> bytes:
    """The file's bytes: block b is ``struct.pack('<Q', b) * 512``."""
    return b"".join(struct.pack("<Q", b) * (BLOCK // 8) for b in range(size // BLOCK))


def ready(**info: Any) -> None:
    print("READY " + json.dumps(info), flush=True)


def die_with_parent() -> None:
    """PR_SET_PDEATHSIG(SIGKILL): never outlive the benchmark."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, signal.SIGKILL, 0, 0, 0)
    except OSError:
        pass


# --------------------------------------------------------------------------
# subring.fuse: inode-based, handlers return Attr / Entry / bytes
# --------------------------------------------------------------------------

def serve_subring(mountpoint: str, size: int, transport: str, threads: str,
                  gil_spin_us: float | None = None, poll_us: float | None = None) -> int:
    from subring import fuse

    data = make_data(size)
    root_attr = fuse.Attr(ino=ROOT_INO, mode=stat.S_IFDIR | 0o755, nlink=2)
    file_attr = fuse.Attr(ino=FILE_INO, mode=stat.S_IFREG | 0o444, nlink=1, size=size,
                          blocks=(size + 511) // 512)
    entry = fuse.Entry(FILE_INO, file_attr)
    name = FILE_NAME.encode()
    listing = [fuse.DirEntry(b".", root_attr, 1), fuse.DirEntry(b"..", root_attr, 2),
               fuse.DirEntry(name, file_attr, 3)]

    class BenchFS(fuse.Operations):
        def lookup(self, parent: int, nm: bytes) -> Any:
            if parent == ROOT_INO and nm == name:
                return entry
            raise OSError(errno.ENOENT, "no such file")

        def getattr(self, ino: int, fh: Any) -> Any:
            if ino == FILE_INO:
                return file_attr
            if ino == ROOT_INO:
                return root_attr
            raise OSError(errno.ENOENT, "no such inode")

        def open(self, ino: int, flags: int) -> int:
            if ino != FILE_INO:
                raise OSError(errno.EISDIR, "a directory")
            return ino

        def read(self, ino: int, fh: int, offset: int, sz: int) -> bytes:
            return data[offset:offset + sz]

        def opendir(self, ino: int, flags: int) -> int:
            if ino != ROOT_INO:
                raise OSError(errno.ENOTDIR, "not a directory")
            return ino

        def readdir(self, ino: int, fh: int, offset: int) -> Any:
            return listing[offset:]

    extra = {k: v for k, v in (("gil_spin_us", gil_spin_us), ("poll_us", poll_us))
             if v is not None}
    m = fuse.mount(BenchFS(), mountpoint, transport=transport, threads=threads,
                   direct_io=True, attr_timeout=0, entry_timeout=0, fsname="fusebench",
                   subtype="subring_bench", **extra)
    signal.signal(signal.SIGTERM, lambda *_: m.unmount())
    if poll_us is None:
        poll_us = fuse.DEFAULT_POLL_US
    ready(library="subring.fuse", transport=m.transport, threads=m.threads,
          **({"poll_us": poll_us} if m.transport == "uring" else {}))
    try:
        m.wait()
        report_stats(m)
    finally:
        m.unmount()
    return 0


def report_stats(m: Any) -> None:
    """One ``STATS {json}`` line: how many requests the server answered and
    through which path (the benchmark checks that every op reached it)."""
    try:
        st = m.statistics()
    except Exception as e:  # noqa: BLE001 -- informational only
        print(f"fuse_fs: no statistics: {type(e).__name__}: {e}", file=sys.stderr)
        return
    fields = ("requests", "ring_requests", "dev_requests", "error_replies", "gil_spins",
              "gil_spin_timeouts", "poll_hits", "poll_timeouts")
    print("STATS " + json.dumps({k: getattr(st, k, None) for k in fields}), flush=True)


# --------------------------------------------------------------------------
# mfusepy: libfuse3's high-level (path-based) API through ctypes
# --------------------------------------------------------------------------

def serve_mfusepy(mountpoint: str, size: int, multithreaded: bool) -> int:
    import mfusepy

    data = make_data(size)
    root = {"st_mode": stat.S_IFDIR | 0o755, "st_nlink": 2, "st_ino": ROOT_INO}
    file = {"st_mode": stat.S_IFREG | 0o444, "st_nlink": 1, "st_size": size,
            "st_blocks": (size + 511) // 512, "st_ino": FILE_INO}
    fpath = "/" + FILE_NAME

    class BenchFS(mfusepy.Operations):
        use_ns = True

        def init(self, path: str) -> None:
            ready(library="mfusepy", version=getattr(mfusepy, "__version__", None),
                  transport="classic", threads="multi" if multithreaded else "single")

        def getattr(self, path: str, fh: Any = None) -> dict:
            if path == fpath:
                return file
            if path == "/":
                return root
            raise mfusepy.FuseOSError(errno.ENOENT)

        def open(self, path: str, flags: int) -> int:
            if path != fpath:
                raise mfusepy.FuseOSError(errno.ENOENT)
            return FILE_INO

        def read(self, path: str, sz: int, offset: int, fh: int) -> bytes:
            return data[offset:offset + sz]

        def readdir(self, path: str, fh: int) -> list:
            return [".", "..", FILE_NAME]

    mfusepy.FUSE(BenchFS(), mountpoint, foreground=True, nothreads=not multithreaded,
                 direct_io=True, attr_timeout=0, entry_timeout=0, negative_timeout=0,
                 fsname="fusebench", subtype="mfusepy_bench")
    return 0


# --------------------------------------------------------------------------
# pyfuse3: libfuse3's low-level (inode-based) API, async handlers on trio
# --------------------------------------------------------------------------

def serve_pyfuse3(mountpoint: str, size: int) -> int:
    import pyfuse3
    import trio

    data = make_data(size)

    def attrs(ino: int) -> Any:
        a = pyfuse3.EntryAttributes()
        a.st_ino = ino
        a.generation = 0
        a.entry_timeout = 0
        a.attr_timeout = 0
        a.st_blksize = BLOCK
        if ino == ROOT_INO:
            a.st_mode, a.st_nlink, a.st_size = stat.S_IFDIR | 0o755, 2, 0
        else:
            a.st_mode, a.st_nlink, a.st_size = stat.S_IFREG | 0o444, 1, size
            a.st_blocks = (size + 511) // 512
        return a

    root_attr, file_attr = attrs(ROOT_INO), attrs(FILE_INO)
    name = FILE_NAME.encode()

    class BenchFS(pyfuse3.Operations):
        async def lookup(self, parent_inode: int, nm: bytes, ctx: Any = None) -> Any:
            if parent_inode == ROOT_INO and nm == name:
                return file_attr
            raise pyfuse3.FUSEError(errno.ENOENT)

        async def getattr(self, inode: int, ctx: Any = None) -> Any:
            if inode == FILE_INO:
                return file_attr
            if inode == ROOT_INO:
                return root_attr
            raise pyfuse3.FUSEError(errno.ENOENT)

        async def open(self, inode: int, flags: int, ctx: Any) -> Any:
            if inode != FILE_INO:
                raise pyfuse3.FUSEError(errno.EISDIR)
            return pyfuse3.FileInfo(fh=inode, direct_io=True)

        async def read(self, fh: int, off: int, sz: int) -> bytes:
            return data[off:off + sz]

        async def opendir(self, inode: int, ctx: Any) -> int:
            if inode != ROOT_INO:
                raise pyfuse3.FUSEError(errno.ENOTDIR)
            return inode

        async def readdir(self, fh: int, start_id: int, token: Any) -> None:
            items = [(b".", root_attr), (b"..", root_attr), (name, file_attr)]
            for i in range(start_id, len(items)):
                if not pyfuse3.readdir_reply(token, items[i][0], items[i][1], i + 1):
                    break

        async def releasedir(self, fh: int) -> None:
            pass

        async def release(self, fh: int) -> None:
            pass

    opts = set(pyfuse3.default_options)
    opts.discard("default_permissions")
    opts |= {"fsname=fusebench", "subtype=pyfuse3_bench"}
    pyfuse3.init(BenchFS(), mountpoint, opts)
    ready(library="pyfuse3", version=getattr(pyfuse3, "__version__", None),
          transport="classic", threads="trio")
    try:
        trio.run(pyfuse3.main)
    finally:
        pyfuse3.close(unmount=False)     # the benchmark unmounts
    return 0


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("library", choices=("subring", "mfusepy", "pyfuse3"))
    p.add_argument("mountpoint")
    p.add_argument("--size", type=int, required=True, help="file size, a multiple of 4096")
    p.add_argument("--transport", default="uring", choices=("uring", "classic", "auto"))
    p.add_argument("--threads", default="auto", choices=("auto", "per-queue", "single"))
    p.add_argument("--mt", action="store_true", help="mfusepy: libfuse's multi-threaded loop")
    p.add_argument("--gil-spin-us", type=float, default=None,
                   help="subring: mount(gil_spin_us=...) (default: the library's)")
    p.add_argument("--poll-us", type=float, default=None,
                   help="subring: mount(poll_us=...) (default: the library's)")
    args = p.parse_args(argv)
    if args.size <= 0 or args.size % BLOCK:
        p.error("--size must be a positive multiple of 4096")
    die_with_parent()
    signal.signal(signal.SIGINT, signal.SIG_DFL)
    try:
        if args.library == "subring":
            return serve_subring(args.mountpoint, args.size, args.transport, args.threads,
                                 args.gil_spin_us, args.poll_us)
        if args.library == "mfusepy":
            return serve_mfusepy(args.mountpoint, args.size, args.mt)
        return serve_pyfuse3(args.mountpoint, args.size)
    except ImportError as e:
        print(f"fuse_fs: {args.library} is not importable: {type(e).__name__}: {e}",
              file=sys.stderr)
        return 2
    except OSError as e:
        print(f"fuse_fs: {args.library} could not mount: {type(e).__name__}: {e}",
              file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
