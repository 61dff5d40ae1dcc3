"""Statistics of a running subsystem, asked over its control plane.

``query_statistics(address)`` opens a short connection of its own to the
subsystem's socket, asks, and reads one reply: it never attaches, and the
serving process answers from its control path (between batches, like an
attach), so the data path of its clients is not slowed.  ``subring stat`` and
``subring top`` are built on it.
"""

from __future__ import annotations

import dataclasses
import time
from typing import Any

from . import attach

__all__ = ["ClientRow", "SubsystemStatistics", "query_statistics"]


@dataclasses.dataclass(frozen=True)
class ClientRow:
    """One attached client, as the subsystem sees it.

    Counters are monotonic since the client attached.  ``mode``,
    ``doorbells``, ``poll_hits`` and ``sleeps`` are published by the client
    in its shared region after each sleep or doorbell and every 64th wait
    (so they may lag by up to 63 waits; informational: a client only lies
    about itself)."""

    pid: int                 # the client process (SO_PEERCRED at connect)
    uid: int                 # its user ...
    gid: int                 # ... and group
    token: int               # connection id, unique in this server's life
    mode: str                # the client's notification mode ('?' if it never said)
    submitted: int           # SQEs the server took from this client
    completed: int           # CQEs posted to it
    inflight: int            # taken and not yet completed (PENDING requests included)
    sq_pending: int          # SQEs the client published that are not taken yet
    sq_entries: int          # its SQ size
    cq_pending: int          # CQEs posted that the client has not reaped yet
    cq_entries: int          # its CQ size
    wakeups_sent: int        # CQ publishes that had to signal the client's eventfd
    wakeups_suppressed: int  # CQ publishes while the client was awake: no syscall
    doorbells: int           # times the client rang the sleeping server
    poll_hits: int           # client waits satisfied without sleeping
    sleeps: int              # client waits that slept
    errors: int              # error completions posted to it

    @classmethod
    def from_queue(cls, info: Any, raw: dict[str, Any]) -> ClientRow:
        """The row of one attached client: who it is (``info``, a
        :class:`~subring.ClientInfo`) and its queue's counters (``raw``, the
        server queue's ``stats()``)."""
        return cls(pid=info.pid, uid=info.uid, gid=info.gid, token=info.token,
                   **{f.name: raw[f.name] for f in dataclasses.fields(cls)
                      if f.name not in ("pid", "uid", "gid", "token")})


@dataclasses.dataclass(frozen=True)
class SubsystemStatistics:
    """A running subsystem's statistics (``backend='subsystem'``)."""

    backend: str             # always 'subsystem'
    name: str                # the name announced to clients
    address: str             # the socket it serves
    pid: int                 # the serving process
    mode: str                # its notification mode: 'hybrid', 'interrupt' or 'poll'
    spin_us: float           # hybrid mode: idle spinning before it sleeps
    uptime: float            # seconds since serve() started
    connections: int         # open control connections, attached or not yet
    rounds: int              # server loop rounds over the queues
    sleeps: int              # times the server slept in epoll_wait
    ops: int                 # SQEs taken from all clients
    attaches: int            # successful attaches
    refused: int             # connections refused (uid, caps, bad hello, timeout, fd limit)
    dropped: int             # clients dropped for breaking the ring protocol
    clients: tuple[ClientRow, ...]   # one row per attached client

    def to_dict(self) -> dict[str, Any]:
        """Plain data (what the control plane sends)."""
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> SubsystemStatistics:
        """Rebuild from :meth:`to_dict` (unknown keys are ignored, so a newer
        server still answers an older client)."""
        row_fields = {f.name for f in dataclasses.fields(ClientRow)}
        top_fields = {f.name for f in dataclasses.fields(cls)}
        rows = tuple(ClientRow(**{k: v for k, v in r.items() if k in row_fields})
                     for r in d.get("clients", ()))
        top = {k: v for k, v in d.items() if k in top_fields and k != "clients"}
        return cls(**top, clients=rows)


def query_statistics(address: str, timeout: float = 5.0) -> SubsystemStatistics:
    """Ask the subsystem serving ``address`` for its statistics.

    Does not wait for a missing socket.  Raises ``FileNotFoundError`` /
    ``ConnectionRefusedError`` / ``PermissionError`` naming the path,
    ``TimeoutError`` if no answer comes within ``timeout`` seconds, and
    :class:`~subring.AttachRefusedError` if the server refuses."""
    deadline = time.monotonic() + timeout
    sock = attach.open_control(address, timeout, wait=False)
    try:
        sock.settimeout(max(0.01, deadline - time.monotonic()))
        try:
            reply, fds = attach.exchange(sock, attach.stat_request())
        except TimeoutError:
            raise TimeoutError(f"{address}: no statistics within {timeout} s") from None
    finally:
        sock.close()
    attach.close_fds(fds)           # a statistics reply carries none
    if reply is None:
        raise ConnectionError(f"{address}: the subsystem closed the connection")
    attach.check_reply(address, reply, [], nfds=0)
    try:
        return SubsystemStatistics.from_dict(reply["stat"])
    except (KeyError, TypeError) as e:
        raise ConnectionError(f"{address}: malformed statistics reply ({e})") from None
