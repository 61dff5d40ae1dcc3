"""Multishot ops as async iterators: accept streams and recv streams.

One SQE produces many completions; each is converted and queued, and
``async for`` takes them in order.  A recv stream reads into a provided
buffer ring; every buffer is copied out and recycled at once, and when the
buffers run out (``ENOBUFS``) the op is armed again.
"""

from __future__ import annotations

import asyncio
import collections
import errno
import os
import weakref
from typing import Any, cast

__all__ = ["Stream", "accept_stream", "recv_stream"]

_ECANCELED = errno.ECANCELED


def _error(c: Any) -> OSError:
    err = -c.res
    return OSError(err, f"{c.op}: {os.strerror(err)}")


class Stream:
    """Completions of one multishot op as an async iterator."""

    def __init__(self, aring: Any, convert: Any, *, eof_on_zero: bool = False,
                 on_close: Any = None, rearm: Any = None) -> None:
        self._aring = aring
        self._convert = convert
        self._queue: collections.deque[Any] = collections.deque()
        self._waiter: asyncio.Future[None] | None = None
        self._done = False
        self._closing = False
        self._eof = False
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
                self._aring.flush_soon()
                return
            except Exception as e:  # noqa: BLE001 - surface it to the reader
                self._queue.append(e)
                more = False
        elif res < 0 and res != -_ECANCELED:
            self._queue.append(_error(c))
        elif res >= 0 and not (self._eof_on_zero and res == 0):
            self._queue.append(self._convert(c))
        if self._eof_on_zero and res == 0:
            self._eof = True
            if more:
                self.close()
        if not more:
            self._done = True
        self._wake()

    def _wake(self) -> None:
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_result(None)

    def abandon(self) -> None:
        """The ring went away with the op in flight."""
        self._done = True
        self._wake()

    def __aiter__(self) -> Stream:
        return self

    async def __anext__(self) -> Any:
        while not self._queue:
            if self._done:
                self._finish()
                raise StopAsyncIteration
            self._waiter = self._aring.loop.create_future()
            try:
                await self._waiter
            except asyncio.CancelledError:
                self.close()
                raise
            finally:
                self._waiter = None
        item = self._queue.popleft()
        if isinstance(item, BaseException):
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
            self._aring.cancel(self.token)


def accept_stream(aring: Any, fd: int) -> Stream:
    """Multishot accept on listening socket ``fd``: yields connection fds."""
    if aring.closed:
        raise RuntimeError("AsyncRing is closed")
    stream = Stream(aring, lambda c: c.res)
    stream.token = aring.ring.prep_accept(fd, stream, multishot=True)
    aring.flush_soon()
    return stream


_groups: weakref.WeakKeyDictionary[Any, int] = weakref.WeakKeyDictionary()


def _next_group(ring: Any) -> int:
    n = _groups.get(ring, 0) + 1
    _groups[ring] = n
    return n


def recv_stream(aring: Any, fd: int, *, buffers: int = 64, size: int = 16384,
                group_id: int | None = None) -> Stream:
    """Multishot recv on ``fd`` into a provided-buffer ring: yields bytes until EOF."""
    if aring.closed:
        raise RuntimeError("AsyncRing is closed")
    ring = aring.ring
    gid = group_id if group_id is not None else _next_group(ring)
    br = ring.register_buffer_ring(gid, buffers, size)

    def take(c: Any) -> bytes:
        if c.res <= 0:
            return b""
        data = bytes(br.get(c.buffer_id, c.res))
        br.recycle(c.buffer_id)
        return data

    def rearm(st: Stream) -> int:
        return cast("int", ring.prep_recv(fd, None, st, buffer_group=gid, multishot=True))

    stream = Stream(aring, take, eof_on_zero=True, on_close=br.close, rearm=rearm)
    stream.token = rearm(stream)
    aring.flush_soon()
    return stream
