"""What an SQE points at, built from Python values (for KernelRing's builders).

An SQE carries addresses: of a path, a timespec, an iovec array, a sockaddr,
a struct statx.  Each helper here encodes a Python value into that memory and
returns it as a :class:`~subring.Pin` (or a tuple of pins), which the builder
passes as ``keep=`` so the memory stays put until the op's final completion.
Integers that go into 32- or 64-bit SQE fields are range-checked here too,
never wrapped.  :func:`sockaddr` and :class:`Statx` are public (re-exported by
:mod:`subring.kernel` and :mod:`subring`).
"""

from __future__ import annotations

import ipaddress
import math
import operator
import os
import socket
import struct
from collections.abc import Sequence
from typing import Any

from . import _core

__all__ = ["AT_FDCWD", "AT_REMOVEDIR", "LOFF_MAX", "U64", "Statx", "fd32", "file_offset",
           "iovecs", "path_pin", "sockaddr", "timespec"]

Pin = _core.Pin
AT_FDCWD = -100          # <fcntl.h>: "relative to the current directory"
AT_REMOVEDIR = 0x200     # <fcntl.h>: unlinkat() removes a directory
U64 = 0xFFFFFFFFFFFFFFFF
LOFF_MAX = (1 << 63) - 1


def path_pin(path: str | bytes | os.PathLike[Any]) -> Pin:
    """A NUL-terminated, pinned copy of a path."""
    raw = os.fsencode(path)
    if b"\0" in raw:
        raise ValueError("embedded null byte in path")
    return Pin(raw + b"\0")


def timespec(seconds: float) -> Pin:
    """A pinned ``struct __kernel_timespec``.  NaN and negative values raise
    ValueError; values that do not fit (``inf``, ``1e300``) OverflowError."""
    seconds = float(seconds)
    if math.isnan(seconds) or seconds < 0:
        raise ValueError(f"timeout must be >= 0 seconds, got {seconds!r}")
    if seconds >= LOFF_MAX:
        raise OverflowError(f"timeout of {seconds!r} s does not fit a timespec "
                            "(at most 2**63 - 1 seconds)")
    sec = int(seconds)
    nsec = round((seconds - sec) * 1e9)
    if nsec >= 1_000_000_000:
        sec, nsec = sec + 1, nsec - 1_000_000_000
    return Pin(struct.pack("qq", sec, nsec))


def file_offset(offset: int, what: str = "offset") -> int:
    """A file offset for an SQE's 64-bit field: -1 (the fd's own position)
    becomes ``2**64 - 1``; anything else must fit a ``loff_t``.  Never wraps:
    ValueError below -1, OverflowError at 2**63 and above (as ``prep_write``)."""
    offset = operator.index(offset)
    if offset == -1:
        return U64
    if offset < -1:
        raise ValueError(f"{what} must be >= 0, or -1 for the file position; got {offset}")
    if offset > LOFF_MAX:
        raise OverflowError(f"{what} {offset} does not fit a 64-bit file offset")
    return offset


def fd32(fd: int, what: str = "fd") -> int:
    """An fd (or registered-file index) for a 32-bit SQE field, unwrapped."""
    fd = operator.index(fd)
    if not -(1 << 31) <= fd < (1 << 31):
        raise OverflowError(f"{what} {fd} out of range for a 32-bit int")
    return fd & 0xFFFFFFFF


def iovecs(buffers: Sequence[Any], writable: bool) -> tuple[Pin, tuple[Pin, ...]]:
    pins = tuple(Pin(b, writable) for b in buffers)
    if not pins:
        raise ValueError("at least one buffer is needed")
    iov = bytearray(16 * len(pins))
    for k, p in enumerate(pins):
        struct.pack_into("QQ", iov, 16 * k, p.address, p.nbytes)
    return Pin(iov), pins


def sockaddr(address: Any, family: int | None = None) -> bytes:
    """Encode a socket address as a ``struct sockaddr``.

    ``("127.0.0.1", 80)`` is AF_INET, ``("::1", 80[, flowinfo, scope_id])`` is
    AF_INET6, a ``str``/``bytes`` path is AF_UNIX (a leading NUL: abstract).
    Host names are not resolved: pass numeric addresses.
    """
    if isinstance(address, (str, bytes)) and family in (None, socket.AF_UNIX):
        path = os.fsencode(address)
        if len(path) > 107:
            raise ValueError("AF_UNIX path longer than 107 bytes")
        return struct.pack("H", socket.AF_UNIX) + path + (b"" if path[:1] == b"\0" else b"\0")
    if not isinstance(address, tuple) or len(address) not in (2, 4):
        raise TypeError(f"unsupported address {address!r}")
    host, port = address[0], operator.index(address[1])
    if not 0 <= port <= 0xFFFF:
        raise ValueError(f"port must be in 0..65535, got {port}")
    try:
        ip = ipaddress.ip_address(host)
    except ValueError:
        raise ValueError(f"{host!r} is not a numeric IP address (resolve it first)") from None
    if family is None:
        family = socket.AF_INET6 if ip.version == 6 else socket.AF_INET
    if family == socket.AF_INET:
        return struct.pack("H", socket.AF_INET) + struct.pack("!H", port) + ip.packed + bytes(8)
    flow, scope = (address[2], address[3]) if len(address) == 4 else (0, 0)
    flow, scope = operator.index(flow), operator.index(scope)
    if not (0 <= flow <= 0xFFFFFFFF and 0 <= scope <= 0xFFFFFFFF):
        raise ValueError("flowinfo and scope_id must be in 0..2**32-1")
    if ip.version == 4:
        ip = ipaddress.ip_address("::ffff:" + str(ip))
    return (struct.pack("H", socket.AF_INET6) + struct.pack("!HI", port, flow) + ip.packed
            + struct.pack("I", scope))


class Statx(bytearray):
    """A ``struct statx`` buffer for :meth:`KernelRing.prep_statx` (256 bytes)."""

    def __init__(self) -> None:
        super().__init__(256)

    def _u(self, fmt: str, off: int) -> int:
        value: int = struct.unpack_from(fmt, self, off)[0]
        return value

    def _ts(self, off: int) -> float:
        sec: int
        nsec: int
        sec, nsec = struct.unpack_from("qI", self, off)
        return sec + nsec * 1e-9

    mask = property(lambda s: s._u("I", 0))
    blksize = property(lambda s: s._u("I", 4))
    attributes = property(lambda s: s._u("Q", 8))
    nlink = property(lambda s: s._u("I", 16))
    uid = property(lambda s: s._u("I", 20))
    gid = property(lambda s: s._u("I", 24))
    mode = property(lambda s: s._u("H", 28))
    ino = property(lambda s: s._u("Q", 32))
    size = property(lambda s: s._u("Q", 40))
    blocks = property(lambda s: s._u("Q", 48))
    atime = property(lambda s: s._ts(64))
    btime = property(lambda s: s._ts(80))
    ctime = property(lambda s: s._ts(96))
    mtime = property(lambda s: s._ts(112))
    rdev = property(lambda s: os.makedev(s._u("I", 128), s._u("I", 132)))
    dev = property(lambda s: os.makedev(s._u("I", 136), s._u("I", 140)))

    def __repr__(self) -> str:
        return f"<Statx mode={self.mode:o} size={self.size} ino={self.ino}>"
