"""subring: io_uring-shaped asynchronous rings to any subsystem.

One ring ABI -- io_uring's own SQE and CQE -- spoken by several kinds of
peer: the Linux kernel (:class:`KernelRing`) and user-space subsystems in
other processes (:class:`Subsystem` serves, :func:`connect` is the client).
See README.md and docs/.
"""

from . import errors, ops  # noqa: F401  (errors first: the C core imports it)
from ._core import BufferRing, Completion, Pin
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
from .executor import RingExecutor
from .kernel import KernelProbe, KernelRing, RingStatistics, Statx, probe, sockaddr
from .memory import BufferPool, PoolStatistics
from .ops import SQE, CQEFlag, Feature, Op, Setup
from .ring import Ring
from .subsystem import (
    PENDING,
    AbiMismatchError,
    AttachRefusedError,
    Batch,
    ClientInfo,
    ClientRow,
    ClientStatistics,
    OpSpec,
    Request,
    Subsystem,
    SubsystemClient,
    SubsystemStatistics,
    connect,
    op,
    query_statistics,
)

__version__ = "0.1.0"

__all__ = [
    "PENDING",
    "AbiMismatchError",
    "AttachRefusedError",
    "SQE",
    "Batch",
    "BufferPool",
    "BufferRing",
    "CQEFlag",
    "ClientInfo",
    "ClientRow",
    "ClientStatistics",
    "Completion",
    "CorruptRingError",
    "Feature",
    "ForkedRingError",
    "KernelProbe",
    "KernelRing",
    "Op",
    "OpSpec",
    "PeerDiedError",
    "Pin",
    "PoolStatistics",
    "Request",
    "Ring",
    "RingBusyError",
    "RingClosedError",
    "RingExecutor",
    "RingFullError",
    "RingStatistics",
    "Setup",
    "Statx",
    "SubringError",
    "Subsystem",
    "SubsystemStatistics",
    "SubsystemClient",
    "UnsupportedError",
    "connect",
    "op",
    "probe",
    "query_statistics",
    "sockaddr",
]
