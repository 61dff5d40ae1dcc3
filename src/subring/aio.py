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

Backpressure: when ``max_inflight`` ops are in flight, further awaits wait
for room in FIFO order; nothing is dropped.

Closing: :meth:`AsyncRing.aclose` (or ``async with``) cancels every op in
flight, waits for their final completions, and closes the ring if the
adapter owns it.  :func:`open` and the helpers use one ring per event loop,
closed when the loop is garbage-collected or by :func:`close_default_ring`.
"""

from __future__ import annotations

import asyncio
import codecs
import collections
import errno
import io
import locale
import os
import socket
import stat as stat_mod
import weakref
from typing import Any, AsyncIterator

from . import _core
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
    ``own=True``).  Use it from one event loop."""

    def __init__(self, ring: Any = None, *, entries: int = 256, own: bool | None = None) -> None:
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
        try:
            self.ring.submit()
        except (RingFullError, RingBusyError):
            refused = True   # the kernel wants completions reaped first
        self._dispatch()
        if refused:
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

    def _dispatch(self) -> None:
        ring = self.ring
        if ring.closed:
            return
        for c in ring.reap():
            ud = c.user_data
            if ud.__class__ is _Future:
                if not ud.done():
                    res = c.res
                    if res >= 0 and (self._kernel or c.data is None):
                        ud.set_result(res)
                    else:
                        r = _result(c)
                        if isinstance(r, OSError):
                            ud.set_exception(r)
                        else:
                            ud.set_result(r)
            elif callable(ud):
                ud(c)            # multishot streams
        # Room freed: wake waiters in FIFO order.
        room = ring.max_inflight - ring.inflight
        while room > 0 and self._waiters:
            w = self._waiters.popleft()
            if not w.done():
                w.set_result(None)
                room -= 1

    async def _room(self) -> None:
        if self._closed:
            raise RuntimeError("AsyncRing is closed")
        ring = self.ring
        if ring.inflight < ring.max_inflight and not self._waiters:
            return
        w = self._loop.create_future()
        self._waiters.append(w)
        try:
            await w
        except asyncio.CancelledError:
            # pass our turn on if we were woken and cancelled at once
            if w.done() and not w.cancelled():
                self._dispatch()
            raise

    async def _await(self, fut: asyncio.Future[Any], token: int) -> Any:
        self._schedule_flush()
        try:
            return await fut
        except asyncio.CancelledError:
            if not fut.done() or fut.cancelled():
                self._cancel_token(token)
            raise

    def _cancel_token(self, token: int) -> None:
        if self._closed or self.ring.closed or not isinstance(self.ring, KernelRing):
            # A subsystem op cannot be recalled; its result is discarded.
            return
        try:
            self.ring.prep_cancel(token)
            self._schedule_flush()
        except RingFullError:
            pass    # cannot even queue the cancel: the op completes on its own

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
        if ring.inflight >= ring.max_inflight or self._waiters:
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
        ring = self.ring
        if ring.inflight >= ring.max_inflight or self._waiters:
            await self._room()
        fut = self._loop.create_future()
        token = ring.prep_write(fd, data, offset, fut)
        if not self._flush_scheduled:
            self._flush_scheduled = True
            self._loop.call_soon(self._flush)
        try:
            return await fut
        except asyncio.CancelledError:
            if not fut.done() or fut.cancelled():
                self._cancel_token(token)
            raise

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
        return await self._await(fut, self.ring.prep_openat(path, flags, mode, fut,
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
        return await self._await(fut, self.ring.prep_accept(_fileno(sock), fut))

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
        stream = _Stream(self, lambda c: c.res)
        stream.token = self.ring.prep_accept(_fileno(sock), stream, multishot=True)
        self._schedule_flush()
        return stream

    def recv_stream(self, sock: Any, *, buffers: int = 64, size: int = 16384,
                    group_id: int | None = None) -> _Stream:
        """Multishot recv into a provided-buffer ring:
        ``async for chunk in ring.recv_stream(sock)`` yields bytes until EOF."""
        gid = group_id if group_id is not None else _next_group(self)
        br = self.ring.register_buffer_ring(gid, buffers, size)

        def take(c: Any) -> bytes:
            if c.res <= 0:
                return b""
            data = bytes(br.get(c.buffer_id, c.res))
            br.recycle(c.buffer_id)
            return data

        stream = _Stream(self, take, eof_on_zero=True, on_close=br.close)
        stream.token = self.ring.prep_recv(_fileno(sock), None, stream, buffer_group=gid,
                                           multishot=True)
        self._schedule_flush()
        return stream

    # -- subsystems ---------------------------------------------------------------

    async def call(self, op: str | int, data: Any = None, arg0: int = 0, arg1: int = 0) -> Any:
        """Run a subsystem op: returns its int result or bytes; raises OSError."""
        ring = self.ring
        index = ring.op_index(op) if isinstance(op, str) else op
        if ring.inflight >= ring.max_inflight or self._waiters:
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
        ring = self.ring
        deadline = self._loop.time() + timeout
        if isinstance(ring, KernelRing) and not ring.closed and ring.inflight:
            try:
                ring.prep_cancel(any=True, all=True)
                ring.submit()
            except RingFullError:
                pass
        while not ring.closed and ring.inflight and self._loop.time() < deadline:
            self._dispatch()
            if ring.inflight:
                await asyncio.sleep(0.001)
        self._detach()
        for w in self._waiters:
            if not w.done():
                w.set_exception(RuntimeError("AsyncRing closed"))
        if self._own and not ring.closed:
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


class _Stream:
    """Completions of one multishot op as an async iterator."""

    def __init__(self, aring: AsyncRing, convert: Any, *, eof_on_zero: bool = False,
                 on_close: Any = None) -> None:
        self._aring = aring
        self._convert = convert
        self._queue: collections.deque[Any] = collections.deque()
        self._waiter: asyncio.Future[None] | None = None
        self._done = False
        self._eof_on_zero = eof_on_zero
        self._on_close = on_close
        self.token = 0

    def __call__(self, c: Any) -> None:     # completion callback
        if c.res < 0 and c.res != -_ECANCELED:
            self._queue.append(_result(c))
        elif c.res >= 0 and not (self._eof_on_zero and c.res == 0):
            self._queue.append(self._convert(c))
        if not c.more or (self._eof_on_zero and c.res == 0):
            self._done = True if not c.more else self._done
            if self._eof_on_zero and c.res == 0 and c.more:
                self.close()
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_result(None)

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
        if not self._done:
            self._aring._cancel_token(self.token)


def _fileno(sock: Any) -> int:
    return sock if isinstance(sock, int) else sock.fileno()


_groups: weakref.WeakKeyDictionary[Any, int] = weakref.WeakKeyDictionary()


def _next_group(aring: AsyncRing) -> int:
    n = _groups.get(aring.ring, 0) + 1
    _groups[aring.ring] = n
    return n


# -- the default ring of each event loop -------------------------------------------

_default: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, AsyncRing] = \
    weakref.WeakKeyDictionary()


def get_ring() -> AsyncRing:
    """The running loop's default ring (a KernelRing), created on first use."""
    loop = asyncio.get_running_loop()
    ar = _default.get(loop)
    if ar is None or ar._closed:
        ar = AsyncRing(KernelRing(256), own=True)
        _default[loop] = ar
    return ar


async def close_default_ring() -> None:
    """Close the running loop's default ring (optional: it is also closed
    when the loop is garbage-collected)."""
    ar = _default.pop(asyncio.get_running_loop(), None)
    if ar is not None:
        await ar.aclose()


# -- async files --------------------------------------------------------------------

async def stat(path: Any) -> os.stat_result:
    """``os.stat`` through the ring (statx)."""
    s = await get_ring().statx(path)
    return os.stat_result((s.mode, s.ino, s.dev, s.nlink, s.uid, s.gid, s.size,
                           int(s.atime), int(s.mtime), int(s.ctime)))


async def unlink(path: Any) -> None:
    await get_ring().unlink(path)


async def rmdir(path: Any) -> None:
    await get_ring().unlink(path, rmdir=True)


async def rename(old: Any, new: Any) -> None:
    await get_ring().rename(old, new)


async def mkdir(path: Any, mode: int = 0o777) -> None:
    await get_ring().mkdir(path, mode)


_CHUNK = 1 << 16


class AsyncFile:
    """A file whose I/O goes through a ring.  Made by :func:`open`.

    Close to aiofiles: ``read``, ``readinto``, ``readline``, ``readlines``,
    ``write``, ``seek``, ``tell``, ``flush``, ``fsync``, ``truncate``,
    ``close``, ``async with``, ``async for line in f``; plus ``pread`` and
    ``pwrite``, which do not move the position, and ``stat``.  Differences
    from aiofiles: writes go straight to the kernel (no Python-level write
    buffer, so ``flush`` has nothing to do), text mode supports only
    ``newline=None`` (universal newlines on read, ``\\n`` on write) and
    ``newline=''``."""

    def __init__(self, aring: AsyncRing, fd: int, name: Any, mode: str, binary: bool,
                 encoding: str | None, errors: str | None, newline: str | None,
                 append: bool) -> None:
        self._ring = aring
        self._fd = fd
        self.name = name
        self.mode = mode
        self._binary = binary
        self._pos = 0
        self._append = append
        self._rbuf = b""          # read-ahead for readline (binary)
        self._closed = False
        self._newline = newline
        if not binary:
            self.encoding = encoding or locale.getpreferredencoding(False)
            self.errors = errors or "strict"
            self._decoder = codecs.getincrementaldecoder(self.encoding)(self.errors)
            self._tbuf = ""       # decoded text not yet returned
            self._pending_cr = False

    # -- raw -------------------------------------------------------------------------

    def fileno(self) -> int:
        return self._fd

    @property
    def closed(self) -> bool:
        return self._closed

    def _check(self) -> None:
        if self._closed:
            raise ValueError("I/O operation on closed file")

    async def pread(self, nbytes: int, offset: int) -> bytes:
        self._check()
        return await self._ring.read(self._fd, nbytes, offset)

    async def pwrite(self, data: Any, offset: int) -> int:
        self._check()
        return await self._ring.write(self._fd, data, offset)

    async def _read_raw(self, n: int) -> bytes:
        if n < 0:
            size = os.fstat(self._fd).st_size
            chunks = []
            while True:
                want = max(size - self._pos, _CHUNK)
                data = await self._ring.read(self._fd, want, self._pos)
                if not data:
                    break
                self._pos += len(data)
                chunks.append(data)
                if len(data) < want:
                    break
            return b"".join(chunks)
        data = await self._ring.read(self._fd, n, self._pos)
        self._pos += len(data)
        return data

    # -- reading ---------------------------------------------------------------------

    async def read(self, size: int = -1) -> Any:
        self._check()
        if self._binary:
            if self._rbuf:
                if 0 <= size <= len(self._rbuf):
                    out, self._rbuf = self._rbuf[:size], self._rbuf[size:]
                    return out
                head, self._rbuf = self._rbuf, b""
                rest = await self._read_raw(-1 if size < 0 else size - len(head))
                return head + rest
            return await self._read_raw(size)
        if size < 0:
            text = self._tbuf + self._decode(await self._read_raw(-1), final=True)
            self._tbuf = ""
            return text
        while len(self._tbuf) < size:
            raw = await self._read_raw(max(size, _CHUNK))
            self._tbuf += self._decode(raw, final=not raw)
            if not raw:
                break
        out, self._tbuf = self._tbuf[:size], self._tbuf[size:]
        return out

    def _decode(self, raw: bytes, final: bool) -> str:
        text = self._decoder.decode(raw, final)
        if self._newline is None:
            if self._pending_cr:
                text = "\r" + text
                self._pending_cr = False
            if text.endswith("\r") and not final:
                text = text[:-1]
                self._pending_cr = True
            text = text.replace("\r\n", "\n").replace("\r", "\n")
        return text

    async def readinto(self, buf: Any) -> int:
        self._check()
        if not self._binary:
            raise io.UnsupportedOperation("readinto on a text file")
        view = memoryview(buf).cast("B")
        n = 0
        if self._rbuf:
            n = min(len(view), len(self._rbuf))
            view[:n] = self._rbuf[:n]
            self._rbuf = self._rbuf[n:]
            if n == len(view):
                return n
        got = await self._ring.readinto(self._fd, view[n:], self._pos)
        self._pos += got
        return n + got

    async def readline(self) -> Any:
        self._check()
        if self._binary:
            while b"\n" not in self._rbuf:
                data = await self._read_raw(_CHUNK)
                if not data:
                    line, self._rbuf = self._rbuf, b""
                    return line
                self._rbuf += data
            i = self._rbuf.index(b"\n") + 1
            line, self._rbuf = self._rbuf[:i], self._rbuf[i:]
            return line
        while "\n" not in self._tbuf:
            raw = await self._read_raw(_CHUNK)
            self._tbuf += self._decode(raw, final=not raw)
            if not raw:
                line, self._tbuf = self._tbuf, ""
                return line
        i = self._tbuf.index("\n") + 1
        line, self._tbuf = self._tbuf[:i], self._tbuf[i:]
        return line

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
        if "r" in self.mode and "+" not in self.mode:
            raise io.UnsupportedOperation("not writable")
        if self._binary:
            raw = data
            count = len(memoryview(data).cast("B"))
        else:
            if not isinstance(data, str):
                raise TypeError(f"write() argument must be str, not {type(data).__name__}")
            raw = data.encode(self.encoding, self.errors)
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
        size = self._pos if size is None else size
        os.ftruncate(self._fd, size)
        return size

    # -- position --------------------------------------------------------------------

    def _drop_readahead(self) -> None:
        if self._binary:
            self._pos -= len(self._rbuf)
            self._rbuf = b""
        elif self._tbuf:
            raise io.UnsupportedOperation("cannot write or seek after a partial text read")

    async def seek(self, offset: int, whence: int = os.SEEK_SET) -> int:
        self._check()
        self._drop_readahead()
        if not self._binary and (whence != os.SEEK_SET and offset != 0):
            raise io.UnsupportedOperation("can't do nonzero cur-relative seeks in text mode")
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
        if not self._binary:
            self._decoder.reset()
            self._pending_cr = False
        return pos

    async def tell(self) -> int:
        self._check()
        if self._binary:
            return self._pos - len(self._rbuf)
        if self._tbuf:
            raise OSError(errno.EINVAL, "tell() after a partial text read is not supported")
        return self._pos

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

    def __init__(self, coro: Any) -> None:
        self._coro = coro
        self._file: AsyncFile | None = None

    def __await__(self) -> Any:
        return self._coro.__await__()

    async def __aenter__(self) -> AsyncFile:
        self._file = await self._coro
        return self._file

    async def __aexit__(self, *exc: object) -> None:
        if self._file is not None:
            await self._file.close()


async def _open(file: Any, mode: str, encoding: str | None, errors: str | None,
                newline: str | None, ring: AsyncRing | None) -> AsyncFile:
    flags, binary, append = _flags(mode)
    if binary and (encoding or errors or newline):
        raise ValueError("binary mode doesn't take an encoding, errors or newline argument")
    if newline not in (None, ""):
        raise ValueError("subring.aio.open supports newline=None or newline='' only")
    aring = ring or get_ring()
    fd = await aring.openat(file, flags, 0o666)
    if stat_mod.S_ISDIR(os.fstat(fd).st_mode):
        os.close(fd)
        raise IsADirectoryError(errno.EISDIR, os.strerror(errno.EISDIR), file)
    f = AsyncFile(aring, fd, file, mode, binary, encoding, errors, newline, append)
    if append:
        f._pos = os.lseek(fd, 0, os.SEEK_END)
    return f


def _open_wrapper(file: Any, mode: str = "r", buffering: int = -1, encoding: str | None = None,
                  errors: str | None = None, newline: str | None = None, *,
                  ring: AsyncRing | None = None) -> _Opener:
    return _Opener(_open(file, mode, encoding, errors, newline, ring))


_open_wrapper.__doc__ = open.__doc__
open = _open_wrapper  # type: ignore[assignment]  # noqa: A001
