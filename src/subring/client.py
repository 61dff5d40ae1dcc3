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
``connect`` again reaches a restarted server.
"""

from __future__ import annotations

import dataclasses
import os
import socket
import time
from typing import Any

from . import _core, _wire
from .errors import PeerDiedError

__all__ = ["connect", "SubsystemClient", "ClientStatistics"]


@dataclasses.dataclass(frozen=True)
class ClientStatistics:
    submitted: int
    completed: int
    inflight: int
    sleeps: int          # times the client slept waiting for completions
    doorbells: int       # times it had to wake the subsystem
    sq_full_flushes: int
    max_inflight: int


class SubsystemClient(_core.UserRing):
    """A connection to a subsystem (use :func:`connect`)."""

    name: str
    ops: dict[str, int]
    server_pid: int

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
        self._pool: Any = None
        self._abandoned: set[int] = set()     # tokens of call()s that timed out
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
            _wire.send(sock, {"cmd": "pool", "count": pool.count, "size": pool.size}, [pool.fd])
            reply, fds = _wire.recv(sock)
        finally:
            sock.close()
        for fd in fds:
            os.close(fd)
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
        return ClientStatistics(**self._stats(), max_inflight=self.max_inflight)

    def __enter__(self) -> SubsystemClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        if self.closed:
            return f"<SubsystemClient {self.name!r} closed>"
        return f"<SubsystemClient {self.name!r} ops={len(self.ops)} inflight={self.inflight}>"


def connect(address: str, *, entries: int = 256, slot_size: int = 4096,
            mode: str = "hybrid", spin_us: float = 50.0,
            timeout: float = 5.0) -> SubsystemClient:
    """Attach to the subsystem serving the Unix socket ``address``.

    ``entries``: ring size and maximum ops in flight (the server may cap it);
    ``slot_size``: bytes per op for payloads and results that do not fit
    inline; ``mode``: how this client waits ('hybrid', 'interrupt', 'poll').
    Retries for up to ``timeout`` seconds while the socket does not exist yet
    or refuses connections (a server that is starting)."""
    deadline = time.monotonic() + timeout
    while True:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET | socket.SOCK_CLOEXEC)
        try:
            sock.settimeout(max(0.01, deadline - time.monotonic()))
            sock.connect(address)
            break
        except (FileNotFoundError, ConnectionRefusedError):
            sock.close()
            if time.monotonic() >= deadline:
                raise
            time.sleep(0.01)
        except BaseException:
            sock.close()
            raise
    try:
        _wire.send(sock, {"subring": _wire.PROTOCOL, "entries": entries,
                          "slot_size": slot_size, "pid": os.getpid()})
        reply, fds = _wire.recv(sock)
        if reply is None:
            raise PeerDiedError(f"{address}: the subsystem closed the connection during attach")
        if not reply.get("ok"):
            for fd in fds:
                os.close(fd)
            raise ConnectionError(f"{address}: attach refused: {reply.get('error')}")
        if len(fds) != 3:
            for fd in fds:
                os.close(fd)
            raise ConnectionError(f"{address}: attach reply carried {len(fds)} fds, not 3")
        sock.settimeout(None)
        sock.setblocking(True)
    except BaseException:
        sock.close()
        raise
    client = SubsystemClient._make(sock, reply, fds)
    client.wait_mode = mode
    client.spin_us = spin_us
    return client
