"""Helpers for the FUSE tests: probes that skip with the reason, a mount
fixture that always cleans up, and small file systems with special behaviour.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import os
import sys
import threading
import time
from collections.abc import Iterator

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)

from examples.memfs import MemFS  # noqa: E402

from subring import _core  # noqa: E402
from subring.fuse import mount, uring_enabled, uring_switched  # noqa: E402
from subring.fuse.session import FuseTransportError  # noqa: E402

TRANSPORTS = ["classic", "uring"]


def fuse_skip_reason(transport: str = "classic") -> str | None:
    """Why FUSE tests cannot run here (None: they can)."""
    if not os.path.exists("/dev/fuse"):
        return "/dev/fuse is absent"
    if os.geteuid() != 0:
        return "mounting FUSE needs root (these tests use mount(2) directly)"
    if transport == "uring" and uring_enabled() is None:
        return "the kernel has no FUSE over io_uring (no enable_uring parameter, needs 6.14+)"
    return None


def require(transport: str = "classic") -> None:
    why = fuse_skip_reason(transport)
    if why:
        pytest.skip(why)


def is_mounted(path: str) -> bool:
    with open("/proc/self/mountinfo") as f:
        return any(line.split()[4] == path for line in f)


def force_unmount(path: str) -> None:
    """Last resort of a finalizer: lazy umount, ignoring 'not mounted'."""
    try:
        _core.fuse_umount(path, 2)   # MNT_DETACH
    except OSError:
        pass


def fuse_threads() -> list[str]:
    return [t.name for t in threading.enumerate() if t.name.startswith("fuse-")]


@pytest.fixture(scope="module", autouse=True)
def nothing_left_behind(tmp_path_factory):
    """Module teardown: no mount under this run's temp dirs, no serving
    thread (import it into a test module to apply it there)."""
    yield
    base = str(tmp_path_factory.getbasetemp())
    with open("/proc/self/mountinfo") as f:
        left = [line.split()[4] for line in f if line.split()[4].startswith(base)]
    for path in left:
        force_unmount(path)
    assert left == [], f"mounts left behind: {left}"
    assert fuse_threads() == [], f"threads left behind: {fuse_threads()}"


@contextlib.contextmanager
def mounted(ops, path: str, transport: str, **kw) -> Iterator[object]:
    """Mount `ops` on `path` over `transport`; always unmount at exit.

    io_uring: enable_uring is switched on only around the mount(2)+INIT (it
    is read then) and restored.  Another test process may toggle it at the
    same time; then the mount comes up classic and we retry."""
    require(transport)
    m = None
    try:
        if transport == "uring":
            for attempt in range(5):
                try:
                    with uring_switched(True):
                        m = mount(ops, path, transport="uring", **kw)
                    break
                except FuseTransportError:
                    if attempt == 4:
                        raise
                    time.sleep(0.05)
        else:
            m = mount(ops, path, transport="classic", **kw)
        yield m
    finally:
        if m is not None:
            m.unmount()
        if is_mounted(path):
            force_unmount(path)


class FaultyFS(MemFS):
    """MemFS whose lookup of some names misbehaves."""

    def lookup(self, parent, name):
        if name == b"boom":
            raise ValueError("boom handler bug")
        if name == b"denied":
            raise PermissionError(errno.EACCES, "denied")
        if name == b"badvalue":
            return "not an Entry"
        return super().lookup(parent, name)


class SlowFS(MemFS):
    """MemFS with a file 'slow' whose read takes `delay` seconds -- as an
    async handler (other requests proceed meanwhile) -- and a file 'stuck'
    whose read blocks its thread (for the SIGKILL test)."""

    delay = 1.5

    def __init__(self) -> None:
        super().__init__()
        # A test that sets `gate` holds the slow read until it sets the gate
        # (instead of `delay`); `entered` says the slow read reached the handler.
        self.gate: threading.Event | None = None
        self.entered = threading.Event()
        for name in (b"slow", b"stuck", b"fast"):
            e = self.create(1, name, 0o644, 0)[0]
            self.write(e.ino, 0, 0, b"x" * 10)
            self.nodes[e.ino].lookups = 10**6

    async def _slow_read(self, ino, fh, offset, size):
        self.entered.set()
        if self.gate is None:
            await asyncio.sleep(self.delay)
        else:
            deadline = time.monotonic() + 30.0
            while not self.gate.is_set() and time.monotonic() < deadline:
                await asyncio.sleep(0.005)     # other requests are served meanwhile
        return MemFS.read(self, ino, fh, offset, size)

    def read(self, ino, fh, offset, size):
        node = self.nodes[ino]
        name = next((n for n, i in self.nodes[1].children.items() if i == ino), b"")
        if name == b"slow":
            return self._slow_read(ino, fh, offset, size)
        if name == b"stuck":
            time.sleep(60)
        return bytes(node.data[offset:offset + size])
