"""Results coming back from a worker: fetching large ones into the arena
(lent to the caller when they fit the lease cap) and unpickling outcomes."""

from __future__ import annotations

from typing import Any

from .. import _core
from ..errors import PeerDiedError
from .framing import TAG_RESULT, read_frame
from .future import RemoteTraceback, RingFuture
from .handle import WorkerHandle

__all__ = ["fetched", "start_fetches", "unpickle_outcome"]


def fetched(h: WorkerHandle, task: RingFuture, n: int, settle: list[Any]) -> None:
    """A fetch op completed: ``n`` bytes of the task's answer are in the arena."""
    off, size = task.fetching
    frame = h.pool.buffer(0)[off:off + n]      # type: ignore[union-attr]
    arena = h.arena
    assert arena is not None
    if arena.can_lend(size):
        # Zero-copy: the result's buffers are views of the arena,
        # and the range stays lent until the last view is gone.
        lease = _core.Lease(frame, arena.lend(off, size))
        del frame
        unpickle_outcome(task, memoryview(lease), settle, copy=False)
    else:
        unpickle_outcome(task, frame, settle)
        arena.release(off, size)


def start_fetches(h: WorkerHandle, settle: list[Any], max_data: int, arena_size: int) -> None:
    """Fetch big results into the arena, in order, while there is room.
    (Every task holds at most one ring entry -- its run or its fetch -- and
    the pool counts both against the ring's depth: the ring never overflows
    here.)  A worker found dead is flagged for the pool's death handler."""
    client = h.client
    assert client is not None and h.arena is not None
    try:
        while h.fetches:
            task = h.fetches[0]
            key, size = task.big               # type: ignore[misc]
            if size > max_data:
                token = client.prep_call_pool(h.op_fetch, 0, 0, 0, key, 1)  # drop it there
                h.fetches.popleft()
                h.tasks[token] = None          # holds the entry its task held
                settle.append((task, False, MemoryError(
                    f"result of {size} bytes exceeds 3/4 of arena_size ({arena_size})")))
                continue
            off = h.arena.alloc(size)
            if off is None:
                break                           # room comes back as tasks complete
            try:
                token = client.prep_call_pool(h.op_fetch, 0, off, size, key)
            except BaseException:
                h.arena.release(off, size)
                raise
            h.fetches.popleft()
            task.fetching = (off, size)
            h.tasks[token] = task
        client.submit()                         # (also what was prepared before a break)
    except PeerDiedError:
        h.dead = True                           # the death handler fails them


def unpickle_outcome(task: RingFuture, frame: memoryview, settle: list[Any],
                     copy: bool = True) -> None:
    """Unpickle a worker's answer (tag + frame) into ``settle``.  Whatever the
    unpickling raises -- SystemExit and KeyboardInterrupt included -- becomes
    the task's exception, as it is (documented in docs/executor.md)."""
    tag = bytes(frame[:1])
    try:
        value = read_frame(frame[1:], copy=copy)
        if tag != TAG_RESULT:
            exc, tb = value
            exc.__cause__ = RemoteTraceback(tb)
    except BaseException as e:  # noqa: BLE001 - see the docstring
        settle.append((task, False, e))
        return
    if tag == TAG_RESULT:
        settle.append((task, True, value))
    else:
        settle.append((task, False, exc))
