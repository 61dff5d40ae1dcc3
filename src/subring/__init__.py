"""subring: io_uring-shaped asynchronous rings to any subsystem.

One ring ABI -- io_uring's own SQE and CQE -- spoken by several kinds of
peer: the Linux kernel (:class:`KernelRing`) and user-space subsystems in
other processes (:class:`Subsystem` serves, :func:`connect` is the client).
See README.md and docs/.
"""

from . import errors, ops  # noqa: F401  (errors first: the C core imports it)
from ._core import BufferRing, Completion, Pin
from .client import ClientStatistics, SubsystemClient, connect
from .errors import (
    CorruptRingError,
    ForkedRingError,
    PeerDiedError,
    RingBusyError,
    RingClosedError,
    RingFullError,
    SubringError,
    UnsupportedError,
)
from .kernel import KernelProbe, KernelRing, RingStatistics, Statx, probe, sockaddr
from .executor import RingExecutor
from .memory import BufferPool
from .ops import CQEFlag, Feature, Op, Setup, SQE
from .subsystem import PENDING, Batch, ClientInfo, OpSpec, Request, Subsystem, op

__version__ = "0.1.0"

__all__ = [
    "KernelRing", "Completion", "BufferRing", "Pin", "RingStatistics", "Statx",
    "KernelProbe", "probe", "sockaddr",
    "Op", "SQE", "Setup", "Feature", "CQEFlag",
    "SubringError", "RingClosedError", "ForkedRingError", "RingFullError",
    "RingBusyError", "UnsupportedError", "PeerDiedError", "CorruptRingError",
    "Subsystem", "op", "PENDING", "Request", "Batch", "ClientInfo", "OpSpec",
    "connect", "SubsystemClient", "ClientStatistics", "BufferPool", "RingExecutor",
]
