"""The exceptions subring raises (besides plain ``OSError`` subclasses).

Failed *operations* are not exceptions until you ask: a completion carries
``res < 0`` and :meth:`Completion.result` raises the matching ``OSError``
subclass (``FileNotFoundError``, ``ConnectionResetError``...) with the op's name
in the message.  The classes below are for misuse of a ring itself.
"""

from __future__ import annotations


class SubringError(Exception):
    """Base class of subring's own errors."""


class RingClosedError(SubringError, ValueError):
    """The ring was closed (like I/O on a closed file, hence also ValueError)."""


class ForkedRingError(SubringError, RuntimeError):
    """A ring created before ``fork()`` was used in the child.

    The rings, their in-flight operations and their buffers belong to the
    parent; the child must create its own ring.  ``close()`` in the child is
    allowed and only drops the child's copy of the file descriptor.
    """


class RingFullError(SubringError, BlockingIOError):
    """No room: ``max_inflight`` operations are in flight, or the SQ filled up
    in the middle of a link chain.  Nothing was submitted or lost; reap
    completions (or submit) and try again."""


class RingBusyError(SubringError, RuntimeError):
    """The resource is in use by in-flight operations or another thread
    (e.g. unregistering buffers that queued ops still reference)."""


class UnsupportedError(SubringError, NotImplementedError):
    """The running kernel (or peer) lacks this feature; see ``probe()``."""


class PeerDiedError(SubringError, ConnectionResetError):
    """The subsystem on the other side of a connection is gone (its process
    exited or it dropped us).  Ops that were in flight complete with
    ``ECONNRESET``; new ops raise this.  Reconnect to continue."""


class CorruptRingError(SubringError, ConnectionError):
    """The peer broke the ring protocol (impossible indices, bad header); the
    connection was failed rather than followed."""
