"""Shared memory: BufferPool.

A :class:`BufferPool` is ``count`` buffers of ``size`` bytes in one sealed
memfd (nothing appears in ``/dev/shm``; the memory goes away with the last
mapping or fd).  The same pool can be

* registered with a subsystem connection (``client.register_pool(pool)``):
  payloads then travel by ``(buffer index, offset, length)`` with no copy --
  the subsystem's handler gets a writable ``memoryview`` onto the same pages;
* registered with a :class:`~subring.KernelRing` as fixed buffers
  (``ring.register_buffers(pool.buffers())``), so data the kernel reads into a
  buffer reaches a subsystem without being copied.

The memfd is sealed against shrinking and growing, so no process sharing it
can make another one fault (SIGBUS) by truncating it.
"""

from __future__ import annotations

import dataclasses
import fcntl
import mmap
import os
from typing import Any, Self

from . import _core

__all__ = ["BufferPool", "PoolStatistics"]


@dataclasses.dataclass(frozen=True)
class PoolStatistics:
    """A snapshot of a :class:`BufferPool` (``BufferPool.statistics()``).

    A pool does no I/O of its own -- rings and subsystems move its data -- so
    this is its shape and state, not traffic counters."""

    backend: str       # always 'buffer-pool'
    count: int         # buffers
    size: int          # bytes per buffer
    nbytes: int        # count * size: the memfd's (sealed) length
    closed: bool       # close() or close_when_unused() was called: the memfd is closed


class BufferPool:
    """``count`` buffers of ``size`` bytes each in one sealed memfd."""

    def __init__(self, count: int, size: int, *, name: str = "subring-pool") -> None:
        if not isinstance(count, int) or not isinstance(size, int):
            raise TypeError("count and size must be ints")
        if count < 1 or size < 1 or count * size > 1 << 40:
            raise ValueError("count and size must be >= 1 (and the pool < 1 TiB)")
        self.count = count
        self.size = size
        self._fd = os.memfd_create(name, os.MFD_CLOEXEC | os.MFD_ALLOW_SEALING)
        try:
            # memfd_create makes the file mode 0777: whoever can reach the fd
            # (/proc/PID/fd of a process it is passed to) could open it anew.
            # Only the owner may; the fd itself travels by SCM_RIGHTS.
            os.fchmod(self._fd, 0o600)
            os.ftruncate(self._fd, count * size)
            fcntl.fcntl(self._fd, fcntl.F_ADD_SEALS,
                        fcntl.F_SEAL_SHRINK | fcntl.F_SEAL_GROW | fcntl.F_SEAL_SEAL)
            # Not mmap.mmap: it keeps a dup of the fd for as long as the
            # mapping lives, and views lent out (see _close_when_unused) may
            # outlive the pool.  SharedMap keeps no descriptor.
            self._mmap: Any = _core.SharedMap(self._fd, count * size)
        except BaseException:
            os.close(self._fd)
            raise
        self._view: memoryview | None = memoryview(self._mmap)

    @property
    def fd(self) -> int:
        """The memfd (sent to subsystems with SCM_RIGHTS)."""
        if self._fd < 0:
            raise ValueError("pool is closed")
        return self._fd

    @property
    def nbytes(self) -> int:
        """Size of the whole pool in bytes (``count * size``)."""
        return self.count * self.size

    @property
    def shared_map(self) -> Any:
        """The pool's mapping (a ``_core.SharedMap``; it holds no fd), for
        code that needs the map itself (leases, ``privatize()`` of ranges in
        fork children).  None once the pool is closed."""
        return self._mmap

    @property
    def closed(self) -> bool:
        """True once :meth:`close` (or :meth:`close_when_unused`) closed the memfd."""
        return self._fd < 0

    def statistics(self) -> PoolStatistics:
        """A frozen snapshot (``backend='buffer-pool'``); works after close too."""
        return PoolStatistics(backend="buffer-pool", count=self.count, size=self.size,
                              nbytes=self.nbytes, closed=self.closed)

    def buffer(self, index: int) -> memoryview:
        """A writable view of buffer ``index`` (zero-copy)."""
        if self._view is None:
            raise ValueError("pool is closed")
        if not 0 <= index < self.count:
            raise IndexError(f"buffer index {index} out of range ({self.count} buffers)")
        return self._view[index * self.size:(index + 1) * self.size]

    def buffers(self) -> list[memoryview]:
        """Views of all buffers, e.g. for ``KernelRing.register_buffers``."""
        return [self.buffer(i) for i in range(self.count)]

    def array(self, index: int, dtype: Any = "uint8", shape: Any = None) -> Any:
        """A NumPy array over buffer ``index`` (zero-copy; needs NumPy)."""
        import numpy as np

        a = np.frombuffer(self.buffer(index), dtype=dtype)
        return a if shape is None else a.reshape(shape)

    def close(self) -> None:
        """Unmap and close.  Raises BufferError while views are exported
        (e.g. while registered with a KernelRing, or a NumPy array lives)."""
        if self._view is not None:
            self._view.release()
            self._view = None
        if self._mmap is not None:
            # Every memoryview, slice or array of the pool shares exports of
            # the map: none left means nothing can reach the memory.
            if self._mmap.exports:
                self._view = memoryview(self._mmap)
                raise BufferError("pool buffers are still in use (exported views, a "
                                  "registered KernelRing, NumPy arrays)")
            self._mmap = None           # unmapped now: the last reference
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1

    def close_when_unused(self, free: list[tuple[int, int]] = ()) -> None:  # type: ignore[assignment]
        """Close the memfd now and drop this pool's own view, leaving the
        mapping to whoever still holds views of it: it is unmapped when the
        last one is released (Python's mmap lives as long as its exports).
        The pages of the byte ranges in ``free`` (offset, length) -- parts no
        view can reach -- are given back to the kernel at once."""
        if self._view is not None:
            try:
                self._view.release()
            except BufferError:
                pass                    # views of it live on; so does the map
            self._view = None
        if self._mmap is not None:
            page = mmap.PAGESIZE
            for off, ln in free:
                start = (off + page - 1) // page * page
                end = (off + ln) // page * page
                if end > start:
                    self._mmap.discard(start, end - start)
            self._mmap = None
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1

    _close_when_unused = close_when_unused   # the name it had before it was public

    def __enter__(self) -> Self:
        """Use the pool as a context manager: :meth:`close` on exit."""
        return self

    def __exit__(self, *exc: object) -> None:
        """Close the pool (see :meth:`close`)."""
        self.close()

    def __del__(self) -> None:
        if getattr(self, "_fd", -1) >= 0:
            try:
                self.close()
            except BufferError:
                pass

    def __repr__(self) -> str:
        return f"<BufferPool {self.count} x {self.size} bytes>"
