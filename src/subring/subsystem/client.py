"""The client side of a user-space subsystem: :func:`connect`.

A :class:`SubsystemClient` is a ring like :class:`~subring.KernelRing` --
prepare, submit, reap, statistics, close, batch variants -- whose peer is a
:class:`~subring.Subsystem` process instead of the kernel::

    with subring.connect("/run/store.sock") as c:
        c.call("put", b"value", arg0=7)           # synchronous convenience
        print(c.call("get", arg0=7))              # b'value'

        echo = c.op_index("get")                  # asynchronous, batched
        for k in range(100):
            c.prep_call(echo, None, k, 0, user_data=k)
        c.submit_and_wait(100, timeout=5)
        for comp in c.reap():
            ...

Payloads: up to 80 bytes travel inline in the SQE, up to ``slot_size`` bytes
in the op's slot of the shared region (copied once, by ``prep_call``), larger
ones zero-copy from a :class:`~subring.BufferPool` registered with
:meth:`SubsystemClient.register_pool` (``prep_call_pool``).  Results: an int
(``Completion.res``) or bytes (``Completion.data``; ``result()`` returns them).

If the subsystem dies, every op in flight completes with ``ECONNRESET`` within
the wait's timeout, new ops raise :class:`~subring.errors.PeerDiedError`, and
``connect`` again reaches a restarted server.  If the ring protocol is broken
(the shared region scribbled on, or a server that misbehaves) the connection is
failed: every op in flight completes with ``EPROTO`` and the server drops it.
"""

from __future__ import annotations

import dataclasses
import os
import socket
import time
import warnings
from typing import Any, Self

from .. import _core
from ..errors import PeerDiedError
from . import attach
from .attach import AbiMismatchError, AttachRefusedError

__all__ = ["AbiMismatchError", "AttachRefusedError", "ClientStatistics", "SubsystemClient",
           "connect"]


@dataclasses.dataclass(frozen=True)
class ClientStatistics:
    """What a :class:`SubsystemClient` did (``backend='subsystem-client'``)."""

    backend: str         # always 'subsystem-client'
    submitted: int       # SQEs published
    completed: int       # completions delivered (made-up ones included)
    inflight: int        # ops prepared and not yet finally completed
    sleeps: int          # waits that slept (ppoll) for completions
    poll_hits: int       # waits satisfied while spinning, without sleeping
    doorbells: int       # times it had to wake the sleeping subsystem
    sq_full_flushes: int  # automatic submits because the SQ was full
    max_inflight: int    # cap on ops in flight (= the data slots; RingFullError beyond)
    mode: str            # how it waits: 'hybrid', 'interrupt' or 'poll'


class SubsystemClient(_core.UserRing):
    """A connection to a subsystem (use :func:`connect`)."""

    name: str
    ops: dict[str, int]
    op_docs: dict[str, str]
    server_pid: int
    _pool: Any
    _abandoned: set[int]          # tokens of call()s that timed out

    def __init__(self, *a: Any, **kw: Any) -> None:  # pragma: no cover - see connect()
        raise TypeError("use subring.connect(address)")

    @classmethod
    def _make(cls, sock: socket.socket, reply: dict[str, Any], fds: list[int]) -> SubsystemClient:
        self = cls.__new__(cls)
        region, doorbell, cq = fds
        _core.UserRing.__init__(self, region, doorbell, cq, sock.detach())
        table = reply["ops"]
        self.name = str(reply.get("name", "?"))
        self.ops = {str(t[0]): i for i, t in enumerate(table)}
        self.op_docs = {str(t[0]): str(t[2]) for t in table}
        self.server_pid = int(reply.get("server_pid", 0))
        # handler kind of each op (0 per-op, 1 batch, 2 vector): prep_records
        # checks it; a server that sends something else just gets 0
        kinds = bytes(t[1] if isinstance(t, list) and len(t) > 1 and t[1] in (0, 1, 2)
                      and not isinstance(t[1], bool) else 0 for t in table)
        self._set_opnames(tuple(str(t[0]) for t in table), kinds)
        self._pool = None
        self._abandoned = set()
        return self

    def op_index(self, name: str) -> int:
        """The index of op ``name`` (what ``prep_call`` takes)."""
        try:
            return self.ops[name]
        except KeyError:
            raise KeyError(f"subsystem {self.name!r} has no op {name!r}; it has: "
                           f"{', '.join(self.ops)}") from None

    def call(self, op: str | int, data: Any = None, arg0: int = 0, arg1: int = 0, *,
             timeout: float | None = 30.0) -> Any:
        """Run one op and return its result (int, or bytes if the handler
        returned bytes); raise its error as OSError.  Synchronous convenience:
        needs no other op in flight (use prep_call/reap for concurrency)."""
        index = self.op_index(op) if isinstance(op, str) else op
        if self._abandoned:                 # late results of timed-out calls: drop
            for c in self.reap():
                self._abandoned.discard(c.user_data)
        if self.inflight > len(self._abandoned):
            raise RuntimeError("call() needs no other ops in flight; reap them first "
                               "(or use prep_call / submit_and_wait / reap)")
        token = self.prep_call(index, data, arg0, arg1)
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            left = None if deadline is None else max(0.0, deadline - time.monotonic())
            self.submit_and_wait(1, left)
            # reap() also delivers the ECONNRESET completions made up when the
            # subsystem died, so a dead server is never reported as a timeout.
            for c in self.reap():
                if c.user_data == token:
                    return c.result()
                self._abandoned.discard(c.user_data)
            if left == 0.0:
                self._abandoned.add(token)   # its result is dropped when it comes
                raise TimeoutError(f"{self.name}.{op}: no completion within {timeout} s")

    def register_pool(self, pool: Any, *, timeout: float = 5.0) -> None:
        """Share a :class:`~subring.BufferPool` with the subsystem (one per
        connection): then ``prep_call_pool(op, buf_index, offset, length)``
        passes pool data without copying it."""
        if self._pool is not None:
            raise ValueError("a pool is already registered on this connection")
        sock = socket.socket(fileno=os.dup(self._sock_fd()))
        try:
            sock.settimeout(timeout)
            attach.send(sock, {"cmd": "pool", "count": pool.count, "size": pool.size}, [pool.fd])
            reply, fds = attach.recv(sock)
        finally:
            sock.close()
        attach.close_fds(fds)
        if reply is None:
            raise PeerDiedError("the subsystem closed the connection")
        if not reply.get("ok"):
            raise ValueError(f"subsystem refused the pool: {reply.get('error')}")
        self._set_pool(pool.count, pool.size)
        self._pool = pool

    def _sock_fd(self) -> int:
        return self._get_sock_fd()

    @property
    def pool(self) -> Any:
        return self._pool

    def statistics(self) -> ClientStatistics:
        """A frozen snapshot of this client's counters (``backend='subsystem-client'``)."""
        raw = self._stats()
        poll_hits, _sleeps, _bells = self._wait_stats()
        return ClientStatistics(backend="subsystem-client", submitted=raw["submitted"],
                                completed=raw["completed"], inflight=raw["inflight"],
                                sleeps=raw["sleeps"], poll_hits=poll_hits,
                                doorbells=raw["doorbells"],
                                sq_full_flushes=raw["sq_full_flushes"],
                                max_inflight=self.max_inflight, mode=self.mode)

    # ``mode`` (how this client waits for completions: 'hybrid' spins
    # ``spin_us`` then sleeps, 'interrupt' sleeps at once, 'poll' never
    # sleeps; may change at any time) is the C ring's attribute.

    @property
    def wait_mode(self) -> str:
        """Deprecated spelling of :attr:`mode`."""
        warnings.warn("SubsystemClient.wait_mode is deprecated; use .mode",
                      DeprecationWarning, stacklevel=2)
        return self.mode

    @wait_mode.setter
    def wait_mode(self, value: str) -> None:
        warnings.warn("SubsystemClient.wait_mode is deprecated; use .mode",
                      DeprecationWarning, stacklevel=2)
        self.mode = value

    def __enter__(self) -> Self:
        return self

    # -- for event loops (subring.aio) -------------------------------------------

    def set_async(self, on: bool) -> int:
        """While ``on``, the subsystem signals this client's completion
        eventfd after every batch it posts (what an event loop's
        ``add_reader`` needs; one eventfd write per batch).  Returns that
        eventfd."""
        return int(self._set_async(on))

    def peer_fd(self) -> int:
        """The attach socket's fd: it becomes readable when the subsystem
        dies or drops this connection (watch it; never read from it)."""
        return int(self._get_sock_fd())

    def live_user_data(self) -> list[Any]:
        """The user_data of every op still in flight."""
        return list(self._live_user_data())

    def close(self, timeout: float | None = None) -> None:
        """Drop the connection.  Ops in flight are *abandoned*, not drained:
        close returns at once, their completions never come (unreaped ones
        are discarded too), and the subsystem, seeing the connection go,
        finishes what its handlers still hold into nothing.  (A
        :class:`~subring.KernelRing` instead cancels and waits, since the
        kernel may write into an op's buffers until its final completion;
        here every payload was copied into the shared region, which this
        process simply unmaps.)  The exception: a handler still working on a
        ``prep_call_pool`` op may write into that :class:`~subring.BufferPool`
        buffer after close -- do not reuse it for data that matters until
        the subsystem is known to be done (or gone).

        ``timeout`` is not used (nothing here waits); it is accepted so that
        ``close(timeout)`` works on every :class:`~subring.Ring`.  Afterwards
        every verb raises :class:`~subring.RingClosedError` and ``inflight``
        is 0.  Idempotent."""
        super().close(timeout)

    def __exit__(self, *exc: object) -> None:
        """Close the connection (see :meth:`close`)."""
        self.close()

    def __repr__(self) -> str:
        if self.closed:
            return f"<SubsystemClient {self.name!r} closed>"
        return f"<SubsystemClient {self.name!r} ops={len(self.ops)} inflight={self.inflight}>"


def connect(address: str, *, entries: int = 256, slot_size: int = 4096,
            mode: str = "hybrid", spin_us: float = 50.0,
            timeout: float | None = 5.0, wait: bool = False) -> SubsystemClient:
    """Attach to the subsystem serving the Unix socket ``address``.

    ``entries``: ring size and maximum ops in flight (the server may cap it);
    ``slot_size``: bytes per op for payloads and results that do not fit
    inline; ``mode``: how this client waits ('hybrid', 'interrupt', 'poll').
    ``timeout`` bounds the whole attach (None: no bound).

    Errors name the path: nothing there -> ``FileNotFoundError``; not a socket,
    or a socket nobody serves -> ``ConnectionRefusedError`` (the message says
    which); no permission -> ``PermissionError``; no answer in time ->
    ``TimeoutError``; the server refused (uid not allowed, too busy...) ->
    :class:`AttachRefusedError` with its reason.  Only with ``wait=True`` is a
    missing or refusing socket retried until ``timeout`` (a subsystem that is
    still starting)."""
    if mode not in ("hybrid", "interrupt", "poll"):
        raise ValueError("mode must be 'hybrid', 'interrupt' or 'poll'")
    deadline = None if timeout is None else time.monotonic() + timeout
    sock = attach.open_control(address, timeout, wait)
    try:
        if deadline is not None:
            sock.settimeout(max(0.01, deadline - time.monotonic()))
        try:
            reply, fds = attach.exchange(sock, attach.hello(entries, slot_size, mode))
        except TimeoutError:
            raise TimeoutError(f"{address}: the subsystem did not answer the attach "
                               f"within {timeout} s") from None
        if reply is None:
            raise PeerDiedError(f"{address}: the subsystem closed the connection during attach")
        attach.check_reply(address, reply, fds, nfds=3)
        sock.settimeout(None)
        sock.setblocking(True)
    except BaseException:
        sock.close()
        raise
    client = SubsystemClient._make(sock, reply, fds)
    client.mode = mode
    client.spin_us = spin_us
    return client
