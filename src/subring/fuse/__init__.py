"""subring.fuse: write a FUSE file system as a Python class; serve it over
FUSE over io_uring (Linux 6.14+) or the classic /dev/fuse transport -- or,
with no mount at all, as a subring Subsystem.

    from subring.fuse import Operations, Attr, Entry, mount

See docs/fuse.md.
"""

from .kernelparam import possible_cpus, set_uring_enabled, uring_enabled, uring_switched
from .operations import OPERATIONS, Operations
from .session import (
                    DEFAULT_POLL_US,
                    DEFAULT_THREADS,
                    FuseError,
                    FuseMount,
                    FuseOptionError,
                    FuseStatistics,
                    FuseTransportError,
                    FuseUnavailableError,
                    mount,
                    request_context,
)
from .subsystem import FuseClient, FuseSubsystem
from .types import ROOT_INO, Attr, DirEntry, Entry, SetAttr, StatFS

__all__ = [
    "Operations", "OPERATIONS", "ROOT_INO", "Attr", "Entry", "StatFS", "SetAttr", "DirEntry",
    "mount", "FuseMount", "FuseStatistics", "FuseError", "FuseUnavailableError",
    "FuseTransportError", "FuseOptionError", "request_context", "DEFAULT_THREADS",
    "DEFAULT_POLL_US",
    "FuseSubsystem", "FuseClient",
    "possible_cpus", "uring_enabled", "set_uring_enabled", "uring_switched",
]
