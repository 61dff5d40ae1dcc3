"""The executor's side of a worker's shared arena: a first-fit allocator
with *leases* (large results lent to the caller as views of the arena)."""

from __future__ import annotations

import collections
import functools
import os
import weakref
from typing import Any

__all__ = ["ALIGN", "Arena", "pool_close_when_unused", "pool_map"]

ALIGN = 64


def pool_map(pool: Any) -> Any:
    """The ``_core.SharedMap`` under a BufferPool (the arena's memory)."""
    return pool.shared_map


def pool_close_when_unused(pool: Any, free: list[tuple[int, int]]) -> None:
    """Close a pool whose views the caller still holds: the mapping goes when
    the last view does; the ``free`` ranges are given back to the OS now."""
    pool.close_when_unused(free)


# Arenas with lent ranges, for privatize_leases (weak: a lease keeps its
# arena alive, nothing else needs to).
_lending_arenas: weakref.WeakSet[Arena] = weakref.WeakSet()


def privatize_leases() -> None:
    """In a fork child: lent results are views of shared memory that the
    parent will reuse once it drops its own references.  The child got a
    snapshot of everything else; give it one of these too, by turning the
    pages under every live lease into private copies."""
    for arena in list(_lending_arenas):
        shared = arena.map
        if shared is None:
            continue                # closed with nothing lent
        for off, n in list(arena.lent.items()):
            try:
                shared.privatize(off, n)
            except (OSError, ValueError, MemoryError):
                pass       # left shared: the best we can do without memory


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=privatize_leases)


class Arena:
    """First-fit allocator over one BufferPool buffer (executor side only).

    Besides the ranges that in-flight tasks and fetches hold, up to
    ``lease_cap`` bytes may be *lent* to the caller: a large result is handed
    out as views of the arena (no copy) and its range comes back when the last
    view is gone.  That can happen in any thread, at any time, so a returned
    range is only queued (``returns``; deque.append is atomic) and folded back
    into the free list by the next ``alloc`` -- which, like every other method
    here, runs under the executor's lock.  Leases never take more than
    ``lease_cap`` (a quarter of the arena), and no single task or result may
    need more than ``size - lease_cap``: whatever the caller keeps, every
    task can always get its room once the tasks ahead of it finish.
    """

    def __init__(self, size: int, shared_map: Any = None) -> None:
        self.size = size
        self.free: list[tuple[int, int]] = [(0, size)]   # sorted (offset, length)
        self.lease_cap = size // 4
        self.leased = 0                                   # bytes lent, not yet returned
        self.returns: collections.deque[tuple[int, int]] = collections.deque()
        self.map = shared_map                  # the pool's _core.SharedMap
        self.lent: dict[int, int] = {}         # offset -> length of live leases

    def lend(self, off: int, n: int) -> Any:
        """Account ``n`` bytes at ``off`` as lent; the callback returns them.
        (The callback holds this arena: see privatize_leases.)"""
        self.leased += n
        self.lent[off] = n
        if self.map is not None:
            _lending_arenas.add(self)
        return functools.partial(self._return, off, n)

    def _return(self, off: int, n: int) -> None:
        # Any thread, any time (see the class doc): atomic operations only.
        self.lent.pop(off, None)
        self.returns.append((off, n))

    def can_lend(self, n: int) -> bool:
        """Whether ``n`` more bytes may be lent."""
        return self.leased + n <= self.lease_cap

    def take_returns(self) -> None:
        """Fold ranges whose last view is gone back into the free list."""
        while self.returns:
            off, n = self.returns.popleft()
            self.leased -= n
            self.release(off, n)

    def alloc(self, n: int) -> int | None:
        """Offset of ``n`` free bytes (64-byte aligned), or None."""
        if self.returns:
            self.take_returns()
        n = (n + ALIGN - 1) & ~(ALIGN - 1)
        for i, (off, ln) in enumerate(self.free):
            if ln >= n:
                if ln == n:
                    del self.free[i]
                else:
                    self.free[i] = (off + n, ln - n)
                return off
        return None

    def release(self, off: int, n: int) -> None:
        """Give ``n`` bytes at ``off`` back."""
        n = (n + ALIGN - 1) & ~(ALIGN - 1)
        free = self.free
        free.append((off, n))
        free.sort()
        merged = [free[0]]
        for o, ln in free[1:]:
            po, pl = merged[-1]
            if po + pl == o:
                merged[-1] = (po, pl + ln)
            else:
                merged.append((o, ln))
        self.free = merged
