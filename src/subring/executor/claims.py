"""The executor's side of the claim protocol (see ``worker.py``): one table
per worker, in memory shared with that worker, guarded by a process-shared
lock.  A slot holds ``seq`` (queued in the ring, cancellable), ``-seq``
(the worker started it) or 0 (free or cancelled)."""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any

from .. import _core

__all__ = ["ClaimTable", "map_claims"]


def map_claims(path: str, size: int, create: bool = False) -> memoryview:
    """The claim slots in file ``path`` as an int64 memoryview (shared
    mapping; no descriptor stays open)."""
    flags = os.O_RDWR | os.O_CLOEXEC | (os.O_CREAT | os.O_EXCL if create else 0)
    fd = os.open(path, flags, 0o600)
    try:
        if create:
            os.ftruncate(fd, size * 8)
        shared = _core.SharedMap(fd, size * 8)
    finally:
        os.close(fd)
    return memoryview(shared).cast("q")


class ClaimTable:
    """``size`` claim slots shared with one worker process."""

    def __init__(self, ctx: Any, size: int, path: str) -> None:
        self.path = path
        self.size = size
        self.lock = ctx.Lock()
        self.claims = map_claims(path, size, create=True)
        self.closed = False
        self.free = list(range(size - 1, -1, -1))   # free slots (executor lock)
        # Set once the worker process is known to have exited: nobody can
        # hold the lock for good after that (a killed worker may have).
        self.exited: Callable[[], bool] = lambda: False

    def give_back(self, slot: int) -> None:
        """The slot's task is over (its completion was reaped)."""
        self.claims[slot] = 0
        self.free.append(slot)

    def cancel(self, slot: int, seq: int) -> bool:
        """Cancel task ``seq`` unless a worker started it.  Any thread."""
        if self.closed:
            return False
        while not self.lock.acquire(timeout=0.05):
            if self.exited():
                # The worker died, perhaps holding the lock: nobody else
                # writes the slot any more, so it can be read as it is.
                if self._get(slot) == seq:
                    self.claims[slot] = 0
                    return True
                return False
        try:
            if self._get(slot) != seq:
                return False
            self.claims[slot] = 0
            return True
        finally:
            self.lock.release()

    def close(self) -> None:
        """Unmap (the file goes with the executor's directory).  Every task
        of this worker is finished by now; late questions get False."""
        self.closed = True
        self.exited = lambda: True      # (drops the bound method of its WorkerHandle)
        self.claims.release()

    def _get(self, slot: int) -> int:
        try:
            return self.claims[slot]
        except ValueError:          # closed: the worker and its tasks are gone
            return 0

    def started(self, slot: int, seq: int) -> bool:
        """Whether a worker started task ``seq`` (a plain read)."""
        return self._get(slot) == -seq

    def unstarted(self, slot: int, seq: int) -> bool:
        """Whether task ``seq`` is still waiting to be claimed."""
        return self._get(slot) == seq
