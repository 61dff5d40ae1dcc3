"""AsyncRing: the asyncio face of a ring (ring plumbing and the verbs).

How it meets the event loop
---------------------------
* Completions arrive through an eventfd the loop watches (``add_reader``):
  the kernel signals the ring's registered eventfd; a subsystem signals the
  client's completion eventfd (the adapter keeps it armed).  This works on
  the default loop and on uvloop alike.
* Submissions made during one loop iteration reach the kernel or subsystem
  together: the first ``await`` of an iteration schedules one flush
  (``call_soon``), which submits everything prepared so far -- one
  ``io_uring_enter`` (or one doorbell at most) per iteration, not per op --
  and reaps whatever already completed (page-cache reads usually do).
  Subsystem calls are also published every ``EARLY_SUBMIT`` calls prepared
  in an iteration, so that a spinning server starts on them before the
  flush (see ``EARLY_SUBMIT``; off while that rings its doorbell).

Every verb goes through :meth:`AsyncRing._op` (room, one SQE, flush, await,
the cancellation rule) except the two benchmarked hot paths, written out
with the same steps: :meth:`AsyncRing.readinto` and :meth:`AsyncRing.call`.
The cancellation contract and the backpressure rule are stated in
``docs/asyncio.md`` and in the package docstring.
"""

from __future__ import annotations

import asyncio
import collections
import dataclasses
import errno
import os
import time
from collections.abc import Callable
from typing import Any, Self, cast

from ..errors import RingBusyError, RingFullError
from ..kernel import KernelRing, Statx
from ..ring import Ring
from . import _caps
from .streams import Stream, accept_stream, recv_stream

__all__ = ["AsyncRing", "AsyncRingStatistics"]

# Every op's future is made as ``_Future(loop=loop)``, not with
# ``loop.create_future()``: that is a Python-level method of the default loop
# (one more frame per op on the hot paths, ~3 % of a subsystem call's client
# CPU), and _dispatch resolves only futures of exactly this class (a class
# check instead of an isinstance per completion), so a loop whose
# create_future() made another kind would not be served anyway.
_Future = asyncio.Future
_ECANCELED = errno.ECANCELED

# Early submission (subsystem calls).  A hybrid-mode server spins for a while
# (50 us by default) after its last work, then sleeps until a doorbell.  32
# tasks each preparing a call take longer than that in Python, so with one
# submit per loop iteration the server fell asleep before every batch: every
# flush rang the doorbell and then waited for the server to wake up.
# Publishing every EARLY_SUBMIT calls prepared in an iteration keeps such a
# server busy while the loop still runs the other tasks; the flush then finds
# replies waiting.  Where the server sleeps anyway (interrupt mode, or a busy
# machine), each early publish costs a doorbell, so the adapter compares the
# client's doorbell count every EARLY_CHECK flushes and stops publishing early
# while more than one flush in EARLY_BELLS rang it, trying again after
# EARLY_RETRY flushes.
EARLY_SUBMIT = 8
EARLY_CHECK = 64
EARLY_BELLS = 4
EARLY_RETRY = 4096


def op_error(c: Any) -> OSError:
    """The OSError a failed completion stands for."""
    err = -c.res
    text = getattr(c, "error_text", None)
    return OSError(err, f"{c.op}: {os.strerror(err)}" + (f" ({text})" if text else ""))


def _doorbell_counter(ring: Any) -> Callable[[], int] | None:
    """A function returning how many doorbells the ring has rung so far
    (``ring.statistics().doorbells``), or None if the ring does not count them."""
    stats = getattr(ring, "statistics", None)
    if not callable(stats):
        return None
    try:
        if not isinstance(getattr(stats(), "doorbells", None), int):
            return None
    except Exception:  # noqa: BLE001 -- a ring that cannot say: no early submission
        return None
    return lambda: int(stats().doorbells)


def _fileno(sock: Any) -> int:
    return sock if isinstance(sock, int) else sock.fileno()


@dataclasses.dataclass(frozen=True)
class AsyncRingStatistics:
    """A snapshot of an :class:`AsyncRing` (``AsyncRing.statistics()``)."""

    backend: str             # always "asyncio"
    ring: str                # the adapted ring's type name
    inflight: int            # ops (and cancels) the ring holds now
    limit: int               # ops allowed in flight (one slot kept for cancels on a kernel ring)
    waiting_for_room: int    # tasks queued (FIFO) for room now
    pending_cancels: int     # cancels waiting for a free slot now
    room_waits: int          # times a task had to wait for room
    cancels: int             # cancel requests sent to the ring
    flushes: int             # submit/reap passes (about one per loop iteration with work)
    closed: bool             # the AsyncRing was closed (aclose/close)


class FdResult:
    """user_data of an op whose result is a new fd (openat, accept).  If
    the awaiting task was cancelled, the kernel may still open the file:
    nobody will ever own that fd, so it is closed here."""

    __slots__ = ("fut",)

    def __init__(self, fut: asyncio.Future[int]) -> None:
        self.fut = fut

    def __call__(self, c: Any) -> None:      # the op's final completion
        fut, res = self.fut, c.res
        if fut.done():
            if res >= 0:
                os.close(res)
        elif res >= 0:
            fut.set_result(res)
        else:
            fut.set_exception(op_error(c))

    def abandon(self) -> None:
        """The ring went away with the op in flight."""
        if not self.fut.done():
            self.fut.set_exception(OSError(_ECANCELED, "AsyncRing closed with the op in flight"))


class FdPrep:
    """Wraps a ``prep_*`` method whose op makes a new fd (openat, accept):
    its user_data becomes an :class:`FdResult`, so that the fd is closed if
    the awaiting task gave up."""

    __slots__ = ("prep",)

    def __init__(self, prep: Any) -> None:
        self.prep = prep

    def __call__(self, *args: Any, **kw: Any) -> int:
        return cast("int", self.prep(*args[:-1], FdResult(args[-1]), **kw))


class AsyncRing:
    """An asyncio face for a ring (a ``KernelRing``, a ``SubsystemClient``,
    or anything with the same verbs).

    ``AsyncRing()`` creates and owns a ``KernelRing``; ``AsyncRing(ring)``
    adapts an existing one (and closes it in :meth:`aclose` only if
    ``own=True``).  Use it from one event loop.

    ``spin_us``: after submitting to a subsystem, wait up to this long for the
    replies (the event loop is blocked meanwhile, the GIL released) before
    letting the loop sleep -- default 20 for subsystem clients not in
    interrupt mode, 0 otherwise."""

    def __init__(self, ring: Ring | None = None, *, entries: int = 256,
                 own: bool | None = None, spin_us: float | None = None) -> None:
        if ring is None:
            ring = KernelRing(entries)
            own = True if own is None else own
        caps = _caps.RingCaps.of(ring)
        # Any: besides the shared Ring verbs, AsyncRing calls the kind's own
        # prep_* builders, which _caps has just checked for.
        self.ring: Any = ring
        self._own = bool(own)
        self._loop = asyncio.get_running_loop()
        self._flush_scheduled = False
        self._waiters: collections.deque[asyncio.Future[None]] = collections.deque()
        self._closed = False
        self._cancellable = caps.cancellable
        self._data_results = caps.data_results
        # Room accounting.  Ops use at most `_limit` slots: on a ring whose
        # ops can be cancelled one slot stays free for cancels, so a ring
        # full of ops that never complete (reads on idle pipes) can still be
        # cancelled and closed.  `_reserved` counts room promised to woken
        # waiters that have not prepared their SQE yet; `_cancels` holds
        # cancels waiting for a slot.
        mi = ring.max_inflight
        self._limit = mi - 1 if (caps.cancellable and mi > 1) else mi
        self._reserved = 0
        self._cancels: collections.deque[int | None] = collections.deque()
        self._room_waits = self._cancels_sent = self._flushes = 0
        # Subsystems answer in microseconds: the flush may wait that long
        # (GIL released, loop blocked) instead of letting the loop sleep in
        # epoll and paying a wake-up per reply -- the asyncio form of the
        # hybrid mode.
        if spin_us is None:
            spin_us = caps.default_spin_us
        if spin_us < 0:
            raise ValueError("spin_us must be >= 0")
        self._flush_spin = spin_us * 1e-6
        self._ops: dict[str, int] = getattr(ring, "ops", {})
        # early submission (EARLY_SUBMIT): towards a peer worth spinning for
        # whose doorbell count we can watch
        self._bells = _doorbell_counter(ring) if caps.has_peer and spin_us > 0 else None
        self._early = EARLY_SUBMIT if self._bells is not None else 0
        self._unsent = 0                  # calls prepared since the last publish
        self._early_next = EARLY_CHECK    # flush count of the next doorbell check
        self._early_bells = self._bells() if self._bells is not None else 0
        self._efd = _caps.completion_fd(ring)
        self._sock_fd = _caps.peer_fd(ring) if caps.has_peer else -1
        if self._sock_fd >= 0:
            self._loop.add_reader(self._sock_fd, self._on_peer_event)
        self._loop.add_reader(self._efd, self._on_eventfd)

    @property
    def loop(self) -> asyncio.AbstractEventLoop:
        """The event loop this adapter belongs to."""
        return self._loop

    @property
    def closed(self) -> bool:
        """True once :meth:`aclose` (or :meth:`close_now`) ran."""
        return self._closed

    def flush_soon(self) -> None:
        """Have SQEs prepared directly on ``self.ring`` submitted in this loop
        iteration's flush (the verbs do this themselves)."""
        self._schedule_flush()

    def cancel(self, token: int) -> None:
        """Ask the ring to cancel op ``token`` (a no-op for rings whose ops
        cannot be recalled); its final completion still comes."""
        self._cancel_token(token)

    def close_now(self) -> None:
        """Close without waiting: detach from the loop, fail the futures of
        ops still in flight, close the ring if owned (its close cancels and
        reaps them).  :meth:`aclose` is the graceful way."""
        self._finish_close()

    def statistics(self) -> AsyncRingStatistics:
        """Counters and the current queue lengths (a frozen snapshot)."""
        ring = self.ring
        return AsyncRingStatistics(
            backend="asyncio", ring=type(ring).__name__,
            inflight=0 if ring.closed else ring.inflight, limit=self._limit,
            waiting_for_room=len(self._waiters), pending_cancels=len(self._cancels),
            room_waits=self._room_waits, cancels=self._cancels_sent,
            flushes=self._flushes, closed=self._closed)

    # -- plumbing ----------------------------------------------------------------

    def _schedule_flush(self) -> None:
        if not self._flush_scheduled:
            self._flush_scheduled = True
            self._loop.call_soon(self._flush)

    def _flush(self) -> None:
        self._flush_scheduled = False
        if self._closed or self.ring.closed:
            return
        self._flushes += 1
        self._unsent = 0
        if self._bells is not None and self._flushes >= self._early_next:
            self._early_check()
        refused = False
        ring = self.ring
        try:
            ring.submit()
        except (RingFullError, RingBusyError):
            refused = True   # the kernel wants completions reaped first
        if self._flush_spin and ring.inflight and not ring.cq_ready:
            # A subsystem answers in microseconds: wait that long here (GIL
            # released) rather than let the loop sleep in epoll and pay a
            # wake-up for the reply.
            ring.submit_and_wait(1, self._flush_spin)
        self._dispatch()
        if refused or self._cancels:
            self._schedule_flush()   # retry once completions were reaped

    def _early_check(self) -> None:
        """Every EARLY_CHECK flushes: keep publishing early while the server
        hardly needed a doorbell (it spins); else stop for EARLY_RETRY
        flushes."""
        assert self._bells is not None
        try:
            bells = self._bells()
        except Exception:  # noqa: BLE001 -- it cannot say any more: stop for good
            self._bells, self._early = None, 0
            return
        rang, self._early_bells = bells - self._early_bells, bells
        if self._early and rang * EARLY_BELLS > EARLY_CHECK:
            self._early = 0
            self._early_next = self._flushes + EARLY_RETRY
        else:
            self._early = EARLY_SUBMIT
            self._early_next = self._flushes + EARLY_CHECK

    def _on_eventfd(self) -> None:
        try:
            os.eventfd_read(self._efd)
        except (BlockingIOError, OSError):
            pass
        self._dispatch()

    def _on_peer_event(self) -> None:
        # The subsystem's socket became readable: it died (EOF).  peer_dead
        # checks; reaping then completes every op in flight with ECONNRESET.
        if self.ring.peer_dead:
            self._loop.remove_reader(self._sock_fd)
            self._sock_fd = -1
        self._dispatch()
        if self.ring.closed or self.ring.peer_dead:
            self._wake_all()

    def _dispatch(self) -> None:
        ring = self.ring
        if ring.closed:
            return
        data_results = self._data_results
        for c in ring.reap():
            ud = c.user_data
            if ud.__class__ is _Future:
                if not ud.done():
                    res = c.res
                    if res >= 0:
                        if data_results:
                            d = c.data
                            ud.set_result(res if d is None else d)
                        else:
                            ud.set_result(res)
                    else:
                        ud.set_exception(op_error(c))
            elif callable(ud):
                ud(c)            # fd results, multishot streams
        if self._cancels:
            self._issue_cancels()
        self._grant()

    def _grant(self) -> None:
        """Wake waiters, in FIFO order, for the room that is free now."""
        room = self._limit - self.ring.inflight - self._reserved - len(self._cancels)
        while room > 0 and self._waiters:
            w = self._waiters.popleft()
            if not w.done():
                w.set_result(None)
                self._reserved += 1
                room -= 1

    def _wake_all(self) -> None:
        """Closing or peer death: let every waiter go on and fail in its prep."""
        while self._waiters:
            w = self._waiters.popleft()
            if not w.done():
                w.set_result(None)
                self._reserved += 1

    def _issue_cancels(self) -> None:
        ring = self.ring
        # Room promised to woken waiters (`_reserved`) is theirs: a cancel
        # taking it would make their prep fail with RingFullError.  The slot
        # kept free for cancels (see `_limit`) is never promised.
        while (self._cancels and not ring.closed
               and ring.inflight + self._reserved < ring.max_inflight):
            token = self._cancels.popleft()
            try:
                if token is None:
                    ring.prep_cancel(any=True, all=True)
                else:
                    ring.prep_cancel(token)
            except RingFullError:
                self._cancels.appendleft(token)
                return
            self._cancels_sent += 1
            self._schedule_flush()

    def _full(self) -> bool:
        return (self.ring.inflight + self._reserved + len(self._cancels) >= self._limit
                or bool(self._waiters))

    async def _room(self) -> None:
        """Wait (FIFO) until an SQE may be prepared.  On return one unit of
        room is ours: the caller prepares its SQE before any other await."""
        if self._closed:
            raise RuntimeError("AsyncRing is closed")
        if not self._full():
            return
        self._room_waits += 1
        w = self._loop.create_future()
        self._waiters.append(w)
        try:
            await w
        except asyncio.CancelledError:
            if w.done() and not w.cancelled():
                # woken and cancelled before using the room: pass it on
                self._reserved -= 1
                self._grant()
            else:
                try:
                    self._waiters.remove(w)
                except ValueError:
                    pass
            raise
        self._reserved -= 1
        if self._closed:
            raise RuntimeError("AsyncRing is closed")

    async def _op(self, prep: Any, *args: Any, **kw: Any) -> Any:
        """The one op helper: wait for room, prepare one SQE whose user_data
        is a future, have it flushed, await it.  If the task is cancelled,
        the op is cancelled (its buffers stay pinned until its final
        completion).  ``prep`` is a ``ring.prep_*`` method (or an
        :class:`FdPrep`), called with ``*args``, the future as the next
        positional argument (user_data: callers pass every positional
        argument before it), and ``**kw``."""
        if (self._closed or self._waiters or self.ring.inflight + self._reserved
                + len(self._cancels) >= self._limit):
            await self._room()
        fut: asyncio.Future[Any] = _Future(loop=self._loop)
        token = prep(*args, fut, **kw)
        if not self._flush_scheduled:
            self._flush_scheduled = True
            self._loop.call_soon(self._flush)
        try:
            return await fut
        except asyncio.CancelledError:
            if not fut.done() or fut.cancelled():
                self._cancel_token(token)
            elif prep.__class__ is FdPrep and fut.exception() is None:
                os.close(fut.result())    # a new fd, completed, but the task gave up
            raise

    async def _named_op(self, names: tuple[Any, ...], prep: Any, *args: Any,
                        **kw: Any) -> Any:
        """``_op`` for a path op: an OSError names the file(s) the way the
        built-in functions do (``filename``, ``filename2``, the message)."""
        try:
            return await self._op(prep, *args, **kw)
        except OSError as e:
            extra = names if len(names) == 1 else (names[0], None, names[1])
            err = e.errno if e.errno is not None else errno.EIO
            raise OSError(err, os.strerror(err), *extra) from None

    def _cancel_token(self, token: int | None) -> None:
        """Ask the ring to cancel op `token` (None: every op).  Without a
        free slot the cancel waits in `_cancels` and goes out as soon as one
        frees -- the slot kept free for cancels makes that immediate in
        practice.  (A subsystem op cannot be recalled; its result is
        discarded when it arrives.)"""
        if self._closed or self.ring.closed or not self._cancellable:
            return
        self._cancels.append(token)
        self._issue_cancels()

    # -- generic ----------------------------------------------------------------

    async def nop(self) -> int:
        """An op that does nothing (measures the round trip)."""
        return cast("int", await self._op(self.ring.prep_nop))

    # -- files --------------------------------------------------------------------

    async def read(self, fd: int, nbytes: int, offset: int = -1) -> bytes:
        """Read up to ``nbytes`` at ``offset`` (-1: the file position)."""
        buf = bytearray(nbytes)
        n = await self.readinto(fd, buf, offset)
        del buf[n:]
        return bytes(buf)

    async def readinto(self, fd: int, buf: Any, offset: int = -1) -> int:
        """Read into ``buf`` at ``offset``; returns the byte count."""
        # The hot path, written out: room check, one SQE, one flush per
        # loop iteration, await (the same steps and rule as _op).
        ring = self.ring
        if (self._closed or self._waiters or ring.inflight + self._reserved
                + len(self._cancels) >= self._limit):
            await self._room()
        fut: asyncio.Future[int] = _Future(loop=self._loop)
        token = ring.prep_read(fd, buf, offset, fut)
        if not self._flush_scheduled:
            self._flush_scheduled = True
            self._loop.call_soon(self._flush)
        try:
            return await fut
        except asyncio.CancelledError:
            if not fut.done() or fut.cancelled():
                self._cancel_token(token)
            raise

    async def write(self, fd: int, data: Any, offset: int = -1) -> int:
        """Write ``data`` at ``offset`` (-1: the file position); returns the count."""
        return cast("int", await self._op(self.ring.prep_write, fd, data, offset))

    async def read_fixed(self, fd: int, buf_index: int, offset: int, nbytes: int,
                         buf_offset: int = 0) -> int:
        """Read into registered buffer ``buf_index``."""
        return cast("int", await self._op(self.ring.prep_read_fixed, fd, buf_index, offset, nbytes,
                              buf_offset))

    async def write_fixed(self, fd: int, buf_index: int, offset: int, nbytes: int,
                          buf_offset: int = 0) -> int:
        """Write from registered buffer ``buf_index``."""
        return cast("int", await self._op(self.ring.prep_write_fixed, fd, buf_index, offset, nbytes,
                              buf_offset))

    async def fsync(self, fd: int, *, datasync: bool = False) -> int:
        """fsync (or fdatasync) ``fd``."""
        return cast("int", await self._op(self.ring.prep_fsync, fd, datasync=datasync))

    async def fallocate(self, fd: int, mode: int, offset: int, length: int) -> int:
        """fallocate(2) on ``fd``."""
        return cast("int", await self._op(self.ring.prep_fallocate, fd, mode, offset, length))

    async def splice(self, fd_in: int, off_in: int, fd_out: int, off_out: int,
                     nbytes: int) -> int:
        """splice(2): move up to ``nbytes`` between fds (one must be a pipe)."""
        return cast("int", await self._op(self.ring.prep_splice, fd_in, off_in, fd_out, off_out,
                                          nbytes))

    async def openat(self, path: Any, flags: int = os.O_RDONLY, mode: int = 0o644, *,
                     dir_fd: int = -100) -> int:
        """Open ``path``; returns the fd (closed again if the task is cancelled)."""
        return cast("int", await self._named_op((path,), FdPrep(self.ring.prep_openat), path,
                                                flags, mode, dir_fd=dir_fd))

    async def close(self, fd: int) -> int:
        """Close ``fd`` through the ring."""
        return cast("int", await self._op(self.ring.prep_close, fd))

    async def statx(self, path: Any, *, dir_fd: int = -100, at_flags: int = 0) -> Statx:
        """statx(2) of ``path``: a :class:`~subring.Statx`."""
        buf = Statx()
        await self._named_op((path,), self.ring.prep_statx, path, buf, dir_fd=dir_fd,
                             at_flags=at_flags)
        return buf

    async def unlink(self, path: Any, *, rmdir: bool = False, dir_fd: int = -100) -> int:
        """Remove a file (``rmdir=True``: an empty directory)."""
        return cast("int", await self._named_op((path,), self.ring.prep_unlinkat, path,
                                                dir_fd=dir_fd, rmdir=rmdir))

    async def rename(self, old: Any, new: Any, *, old_dir_fd: int = -100,
                     new_dir_fd: int = -100) -> int:
        """Rename ``old`` to ``new`` (replacing it, like ``os.replace``)."""
        return cast("int", await self._named_op((old, new), self.ring.prep_renameat, old, new,
                                                old_dir_fd=old_dir_fd, new_dir_fd=new_dir_fd))

    async def mkdir(self, path: Any, mode: int = 0o777, *, dir_fd: int = -100) -> int:
        """Make a directory."""
        return cast("int", await self._named_op((path,), self.ring.prep_mkdirat, path, mode,
                                                dir_fd=dir_fd))

    async def sleep(self, seconds: float) -> None:
        """A kernel timeout (mostly useful to test cancellation)."""
        try:
            await self._op(self.ring.prep_timeout, seconds, 0)
        except OSError as e:
            if e.errno != errno.ETIME:
                raise

    # -- sockets --------------------------------------------------------------------

    async def accept(self, sock: Any) -> int:
        """Accept one connection; returns its fd (non-inheritable)."""
        return cast("int", await self._op(FdPrep(self.ring.prep_accept), _fileno(sock)))

    async def connect(self, sock: Any, address: Any) -> None:
        """Connect ``sock`` to ``address``."""
        await self._op(self.ring.prep_connect, _fileno(sock), address)

    async def recv(self, sock: Any, nbytes: int, flags: int = 0) -> bytes:
        """Receive up to ``nbytes``."""
        buf = bytearray(nbytes)
        n = await self._op(self.ring.prep_recv, _fileno(sock), buf, msg_flags=flags)
        del buf[n:]
        return bytes(buf)

    async def send(self, sock: Any, data: Any, flags: int = 0) -> int:
        """Send some of ``data``; returns the count sent."""
        return cast("int", await self._op(self.ring.prep_send, _fileno(sock), data,
                                          msg_flags=flags))

    async def sendall(self, sock: Any, data: Any) -> None:
        """Send all of ``data``."""
        view = memoryview(data).cast("B")
        while view:
            n = await self.send(sock, view)
            view = view[n:]

    def accept_stream(self, sock: Any) -> Stream:
        """Multishot accept: ``async for fd in ring.accept_stream(listener)``."""
        return accept_stream(self, _fileno(sock))

    def recv_stream(self, sock: Any, *, buffers: int = 64, size: int = 16384,
                    group_id: int | None = None) -> Stream:
        """Multishot recv into a provided-buffer ring:
        ``async for chunk in ring.recv_stream(sock)`` yields bytes until EOF."""
        return recv_stream(self, _fileno(sock), buffers=buffers, size=size, group_id=group_id)

    # -- subsystems ---------------------------------------------------------------

    async def call(self, op: str | int, data: Any = None, arg0: int = 0,
                   arg1: int = 0) -> Any:
        """Run a subsystem op: returns its int result or bytes; raises
        OSError (KeyError for an unknown op name)."""
        # The benchmarked subsystem path (acall1/acall32 in bench/aio.py),
        # written out like readinto: the same steps and cancellation rule as
        # _op, in one coroutine (no generic prep(*args, fut, **kw) call, no
        # second frame), plus early submission (EARLY_SUBMIT).
        if op.__class__ is not int and isinstance(op, str):
            found = self._ops.get(op)
            op = found if found is not None else self.ring.op_index(op)  # helpful KeyError
        ring = self.ring
        if (self._closed or self._waiters or ring.inflight + self._reserved
                + len(self._cancels) >= self._limit):
            await self._room()
        fut: asyncio.Future[Any] = _Future(loop=self._loop)
        token = ring.prep_call(op, data, arg0, arg1, fut)
        if self._early:
            unsent = self._unsent + 1
            if unsent < self._early:
                self._unsent = unsent
            else:
                self._unsent = 0
                try:
                    ring.submit()     # no syscall while the server spins
                except (RingFullError, RingBusyError):
                    pass              # the flush retries
        if not self._flush_scheduled:
            self._flush_scheduled = True
            self._loop.call_soon(self._flush)
        try:
            return await fut
        except asyncio.CancelledError:
            if not fut.done() or fut.cancelled():
                self._cancel_token(token)
            raise

    # -- lifecycle ----------------------------------------------------------------

    async def aclose(self, timeout: float = 5.0) -> None:
        """Cancel what is in flight, wait for the final completions, and
        close the ring if we own it."""
        if self._closed:
            return
        if self._loop.is_closed():
            self._close_without_loop(timeout)
            return
        ring = self.ring
        deadline = self._loop.time() + timeout
        for w in self._waiters:
            if not w.done():
                w.set_exception(RuntimeError("AsyncRing closed"))
        self._waiters.clear()
        if self._cancellable and not ring.closed and ring.inflight:
            self._cancels.append(None)          # cancel everything (the kept slot)
            self._issue_cancels()
            self._flush()
        while not ring.closed and ring.inflight and self._loop.time() < deadline:
            self._dispatch()
            if ring.inflight:
                await asyncio.sleep(0.001)
        self._finish_close()

    def _close_without_loop(self, timeout: float) -> None:
        """aclose() once our loop is closed: nothing awaits our futures any
        more (and none can be resolved), so cancel what is in flight and wait
        for the final completions on the ring itself, bounded."""
        ring = self.ring
        if self._cancellable and not ring.closed and ring.inflight:
            try:
                ring.prep_cancel(any=True, all=True)
                ring.submit()
            except (RingFullError, RingBusyError, OSError):
                pass     # ring.close() below cancels and waits too
        deadline = time.monotonic() + timeout
        while not ring.closed and ring.inflight and time.monotonic() < deadline:
            ring.submit_and_wait(1, min(0.05, max(0.0, deadline - time.monotonic())))
            for c in ring.reap():
                if isinstance(c.user_data, FdResult) and c.res >= 0:
                    os.close(c.res)     # an open that finished after all
        self._finish_close()

    def _finish_close(self) -> None:
        """Detach from the loop; fail the futures of ops that never finished;
        close the ring if we own it."""
        ring = self.ring
        self._detach()
        if not ring.closed:
            if not self._loop.is_closed():          # (else nobody awaits them)
                for ud in _caps.live_user_data(ring):
                    if ud.__class__ is _Future and not ud.done():
                        ud.set_exception(OSError(_ECANCELED, "AsyncRing closed with the op "
                                                             "in flight"))
                    elif isinstance(ud, (FdResult, Stream)):
                        ud.abandon()
            if self._own:
                ring.close()

    def _detach(self) -> None:
        if self._closed:
            return
        self._closed = True
        try:
            self._loop.remove_reader(self._efd)
            if self._sock_fd >= 0:
                self._loop.remove_reader(self._sock_fd)
        except (RuntimeError, ValueError, OSError):
            pass   # loop already closed
        _caps.stop_completion_fd(self.ring)

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()
