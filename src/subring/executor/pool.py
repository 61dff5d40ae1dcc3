"""RingExecutor: the pool -- submission, scheduling, completions, workers
coming and going, shutdown.  See the package docstring for the contract."""

from __future__ import annotations

import asyncio
import collections
import concurrent.futures as cf
import itertools
import logging
import multiprocessing as mp
import os
import shutil
import tempfile
import threading
import time
import weakref
from collections.abc import Callable, Iterable, Iterator
from typing import Any, ParamSpec, TypeVar

from .. import _core
from ..errors import PeerDiedError, RingBusyError
from .framing import (
    BIG,
    TAG_BIG,
    TAG_SKIPPED,
    encode,
    frame_bytes,
    frame_size,
    write_frame,
)
from .future import (
    BrokenProcessPool,
    RingFuture,
    interpreter_exiting,
    notify_cancelled,
    register_executor,
    unregister_executor,
)
from .handle import InitializerFailed, WorkerHandle
from .launcher import Launcher
from .mapping import lazy_map
from .options import ExecutorStatistics, int_in
from .results import fetched, start_fetches, unpickle_outcome
from .worker import MAX_SLOT_SIZE, Worker, process_start_time

P = ParamSpec("P")
T = TypeVar("T")

__all__ = ["ExecutorStatistics", "RingExecutor"]

log = logging.getLogger("subring.executor")

#: consecutive failed worker starts after which the pool is broken (before
#: any worker ever started, a failure is most likely systematic -- a bad
#: initializer, say -- and the pool breaks sooner, as ProcessPoolExecutor does)
MAX_START_FAILURES = 8
MAX_FIRST_START_FAILURES = 2
#: the backoff between failed starts grows from this to 2 s
START_BACKOFF = 0.05
#: while a worker is starting, each ready worker is sent at most this many
#: tasks, so the newcomer gets its share of a burst
WINDOW_WHILE_STARTING = 2


class RingExecutor(cf.Executor):
    """A process pool whose workers are subring subsystems (see the package doc).

    Parameters are checked here against the limits of the layers below:
    ``max_inflight_per_worker`` <= 4096 (the largest ring a subsystem gives),
    64 <= ``slot_size`` <= 16 MiB (the largest slot), ``arena_size`` between
    64 KiB and 1 TiB."""

    def __init__(self, max_workers: int | None = None, *, initializer: Any = None,
                 initargs: tuple[Any, ...] = (), mp_context: Any = None,
                 max_tasks_per_child: int | None = None,
                 on_worker_death: str = "replace", start: str = "lazy",
                 max_inflight_per_worker: int = 64, slot_size: int = 64 * 1024,
                 arena_size: int = 256 << 20, mode: str = "hybrid", spin_us: float = 50.0,
                 zero_copy_args: bool = False, start_timeout: float = 60.0) -> None:
        if max_workers is None:
            max_workers = os.cpu_count() or 1
        if not isinstance(max_workers, int) or isinstance(max_workers, bool):
            raise TypeError("max_workers must be an int")
        if max_workers <= 0:
            raise ValueError("max_workers must be greater than 0")
        if max_tasks_per_child is not None:
            if not isinstance(max_tasks_per_child, int) or isinstance(max_tasks_per_child, bool):
                raise TypeError("max_tasks_per_child must be an int or None")
            if max_tasks_per_child < 1:
                raise ValueError("max_tasks_per_child must be >= 1")
        if on_worker_death not in ("replace", "break"):
            raise ValueError("on_worker_death must be 'replace' or 'break'")
        if start not in ("lazy", "eager"):
            raise ValueError("start must be 'lazy' or 'eager'")
        if mode not in ("hybrid", "interrupt", "poll"):
            raise ValueError("mode must be 'hybrid', 'interrupt' or 'poll'")
        if initializer is not None and not callable(initializer):
            raise TypeError("initializer must be a callable")
        self._depth = int_in("max_inflight_per_worker", max_inflight_per_worker, 1,
                              Worker.max_entries)
        int_in("slot_size", slot_size, 64, MAX_SLOT_SIZE)
        int_in("arena_size", arena_size, 64 << 10, 1 << 40)
        if not spin_us >= 0 or not start_timeout > 0:
            raise ValueError("spin_us must be >= 0 and start_timeout > 0")
        self._max_workers = max_workers
        self._max_tasks = max_tasks_per_child
        self._ctx = mp_context or mp.get_context()
        self._policy = on_worker_death
        self._arena_size = arena_size
        self._max_data = arena_size - arena_size // 4    # see Arena
        self._spin_us = spin_us
        self._start_timeout = float(start_timeout)
        self._cfg = {"initializer": initializer, "initargs": tuple(initargs), "mode": mode,
                     "spin_us": spin_us, "slot_size": slot_size, "zero_copy": zero_copy_args,
                     "parent": os.getpid(), "parent_start": process_start_time(os.getpid()),
                     "depth": self._depth, "arena_size": arena_size}
        self._owner = os.getpid()
        self._dir = tempfile.mkdtemp(prefix="subring-exec-")
        self._workers: list[WorkerHandle] = []          # ready
        self._starting: list[WorkerHandle] = []
        self._graveyard: list[WorkerHandle] = []        # to close once nobody waits on them
        self._pending: collections.deque[RingFuture] = collections.deque()
        self._lock = threading.RLock()
        self._wake = threading.Event()
        self._shutdown = False
        self._broken: str | None = None
        self._inflight = 0
        self._thread: threading.Thread | None = None
        self._launcher: Launcher | None = None
        self._indexes = itertools.count()
        self._seqs = itertools.count(1)
        self._start_failures = 0          # consecutive
        self._ever_started = False
        self._next_start = 0.0            # monotonic time before which no start is tried
        self._counts: collections.Counter[str] = collections.Counter()   # rare events
        self._submitted = self._completed = 0    # (plain ints: per task)
        self._drivers = 0                 # threads reaping inside result()
        # The completion thread parks (on _handover) while a thread drives;
        # the last driver to leave wakes it only if it leaves work behind.
        self._parked = False
        self._handover = threading.Event()
        self._closed = threading.Event()  # every worker closed, the directory gone
        self._finalizer = weakref.finalize(self, _cleanup_dir, self._dir, os.getpid())
        register_executor(self)
        if start == "eager":
            with self._lock:
                for _ in range(max_workers):
                    self._start_worker()
            # Eager means ready on return (bounded: each start is).
            deadline = time.monotonic() + self._start_timeout + 5.0
            while self._starting and time.monotonic() < deadline:
                time.sleep(0.005)

    # -- workers ------------------------------------------------------------------

    def _start_worker(self) -> None:
        """Start one worker in the background (caller holds the lock).  Never
        blocks: the handshake runs in a starter thread."""
        h = WorkerHandle(next(self._indexes), self._ctx, self._depth, self._dir)
        self._starting.append(h)
        self._ensure_thread()
        threading.Thread(target=self._starter, args=(h,), daemon=True,
                         name=f"RingExecutor-start-{h.index}").start()

    def _ensure_thread(self) -> None:
        if self._launcher is None:
            self._launcher = Launcher("RingExecutor-launcher")
        if self._thread is None:
            self._thread = threading.Thread(target=self._completions, daemon=True,
                                            name="RingExecutor-completions")
            self._thread.start()

    def _starter(self, h: WorkerHandle) -> None:
        err: BaseException | None = None
        try:
            h.start(self._cfg, self._start_timeout, self._launcher, self._start_unwanted)
        except BaseException as e:  # noqa: BLE001 - every failure is handled below
            err = e
        settle: list[Any] = []
        with self._lock:
            self._starting.remove(h)
            if err is None and (self._broken or (self._shutdown and not self._work_left())):
                h.close_by = time.monotonic() + 5.0     # not needed any more
                self._graveyard.append(h)
            elif err is None:
                self._workers.append(h)
                self._start_failures = 0
                self._ever_started = True
                self._dispatch_pending(settle)
            elif isinstance(err, InitializerFailed):
                self._break(str(err), err, settle)
            elif not (self._shutdown and not self._work_left()):
                self._start_failures += 1
                self._counts["start_failures"] += 1
                limit = MAX_START_FAILURES if self._ever_started else MAX_FIRST_START_FAILURES
                log.warning("%s (failure %d of %d)", err, self._start_failures, limit)
                if self._start_failures >= limit:
                    self._break(f"{limit} worker starts in a row failed; "
                                f"the last: {err}", err, settle)
                else:
                    self._next_start = time.monotonic() + min(
                        2.0, START_BACKOFF * 2 ** (self._start_failures - 1))
        self._settle(settle)
        self._wake.set()

    def _start_unwanted(self) -> bool:
        return bool(self._broken) or (self._shutdown and not self._work_left())

    def _work_left(self) -> bool:
        return bool(self._pending or self._inflight)

    def _want_workers(self) -> None:
        """Start a worker if work waits and the pool may grow (lock held)."""
        # (Cheapest test first: this runs for every task queued here.)
        if (len(self._workers) + len(self._starting) >= self._max_workers
                or not self._pending or self._broken
                or time.monotonic() < self._next_start):
            return
        if len(self._pending) <= len(self._starting) or any(
                h.load == 0 and not h.retiring for h in self._workers):
            return          # the workers on their way (or an idle one) will take it
        self._start_worker()

    def _pick(self) -> WorkerHandle | None:
        """The ready worker with the fewest tasks and room, or None."""
        limit = self._depth if not self._starting else min(self._depth, WINDOW_WHILE_STARTING)
        best = None
        best_load = limit
        for h in self._workers:
            load = len(h.tasks) + len(h.fetches)
            if load < best_load and not h.dead and not h.retiring:
                best, best_load = h, load
        # Grow (one start at a time from here; _want_workers starts more
        # when queued work outnumbers the workers on their way).
        if (best is None or best_load) and not self._starting and not self._broken \
                and len(self._workers) < self._max_workers \
                and time.monotonic() >= self._next_start:
            self._start_worker()
        return best

    @property
    def dispatch_lock(self) -> Any:
        """The lock under which tasks are dispatched (RingFuture.cancel takes it)."""
        return self._lock

    # -- submission -----------------------------------------------------------------

    def submit(self, fn: Callable[P, T], /, *args: P.args, **kwargs: P.kwargs) -> cf.Future[T]:
        """Schedule ``fn(*args, **kwargs)``; returns its Future.  Never blocks
        on a worker start."""
        with self._lock:
            if self._broken:
                raise BrokenProcessPool(self._broken)
            if self._shutdown:
                raise RuntimeError("cannot schedule new futures after shutdown")
            if interpreter_exiting():
                raise RuntimeError("cannot schedule new futures after interpreter shutdown")
            task = RingFuture(self)
            # Pickle now: an unpicklable call fails here, in the caller.
            task.frame, task.oob = encode((fn, args, kwargs))
            self._submitted += 1
            if self._pending or not self._dispatch(task):
                self._pending.append(task)
                self._want_workers()
            return task

    def _dispatch(self, task: RingFuture) -> bool:
        """Write a task into a worker's ring (it stays PENDING until the
        worker claims it); False if it has to wait (no worker with room, or
        no room in the arena).  True if it was sent or dropped."""
        if task.done():
            notify_cancelled(task)
            task.detach()
            return True
        h = self._pick()
        if h is None:
            return False
        data, oob = task.frame, task.oob
        assert data is not None
        client = h.client
        assert client is not None and h.arena is not None and h.pool is not None
        size = frame_size(data, oob)
        off = None
        # Out-of-band buffers go to the arena (written once, in place);
        # small plain pickles travel in the op's slot.
        if oob or size > client.slot_size:
            if size > self._max_data:
                self._settle([(task, False, ValueError(
                    f"task data ({size} bytes) exceeds 3/4 of arena_size ({self._arena_size})"))])
                return True
            off = h.arena.alloc(size)
            if off is None:
                return False              # wait for room in the arena
        # The claim (see claims.py).  cancel() takes this executor's lock
        # too, so the task cannot be cancelled between the done() check
        # above and here without seeing the claim.
        table = h.claims
        seq = next(self._seqs)
        slot = table.free.pop()
        table.claims[slot] = seq
        task.claim = (table, slot, seq)
        try:
            if off is not None:
                write_frame(h.pool.buffer(0)[off:off + size], data, oob)
                token = client.prep_call_pool(h.op_run, 0, off, size, slot, seq)
            else:
                token = client.prep_call(h.op_run, frame_bytes(data, oob), slot, seq)
        except PeerDiedError:
            # The worker died and we have not reaped that yet: retire it (its
            # tasks fail or are re-queued by the completion thread) and let
            # this task wait for another worker.
            task.claim = None
            table.give_back(slot)
            if off is not None:
                h.arena.release(off, size)
            h.dead = True
            self._wake.set()
            return False
        task.arena = None if off is None else (off, size)
        h.tasks[token] = task
        if self._max_tasks is not None:
            h.dispatched += 1
            if h.dispatched >= self._max_tasks:
                h.retiring = True
        self._inflight += 1
        client.submit()
        return True

    def _dispatch_pending(self, settle: list[Any]) -> None:
        while self._pending:
            if not self._dispatch(self._pending[0]):
                self._want_workers()
                return
            self._pending.popleft()

    # -- completions ----------------------------------------------------------------

    def _completions(self) -> None:
        """The completion thread: waits on every worker ring at once (the GIL
        is released while waiting), reaps, resolves futures.  It never dies
        with work left: a failure it cannot handle breaks the pool (every
        future finishes with BrokenProcessPool) and it goes on to the end."""
        while True:
            try:
                if self._completion_step():
                    break
            except BaseException as e:
                log.exception("RingExecutor completion thread failed; breaking the pool")
                settle: list[Any] = []
                with self._lock:
                    self._break(f"the executor's completion thread failed: "
                                f"{type(e).__name__}: {e}", e, settle)
                self._settle(settle)
                time.sleep(0.01)
        self._close_all()

    def _completion_step(self) -> bool:
        """One round; True when shut down with nothing left to do."""
        with self._lock:
            if self._graveyard and not self._drivers:
                self._bury()
            if self._pending:
                self._want_workers()
            self._retire_idle()
            live = [h for h in self._workers if not h.dead]
            flagged = len(live) != len(self._workers)   # a submit saw a dead worker
            if self._shutdown and not self._work_left() and not self._starting:
                return True
            park = self._parked = self._drivers > 0
        if park:
            # A thread blocked in result() is reaping: stay out of its way
            # (two spinners on few CPUs slow both down, and every wake-up
            # of this thread costs the driver the GIL).  The driver hands
            # over when it leaves tasks in flight; the timeout only bounds
            # how long a future nobody waits on can wait after a hand-over
            # that was not needed then.
            self._handover.wait(0.002)
            with self._lock:
                self._parked = False
                self._handover.clear()
            return False
        if not live or flagged:
            if not live:
                self._wake.wait(0.05)
            self._wake.clear()
            self._collect(live, [])
            return False
        # (Short rounds while a retired worker waits to be buried.)
        ready = _core.wait_any(_rings(live), 0.01 if self._graveyard else 0.05,
                               self._spin_us)
        if self._wake.is_set():
            self._wake.clear()
        self._collect(live, ready)
        return False

    def _collect(self, live: list[WorkerHandle], ready: list[int]) -> None:
        settle: list[Any] = []
        with self._lock:
            for i in ready:
                self._reap(live[i], settle)
            for h in list(self._workers):
                if h.dead:                     # flagged by a failed submit
                    self._reap(h, settle)
                elif h.fetches:
                    start_fetches(h, settle, self._max_data, self._arena_size)
            self._dispatch_pending(settle)
        self._settle(settle)

    def _settle(self, settle: list[Any]) -> None:
        for task, ok, value in settle:
            if not task.done():
                try:
                    if ok:
                        task.set_result(value)
                    else:
                        task.set_exception(value)
                except cf.InvalidStateError:
                    pass                  # cancelled between the check and here
            task.detach()

    def drive(self, fut: cf.Future[Any], timeout: float | None) -> None:
        """Reap in the calling thread until ``fut`` is done (or the timeout).
        (Called by RingFuture.result.)"""
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._lock:
            self._drivers += 1
        try:
            while not fut.done():
                with self._lock:
                    live = [h for h in self._workers if not h.dead]
                    if self._graveyard or len(live) != len(self._workers):
                        return        # the completion thread has cleaning up to do
                if not live:
                    return            # nothing to reap here; result() waits normally
                left = None if deadline is None else deadline - time.monotonic()
                if left is not None and left <= 0:
                    return
                step = 0.05 if left is None else min(left, 0.05)
                try:
                    ready = _core.wait_any(_rings(live), step, self._spin_us)
                except (ValueError, RingBusyError):
                    return            # a ring closed under us: leave it to the thread
                self._collect(live, ready)
        finally:
            with self._lock:
                self._drivers -= 1
                if not self._drivers and self._parked and (
                        self._inflight or self._pending or self._graveyard):
                    self._handover.set()

    def _reap(self, h: WorkerHandle, settle: list[Any]) -> None:
        client = h.client
        assert client is not None
        for c in client.reap():
            if c.user_data not in h.tasks:
                continue
            task = h.tasks.pop(c.user_data)
            self._inflight -= 1
            if task is None:
                continue                       # an op nobody waits for (a dropped fetch)
            if c.res < 0 and client.peer_dead:
                h.tasks[c.user_data] = task            # the death handler decides
                self._inflight += 1
                continue
            if task.fetching:
                fetched(h, task, c.res, settle)
                self._completed += 1
                continue
            # the run op completed: its claim slot is free again (inline
            # ClaimTable.give_back: once per task)
            slot = task.claim[1]                        # type: ignore[index]
            table = h.claims
            table.claims[slot] = 0
            table.free.append(slot)
            if task.arena is not None:
                h.arena.release(*task.arena)            # type: ignore[union-attr]
                task.arena = None
            if c.res < 0:
                task.frame = task.oob = None
                settle.append((task, False, OSError(-c.res, c.error_text or
                                                    os.strerror(-c.res))))
                continue
            data = c.data
            assert data is not None, "a worker answers every op with bytes"
            tag = data[:1]
            if tag != TAG_SKIPPED:
                task.frame = task.oob = None
            if tag == TAG_BIG:
                task.big = BIG.unpack_from(data, 1)
                h.fetches.append(task)          # fetched as soon as the arena has room
                self._inflight += 1
                continue
            if tag == TAG_SKIPPED:
                if task.cancelled():
                    self._counts["cancelled"] += 1
                    notify_cancelled(task)      # (cancel() did already)
                    task.detach()
                else:                           # never happens; if it did: run it later
                    log.error("task %r skipped by worker %d without a cancel",
                              task, h.index)
                    task.claim = None
                    self._pending.appendleft(task)
                continue
            unpickle_outcome(task, memoryview(data), settle)
            self._completed += 1
        if h.fetches and not client.peer_dead:
            start_fetches(h, settle, self._max_data, self._arena_size)
        if (client.peer_dead or h.dead) and h in self._workers:
            self._worker_lost(h, settle)

    def _worker_lost(self, h: WorkerHandle, settle: list[Any]) -> None:
        """A worker died: the tasks it had started fail with
        BrokenProcessPool; those still queued in its ring go back to the
        front of the queue (on_worker_death='replace')."""
        h.dead = True
        self._counts["worker_deaths"] += 1
        err = BrokenProcessPool(f"{h.describe_death()} holding this task")
        requeue: list[RingFuture] = []
        for task in list(h.tasks.values()) + list(h.fetches):
            self._inflight -= 1
            if task is None:
                continue
            claim = task.claim
            if task.arena is not None:
                task.arena = None               # the arena goes with the worker
            if (not task.fetching and task.big is None and claim is not None
                    and claim[0].unstarted(claim[1], claim[2]) and self._policy == "replace"
                    and task.frame is not None):
                task.claim = None               # never started: run it elsewhere
                requeue.append(task)
            elif claim is not None and task.big is None and not task.fetching and \
                    not claim[0].started(claim[1], claim[2]) and task.cancelled():
                notify_cancelled(task)
                task.detach()
            else:
                task.frame = task.oob = None
                settle.append((task, False, err))
        h.tasks.clear()
        h.fetches.clear()
        self._pending.extendleft(reversed(requeue))
        self._workers.remove(h)
        h.close_by = time.monotonic()           # kill at once
        self._graveyard.append(h)               # closed once no thread waits on its ring
        if h.process is not None and not h.exited():
            h.process.kill()
        if self._policy == "break":
            self._break(f"a worker died ({err}); the pool is broken", None, settle)
        else:
            self._want_workers()

    def _break(self, reason: str, cause: BaseException | None, settle: list[Any]) -> None:
        """Break the pool (lock held): every future not finished fails with
        BrokenProcessPool, every worker is stopped, submit raises."""
        if not self._broken:
            self._broken = reason
        for h in self._workers + self._starting:
            for task in list(h.tasks.values()) + list(h.fetches):
                if task is not None:
                    err = BrokenProcessPool(reason)
                    err.__cause__ = cause
                    settle.append((task, False, err))
            self._inflight -= len(h.tasks) + len(h.fetches)
            h.tasks.clear()
            h.fetches.clear()
        while self._pending:
            task = self._pending.popleft()
            err = BrokenProcessPool(reason)
            err.__cause__ = cause
            settle.append((task, False, err))
        for h in self._workers:
            h.dead = True
            h.close_by = time.monotonic()
            self._graveyard.append(h)
            if not h.exited():
                h.process.kill()
        self._workers.clear()
        self._wake.set()

    def _retire_idle(self) -> None:
        """Workers that ran their max_tasks_per_child leave once idle."""
        for h in [h for h in self._workers if h.retiring and not h.load]:
            self._workers.remove(h)
            h.close_by = time.monotonic() + 5.0   # time to exit by itself
            self._graveyard.append(h)

    def _bury(self) -> None:
        """Close dead and retired workers' rings (no thread waits on them:
        lock held, no drivers); reap their processes without blocking."""
        now = time.monotonic()
        for h in list(self._graveyard):
            try:
                h.close_ring()
            except RingBusyError:
                continue
            if h.exited() or now >= h.close_by:
                if not h.exited():
                    h.process.kill()
                h.reap(kill=True, timeout=1.0)
                self._graveyard.remove(h)

    def _close_all(self) -> None:
        """The end (completion thread, shut down, nothing left): close every
        worker, wait for them, remove the directory."""
        deadline = time.monotonic() + 10.0
        while True:
            with self._lock:
                if not self._drivers or time.monotonic() > deadline:
                    workers = self._workers + self._graveyard + self._starting
                    self._workers, self._graveyard = [], []
                    break
            time.sleep(0.005)
        for h in workers:
            try:
                h.close_ring()
            except RingBusyError:
                pass
        for h in workers:
            h.reap(kill=h.dead, timeout=5.0)
        if self._launcher is not None:
            self._launcher.close()          # every worker it started is gone
        self._finalizer()
        unregister_executor(self)
        self._closed.set()

    # -- the rest of the Executor API ---------------------------------------------

    def map(self, fn: Callable[..., Any], *iterables: Iterable[Any], timeout: float | None = None,
            chunksize: int = 1) -> Iterator[Any]:
        """Like ``Executor.map``, but lazy past a window: the first window of
        chunks is submitted at once, the rest as results are consumed (so an
        endless input works).  A result handed out is no longer referenced by
        the iterator."""
        window = max(2, self._max_workers * (8 if chunksize > 1 else 32))
        return lazy_map(self.submit, fn, iterables, timeout, chunksize, window)

    async def run(self, fn: Callable[P, T], /, *args: P.args, **kwargs: P.kwargs) -> T:
        """``await executor.run(fn, *args)``: no thread per call."""
        return await asyncio.wrap_future(self.submit(fn, *args, **kwargs))

    def shutdown(self, wait: bool = True, *, cancel_futures: bool = False) -> None:
        """As ``Executor.shutdown``: no new tasks; ``cancel_futures`` cancels
        every task no worker has started (queued here or in a ring);
        ``wait`` returns once every other task has finished and every
        worker is gone.  Without ``wait`` that happens in the background
        (and at the latest at interpreter exit)."""
        cancel: list[RingFuture] = []
        with self._lock:
            self._shutdown = True
            if cancel_futures:
                cancel = list(self._pending)
                for h in self._workers:
                    cancel += [t for t in h.tasks.values() if t is not None and not t.fetching]
            thread = self._thread
        for t in cancel:
            t.cancel()
        if cancel:
            with self._lock:
                while self._pending and self._pending[0].done():
                    task = self._pending.popleft()
                    notify_cancelled(task)
                    task.detach()
        self._wake.set()
        if thread is None:
            with self._lock:
                if self._thread is None:        # never started: nothing to wait for
                    self._finalizer()
                    unregister_executor(self)
                    self._closed.set()
                    return
                thread = self._thread
        if wait:
            # Bounded: tasks in workers finish (or their workers die and
            # fail them); the completion thread then closes everything.
            while thread.is_alive():
                thread.join(0.1)
            self._closed.wait(30.0)

    def join_at_exit(self) -> None:
        """Interpreter exit (called by the hook in future.py): finish the
        work accepted, as ProcessPoolExecutor does."""
        if os.getpid() == self._owner:
            self.shutdown(wait=True)

    def statistics(self) -> ExecutorStatistics:
        """A frozen snapshot (:class:`ExecutorStatistics`)."""
        with self._lock:
            c = self._counts
            return ExecutorStatistics(
                backend="executor", workers=len(self._workers), starting=len(self._starting),
                pending=len(self._pending), inflight=self._inflight,
                per_worker=tuple(h.load for h in self._workers),
                submitted=self._submitted, completed=self._completed,
                cancelled=c["cancelled"],
                worker_deaths=c["worker_deaths"], start_failures=c["start_failures"],
                broken=bool(self._broken))

    def __enter__(self) -> RingExecutor:
        return self

    def __exit__(self, *exc: object) -> None:
        self.shutdown(wait=True)


def _rings(live: list[WorkerHandle]) -> list[_core.UserRing]:
    """The clients of ``live`` workers, in order (wait_any's indices are
    indices into ``live``); a worker counts as live once it is connected."""
    rings: list[_core.UserRing] = []
    for h in live:
        assert h.client is not None, "a live worker has a client"
        rings.append(h.client)
    return rings


def _cleanup_dir(path: str, owner: int) -> None:
    if os.getpid() != owner:       # a fork child exiting: the directory is not its own
        return
    shutil.rmtree(path, ignore_errors=True)
