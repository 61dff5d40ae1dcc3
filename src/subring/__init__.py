"""subring: io_uring-shaped asynchronous rings to any subsystem.

One ring ABI -- io_uring's own 64-byte SQE and 16-byte CQE -- spoken by
several kinds of peer.  This release has the first: the Linux kernel
(:class:`KernelRing`).  See README.md and docs/ for the plan and the rules.
"""

from . import errors, ops  # noqa: F401  (errors first: the C core imports it)
from ._core import BufferRing, Completion, Pin
from .errors import (
    ForkedRingError,
    RingBusyError,
    RingClosedError,
    RingFullError,
    SubringError,
    UnsupportedError,
)
from .kernel import KernelProbe, KernelRing, RingStatistics, Statx, probe, sockaddr
from .ops import CQEFlag, Feature, Op, Setup, SQE

__version__ = "0.1.0"

__all__ = [
    "KernelRing", "Completion", "BufferRing", "Pin", "RingStatistics", "Statx",
    "KernelProbe", "probe", "sockaddr",
    "Op", "SQE", "Setup", "Feature", "CQEFlag",
    "SubringError", "RingClosedError", "ForkedRingError", "RingFullError",
    "RingBusyError", "UnsupportedError",
]
