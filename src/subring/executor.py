"""RingExecutor: a ``concurrent.futures`` process pool whose workers are subsystems.

Each worker is a standalone :class:`~subring.Subsystem` process with its own
queue pair to the executor.  A task is one SQE: the pickled call (protocol 5)
travels inline or in the op's slot of the shared region when small, and out-
of-band buffers (whatever pickle protocol 5 hands out of band: bytes,
bytearray, ``pickle.PickleBuffer``, NumPy arrays, ...) are written straight into
a shared :class:`~subring.BufferPool` arena -- nothing goes through a pipe.
Results come back in the op's result slot (up to ``slot_size``, 64 KiB by
default), or, when larger, are written by the worker straight into the arena
by a second op and lent to the caller as views of it (see ``_Arena``: the
range is reused only once the last view is gone; leases are capped at a
quarter of the arena, beyond which results are copied).

Differences from ``ProcessPoolExecutor`` (what is the same: ``submit``, ``map``,
``shutdown(wait, cancel_futures)``, context manager, ``initializer``/
``initargs``, ``mp_context``, exceptions re-raised with the remote traceback as
``__cause__``, :class:`BrokenProcessPool`):

* **Worker death** fails exactly the tasks that worker held, with
  ``BrokenProcessPool``; by default the worker is then replaced and the pool
  goes on (``on_worker_death="replace"``).  ``on_worker_death="break"`` gives
  ProcessPoolExecutor's behaviour: the pool is broken, pending tasks fail and
  ``submit`` raises.
* **Scheduling**: a task goes to the worker with the fewest tasks in flight;
  each worker has at most ``max_inflight_per_worker`` queued (default 64);
  more wait in the executor and are dispatched as completions free room.
* **map** is lazy: it reads the input iterables as results are consumed (a
  bounded window of chunks in flight), so it works on endless generators.
  ``chunksize`` groups inputs as in ProcessPoolExecutor.
* **Workers start lazily** (on the first tasks that need them) unless
  ``start="eager"``; ``mp_context`` may be fork, spawn or forkserver.
* **asyncio**: ``await executor.run(fn, *args)``; also usable with
  ``loop.run_in_executor(executor, fn, *args)``.  No helper thread per call:
  one completion thread serves every future.
* **SystemExit / KeyboardInterrupt** raised by a task come back as its
  exception, as with ProcessPoolExecutor; the worker lives on.
* **Argument buffers**: by default the worker copies out-of-band buffers out of
  the shared arena before calling (the function gets private, writable data,
  as with ProcessPoolExecutor).  ``zero_copy_args=True`` passes views of the
  arena instead: faster, but valid only while the call runs.
"""

from __future__ import annotations

import asyncio
import collections
import concurrent.futures as cf
import functools
import itertools
import multiprocessing as mp
import os
import pickle
import shutil
import struct
import tempfile
import threading
import time
import traceback
import weakref
from concurrent.futures.process import BrokenProcessPool, _RemoteTraceback
from typing import Any, Callable, Iterable, Iterator

from . import _core
from .client import SubsystemClient, connect
from .errors import PeerDiedError, RingBusyError
from .memory import BufferPool
from .subsystem import Subsystem, op

__all__ = ["RingExecutor", "BrokenProcessPool"]

_HDR = struct.Struct("<II")      # number of out-of-band buffers, in-band pickle length
_LEN = struct.Struct("<Q")
_BIG = struct.Struct("<QQ")      # key, size of a result left in the worker
_TAG_RESULT, _TAG_ERROR, _TAG_BIG = b"R", b"E", b"B"
_ALIGN = 64


def _encode(obj: Any) -> tuple[bytes, list[pickle.PickleBuffer]]:
    oob: list[pickle.PickleBuffer] = []
    data = pickle.dumps(obj, protocol=5, buffer_callback=oob.append)
    return data, oob


def _frame_size(data: bytes, oob: list[pickle.PickleBuffer]) -> int:
    return _HDR.size + _LEN.size * len(oob) + len(data) + sum(b.raw().nbytes for b in oob)


def _write_frame(dst: memoryview, data: bytes, oob: list[pickle.PickleBuffer]) -> int:
    """[n_oob, len(data)] [len(buf) for each] data bufs... -> bytes written"""
    pos = _HDR.size
    _HDR.pack_into(dst, 0, len(oob), len(data))
    raws = [b.raw() for b in oob]
    for r in raws:
        _LEN.pack_into(dst, pos, r.nbytes)
        pos += _LEN.size
    dst[pos:pos + len(data)] = data
    pos += len(data)
    for r in raws:
        dst[pos:pos + r.nbytes] = r
        pos += r.nbytes
    return pos


def _frame_bytes(data: bytes, oob: list[pickle.PickleBuffer], tag: bytes = b"") -> Any:
    """A frame (optionally after a one-byte tag) in one buffer, one copy."""
    if not oob:
        return tag + _HDR.pack(0, len(data)) + data
    out = bytearray(len(tag) + _frame_size(data, oob))
    out[:len(tag)] = tag
    _write_frame(memoryview(out)[len(tag):], data, oob)
    return out


def _read_frame(src: memoryview, copy: bool) -> Any:
    n, dlen = _HDR.unpack_from(src, 0)
    if not n:
        return pickle.loads(src[_HDR.size:_HDR.size + dlen])
    pos = _HDR.size
    lens = []
    for _ in range(n):
        lens.append(_LEN.unpack_from(src, pos)[0])
        pos += _LEN.size
    data = src[pos:pos + dlen]
    pos += dlen
    bufs = []
    for ln in lens:
        piece = src[pos:pos + ln]
        bufs.append(bytearray(piece) if copy else piece)
        pos += ln
    return pickle.loads(data, buffers=bufs)


def _process_chunk(fn: Callable[..., Any], chunk: list[tuple[Any, ...]]) -> list[Any]:
    return [fn(*args) for args in chunk]


# -- the worker side ------------------------------------------------------------------

class _Worker(Subsystem):
    """The subsystem each worker process serves (one client: the executor)."""

    max_slot_size = 64 << 20

    def __init__(self, zero_copy: bool) -> None:
        super().__init__()
        self._zero_copy = zero_copy
        self._big: dict[int, bytes] = {}
        self._keys = itertools.count(1)

    @op
    def run(self, req: Any) -> Any:
        """Run a pickled call; return the pickled outcome."""
        try:
            fn, args, kwargs = _read_frame(req.data, copy=not self._zero_copy)
            result = fn(*args, **kwargs)
            data, oob = _encode(result)
            tag = _TAG_RESULT
        except BaseException as e:  # noqa: BLE001 - everything goes back to the caller,
            tb = traceback.format_exc()   # SystemExit included (as ProcessPoolExecutor)
            try:
                data, oob = _encode((e, tb))
            except Exception:  # noqa: BLE001 - unpicklable exception
                data, oob = _encode((RuntimeError(f"unpicklable exception {e!r}"), tb))
            tag = _TAG_ERROR
        size = len(tag) + _frame_size(data, oob)
        if size <= self._slot_size:
            return _frame_bytes(data, oob, tag)
        # Too big for the result slot: keep the pickle and its out-of-band
        # buffers as they are (no frame copy here) until the executor fetches
        # them straight into its arena.
        key = next(self._keys)
        self._big[key] = (tag, data, oob, size)
        return _TAG_BIG + _BIG.pack(key, size)

    @op
    def fetch(self, req: Any) -> int:
        """Write a large result (key arg0) into the executor's arena."""
        tag, data, oob, size = self._big.pop(req.arg0)
        if req.arg1:            # the executor gave up on this result: just drop it
            return 0
        dst = req.data
        if len(dst) != size:
            raise ValueError("fetch buffer has the wrong size")
        dst[:len(tag)] = tag
        _write_frame(dst[len(tag):], data, oob)
        return size

    def on_disconnect(self, client: Any) -> None:
        self.stop()     # our only client is gone: the pool shut down or died


def _keep_freed_memory() -> None:
    """Make glibc malloc in this worker reuse freed memory instead of giving it
    back to the kernel.

    By default glibc serves large blocks (>= 128 KiB, rising with use) with a
    fresh mmap and trims the heap top once 2x that much is free, so a worker
    that handles a stream of 1 MiB arrays maps, page-faults (256 faults per
    MiB, several microseconds each in a VM) and unmaps the same memory for every
    task -- measured here as most of a 1 MiB task's cost.  With fixed
    thresholds the memory a task freed serves the next one.  The price is that
    a worker keeps up to its peak heap (bounded by the trim threshold) instead
    of returning it at once.  Only worker processes do this, never the
    executor's (the caller's) process.  A libc without mallopt is left alone.
    """
    import ctypes

    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):
        return
    M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3
    mallopt(M_MMAP_THRESHOLD, 32 << 20)     # glibc's largest allowed value
    mallopt(M_TRIM_THRESHOLD, 256 << 20)


def _worker_main(path: str, initializer: Any, initargs: tuple[Any, ...], mode: str,
                 spin_us: float, slot_size: int, zero_copy: bool, parent: int) -> None:
    _keep_freed_memory()
    if initializer is not None:
        initializer(*initargs)
    w = _Worker(zero_copy)
    w._slot_size = slot_size

    def watchdog() -> None:
        while not w._stop:
            if os.getppid() != parent:     # the executor's process died
                w.stop()
                return
            time.sleep(0.5)

    threading.Thread(target=watchdog, daemon=True).start()
    w.serve(path, mode=mode, spin_us=spin_us)


# -- the executor side ------------------------------------------------------------------

# Arenas with lent ranges, for _privatize_leases (weak: a lease keeps its
# arena alive, nothing else needs to).
_lending_arenas: weakref.WeakSet[_Arena] = weakref.WeakSet()


def _privatize_leases() -> None:
    """In a fork child: lent results are views of shared memory that the
    parent will reuse once it drops its own references.  The child got a
    snapshot of everything else; give it one of these too, by turning the
    pages under every live lease into private copies."""
    for arena in list(_lending_arenas):
        for off, n in list(arena.lent.items()):
            try:
                arena.map.privatize(off, n)
            except (OSError, ValueError, MemoryError):
                pass       # left shared: the best we can do without memory


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_privatize_leases)


class _Arena:
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
        (The callback holds this arena: see _privatize_leases.)"""
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
        return self.leased + n <= self.lease_cap

    def take_returns(self) -> None:
        while self.returns:
            off, n = self.returns.popleft()
            self.leased -= n
            self.release(off, n)

    def alloc(self, n: int) -> int | None:
        if self.returns:
            self.take_returns()
        n = (n + _ALIGN - 1) & ~(_ALIGN - 1)
        for i, (off, ln) in enumerate(self.free):
            if ln >= n:
                if ln == n:
                    del self.free[i]
                else:
                    self.free[i] = (off + n, ln - n)
                return off
        return None

    def release(self, off: int, n: int) -> None:
        n = (n + _ALIGN - 1) & ~(_ALIGN - 1)
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


_PENDING, _RUNNING, _FINISHED = cf._base.PENDING, cf._base.RUNNING, cf._base.FINISHED
_CANCELLED, _NOTIFIED = cf._base.CANCELLED, cf._base.CANCELLED_AND_NOTIFIED

# Taken to create a future's Condition and, by a future that has none yet, to
# change its state: see _RingFuture._condition.  Held for a few bytecodes.
_cond_lock = threading.Lock()


class _RingFuture(cf.Future):  # type: ignore[type-arg]
    """The future of one task, and the task itself (one object per submit).

    Two differences from ``concurrent.futures.Future``, neither visible to
    its users:

    * ``result()``/``exception()`` reap completions in the calling thread
      instead of waiting for the completion thread to hand the result over
      (one thread wake-up less per round trip).
    * The ``threading.Condition`` and the waiter/callback lists that every
      ``Future`` carries are made only when something needs them (a thread
      that blocks on it, ``wait()``/``as_completed()``, a done-callback,
      ``cancel()``).  Most tasks are submitted, finished and read by one
      thread and never need them; not making them saves ~1 us and five
      garbage-collected objects per task.

    Why the lazy Condition is safe: a Condition exists before any thread can
    wait on the future or register a waiter.  State changes made while there
    is none (set_result etc. below) happen under ``_cond_lock``, the same lock
    that creating one takes -- so each state change either happens before the
    Condition exists (whoever creates it then sees the final state under it)
    or is made under the Condition like in the base class.
    """

    __slots__ = ("_executor", "_cond", "_cbs", "_wl",
                 "frame", "oob", "arena", "fetching", "started", "big")

    def __init__(self, executor: RingExecutor | None) -> None:
        # No super().__init__(): it builds the Condition and lists eagerly.
        self._state = _PENDING
        self._result = None
        self._exception: BaseException | None = None
        self._cond: threading.Condition | None = None
        self._cbs: list[Any] | None = None
        self._wl: list[Any] | None = None
        self._executor = executor
        # the task (the pickled call is dropped once it is sent)
        self.frame: bytes | None = None
        self.oob: Any = None
        self.arena: tuple[int, int] | None = None      # (offset, length) held in the pool
        self.fetching: Any = False
        self.started = False      # set RUNNING (a task re-queued after its worker
                                  # vanished keeps its state)
        self.big: tuple[int, int] | None = None        # (key, size) waiting for arena room

    # -- lazily made parts of concurrent.futures.Future ---------------------------

    @property
    def _condition(self) -> threading.Condition:
        c = self._cond
        if c is None:
            with _cond_lock:
                c = self._cond
                if c is None:
                    c = self._cond = threading.Condition()
        return c

    @property
    def _waiters(self) -> list[Any]:        # only used under _condition
        w = self._wl
        if w is None:
            w = self._wl = []
        return w

    @property
    def _done_callbacks(self) -> list[Any]:  # only used under _condition
        cbs = self._cbs
        if cbs is None:
            cbs = self._cbs = []
        return cbs

    def _invoke_callbacks(self) -> None:
        if self._cbs:
            super()._invoke_callbacks()

    def _finish_fast(self, result: Any, exc: BaseException | None) -> bool:
        """Finish without a Condition if there is none; False if there is one
        (then the base class's locked path must be used)."""
        with _cond_lock:       # nothing in here may need _cond_lock again
            if self._cond is not None:
                return False
            state = self._state
            if state not in (_CANCELLED, _NOTIFIED, _FINISHED):
                self._result = result
                self._exception = exc
                self._state = _FINISHED
        if state in (_CANCELLED, _NOTIFIED, _FINISHED):
            raise cf.InvalidStateError(f"{state}: {self!r}")
        self._invoke_callbacks()
        return True

    def set_result(self, result: Any) -> None:
        if not self._finish_fast(result, None):
            super().set_result(result)

    def set_exception(self, exception: BaseException | None) -> None:
        if not self._finish_fast(None, exception):
            super().set_exception(exception)

    def set_running_or_notify_cancel(self) -> bool:
        with _cond_lock:
            if self._cond is None and self._state == _PENDING:
                self._state = _RUNNING
                return True
        return super().set_running_or_notify_cancel()

    # Reading one attribute is atomic: no lock needed to answer these.
    def cancelled(self) -> bool:
        return self._state == _CANCELLED or self._state == _NOTIFIED

    def running(self) -> bool:
        return self._state == _RUNNING

    def done(self) -> bool:
        s = self._state
        return s == _FINISHED or s == _CANCELLED or s == _NOTIFIED

    # -- caller-driven results ---------------------------------------------------

    def _help(self, timeout: float | None) -> float | None:
        """Reap in this thread; returns what is left of the timeout."""
        if self._state == _PENDING or self._state == _RUNNING:
            ex = self._executor
            if ex is not None:
                start = time.monotonic()
                ex._drive(self, timeout)
                if timeout is not None:
                    return max(0.0, timeout - (time.monotonic() - start))
        return timeout

    def result(self, timeout: float | None = None) -> Any:
        if self._state != _FINISHED:
            timeout = self._help(timeout)
            if self._state != _FINISHED:
                return super().result(timeout)
        # _result/_exception were written before _state (see _finish_fast and
        # the base class): a finished future needs no lock.
        exc = self._exception
        if exc is not None:
            try:
                raise exc
            finally:
                self = exc = None      # noqa: PLW0642 - no frame -> future cycle
        return self._result

    def exception(self, timeout: float | None = None) -> BaseException | None:
        if self._state != _FINISHED:
            timeout = self._help(timeout)
            if self._state != _FINISHED:
                return super().exception(timeout)
        return self._exception


def _notify_cancelled(task: _RingFuture) -> None:
    """A cancelled task leaves the queue: wake wait()/as_completed() callers
    (CANCELLED -> CANCELLED_AND_NOTIFIED, as an executor must)."""
    if task._state == _CANCELLED:
        task.set_running_or_notify_cancel()


class _WorkerHandle:
    def __init__(self, index: int) -> None:
        self.index = index
        self.process: Any = None
        self.client: SubsystemClient | None = None
        self.pool: BufferPool | None = None
        self.arena: _Arena | None = None
        self.tasks: dict[int, _RingFuture] = {}     # token -> task
        self.fetches: collections.deque[_RingFuture] = collections.deque()  # big results to fetch
        self.op_run = self.op_fetch = 0
        self.dead = False


class RingExecutor(cf.Executor):
    """A process pool whose workers are subring subsystems (see module doc)."""

    def __init__(self, max_workers: int | None = None, *, initializer: Any = None,
                 initargs: tuple[Any, ...] = (), mp_context: Any = None,
                 on_worker_death: str = "replace", start: str = "lazy",
                 max_inflight_per_worker: int = 64, slot_size: int = 64 * 1024,
                 arena_size: int = 256 << 20, mode: str = "hybrid", spin_us: float = 50.0,
                 zero_copy_args: bool = False, start_timeout: float = 30.0) -> None:
        if max_workers is None:
            max_workers = os.cpu_count() or 1
        if max_workers <= 0:
            raise ValueError("max_workers must be greater than 0")
        if on_worker_death not in ("replace", "break"):
            raise ValueError("on_worker_death must be 'replace' or 'break'")
        if start not in ("lazy", "eager"):
            raise ValueError("start must be 'lazy' or 'eager'")
        if initializer is not None and not callable(initializer):
            raise TypeError("initializer must be a callable")
        self._max_workers = max_workers
        self._initializer = initializer
        self._initargs = tuple(initargs)
        self._ctx = mp_context or mp.get_context()
        self._policy = on_worker_death
        self._depth = max(1, int(max_inflight_per_worker))
        self._slot_size = slot_size
        self._arena_size = arena_size
        self._max_data = arena_size - arena_size // 4    # see _Arena
        self._mode = mode
        self._spin_us = spin_us
        self._zero_copy = zero_copy_args
        self._start_timeout = start_timeout
        self._dir = tempfile.mkdtemp(prefix="subring-exec-")
        self._workers: list[_WorkerHandle] = []
        self._pending: collections.deque[_RingFuture] = collections.deque()
        self._lock = threading.RLock()
        self._wake = threading.Event()
        self._shutdown = False
        self._broken: str | None = None
        self._inflight = 0
        self._thread: threading.Thread | None = None
        self._next_index = 0
        self._graveyard: list[_WorkerHandle] = []
        self._drivers = 0                # threads reaping inside result()
        # The completion thread parks (on _handover) while a thread drives;
        # the last driver to leave wakes it only if it leaves work behind.
        self._parked = False
        self._handover = threading.Event()
        self._finalizer = weakref.finalize(self, _cleanup_dir, self._dir, os.getpid())
        if start == "eager":
            with self._lock:
                for _ in range(max_workers):
                    self._spawn()

    # -- workers ------------------------------------------------------------------

    def _spawn(self) -> _WorkerHandle:
        h = _WorkerHandle(self._next_index)
        self._next_index += 1
        path = os.path.join(self._dir, f"w{h.index}.sock")
        h.process = self._ctx.Process(
            target=_worker_main, name=f"RingExecutor-worker-{h.index}", daemon=True,
            args=(path, self._initializer, self._initargs, self._mode, self._spin_us,
                  self._slot_size, self._zero_copy, os.getpid()))
        h.process.start()
        deadline = time.monotonic() + self._start_timeout
        while True:
            try:
                h.client = connect(path, entries=self._depth, slot_size=self._slot_size,
                                   mode=self._mode, spin_us=self._spin_us, timeout=0.05)
                break
            except (FileNotFoundError, ConnectionRefusedError):
                if not h.process.is_alive():
                    h.process.join(1)
                    raise BrokenProcessPool(
                        f"a worker process exited during start-up (exit code "
                        f"{h.process.exitcode}); the initializer may have failed")
                if time.monotonic() > deadline:
                    h.process.kill()
                    h.process.join(1)
                    raise BrokenProcessPool("a worker did not start in time")
        h.pool = BufferPool(1, self._arena_size, name="subring-exec-arena")
        h.client.register_pool(h.pool)
        h.arena = _Arena(self._arena_size, h.pool._mmap)
        h.op_run = h.client.op_index("run")
        h.op_fetch = h.client.op_index("fetch")
        self._workers.append(h)
        if self._thread is None:
            self._thread = threading.Thread(target=self._completions, daemon=True,
                                            name="RingExecutor-completions")
            self._thread.start()
        else:
            self._wake.set()
        return h

    def _pick(self) -> _WorkerHandle | None:
        """The live worker with the fewest tasks in flight and room, or None."""
        best = None
        for h in self._workers:
            if not h.dead and len(h.tasks) < self._depth and (
                    best is None or len(h.tasks) < len(best.tasks)):
                best = h
        if (best is None or best.tasks) and len(self._workers) < self._max_workers:
            return self._spawn()
        return best

    # -- submission -----------------------------------------------------------------

    def submit(self, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> cf.Future[Any]:
        with self._lock:
            if self._broken:
                raise BrokenProcessPool(self._broken)
            if self._shutdown:
                raise RuntimeError("cannot schedule new futures after shutdown")
            task = _RingFuture(self)
            # Pickle now: an unpicklable call fails here, in the caller.
            task.frame, task.oob = _encode((fn, args, kwargs))
            if self._pending:
                self._pending.append(task)
            elif not self._dispatch(task):
                self._pending.append(task)
            return task

    def _dispatch(self, task: _RingFuture) -> bool:
        """Send a task to a worker; False if it has to wait (no worker with
        room, or no room in the arena).  True if it was sent or dropped."""
        if task.cancelled():
            _notify_cancelled(task)
            return True
        h = self._pick()
        if h is None:
            return False
        data, oob = task.frame, task.oob
        client = h.client
        assert client is not None and h.arena is not None and h.pool is not None
        size = _frame_size(data, oob)
        off = None
        # Out-of-band buffers go to the arena (written once, in place);
        # small plain pickles travel in the op's slot.
        if oob or size > client.slot_size:
            if size > self._max_data:
                if task.set_running_or_notify_cancel():
                    task.set_exception(ValueError(
                        f"task data ({size} bytes) exceeds 3/4 of arena_size "
                        f"({self._arena_size})"))
                return True
            off = h.arena.alloc(size)
            if off is None:
                return False              # wait for room in the arena
        if not task.started:
            if not task.set_running_or_notify_cancel():
                if off is not None:
                    h.arena.release(off, size)
                return True               # cancelled while pending: drop it
            task.started = True
        try:
            if off is not None:
                _write_frame(h.pool.buffer(0)[off:off + size], data, oob)
                token = client.prep_call_pool(h.op_run, 0, off, size)
            else:
                token = client.prep_call(h.op_run, _frame_bytes(data, oob))
        except PeerDiedError:
            # The worker died and we have not reaped that yet: retire it (its
            # tasks fail or are re-queued by the completion thread) and let
            # this task wait for another worker.
            if off is not None:
                h.arena.release(off, size)
            h.dead = True
            self._wake.set()
            return False
        task.arena = None if off is None else (off, size)
        task.frame = task.oob = None
        h.tasks[token] = task
        self._inflight += 1
        client.submit()
        return True

    def _dispatch_pending(self, settle: list[Any] | None = None) -> None:
        while self._pending:
            task = self._pending[0]
            if task.cancelled():
                self._pending.popleft()
                _notify_cancelled(task)
                continue
            try:
                sent = self._dispatch(task)
            except BrokenProcessPool as e:
                # No replacement worker could be started: the pool is broken.
                self._broken = str(e)
                self._fail_pending(e, settle)
                return
            if not sent:
                return
            self._pending.popleft()

    def _fail_pending(self, err: BaseException, settle: list[Any] | None) -> None:
        while self._pending:
            t = self._pending.popleft()
            if t.started or t.set_running_or_notify_cancel():
                if settle is None:
                    t.set_exception(err)
                else:
                    settle.append((t, False, err))

    # -- completions ----------------------------------------------------------------

    def _completions(self) -> None:
        """The completion thread: waits on every worker ring at once (the GIL
        is released while waiting), reaps, resolves futures."""
        while True:
            with self._lock:
                if self._graveyard and not self._drivers:
                    self._bury()
                live = [h for h in self._workers if not h.dead]
                flagged = len(live) != len(self._workers)   # a submit saw a dead worker
                done = self._shutdown and not self._inflight and not self._pending
                if done:
                    return
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
                continue
            if not live or flagged:
                if not live:
                    self._wake.wait(0.05)
                self._wake.clear()
                self._collect(live, [])
                continue
            ready = _core.wait_any([h.client for h in live], 0.05, self._spin_us)
            if self._wake.is_set():
                self._wake.clear()
            self._collect(live, ready)

    def _collect(self, live: list[_WorkerHandle], ready: list[int]) -> None:
        settle: list[tuple[cf.Future[Any], bool, Any]] = []
        with self._lock:
            for i in ready:
                self._reap(live[i], settle)
            for h in list(self._workers):
                if h.dead:                     # flagged by a failed submit
                    self._reap(h, settle)
                if h.fetches:
                    self._start_fetches(h, settle)
            self._dispatch_pending(settle)
        for fut, ok, value in settle:
            if fut.done():
                continue
            if ok:
                fut.set_result(value)
            else:
                fut.set_exception(value)

    def _drive(self, fut: cf.Future[Any], timeout: float | None) -> None:
        """Reap in the calling thread until ``fut`` is done (or the timeout)."""
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._lock:
            self._drivers += 1
        try:
            while not fut.done():
                with self._lock:
                    live = [h for h in self._workers if not h.dead]
                if not live:
                    return            # nothing to reap here; result() waits normally
                left = None if deadline is None else deadline - time.monotonic()
                if left is not None and left <= 0:
                    return
                step = 0.05 if left is None else min(left, 0.05)
                self._collect(live, _core.wait_any([h.client for h in live], step,
                                                   self._spin_us))
        finally:
            with self._lock:
                self._drivers -= 1
                if not self._drivers and self._parked and (self._inflight or self._pending):
                    self._handover.set()

    def _reap(self, h: _WorkerHandle, settle: list[Any]) -> None:
        client = h.client
        assert client is not None
        for c in client.reap():
            task = h.tasks.pop(c.user_data, None)
            if task is None:
                continue
            self._inflight -= 1
            if task.arena is not None:
                h.arena.release(*task.arena)            # type: ignore[union-attr]
                task.arena = None
            if c.res < 0:
                if client.peer_dead:
                    settle.append((task, False, self._died(h)))
                else:
                    settle.append((task, False, OSError(-c.res, c.error_text or
                                                               os.strerror(-c.res))))
                continue
            if task.fetching:
                off, size = task.fetching
                frame = h.pool.buffer(0)[off:off + c.res]      # type: ignore[union-attr]
                arena = h.arena
                assert arena is not None
                if arena.can_lend(size):
                    # Zero-copy: the result's buffers are views of the arena,
                    # and the range stays lent until the last view is gone.
                    lease = _core.Lease(frame, arena.lend(off, size))
                    del frame
                    self._finish(task, memoryview(lease), settle, copy=False)
                else:
                    self._finish(task, frame, settle)
                    arena.release(off, size)
                continue
            data = c.data
            if data[:1] == _TAG_BIG:
                task.big = _BIG.unpack_from(data, 1)
                h.fetches.append(task)          # fetched as soon as the arena has room
                self._inflight += 1
                continue
            self._finish(task, memoryview(data), settle)
        if h.fetches and not client.peer_dead:
            self._start_fetches(h, settle)
        if (client.peer_dead or h.dead) and h in self._workers:
            self._worker_lost(h, settle)

    def _start_fetches(self, h: _WorkerHandle, settle: list[Any]) -> None:
        """Fetch big results into the arena, in order, while there is room."""
        client = h.client
        assert client is not None and h.arena is not None
        while h.fetches:
            task = h.fetches[0]
            key, size = task.big               # type: ignore[misc]
            if size > self._max_data:
                h.fetches.popleft()
                self._inflight -= 1
                client.prep_call_pool(h.op_fetch, 0, 0, 0, key, 1)    # drop it there
                settle.append((task, False, MemoryError(
                    f"result of {size} bytes exceeds 3/4 of arena_size ({self._arena_size})")))
                continue
            off = h.arena.alloc(size)
            if off is None:
                break                           # room comes back as tasks complete
            h.fetches.popleft()
            token = client.prep_call_pool(h.op_fetch, 0, off, size, key)
            task.fetching = (off, size)
            h.tasks[token] = task
        client.submit()                         # (also what was prepared before a break)

    def _finish(self, task: _RingFuture, frame: memoryview, settle: list[Any],
                copy: bool = True) -> None:
        tag = bytes(frame[:1])
        try:
            value = _read_frame(frame[1:], copy=copy)
        except Exception as e:  # noqa: BLE001
            settle.append((task, False, e))
            return
        if tag == _TAG_RESULT:
            settle.append((task, True, value))
        else:
            exc, tb = value
            exc.__cause__ = _RemoteTraceback(tb)
            settle.append((task, False, exc))

    def _died(self, h: _WorkerHandle) -> BrokenProcessPool:
        code = None
        if h.process is not None:
            h.process.join(0.2)
            code = h.process.exitcode
        how = f"exit code {code}" if code is None or code >= 0 else f"signal {-code}"
        return BrokenProcessPool(f"worker {h.index} (pid {h.process.pid}) died ({how}) "
                                 "holding this task")

    def _worker_lost(self, h: _WorkerHandle, settle: list[Any]) -> None:
        h.dead = True
        err = self._died(h)
        for task in list(h.tasks.values()) + list(h.fetches):
            settle.append((task, False, err))
            self._inflight -= 1
        h.tasks.clear()
        h.fetches.clear()
        self._workers.remove(h)
        self._graveyard.append(h)     # closed once no thread waits on its ring
        if h.process is not None and h.process.is_alive():
            h.process.kill()
        if self._policy == "break":
            self._broken = f"a worker died ({err}); the pool is broken"
            while self._pending:
                t = self._pending.popleft()
                if t.set_running_or_notify_cancel():
                    settle.append((t, False, BrokenProcessPool(self._broken)))

    def _bury(self) -> None:
        """Close the rings of dead workers that no thread is waiting on."""
        for h in list(self._graveyard):
            try:
                self._close_worker(h, kill=True)
            except RingBusyError:
                continue
            self._graveyard.remove(h)

    def _close_worker(self, h: _WorkerHandle, kill: bool = False) -> None:
        if h.client is not None and not h.client.closed:
            h.client.close()
        if h.process is not None:
            if kill and h.process.is_alive():
                h.process.kill()
            h.process.join(5)
            if h.process.is_alive():
                h.process.kill()
                h.process.join(5)
        if h.pool is not None:
            arena = h.arena
            if arena is not None:
                arena.take_returns()
            try:
                h.pool.close()
            except BufferError:
                # Results the caller still holds are views of this arena:
                # give back the memory of every other range now, and let the
                # mapping go with the last of those views.
                free = arena.free if arena is not None else []
                h.pool._close_when_unused(free)

    # -- the rest of the Executor API ---------------------------------------------

    def map(self, fn: Callable[..., Any], *iterables: Iterable[Any], timeout: float | None = None,
            chunksize: int = 1) -> Iterator[Any]:
        """Like ``Executor.map``, but lazy: at most a window of chunks is in
        flight, and input is read as results are consumed."""
        if chunksize < 1:
            raise ValueError("chunksize must be >= 1.")
        deadline = None if timeout is None else time.monotonic() + timeout
        window = max(2, self._max_workers * (8 if chunksize > 1 else 32))
        args = zip(*iterables)

        def chunks() -> Iterator[list[tuple[Any, ...]]]:
            while True:
                chunk = list(itertools.islice(args, chunksize))
                if not chunk:
                    return
                yield chunk

        def gen() -> Iterator[Any]:
            src = chunks()
            futs: collections.deque[cf.Future[Any]] = collections.deque()
            try:
                for chunk in itertools.islice(src, window):
                    futs.append(self._submit_chunk(fn, chunk, chunksize))
                while futs:
                    f = futs.popleft()
                    left = None if deadline is None else deadline - time.monotonic()
                    out = f.result(left)
                    nxt = next(src, None)
                    if nxt is not None:
                        futs.append(self._submit_chunk(fn, nxt, chunksize))
                    if chunksize == 1:
                        yield out
                    else:
                        yield from out
            finally:
                for f in futs:
                    f.cancel()

        return gen()

    def _submit_chunk(self, fn: Any, chunk: list[tuple[Any, ...]], chunksize: int) -> cf.Future[Any]:
        if chunksize == 1:
            return self.submit(fn, *chunk[0])
        return self.submit(_process_chunk, fn, chunk)

    async def run(self, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> Any:
        """``await executor.run(fn, *args)``: no thread per call."""
        return await asyncio.wrap_future(self.submit(fn, *args, **kwargs))

    def shutdown(self, wait: bool = True, *, cancel_futures: bool = False) -> None:
        with self._lock:
            self._shutdown = True
            if cancel_futures:
                while self._pending:
                    t = self._pending.popleft()
                    t.cancel()
                    _notify_cancelled(t)
        self._wake.set()
        if wait:
            if self._thread is not None:
                # Bounded: tasks in workers finish (or their workers die and
                # fail them); the completion thread then returns.
                while self._thread.is_alive():
                    self._thread.join(0.1)
            with self._lock:
                workers, self._workers = list(self._workers), []
                workers += self._graveyard
                self._graveyard = []
            for h in workers:
                self._close_worker(h)
            self._finalizer()
        else:
            threading.Thread(target=self.shutdown, kwargs={"wait": True}, daemon=True).start()

    def statistics(self) -> dict[str, Any]:
        with self._lock:
            return {"workers": len(self._workers), "inflight": self._inflight,
                    "pending": len(self._pending),
                    "per_worker": [len(h.tasks) for h in self._workers]}

    def __enter__(self) -> RingExecutor:
        return self

    def __exit__(self, *exc: object) -> None:
        self.shutdown(wait=True)


def _cleanup_dir(path: str, owner: int) -> None:
    if os.getpid() != owner:       # a fork child exiting: the directory is not its own
        return
    shutil.rmtree(path, ignore_errors=True)
