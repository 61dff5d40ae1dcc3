"""asyncio on any subring ring: awaitable operations, async files and sockets.

:class:`AsyncRing` wraps a :class:`~subring.KernelRing` or a
:class:`~subring.SubsystemClient`.  Every operation is a coroutine; under the
hood each ``await`` prepares one SQE whose user_data is an asyncio future,
and completions resolve those futures.

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

Cancellation contract (the lowest layer, in prose)
--------------------------------------------------
When the task awaiting an operation is cancelled (``task.cancel()``,
``asyncio.timeout``, ``wait_for``):

* the adapter submits an async cancel for that op and the task sees
  ``CancelledError`` at once;
* the op's buffers stay pinned by the ring until the op's *final*
  completion is reaped -- whether the cancel found it (the op then completes
  with ``-ECANCELED``), found it too far along (``-EALREADY``: it completes on
  its own), or did not find it (``-ENOENT``: it had completed already).  Its
  result is then discarded.  Memory is never released while the kernel or
  subsystem may still write into it, and no op is leaked: it stays counted in
  ``ring.inflight`` until its completion is reaped;
* if the op had completed before the cancellation was seen, the result is
  discarded and the task is still cancelled (asyncio semantics);
* if the peer died (a subsystem process exited), every awaiting task gets
  ``ConnectionResetError`` (``ECONNRESET``), whether or not it was cancelled.

Backpressure: a kernel ring keeps one slot free for cancels; when the rest
are in flight, further awaits wait for room in FIFO order; nothing is
dropped.

Closing: :meth:`AsyncRing.aclose` (or ``async with``) cancels every op in
flight, waits for their final completions, and closes the ring if the
adapter owns it.  :func:`open` and the helpers use one ring per event loop, closed when
the loop shuts down its async generators (``asyncio.run`` does) or by
:func:`close_default_ring`.
"""

from __future__ import annotations

import asyncio
import codecs
import collections
import errno
import io
import locale
import os
import stat as stat_mod
import struct
import time
import weakref
from typing import Any, AsyncIterator

from .client import SubsystemClient
from .errors import RingBusyError, RingFullError
from .kernel import KernelRing, Statx

__all__ = ["AsyncRing", "AsyncFile", "open", "get_ring", "close_default_ring",
           "stat", "unlink", "rename", "mkdir", "rmdir"]

_Future = asyncio.Future
_ECANCELED = errno.ECANCELED


def _result(c: Any) -> Any:
    """A completion's value, or the OSError it stands for."""
    if c.res < 0:
        return OSError(-c.res, f"{c.op}: {os.strerror(-c.res)}"
                       + (f" ({c.error_text})" if c.error_text else ""))
    d = c.data
    return d if d is not None else c.res


class AsyncRing:
    """An asyncio face for a ring (``KernelRing`` or ``SubsystemClient``).

    ``AsyncRing()`` creates and owns a ``KernelRing``; ``AsyncRing(ring)``
    adapts an existing one (and closes it in :meth:`aclose` only if
    ``own=True``).  Use it from one event loop.

    ``spin_us``: after submitting to a subsystem, wait up to this long for the
    replies (the event loop is blocked meanwhile, the GIL released) before
    letting the loop sleep -- default 20 for subsystem clients not in
    interrupt mode, 0 otherwise."""

    def __init__(self, ring: Any = None, *, entries: int = 256, own: bool | None = None,
                 spin_us: float | None = None) -> None:
        if ring is None:
            ring = KernelRing(entries)
            own = True if own is None else own
        self.ring = ring
        self._own = bool(own)
        self._loop = asyncio.get_running_loop()
        self._flush_scheduled = False
        self._waiters: collections.deque[asyncio.Future[None]] = collections.deque()
        self._closed = False
        self._sock_fd = -1
        self._kernel = isinstance(ring, KernelRing)
        # Room accounting.  Ops use at most `_limit` slots: on a kernel ring
        # one slot stays free for cancels, so a ring full of ops that never
        # complete (reads on idle pipes) can still be cancelled and closed.
        # `_reserved` counts room promised to woken waiters that have not
        # prepared their SQE yet; `_cancels` holds cancels waiting for a slot.
        mi = ring.max_inflight
        self._limit = mi - 1 if (self._kernel and mi > 1) else mi
        self._reserved = 0
        self._cancels: collections.deque[int | None] = collections.deque()
        # Subsystems answer in microseconds: the flush may wait that long
        # (GIL released, loop blocked) instead of letting the loop sleep in
        # epoll and paying a wake-up per reply -- the asyncio form of the
        # hybrid mode.  Off for kernel rings and interrupt-mode clients.
        if spin_us is None:
            spin_us = 20.0 if (not self._kernel and ring.wait_mode != "interrupt") else 0.0
        if spin_us < 0:
            raise ValueError("spin_us must be >= 0")
        self._flush_spin = spin_us * 1e-6
        self._ops: dict[str, int] = getattr(ring, "ops", {})
        if isinstance(ring, SubsystemClient):
            self._efd = ring._set_async(True)
            self._sock_fd = ring._get_sock_fd()
            self._loop.add_reader(self._sock_fd, self._on_peer_event)
        else:
            self._efd = ring.enable_eventfd()
        self._loop.add_reader(self._efd, self._on_eventfd)

    # -- plumbing ----------------------------------------------------------------

    def _schedule_flush(self) -> None:
        if not self._flush_scheduled:
            self._flush_scheduled = True
            self._loop.call_soon(self._flush)

    def _flush(self) -> None:
        self._flush_scheduled = False
        if self._closed or self.ring.closed:
            return
        refused = False
        ring = self.ring
        try:
            ring.submit()
        except (RingFullError, RingBusyError):
            refused = True   # the kernel wants completions reaped first
        if self._flush_spin and not self._kernel and ring.inflight and not ring.cq_ready:
            # A subsystem answers in microseconds: wait that long here (GIL
            # released) rather than let the loop sleep in epoll and pay a
            # wake-up for the reply.
            ring.submit_and_wait(1, self._flush_spin)
        self._dispatch()
        if refused or self._cancels:
            self._schedule_flush()   # retry once completions were reaped

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
        for c in ring.reap():
            ud = c.user_data
            if ud.__class__ is _Future:
                if not ud.done():
                    res = c.res
                    if res >= 0:
                        if self._kernel:
                            ud.set_result(res)
                        else:
                            d = c.data
                            ud.set_result(res if d is None else d)
                    else:
                        r = _result(c)
                        if isinstance(r, OSError):
                            ud.set_exception(r)
                        else:
                            ud.set_result(r)
            elif callable(ud):
                ud(c)            # multishot streams
        if self._cancels:
            self._issue_cancels()
        self._grant()

    def _grant(self) -> None:
        """Wake waiters, in FIFO order, for the room that is free now."""
        ring = self.ring
        room = self._limit - ring.inflight - self._reserved - len(self._cancels)
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

    async def _await(self, fut: asyncio.Future[Any], token: int) -> Any:
        self._schedule_flush()
        try:
            return await fut
        except asyncio.CancelledError:
            if not fut.done() or fut.cancelled():
                self._cancel_token(token)
            raise

    async def _await_fd(self, fut: asyncio.Future[int], token: int) -> int:
        """`_await` for an op whose result is a new fd: a task that gives up
        never owns it, so it is closed here (completed, result not taken) or
        by `_FdResult` (completing after the cancellation)."""
        self._schedule_flush()
        try:
            return await fut
        except asyncio.CancelledError:
            if not fut.done() or fut.cancelled():
                self._cancel_token(token)
            elif fut.exception() is None:
                os.close(fut.result())
            raise

    def _cancel_token(self, token: int | None) -> None:
        """Ask the kernel to cancel op `token` (None: every op).  Without a
        free slot the cancel waits in `_cancels` and goes out as soon as one
        frees -- the slot kept free for cancels makes that immediate in
        practice.  (A subsystem op cannot be recalled; its result is
        discarded when it arrives.)"""
        if self._closed or self.ring.closed or not self._kernel:
            return
        self._cancels.append(token)
        self._issue_cancels()

    # -- generic ----------------------------------------------------------------

    async def nop(self) -> int:
        await self._room()
        fut = self._loop.create_future()
        return await self._await(fut, self.ring.prep_nop(fut))

    # -- kernel: files ----------------------------------------------------------

    async def read(self, fd: int, nbytes: int, offset: int = -1) -> bytes:
        """Read up to ``nbytes`` at ``offset`` (-1: the file position)."""
        buf = bytearray(nbytes)
        n = await self.readinto(fd, buf, offset)
        del buf[n:]
        return bytes(buf)

    async def readinto(self, fd: int, buf: Any, offset: int = -1) -> int:
        # The hot path, written out: room check, one SQE, one flush per
        # loop iteration, await (see _await for the cancellation rule).
        ring = self.ring
        if (self._closed or self._waiters or ring.inflight + self._reserved
                + len(self._cancels) >= self._limit):
            await self._room()
        fut = self._loop.create_future()
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
        await self._room()
        fut = self._loop.create_future()
        return await self._await(fut, self.ring.prep_write(fd, data, offset, fut))

    async def read_fixed(self, fd: int, buf_index: int, offset: int, nbytes: int,
                         buf_offset: int = 0) -> int:
        await self._room()
        fut = self._loop.create_future()
        return await self._await(fut, self.ring.prep_read_fixed(fd, buf_index, offset, nbytes,
                                                                buf_offset, fut))

    async def write_fixed(self, fd: int, buf_index: int, offset: int, nbytes: int,
                          buf_offset: int = 0) -> int:
        await self._room()
        fut = self._loop.create_future()
        return await self._await(fut, self.ring.prep_write_fixed(fd, buf_index, offset, nbytes,
                                                                 buf_offset, fut))

    async def fsync(self, fd: int, *, datasync: bool = False) -> int:
        await self._room()
        fut = self._loop.create_future()
        return await self._await(fut, self.ring.prep_fsync(fd, fut, datasync=datasync))

    async def openat(self, path: Any, flags: int = os.O_RDONLY, mode: int = 0o644, *,
                     dir_fd: int = -100) -> int:
        await self._room()
        fut = self._loop.create_future()
        return await self._await_fd(fut, self.ring.prep_openat(path, flags, mode, _FdResult(fut),
                                                               dir_fd=dir_fd))

    async def close(self, fd: int) -> int:
        await self._room()
        fut = self._loop.create_future()
        return await self._await(fut, self.ring.prep_close(fd, fut))

    async def statx(self, path: Any, *, dir_fd: int = -100, at_flags: int = 0) -> Statx:
        await self._room()
        buf = Statx()
        fut = self._loop.create_future()
        await self._await(fut, self.ring.prep_statx(path, buf, fut, dir_fd=dir_fd,
                                                    at_flags=at_flags))
        return buf

    async def unlink(self, path: Any, *, rmdir: bool = False, dir_fd: int = -100) -> int:
        await self._room()
        fut = self._loop.create_future()
        return await self._await(fut, self.ring.prep_unlinkat(path, fut, dir_fd=dir_fd,
                                                              rmdir=rmdir))

    async def rename(self, old: Any, new: Any) -> int:
        await self._room()
        fut = self._loop.create_future()
        return await self._await(fut, self.ring.prep_renameat(old, new, fut))

    async def mkdir(self, path: Any, mode: int = 0o777, *, dir_fd: int = -100) -> int:
        await self._room()
        fut = self._loop.create_future()
        return await self._await(fut, self.ring.prep_mkdirat(path, mode, fut, dir_fd=dir_fd))

    async def sleep(self, seconds: float) -> None:
        """A kernel timeout (mostly useful to test cancellation)."""
        await self._room()
        fut = self._loop.create_future()
        try:
            await self._await(fut, self.ring.prep_timeout(seconds, 0, fut))
        except OSError as e:
            if e.errno != errno.ETIME:
                raise

    # -- kernel: sockets --------------------------------------------------------

    async def accept(self, sock: Any) -> int:
        """Accept one connection; returns its fd (non-inheritable)."""
        await self._room()
        fut = self._loop.create_future()
        return await self._await_fd(fut, self.ring.prep_accept(_fileno(sock), _FdResult(fut)))

    async def connect(self, sock: Any, address: Any) -> None:
        await self._room()
        fut = self._loop.create_future()
        await self._await(fut, self.ring.prep_connect(_fileno(sock), address, fut))

    async def recv(self, sock: Any, nbytes: int, flags: int = 0) -> bytes:
        buf = bytearray(nbytes)
        await self._room()
        fut = self._loop.create_future()
        n = await self._await(fut, self.ring.prep_recv(_fileno(sock), buf, fut, msg_flags=flags))
        del buf[n:]
        return bytes(buf)

    async def send(self, sock: Any, data: Any, flags: int = 0) -> int:
        await self._room()
        fut = self._loop.create_future()
        return await self._await(fut, self.ring.prep_send(_fileno(sock), data, fut,
                                                          msg_flags=flags))

    async def sendall(self, sock: Any, data: Any) -> None:
        view = memoryview(data).cast("B")
        while view:
            n = await self.send(sock, view)
            view = view[n:]

    def accept_stream(self, sock: Any) -> _Stream:
        """Multishot accept: ``async for fd in ring.accept_stream(listener)``."""
        if self._closed:
            raise RuntimeError("AsyncRing is closed")
        stream = _Stream(self, lambda c: c.res)
        stream.token = self.ring.prep_accept(_fileno(sock), stream, multishot=True)
        self._schedule_flush()
        return stream

    def recv_stream(self, sock: Any, *, buffers: int = 64, size: int = 16384,
                    group_id: int | None = None) -> _Stream:
        """Multishot recv into a provided-buffer ring:
        ``async for chunk in ring.recv_stream(sock)`` yields bytes until EOF."""
        if self._closed:
            raise RuntimeError("AsyncRing is closed")
        gid = group_id if group_id is not None else _next_group(self)
        br = self.ring.register_buffer_ring(gid, buffers, size)

        def take(c: Any) -> bytes:
            if c.res <= 0:
                return b""
            data = bytes(br.get(c.buffer_id, c.res))
            br.recycle(c.buffer_id)
            return data

        fd = _fileno(sock)

        def rearm(st: _Stream) -> int:
            return self.ring.prep_recv(fd, None, st, buffer_group=gid, multishot=True)

        stream = _Stream(self, take, eof_on_zero=True, on_close=br.close, rearm=rearm)
        stream.token = rearm(stream)
        self._schedule_flush()
        return stream

    # -- subsystems ---------------------------------------------------------------

    async def call(self, op: str | int, data: Any = None, arg0: int = 0, arg1: int = 0) -> Any:
        """Run a subsystem op: returns its int result or bytes; raises OSError."""
        ring = self.ring
        if op.__class__ is str:
            index = self._ops.get(op)
            if index is None:
                index = ring.op_index(op)     # raises the helpful KeyError
        else:
            index = op
        if (self._closed or self._waiters or ring.inflight + self._reserved
                + len(self._cancels) >= self._limit):
            await self._room()
        fut = self._loop.create_future()
        token = ring.prep_call(index, data, arg0, arg1, fut)
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
        if self._kernel and not ring.closed and ring.inflight:
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
        if self._kernel and not ring.closed and ring.inflight:
            try:
                ring.prep_cancel(any=True, all=True)
                ring.submit()
            except (RingFullError, RingBusyError, OSError):
                pass     # ring.close() below cancels and waits too
        deadline = time.monotonic() + timeout
        while not ring.closed and ring.inflight and time.monotonic() < deadline:
            ring.submit_and_wait(1, min(0.05, max(0.0, deadline - time.monotonic())))
            for c in ring.reap():
                if isinstance(c.user_data, _FdResult) and c.res >= 0:
                    os.close(c.res)     # an open that finished after all
        self._finish_close()

    def _finish_close(self) -> None:
        """Detach from the loop; fail the futures of ops that never finished;
        close the ring if we own it."""
        ring = self.ring
        self._detach()
        if not ring.closed:
            loop_open = not self._loop.is_closed()   # (else nobody awaits them)
            for ud in ring._live_user_data():
                if not loop_open:
                    pass
                elif ud.__class__ is _Future and not ud.done():
                    ud.set_exception(OSError(_ECANCELED, "AsyncRing closed with the op "
                                                         "in flight"))
                elif isinstance(ud, _FdResult):
                    ud.abandon()
                elif isinstance(ud, _Stream):
                    ud._abort()
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
        if isinstance(self.ring, SubsystemClient) and not self.ring.closed:
            self.ring._set_async(False)

    async def __aenter__(self) -> AsyncRing:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()


class _FdResult:
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
            fut.set_exception(_result(c))

    def abandon(self) -> None:
        """The ring went away with the op in flight."""
        if not self.fut.done():
            self.fut.set_exception(OSError(_ECANCELED, "AsyncRing closed with the op in flight"))


class _Stream:
    """Completions of one multishot op as an async iterator."""

    def __init__(self, aring: AsyncRing, convert: Any, *, eof_on_zero: bool = False,
                 on_close: Any = None, rearm: Any = None) -> None:
        self._aring = aring
        self._convert = convert
        self._queue: collections.deque[Any] = collections.deque()
        self._waiter: asyncio.Future[None] | None = None
        self._done = False
        self._closing = False
        self._eof_on_zero = eof_on_zero
        self._on_close = on_close
        self._rearm = rearm
        self.token = 0

    def __call__(self, c: Any) -> None:     # completion callback
        res, more = c.res, c.more
        if res == -errno.ENOBUFS and not more and self._rearm is not None \
                and not self._closing:
            # The provided buffers ran out: the kernel ended the multishot op.
            # Every buffer handed to us was copied and recycled already, so
            # arm it again and keep streaming.
            try:
                self.token = self._rearm(self)
                self._aring._schedule_flush()
                return
            except Exception as e:  # noqa: BLE001 - surface it to the reader
                self._queue.append(e)
                more = False
        elif res < 0 and res != -_ECANCELED:
            self._queue.append(_result(c))
        elif res >= 0 and not (self._eof_on_zero and res == 0):
            self._queue.append(self._convert(c))
        if self._eof_on_zero and res == 0:
            self._eof = True
            if more:
                self.close()
        if not more:
            self._done = True
        self._wake()

    _eof = False

    def _wake(self) -> None:
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_result(None)

    def _abort(self) -> None:
        """The ring went away with the op in flight."""
        self._done = True
        self._wake()

    def __aiter__(self) -> _Stream:
        return self

    async def __anext__(self) -> Any:
        while not self._queue:
            if self._done:
                self._finish()
                raise StopAsyncIteration
            self._waiter = self._aring._loop.create_future()
            try:
                await self._waiter
            except asyncio.CancelledError:
                self.close()
                raise
            finally:
                self._waiter = None
        item = self._queue.popleft()
        if isinstance(item, OSError):
            raise item
        return item

    def _finish(self) -> None:
        if self._on_close is not None:
            cb, self._on_close = self._on_close, None
            try:
                cb()
            except OSError:
                pass

    def close(self) -> None:
        """Stop the multishot op (its final completion ends the stream)."""
        if not self._done and not self._closing:
            self._closing = True
            self._aring._cancel_token(self.token)


def _fileno(sock: Any) -> int:
    return sock if isinstance(sock, int) else sock.fileno()


_groups: weakref.WeakKeyDictionary[Any, int] = weakref.WeakKeyDictionary()


def _next_group(aring: AsyncRing) -> int:
    n = _groups.get(aring.ring, 0) + 1
    _groups[aring.ring] = n
    return n


# -- the default ring of each event loop -------------------------------------------

# loop -> a weak reference to its default ring.  Nothing here holds the ring
# or the loop strongly: the loop holds the ring (through the eventfd reader it
# watches), the ring holds the loop.  When the loop closes, it drops its
# readers, so the ring's last reference goes and the ring is closed at once
# (its KernelRing closes on deallocation) -- even without
# ``shutdown_asyncgens()``; and the loop itself can then be collected.
_default: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop,
                                    weakref.ref[AsyncRing]] = weakref.WeakKeyDictionary()


async def _close_at_shutdown(ref: weakref.ref[AsyncRing]) -> AsyncIterator[None]:
    """Parked at its yield for the life of the loop.  asyncio registers every
    started async generator with its loop, and ``loop.shutdown_asyncgens()``
    (which ``asyncio.run`` calls; uvloop too) closes them: that runs the
    finally below, which closes the default ring (with its ops cancelled and
    reaped).  It holds the ring weakly, so that it never keeps it alive."""
    try:
        yield
    finally:
        ar = ref()
        if ar is not None:
            if _current_default(ar._loop) is ar:
                del _default[ar._loop]
            ar._finish_close()


def _current_default(loop: asyncio.AbstractEventLoop) -> AsyncRing | None:
    ref = _default.get(loop)
    ar = ref() if ref is not None else None
    return None if ar is None or ar._closed else ar


def get_ring() -> AsyncRing:
    """The running loop's default ring (a KernelRing), created on first use
    and closed when the loop shuts down its async generators (asyncio.run
    does) or by :func:`close_default_ring`."""
    loop = asyncio.get_running_loop()
    ar = _current_default(loop)
    if ar is None:
        ar = AsyncRing(KernelRing(256), own=True)
        keeper = _close_at_shutdown(weakref.ref(ar))
        try:
            keeper.asend(None).send(None)   # run to the yield: the loop now tracks it
        except StopIteration:
            pass
        ar._keeper = keeper
        _default[loop] = weakref.ref(ar)
    return ar


async def close_default_ring() -> None:
    """Close the running loop's default ring (optional: it is also closed
    when the loop is garbage-collected)."""
    loop = asyncio.get_running_loop()
    ar = _current_default(loop)
    _default.pop(loop, None)
    if ar is not None:
        await ar.aclose()
        keeper = getattr(ar, "_keeper", None)
        if keeper is not None:
            await keeper.aclose()


# -- async files --------------------------------------------------------------------

async def stat(path: Any) -> os.stat_result:
    """``os.stat`` through the ring (statx)."""
    s = await get_ring().statx(path)
    ts = [struct.unpack_from("qI", s, off) for off in (64, 112, 96)]   # atime, mtime, ctime
    # the float fields exactly as os.stat computes them: sec + nsec * 1e-9
    return os.stat_result((s.mode, s.ino, s.dev, s.nlink, s.uid, s.gid, s.size,
                           *(sec for sec, _ in ts), *(sec + nsec * 1e-9 for sec, nsec in ts),
                           *(sec * 1_000_000_000 + nsec for sec, nsec in ts),
                           s.blksize, s.blocks, s.rdev))


async def unlink(path: Any) -> None:
    await get_ring().unlink(path)


async def rmdir(path: Any) -> None:
    await get_ring().unlink(path, rmdir=True)


async def rename(old: Any, new: Any) -> None:
    await get_ring().rename(old, new)


async def mkdir(path: Any, mode: int = 0o777) -> None:
    await get_ring().mkdir(path, mode)


_CHUNK = 1 << 16


def _ascii_compatible(encoding: str) -> bool:
    """Does the codec write newlines (and all ASCII) as single ASCII bytes?
    Then line ends can be found in the raw bytes and positions are exact."""
    try:
        return "\r\n\tA z~".encode(encoding) == b"\r\n\tA z~"
    except (LookupError, UnicodeError):
        return False


class AsyncFile:
    """A file whose I/O goes through a ring.  Made by :func:`open`.

    Close to aiofiles: ``read``, ``readinto``, ``readline``, ``readlines``,
    ``write``, ``writelines``, ``seek``, ``tell``, ``flush``, ``fsync``,
    ``truncate``, ``close``, ``async with``, ``async for line in f``; plus
    ``pread`` and ``pwrite``, which do not move the position, and ``stat``.
    Differences from aiofiles: no thread pool; writes go straight to the
    kernel (no Python-level write buffer, so ``flush`` has nothing to do);
    text mode needs an ASCII-compatible encoding (UTF-8, Latin-1, ...: use
    binary mode and decode yourself for UTF-16/32)."""

    def __init__(self, aring: AsyncRing, fd: int, name: Any, mode: str, binary: bool,
                 encoding: str | None, errors: str | None, newline: str | None,
                 append: bool) -> None:
        self._closed = True       # (until constructed: __del__ must not close fd)
        self._ring = aring
        self._fd = fd
        self.name = name
        self.mode = mode
        self._binary = binary
        self._readable = "r" in mode or "+" in mode
        self._writable = "r" not in mode or "+" in mode
        self._pos = 0             # file offset of the end of _rbuf
        self._append = append
        self._rbuf = b""          # bytes read ahead, not yet returned
        self._newline = newline
        if not binary:
            self.encoding = encoding or locale.getpreferredencoding(False)
            self.errors = errors or "strict"
            if self._readable and not _ascii_compatible(self.encoding):
                raise ValueError(f"subring.aio.open: reading text needs an ASCII-compatible "
                                 f"encoding, not {self.encoding!r}; open in binary mode")
            # (an incremental encoder writes a BOM once, not once per write)
            self._encoder = codecs.getincrementalencoder(self.encoding)(self.errors)
        self._closed = False

    # -- raw -------------------------------------------------------------------------

    def fileno(self) -> int:
        return self._fd

    @property
    def closed(self) -> bool:
        return self._closed

    def _check(self) -> None:
        if self._closed:
            raise ValueError("I/O operation on closed file")

    def _check_readable(self) -> None:
        self._check()
        if not self._readable:
            raise io.UnsupportedOperation("not readable")

    async def pread(self, nbytes: int, offset: int) -> bytes:
        self._check_readable()
        return await self._ring.read(self._fd, nbytes, offset)

    async def pwrite(self, data: Any, offset: int) -> int:
        self._check()
        if not self._writable:
            raise io.UnsupportedOperation("not writable")
        return await self._ring.write(self._fd, data, offset)

    async def _fill(self, want: int) -> bool:
        """Read at least `want` more bytes into _rbuf (fewer at EOF).
        Returns False at EOF."""
        data = await self._ring.read(self._fd, max(want, _CHUNK), self._pos)
        if not data:
            return False
        self._pos += len(data)
        self._rbuf += data
        return True

    async def _read_all(self) -> bytes:
        size = os.fstat(self._fd).st_size
        while await self._fill(max(size - self._pos, _CHUNK)):
            pass
        data, self._rbuf = self._rbuf, b""
        return data

    def _take(self, n: int) -> bytes:
        out, self._rbuf = self._rbuf[:n], self._rbuf[n:]
        return out

    # -- text helpers ------------------------------------------------------------------

    def _decode(self, raw: bytes) -> str:
        text = raw.decode(self.encoding, self.errors)
        if self._newline is None:
            text = text.replace("\r\n", "\n").replace("\r", "\n")
        return text

    def _line_end(self, eof: bool) -> int:
        """End (exclusive) of the first complete line in _rbuf, or -1."""
        buf = self._rbuf
        if self._newline in (None, ""):
            i = buf.find(b"\n")
            j = buf.find(b"\r")
            if j >= 0 and (i < 0 or j < i):
                if j + 1 < len(buf):
                    return j + 2 if buf[j + 1:j + 2] == b"\n" else j + 1
                return j + 1 if eof else -1       # a lone \r at the end: need more
            return i + 1 if i >= 0 else -1
        nl = self._newline.encode(self.encoding)
        i = buf.find(nl)
        return i + len(nl) if i >= 0 else -1

    def _complete_chars(self, raw: bytes) -> int:
        """Length of the longest prefix of raw that ends on a character
        boundary (UTF-8 continuation bytes are 0b10xxxxxx)."""
        if self.encoding.replace("-", "").lower() not in ("utf8", "utf_8"):
            return len(raw)
        k = len(raw)
        while k > 0 and len(raw) - k < 4 and (raw[k - 1] & 0xC0) == 0x80:
            k -= 1
        if k > 0 and raw[k - 1] >= 0xC0:      # a lead byte whose tail is missing
            need = 2 if raw[k - 1] < 0xE0 else 3 if raw[k - 1] < 0xF0 else 4
            if len(raw) - (k - 1) < need:
                return k - 1
        return len(raw)

    # -- reading ---------------------------------------------------------------------

    async def read(self, size: int = -1) -> Any:
        self._check_readable()
        if self._binary:
            if size is None or size < 0:
                return await self._read_all()
            if len(self._rbuf) >= size:
                return self._take(size)
            head = self._take(len(self._rbuf))
            data = await self._ring.read(self._fd, size - len(head), self._pos)
            self._pos += len(data)
            return head + data
        if size is None or size < 0:
            return self._decode(await self._read_all())
        out: list[str] = []
        got = 0
        eof = False
        while got < size:
            if not self._rbuf or (self._rbuf.endswith(b"\r") and not eof):
                if not eof and not await self._fill(size - got):
                    eof = True
                if not self._rbuf:
                    break
            raw = self._rbuf[:max(size - got, 1) * 4]
            keep = self._complete_chars(raw) if not eof else len(raw)
            if keep == 0:
                if eof:
                    keep = len(raw)
                else:
                    if not await self._fill(4):
                        eof = True
                    continue
            if raw[:keep].endswith(b"\r") and not eof and keep == len(self._rbuf):
                keep -= 1                       # maybe \r\n: decide with more data
                if keep == 0:
                    if not await self._fill(1):
                        eof = True
                    continue
            text = self._decode(raw[:keep])
            if len(text) > size - got:
                # too many chars: give back the bytes of the extra ones
                text = text[:size - got]
                if self._newline is None:
                    # count bytes of the returned chars, \n possibly from \r\n
                    used = self._consumed_bytes(raw[:keep], len(text))
                else:
                    used = len(text.encode(self.encoding, self.errors))
                keep = used
            self._rbuf = self._rbuf[keep:]
            out.append(text)
            got += len(text)
        return "".join(out)

    def _consumed_bytes(self, raw: bytes, nchars: int) -> int:
        """Bytes of raw that decode (with universal newlines) to nchars chars."""
        pos = chars = 0
        while chars < nchars and pos < len(raw):
            b = raw[pos]
            if b == 0x0D and raw[pos + 1:pos + 2] == b"\n":
                pos += 2
            elif b < 0x80:
                pos += 1
            else:
                n = 1
                while pos + n < len(raw) and (raw[pos + n] & 0xC0) == 0x80:
                    n += 1
                pos += n
            chars += 1
        return pos

    async def readinto(self, buf: Any) -> int:
        self._check_readable()
        if not self._binary:
            raise io.UnsupportedOperation("readinto on a text file")
        view = memoryview(buf).cast("B")
        n = min(len(view), len(self._rbuf))
        if n:
            view[:n] = self._take(n)
            if n == len(view):
                return n
        got = await self._ring.readinto(self._fd, view[n:], self._pos)
        self._pos += got
        return n + got

    async def readline(self) -> Any:
        self._check_readable()
        eof = False
        while True:
            if self._binary:
                i = self._rbuf.find(b"\n")
                end = i + 1 if i >= 0 else -1
            else:
                end = self._line_end(eof)
            if end >= 0:
                line = self._take(end)
                break
            if eof:
                line = self._take(len(self._rbuf))
                break
            if not await self._fill(_CHUNK):
                eof = True
        return line if self._binary else self._decode(line)

    async def readlines(self) -> list[Any]:
        return [line async for line in self]

    def __aiter__(self) -> AsyncFile:
        return self

    async def __anext__(self) -> Any:
        line = await self.readline()
        if not line:
            raise StopAsyncIteration
        return line

    # -- writing ---------------------------------------------------------------------

    async def write(self, data: Any) -> int:
        self._check()
        if not self._writable:
            raise io.UnsupportedOperation("not writable")
        if self._binary:
            raw = data
            count = len(memoryview(data).cast("B"))
        else:
            if not isinstance(data, str):
                raise TypeError(f"write() argument must be str, not {type(data).__name__}")
            text = data
            if self._newline not in (None, "", "\n"):
                text = text.replace("\n", self._newline)
            raw = self._encoder.encode(text)
            count = len(data)
        self._drop_readahead()
        view = memoryview(raw).cast("B")
        while view:
            offset = -1 if self._append else self._pos
            n = await self._ring.write(self._fd, view, offset)
            if n == 0:
                raise OSError(errno.EIO, "write returned 0")
            view = view[n:]
            self._pos = os.lseek(self._fd, 0, os.SEEK_CUR) if self._append else self._pos + n
        return count

    async def writelines(self, lines: Any) -> None:
        for line in lines:
            await self.write(line)

    async def flush(self) -> None:
        self._check()

    async def fsync(self) -> None:
        self._check()
        await self._ring.fsync(self._fd)

    async def truncate(self, size: int | None = None) -> int:
        self._check()
        size = await self.tell() if size is None else size
        os.ftruncate(self._fd, size)
        return size

    # -- position --------------------------------------------------------------------

    def _drop_readahead(self) -> None:
        """Forget read-ahead: the logical position becomes the file offset."""
        self._pos -= len(self._rbuf)
        self._rbuf = b""

    async def seek(self, offset: int, whence: int = os.SEEK_SET) -> int:
        self._check()
        if not self._binary and whence != os.SEEK_SET and offset != 0:
            raise io.UnsupportedOperation("can't do nonzero cur-relative seeks in text mode")
        self._drop_readahead()
        if whence == os.SEEK_SET:
            pos = offset
        elif whence == os.SEEK_CUR:
            pos = self._pos + offset
        elif whence == os.SEEK_END:
            pos = os.fstat(self._fd).st_size + offset
        else:
            raise ValueError(f"invalid whence ({whence})")
        if pos < 0:
            raise OSError(errno.EINVAL, "negative seek position")
        self._pos = pos
        return pos

    async def tell(self) -> int:
        """The logical position (exact: read-ahead is kept as bytes)."""
        self._check()
        return self._pos - len(self._rbuf)

    async def stat(self) -> os.stat_result:
        self._check()
        return os.fstat(self._fd)

    # -- closing ---------------------------------------------------------------------

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        await self._ring.close(self._fd)

    async def __aenter__(self) -> AsyncFile:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    def __del__(self) -> None:
        if not getattr(self, "_closed", True):
            os.close(self._fd)

    def __repr__(self) -> str:
        return f"<subring.aio.AsyncFile name={self.name!r} mode={self.mode!r}>"


def _flags(mode: str) -> tuple[int, bool, bool]:
    m = set(mode)
    if not m <= set("rwaxbt+") or len(mode) != len(m) or ("b" in m and "t" in m):
        raise ValueError(f"invalid mode: {mode!r}")
    kinds = m & set("rwax")
    if len(kinds) != 1:
        raise ValueError("must have exactly one of create/read/write/append mode")
    kind = kinds.pop()
    plus = "+" in m
    flags = {"r": os.O_RDONLY, "w": os.O_WRONLY | os.O_CREAT | os.O_TRUNC,
             "a": os.O_WRONLY | os.O_CREAT | os.O_APPEND,
             "x": os.O_WRONLY | os.O_CREAT | os.O_EXCL}[kind]
    if plus:
        flags = (flags & ~os.O_WRONLY) | os.O_RDWR
    return flags, "b" in m, kind == "a"


async def open(file: Any, mode: str = "r", buffering: int = -1, encoding: str | None = None,
               errors: str | None = None, newline: str | None = None, *,
               ring: AsyncRing | None = None) -> AsyncFile:
    """Open a file for async I/O through a ring (default: the loop's ring).

    Same arguments as the builtin ``open`` (``buffering`` is accepted and
    ignored).  ``async with await subring.aio.open(p) as f`` and
    ``async with subring.aio.open(p) as f`` both work."""
    return await _open(file, mode, encoding, errors, newline, ring)


class _Opener:
    """Makes ``async with open(...)`` work without a second await."""

    # The coroutine is made when awaited, not before: an _Opener dropped
    # unawaited (``wait_for(open(p), 0)`` cancels it before it runs) must not
    # leave a never-awaited coroutine behind.
    def __init__(self, *args: Any) -> None:
        self._args = args
        self._file: AsyncFile | None = None

    def __await__(self) -> Any:
        return _open(*self._args).__await__()

    async def __aenter__(self) -> AsyncFile:
        self._file = await _open(*self._args)
        return self._file

    async def __aexit__(self, *exc: object) -> None:
        if self._file is not None:
            await self._file.close()


async def _open(file: Any, mode: str, encoding: str | None, errors: str | None,
                newline: str | None, ring: AsyncRing | None) -> AsyncFile:
    flags, binary, append = _flags(mode)
    if binary and (encoding or errors or newline):
        raise ValueError("binary mode doesn't take an encoding, errors or newline argument")
    if newline not in (None, "", "\n", "\r", "\r\n"):
        raise ValueError(f"illegal newline value: {newline!r}")
    aring = ring or get_ring()
    fd = await aring.openat(file, flags, 0o666)
    if stat_mod.S_ISDIR(os.fstat(fd).st_mode):
        os.close(fd)
        raise IsADirectoryError(errno.EISDIR, os.strerror(errno.EISDIR), file)
    try:
        f = AsyncFile(aring, fd, file, mode, binary, encoding, errors, newline, append)
    except BaseException:
        os.close(fd)
        raise
    if append:
        f._pos = os.lseek(fd, 0, os.SEEK_END)
    return f


def _open_wrapper(file: Any, mode: str = "r", buffering: int = -1, encoding: str | None = None,
                  errors: str | None = None, newline: str | None = None, *,
                  ring: AsyncRing | None = None) -> _Opener:
    return _Opener(file, mode, encoding, errors, newline, ring)


_open_wrapper.__doc__ = open.__doc__
open = _open_wrapper  # type: ignore[assignment]
