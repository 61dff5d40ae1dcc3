"""asyncio on any subring ring: awaitable operations, async files and sockets.

:class:`AsyncRing` wraps a :class:`~subring.KernelRing`, a
:class:`~subring.SubsystemClient` or any ring with the same verbs.  Every
operation is a coroutine; under the hood each ``await`` prepares one SQE
whose user_data is an asyncio future, and completions resolve those futures.

The package, by role:

* ``ring``     -- AsyncRing: room accounting, flushing, dispatch, the verbs;
* ``streams``  -- multishot accept and recv as async iterators;
* ``files`` / ``textcodec`` / ``opening`` -- AsyncFile and :func:`open`;
* ``default``  -- the default ring of each event loop (:func:`get_ring`);
* ``os`` / ``ospath`` / ``tempfile`` -- aiofiles.os, aiofiles.ospath and
  aiofiles.tempfile, by the same names.

Cancellation contract (the lowest layer, in prose)
--------------------------------------------------
When the task awaiting an operation is cancelled (``task.cancel()``,
``asyncio.timeout``, ``wait_for``):

* the adapter submits an async cancel for that op and the task sees
  ``CancelledError`` at once;
* the op's buffers stay pinned by the ring until the op's *final*
  completion is reaped -- whether the cancel found it (the op then completes
  with ``-ECANCELED``), found it too far along (``-EALREADY``: it completes on
  its own), or did not find it (``-ENOENT``: it had completed already).  Its
  result is then discarded (an fd it opened is closed).  Memory is never
  released while the kernel or subsystem may still write into it, and no op
  is leaked: it stays counted in ``ring.inflight`` until its completion is
  reaped;
* if the op had completed before the cancellation was seen, the result is
  discarded and the task is still cancelled (asyncio semantics);
* if the peer died (a subsystem process exited), every awaiting task gets
  ``ConnectionResetError`` (``ECONNRESET``), whether or not it was cancelled.

Backpressure: a kernel ring keeps one slot free for cancels; when the rest
are in flight, further awaits wait for room in FIFO order; nothing is
dropped (a cancel never takes room already promised to a woken waiter).

Closing: :meth:`AsyncRing.aclose` (or ``async with``) cancels every op in
flight, waits for their final completions, and closes the ring if the
adapter owns it.  :func:`open` and the helpers use one ring per event loop,
closed when the loop shuts down its async generators (``asyncio.run``
does), when the loop is closed, or by :func:`close_default_ring`.
"""

from __future__ import annotations

from . import os as os  # (re-exported)
from . import ospath as ospath
from . import tempfile as tempfile
from .default import close_default_ring, get_ring
from .files import AsyncFile
from .opening import open
from .os import mkdir, rename, rmdir, stat, unlink
from .ring import AsyncRing, AsyncRingStatistics

# (the submodules os, ospath and tempfile are attributes, not star-exported:
# ``from subring.aio import *`` must not shadow the standard os module)
__all__ = [
           "AsyncFile",
           "AsyncRing",
           "AsyncRingStatistics",
           "close_default_ring",
           "get_ring",
           "mkdir",
           "open",
           "rename",
           "rmdir",
           "stat",
           "unlink",
]
