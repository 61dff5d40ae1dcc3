"""The future of one RingExecutor task -- the only module of subring that
touches ``concurrent.futures`` internals (and the interpreter-exit hook that
``concurrent.futures.process`` uses).

Those internals are the state names and the private fields of
``concurrent.futures.Future`` (``_state``, ``_condition``, ``_waiters``,
``_done_callbacks``, ``_invoke_callbacks``, ``_result``, ``_exception``),
``_RemoteTraceback`` and ``threading._register_atexit``.  They have been the
same from CPython 3.9 to 3.13: :data:`SUPPORTED_PYTHON` names that range and
``tests/executor/test_executor_future_internals.py`` pins it (a newer CPython fails
that test until someone checks the internals again).
"""

from __future__ import annotations

import atexit
import concurrent.futures as cf
import os
import threading
import time
import weakref
from concurrent.futures import _base
from concurrent.futures.process import BrokenProcessPool, _RemoteTraceback
from typing import Any

__all__ = [
    "SUPPORTED_PYTHON",
    "BrokenProcessPool",
    "RemoteTraceback",
    "RingFuture",
    "check_internals",
    "interpreter_exiting",
    "notify_cancelled",
    "register_executor",
    "unregister_executor",
]

#: oldest and newest (major, minor) whose internals this module was checked against
SUPPORTED_PYTHON = ((3, 9), (3, 13))

RemoteTraceback = _RemoteTraceback

PENDING, RUNNING, FINISHED = _base.PENDING, _base.RUNNING, _base.FINISHED
CANCELLED, NOTIFIED = _base.CANCELLED, _base.CANCELLED_AND_NOTIFIED


def check_internals() -> list[str]:
    """The ``concurrent.futures`` internals this module relies on that the
    running interpreter lacks (empty: all there)."""
    missing = []
    f: cf.Future[Any] = cf.Future()
    for name in ("_state", "_condition", "_waiters", "_done_callbacks", "_result",
                 "_exception", "_invoke_callbacks"):
        if not hasattr(f, name):
            missing.append(f"Future.{name}")
    if f._state != PENDING or not isinstance(f._condition, threading.Condition):
        missing.append("Future state/condition layout")
    for name in ("PENDING", "RUNNING", "FINISHED", "CANCELLED", "CANCELLED_AND_NOTIFIED"):
        if not hasattr(_base, name):
            missing.append(f"_base.{name}")
    if not hasattr(threading, "_register_atexit"):
        missing.append("threading._register_atexit")
    return missing


# Taken to create a future's Condition and, by a future that has none yet, to
# change its state: see RingFuture.  Held for a few bytecodes.
_cond_lock = threading.Lock()


class RingFuture(cf.Future):  # type: ignore[type-arg]
    """The future of one task, and the task itself (one object per submit).

    Differences from ``concurrent.futures.Future``, none visible to its users:

    * A task stays PENDING -- and ``cancel()`` succeeds -- until a worker has
      *claimed* it, even once it is written into that worker's ring
      (``claim``: see ``worker.py``).  ``running()`` asks the claim.
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

    __slots__ = (
        "_cbs",
        "_cond",
        "_executor",
        "_wl",
        "arena",
        "big",
        "claim",
        "fetching",
        "frame",
        "oob",
    )

    def __init__(self, executor: Any) -> None:
        # No super().__init__(): it builds the Condition and lists eagerly.
        self._state = PENDING
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
        self.big: tuple[int, int] | None = None        # (key, size) waiting for arena room
        self.claim: tuple[Any, int, int] | None = None  # (ClaimTable, slot, seq) in a ring

    # -- lazily made parts of concurrent.futures.Future ---------------------------

    @property
    def _condition(self) -> threading.Condition:  # type: ignore[override]
        c = self._cond
        if c is None:
            with _cond_lock:
                c = self._cond
                if c is None:
                    c = self._cond = threading.Condition()
        return c

    @property
    def _waiters(self) -> list[Any]:  # type: ignore[override]  # (under _condition)
        w = self._wl
        if w is None:
            w = self._wl = []
        return w

    @property
    def _done_callbacks(self) -> list[Any]:  # (only used under _condition)
        cbs = self._cbs
        if cbs is None:
            cbs = self._cbs = []
        return cbs

    def _invoke_callbacks(self) -> None:
        if self._cbs:
            super()._invoke_callbacks()  # type: ignore[misc]

    def _finish_fast(self, result: Any, exc: BaseException | None) -> bool:
        """Finish without a Condition if there is none; False if there is one
        (then the base class's locked path must be used)."""
        with _cond_lock:       # nothing in here may need _cond_lock again
            if self._cond is not None:
                return False
            state = self._state
            if state not in (CANCELLED, NOTIFIED, FINISHED):
                self._result = result
                self._exception = exc
                self._state = FINISHED
        if state in (CANCELLED, NOTIFIED, FINISHED):
            raise cf.InvalidStateError(f"{state}: {self!r}")
        self._invoke_callbacks()
        return True

    def set_result(self, result: Any) -> None:
        """As Future.set_result (without a Condition when none exists)."""
        if not self._finish_fast(result, None):
            super().set_result(result)

    def set_exception(self, exception: BaseException | None) -> None:
        """As Future.set_exception (without a Condition when none exists)."""
        if not self._finish_fast(None, exception):
            super().set_exception(exception)

    def set_running_or_notify_cancel(self) -> bool:
        """As Future.set_running_or_notify_cancel."""
        with _cond_lock:
            if self._cond is None and self._state == PENDING:
                self._state = RUNNING
                return True
        return super().set_running_or_notify_cancel()

    def cancel(self) -> bool:
        """Cancel the task unless a worker has started it (True: cancelled)."""
        ex = self._executor
        if ex is None:
            return super().cancel()
        # The executor's dispatch lock first (dispatch notifies cancelled
        # futures under it: lock order executor -> future), so a task is
        # never dispatched half-way through a cancel.
        with ex.dispatch_lock, self._condition:
            state, claim = self._state, self.claim
            if state == PENDING and claim is not None:
                table, slot, seq = claim
                if not table.cancel(slot, seq):
                    self._state = RUNNING       # a worker has it
                    return False
            elif state == RUNNING or state == FINISHED:
                return False
            elif state != PENDING:
                return True                     # cancelled before
            self._state = CANCELLED             # (queued: the executor drops it)
            self._condition.notify_all()
        self._invoke_callbacks()
        if claim is not None:
            # It sits in a worker's ring, which will skip it: no executor
            # thread dequeues it, so tell wait()/as_completed() here.
            notify_cancelled(self)
        return True

    # Reading one attribute is atomic: no lock needed to answer these.
    def cancelled(self) -> bool:
        """Whether the task was cancelled."""
        return self._state == CANCELLED or self._state == NOTIFIED

    def running(self) -> bool:
        """Whether a worker has started the task (and it has not finished)."""
        s = self._state
        if s == PENDING:
            claim = self.claim
            return claim is not None and claim[0].started(claim[1], claim[2])
        return s == RUNNING

    def done(self) -> bool:
        """Whether the task finished or was cancelled."""
        s = self._state
        return s == FINISHED or s == CANCELLED or s == NOTIFIED

    # -- caller-driven results ---------------------------------------------------

    def detach(self) -> None:
        """For the executor, once this task is over (finished or cancelled,
        out of every ring): drop what tied it to its worker and executor --
        its claim (the ClaimTable, and through it the WorkerHandle, its arena
        and that arena's 256 MiB mapping), its call, and the executor.  A
        future the caller keeps then holds its outcome only.  Called after
        the state change: a finished or cancelled future needs neither claim
        nor executor to answer cancel()/result()."""
        self.claim = None
        self._executor = None
        self.frame = self.oob = None

    def _help(self, timeout: float | None) -> float | None:
        """Reap in this thread; returns what is left of the timeout."""
        if self._state == PENDING or self._state == RUNNING:
            ex = self._executor
            if ex is not None:
                start = time.monotonic()
                ex.drive(self, timeout)
                if timeout is not None:
                    return max(0.0, timeout - (time.monotonic() - start))
        return timeout

    def result(self, timeout: float | None = None) -> Any:
        """As Future.result; reaps completions in this thread while waiting."""
        if self._state != FINISHED:
            timeout = self._help(timeout)
            if self._state != FINISHED:
                return super().result(timeout)
        # _result/_exception were written before _state (see _finish_fast and
        # the base class): a finished future needs no lock.
        exc = self._exception
        if exc is not None:
            try:
                raise exc
            finally:
                self = exc = None  # type: ignore[assignment]  # noqa: PLW0642 - no frame -> future cycle
        return self._result

    def exception(self, timeout: float | None = None) -> BaseException | None:
        """As Future.exception; reaps completions in this thread while waiting."""
        if self._state != FINISHED:
            timeout = self._help(timeout)
            if self._state != FINISHED:
                return super().exception(timeout)
        return self._exception


def notify_cancelled(task: RingFuture) -> None:
    """A cancelled task leaves the executor: wake wait()/as_completed()
    callers (CANCELLED -> CANCELLED_AND_NOTIFIED, as an executor must).
    Idempotent and safe from any thread."""
    if task._state != CANCELLED:
        return
    with task._condition:
        if task._state == CANCELLED:
            task._state = NOTIFIED
            for waiter in task._waiters:
                waiter.add_cancelled(task)


# -- interpreter exit ----------------------------------------------------------------
#
# Like ProcessPoolExecutor: at interpreter exit (before atexit callbacks and
# the join of non-daemon threads) every executor still running finishes the
# work it accepted, and nothing can be submitted any more.

_live: weakref.WeakSet[Any] = weakref.WeakSet()
_exiting = False


def register_executor(ex: Any) -> None:
    """Have ``ex.join_at_exit()`` called at interpreter exit."""
    _live.add(ex)


def unregister_executor(ex: Any) -> None:
    """``ex`` is closed: nothing to do for it at exit."""
    _live.discard(ex)


def interpreter_exiting() -> bool:
    """True once the interpreter started to exit (submit must refuse)."""
    return _exiting


def _python_exit() -> None:
    global _exiting
    _exiting = True
    for ex in list(_live):
        ex.join_at_exit()


def _after_fork_in_child() -> None:
    # The parent's executors are not this process's to wait for.
    _live.clear()


try:
    threading._register_atexit(_python_exit)  # type: ignore[attr-defined]
except (AttributeError, RuntimeError):              # pragma: no cover - older / exiting
    atexit.register(_python_exit)
if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)
