"""User-space subsystems: a process that serves io_uring-shaped rings, and its clients.

The package by role:

* :mod:`~subring.subsystem.server` -- :class:`Subsystem`: accept, attach, serve
  (the C serving loop runs the rings), statistics;
* :mod:`~subring.subsystem.handlers` -- what handlers see: :func:`op`,
  :class:`OpSpec`, :class:`ClientInfo`, :data:`PENDING`, :class:`Request`,
  :class:`Batch`;
* :mod:`~subring.subsystem.client` -- :func:`connect`, :class:`SubsystemClient`;
* :mod:`~subring.subsystem.attach` -- the attach protocol on both sides (the
  control plane: messages, checks, refusals);
* :mod:`~subring.subsystem.stats` -- :class:`SubsystemStatistics`,
  :class:`ClientRow`, :func:`query_statistics`.

Everything users need is importable from here (and from :mod:`subring`).
See ``docs/subsystems.md``.
"""

from .attach import AbiMismatchError, AttachRefusedError
from .client import ClientStatistics, SubsystemClient, connect
from .handlers import PENDING, Batch, ClientInfo, OpSpec, Request, op
from .server import Subsystem
from .stats import ClientRow, SubsystemStatistics, query_statistics

__all__ = [
    "PENDING",
    "AbiMismatchError",
    "AttachRefusedError",
    "Batch",
    "ClientInfo",
    "ClientRow",
    "ClientStatistics",
    "OpSpec",
    "Request",
    "Subsystem",
    "SubsystemClient",
    "SubsystemStatistics",
    "connect",
    "op",
    "query_statistics",
]
