"""KernelRing: the Linux kernel's io_uring as a subring peer.

How io_uring works, in the terms this module relies on
-------------------------------------------------------
``io_uring_setup(2)`` creates a pair of rings shared between the process and
the kernel.  The process writes 64-byte *submission queue entries* (SQEs) into
the SQ and advances its tail; the kernel consumes them -- inside
``io_uring_enter(2)``, or continuously from a kernel thread with SQPOLL -- and
for every operation posts a 16-byte *completion queue entry* (CQE) carrying the
SQE's ``user_data`` and a result ``res`` (>= 0, or ``-errno``).  A CQE is
posted exactly once per operation, except for *multishot* operations, which
post a CQE per event with ``IORING_CQE_F_MORE`` set on all but the last.

The kernel may read and write the memory an SQE points at until that
operation's final CQE is posted: after a successful cancel, after the file
descriptor was closed, after a failed link.  subring therefore pins every
buffer you pass to a ``prep_*`` call until it has *reaped* that final CQE.

All ring memory is touched only by the C core (``subring._core``); this module
adds the typed builders that are not on the hot path and the conveniences.

Using a ring
------------
::

    with KernelRing(64) as ring:
        buf = bytearray(4096)
        ring.prep_read(fd, buf, 0, user_data="first")
        ring.submit_and_wait(1)
        for c in ring.reap():
            n = c.result()          # raises OSError on failure
            print(c.user_data, bytes(buf[:n]))

Every ``prep_*`` call returns the op's *token* (an int, unique among ops in
flight); pass it to :meth:`KernelRing.prep_cancel` or ``prep_timeout_remove``.
A completion's ``user_data`` is whatever you passed, or the token if nothing.

Rules
-----
* Up to ``max_inflight`` ops (default: the CQ size) may be in flight; one more
  raises :class:`~subring.errors.RingFullError` (nothing is lost).  This cap is
  what keeps the CQ from overflowing; if multishot ops overflow it anyway, the
  ring flushes the kernel's backlog on the next reap.
* A full SQ is submitted automatically to make room -- except inside a link
  chain, which must reach the kernel in one submission (RingFullError then;
  the part of the chain prepared so far is withdrawn and never runs).
* A ring is not thread-safe beyond what the GIL gives: use one ring per thread
  (``single_issuer=True`` rings must stay on their creating thread).
* After ``fork()`` the child's copy refuses to work
  (:class:`~subring.errors.ForkedRingError`); create a new ring there.
* Every op gets exactly one final completion -- also when the kernel posts
  none (a chain cancelled behind a failed ``SKIP_SUCCESS`` op, a withdrawn
  chain): subring makes those up (``-ECANCELED``).  A completion another ring
  posts with ``prep_msg_ring`` is *foreign*: it never completes one of your
  ops, whatever user_data it carries.
* A wait without a timeout (``None`` or ``math.inf``) that could never be
  satisfied raises ValueError at once; a handled signal never ends a wait early.
"""

from __future__ import annotations

import dataclasses
import errno
import functools
import operator
import os
import select
import socket
import struct
import warnings
from collections.abc import Iterable, Sequence
from typing import Any, Self

from . import _core
from ._sqeargs import (
    AT_FDCWD,
    AT_REMOVEDIR,
    Statx,
    fd32,
    file_offset,
    iovecs,
    path_pin,
    sockaddr,
    timespec,
)
from .errors import UnsupportedError
from .ops import (
    ACCEPT_MULTISHOT,
    ASYNC_CANCEL_ALL,
    ASYNC_CANCEL_ANY,
    ASYNC_CANCEL_FD,
    ASYNC_CANCEL_FD_FIXED,
    FSYNC_DATASYNC,
    MSG_DATA,
    POLL_ADD_MULTI,
    RECV_MULTISHOT,
    SQE,
    STATX_BASIC_STATS,
    TIMEOUT_ABS,
    TIMEOUT_ETIME_SUCCESS,
    TIMEOUT_MULTISHOT,
    Feature,
    Op,
    Setup,
)

__all__ = ["KernelProbe", "KernelRing", "RingStatistics", "Statx", "probe", "sockaddr"]

Pin = _core.Pin
_NO_USER_DATA: Any = None


@dataclasses.dataclass(frozen=True)
class RingStatistics:
    """A snapshot of a kernel ring's counters (``KernelRing.statistics()``).

    Frozen; ``backend`` is ``"kernel"`` (a subsystem client's statistics say
    ``"subsystem-client"``), so code that aggregates statistics of several ring
    kinds can tell them apart.  Every other field is a count since the ring was
    created, except the sizes at the end.
    """

    submitted: int            # SQEs the peer consumed
    completed: int            # CQEs reaped
    inflight: int             # ops prepared and not yet finally completed
    enter_calls: int          # io_uring_enter syscalls
    overflow_events: int      # times the kernel's CQ overflow backlog was flushed
    foreign_completions: int  # CQEs not belonging to our ops (e.g. MSG_RING)
    sq_full_flushes: int      # automatic submits because the SQ was full
    sq_dropped: int           # SQEs the kernel rejected as invalid
    cq_dropped: int           # CQEs the kernel had to drop (never with FEAT_NODROP)
    sq_entries: int           # SQ size
    cq_entries: int           # CQ size
    max_inflight: int         # cap on ops in flight (RingFullError beyond it)
    backend: str = "kernel"   # which kind of ring these counters describe


@dataclasses.dataclass(frozen=True)
class KernelProbe:
    """What the running kernel supports (``subring.probe()``)."""

    opcodes: frozenset[Op]     # opcodes it supports (IORING_REGISTER_PROBE)
    features: Feature          # IORING_FEAT_* bits io_uring_setup reported
    setup_flags: Setup         # flags a ring could be created with here

    def supports(self, op: Op | str | int) -> bool:
        """True if the kernel supports ``op`` (an :class:`Op`, its name or number)."""
        if isinstance(op, str):
            op = Op[op.upper()]
        return Op(op) in self.opcodes


class KernelRing(_core.KernelRing):
    """An io_uring instance.  See the module docstring for the rules.

    :param entries: SQ size (rounded up to a power of two by the kernel).
    :param cq_entries: CQ size (default: twice ``entries``).
    :param max_inflight: cap on ops in flight (default: the CQ size).
    :param sqpoll: a kernel thread polls the SQ (root; burns a CPU while busy).
    :param sq_thread_cpu: pin the SQPOLL thread.  :param sq_thread_idle_ms: idle
        time before it sleeps.
    :param single_issuer: only the creating thread submits (lets the kernel
        skip locking).  :param defer_taskrun: completions run only when this
        thread waits (implies ``single_issuer``); the fastest setting for one
        thread doing everything.
    :param coop_taskrun: / :param taskrun_flag: cooperative task running.
    :param sqe128: 128-byte SQEs (for uring_cmd payloads); :param cqe32: 32-byte
        CQEs (``Completion.extra``).
    :param no_sqarray: drop the SQ index array when the kernel can (6.6+).
    :param flags: extra raw ``IORING_SETUP_*`` bits.
    """

    def __init__(
        self,
        entries: int = 256,
        *,
        cq_entries: int | None = None,
        max_inflight: int | None = None,
        sqpoll: bool = False,
        sq_thread_cpu: int | None = None,
        sq_thread_idle_ms: int = 1000,
        single_issuer: bool = False,
        defer_taskrun: bool = False,
        coop_taskrun: bool = False,
        taskrun_flag: bool = False,
        sqe128: bool = False,
        cqe32: bool = False,
        submit_all: bool = False,
        iopoll: bool = False,
        no_sqarray: bool = True,
        flags: int = 0,
    ) -> None:
        if not isinstance(entries, int) or isinstance(entries, bool):
            raise TypeError("entries must be an int")
        f = int(flags)
        f |= Setup.SQPOLL if sqpoll else 0
        f |= Setup.SINGLE_ISSUER if (single_issuer or defer_taskrun) else 0
        f |= Setup.DEFER_TASKRUN if defer_taskrun else 0
        f |= Setup.COOP_TASKRUN if coop_taskrun else 0
        f |= Setup.TASKRUN_FLAG if taskrun_flag else 0
        f |= Setup.SQE128 if sqe128 else 0
        f |= Setup.CQE32 if cqe32 else 0
        f |= Setup.SUBMIT_ALL if submit_all else 0
        f |= Setup.IOPOLL if iopoll else 0
        try:
            super().__init__(
                entries,
                cq_entries or 0,
                f,
                -1 if sq_thread_cpu is None else sq_thread_cpu,
                sq_thread_idle_ms if sqpoll else 0,
                max_inflight or 0,
                # optional, dropped one by one if the kernel refuses them:
                # SUBMIT_ALL (5.18) keeps submitting past a rejected SQE
                (int(Setup.NO_SQARRAY) if no_sqarray else 0) | int(Setup.SUBMIT_ALL),
            )
        except OSError as e:
            if e.errno == errno.EINVAL and f:
                raise UnsupportedError(
                    f"io_uring_setup refused flags {Setup(f)!r} (EINVAL): this kernel lacks "
                    "one of them or the combination is invalid (see subring.probe())"
                ) from e
            raise

    # -- lifecycle -----------------------------------------------------------

    def __enter__(self) -> Self:
        """Use the ring as a context manager: :meth:`close` on exit."""
        return self

    def __exit__(self, *exc: object) -> None:
        """Close the ring (see :meth:`close`)."""
        self.close()

    def close(self, timeout: float | None = 5.0) -> None:
        """Drain, then release: cancel every op in flight, wait (up to
        ``timeout`` seconds; None: without bound) for their final
        completions, then release the ring (and the eventfd of
        ``enable_eventfd``).  Unreaped completions are discarded; the ops'
        buffers are released once the kernel is done with them.  If the
        kernel does not finish in time, the buffers of the stragglers are kept
        alive forever (a ResourceWarning says so) rather than freed under the
        kernel.  (A :class:`~subring.SubsystemClient` abandons its ops
        instead: see its ``close``.)

        Afterwards every verb raises :class:`~subring.RingClosedError` and
        ``inflight`` is 0.  Idempotent.  Raises
        :class:`~subring.RingBusyError` while another thread waits in this
        ring."""
        super().close(timeout)

    def __repr__(self) -> str:
        if self.closed:
            return "<KernelRing closed>"
        return (f"<KernelRing fd={self.fd} sq={self.sq_entries} cq={self.cq_entries} "
                f"inflight={self.inflight}>")

    def statistics(self) -> RingStatistics:
        """A frozen :class:`RingStatistics` snapshot (``backend == "kernel"``)."""
        return RingStatistics(**self._stats(), sq_entries=self.sq_entries,
                              cq_entries=self.cq_entries, max_inflight=self.max_inflight)

    def supported_ops(self) -> frozenset[Op]:
        """The opcodes this kernel supports (``IORING_REGISTER_PROBE`` on this
        ring).  :func:`subring.probe` gives the whole picture -- opcodes,
        features and the setup flags a ring can be created with -- once per
        process."""
        known = {int(o) for o in Op}
        return frozenset(Op(o) for o in self._probe() if o in known)

    def probe(self) -> frozenset[Op]:
        """Deprecated name of :meth:`supported_ops` (it was easy to confuse
        with :func:`subring.probe`, which returns a :class:`KernelProbe`)."""
        warnings.warn("KernelRing.probe() is deprecated; use supported_ops() (the "
                      "kernel-wide probe is subring.probe())", DeprecationWarning, stacklevel=2)
        return self.supported_ops()

    def cancel(self, target: int, *, wait: bool = False, timeout: float | None = 5.0) -> int:
        """Ask the kernel to cancel the op with token ``target`` and submit.

        Returns the cancel op's own token.  The target still posts its final
        completion (usually ``-ECANCELED``) -- its buffers stay pinned until
        then.  The cancel's completion says: 0 found, -ENOENT not found (it
        probably completed already), -EALREADY too far along to stop."""
        tok = self.prep_cancel(target)
        if wait:
            self.submit_and_wait(1, timeout)
        else:
            self.submit()
        return tok

    # -- builders (the hot ones -- nop, read, write, *_fixed, batches -- are
    #    in C; these go through the generic prep_sqe) -------------------------

    def prep_readv(self, fd: int, buffers: Sequence[Any], offset: int = -1,
                   user_data: Any = _NO_USER_DATA, *, flags: int = 0, rw_flags: int = 0) -> int:
        """readv(2) into ``buffers`` at ``offset`` (-1: the fd's position); every
        buffer and the iovec array stay pinned until the final completion."""
        off = file_offset(offset)
        iov, pins = iovecs(buffers, True)
        return self.prep_sqe(Op.READV, fd, iov.address, len(pins), off,
                             rw_flags, flags, 0, 0, 0, 0, user_data, (iov, pins))

    def prep_writev(self, fd: int, buffers: Sequence[Any], offset: int = -1,
                    user_data: Any = _NO_USER_DATA, *, flags: int = 0, rw_flags: int = 0) -> int:
        """writev(2) of ``buffers`` at ``offset`` (-1: the fd's position)."""
        off = file_offset(offset)
        iov, pins = iovecs(buffers, False)
        return self.prep_sqe(Op.WRITEV, fd, iov.address, len(pins), off,
                             rw_flags, flags, 0, 0, 0, 0, user_data, (iov, pins))

    def prep_fsync(self, fd: int, user_data: Any = _NO_USER_DATA, *, datasync: bool = False,
                   flags: int = 0) -> int:
        """fsync(2) (``datasync=True``: fdatasync)."""
        return self.prep_sqe(Op.FSYNC, fd, op_flags=FSYNC_DATASYNC if datasync else 0,
                             flags=flags, user_data=user_data)

    def prep_fdatasync(self, fd: int, user_data: Any = _NO_USER_DATA, *, flags: int = 0) -> int:
        """fdatasync(2)."""
        return self.prep_fsync(fd, user_data, datasync=True, flags=flags)

    def prep_openat(self, path: str | bytes | os.PathLike[Any], open_flags: int = os.O_RDONLY,
                    mode: int = 0o644, user_data: Any = _NO_USER_DATA, *,
                    dir_fd: int = AT_FDCWD, file_index: int | None = None,
                    flags: int = 0) -> int:
        """openat(2); res is the new fd.  ``open_flags`` get O_CLOEXEC added.
        ``file_index`` opens straight into the registered-file table instead:
        a slot index (res is 0) or ``ops.FILE_INDEX_ALLOC`` (res is the slot
        the kernel picked)."""
        p = path_pin(path)
        if file_index is None:
            fi, open_flags = 0, open_flags | os.O_CLOEXEC
        else:   # direct descriptors have no close-on-exec; the kernel refuses it
            fi = file_index if file_index == 0xFFFFFFFF else file_index + 1
        return self.prep_sqe(Op.OPENAT, dir_fd, p.address, mode, 0,
                             open_flags, flags, 0, 0, fi, 0, user_data, p)

    def prep_close(self, fd: int, user_data: Any = _NO_USER_DATA, *, fixed: bool = False,
                   flags: int = 0) -> int:
        """close(2), or with ``fixed=True`` free registered-file slot ``fd``."""
        if fixed:
            return self.prep_sqe(Op.CLOSE, 0, file_index=fd + 1, flags=flags,
                                 user_data=user_data)
        return self.prep_sqe(Op.CLOSE, fd, flags=flags, user_data=user_data)

    def prep_statx(self, path: str | bytes | os.PathLike[Any], statx: Statx,
                   user_data: Any = _NO_USER_DATA, *, dir_fd: int = AT_FDCWD,
                   at_flags: int = 0, mask: int = STATX_BASIC_STATS, flags: int = 0) -> int:
        """statx(2) into ``statx`` (a :class:`Statx`, pinned until completion)."""
        if not isinstance(statx, Statx):
            raise TypeError("statx must be a subring.Statx buffer")
        p, out = path_pin(path), Pin(statx, True)
        return self.prep_sqe(Op.STATX, dir_fd, p.address, mask, out.address, at_flags,
                             flags, 0, 0, 0, 0, user_data, (p, out))

    def prep_fallocate(self, fd: int, mode: int, offset: int, length: int,
                       user_data: Any = _NO_USER_DATA, *, flags: int = 0) -> int:
        """fallocate(2) of ``length`` bytes at ``offset`` with ``mode``."""
        if offset < 0 or length <= 0:
            raise ValueError("offset must be >= 0 and length > 0")
        return self.prep_sqe(Op.FALLOCATE, fd, length, mode, offset, flags=flags,
                             user_data=user_data)

    def prep_unlinkat(self, path: str | bytes | os.PathLike[Any],
                      user_data: Any = _NO_USER_DATA, *, dir_fd: int = AT_FDCWD,
                      rmdir: bool = False, flags: int = 0) -> int:
        """unlinkat(2) (``rmdir=True``: remove a directory)."""
        p = path_pin(path)
        return self.prep_sqe(Op.UNLINKAT, dir_fd, p.address, 0, 0,
                             AT_REMOVEDIR if rmdir else 0, flags, 0, 0, 0, 0, user_data, p)

    def prep_renameat(self, old: str | bytes | os.PathLike[Any],
                      new: str | bytes | os.PathLike[Any], user_data: Any = _NO_USER_DATA, *,
                      old_dir_fd: int = AT_FDCWD, new_dir_fd: int = AT_FDCWD,
                      rename_flags: int = 0, flags: int = 0) -> int:
        """renameat2(2) of ``old`` to ``new`` (``rename_flags``: RENAME_*)."""
        po, pn = path_pin(old), path_pin(new)
        return self.prep_sqe(Op.RENAMEAT, old_dir_fd, po.address, new_dir_fd & 0xFFFFFFFF,
                             pn.address, rename_flags, flags, 0, 0, 0, 0, user_data, (po, pn))

    def prep_linkat(self, old: str | bytes | os.PathLike[Any],
                    new: str | bytes | os.PathLike[Any], user_data: Any = _NO_USER_DATA, *,
                    old_dir_fd: int = AT_FDCWD, new_dir_fd: int = AT_FDCWD,
                    link_flags: int = 0, flags: int = 0) -> int:
        """linkat(2): a hard link ``new`` to ``old`` (``link_flags``:
        AT_SYMLINK_FOLLOW, AT_EMPTY_PATH)."""
        po, pn = path_pin(old), path_pin(new)
        return self.prep_sqe(Op.LINKAT, old_dir_fd, po.address, fd32(new_dir_fd, "new_dir_fd"),
                             pn.address, link_flags, flags, 0, 0, 0, 0, user_data, (po, pn))

    def prep_symlinkat(self, target: str | bytes | os.PathLike[Any],
                       link: str | bytes | os.PathLike[Any], user_data: Any = _NO_USER_DATA, *,
                       dir_fd: int = AT_FDCWD, flags: int = 0) -> int:
        """symlinkat(2): a symbolic link ``link`` (relative to ``dir_fd``)
        whose contents are ``target``."""
        pt, pl = path_pin(target), path_pin(link)
        return self.prep_sqe(Op.SYMLINKAT, dir_fd, pt.address, 0, pl.address, 0, flags,
                             0, 0, 0, 0, user_data, (pt, pl))

    def prep_mkdirat(self, path: str | bytes | os.PathLike[Any], mode: int = 0o777,
                     user_data: Any = _NO_USER_DATA, *, dir_fd: int = AT_FDCWD,
                     flags: int = 0) -> int:
        """mkdirat(2)."""
        p = path_pin(path)
        return self.prep_sqe(Op.MKDIRAT, dir_fd, p.address, mode, 0, 0, flags, 0, 0, 0, 0,
                             user_data, p)

    def prep_timeout(self, seconds: float, count: int = 0, user_data: Any = _NO_USER_DATA, *,
                     absolute: bool = False, multishot: bool = False,
                     etime_success: bool = False, flags: int = 0) -> int:
        """Complete after ``seconds`` (res ``-ETIME``) or once ``count`` other
        completions were posted (res 0).  ``multishot``: fire every
        ``seconds``, ``count`` times (0: until cancelled)."""
        ts = timespec(seconds)
        tf = (TIMEOUT_ABS if absolute else 0) | (TIMEOUT_MULTISHOT if multishot else 0) | (
            TIMEOUT_ETIME_SUCCESS if etime_success else 0)
        return self.prep_sqe(Op.TIMEOUT, -1, ts.address, 1, count, tf, flags, 0, 0, 0, 0,
                             user_data, ts, None, multishot)

    def prep_timeout_remove(self, target: int, user_data: Any = _NO_USER_DATA, *,
                            flags: int = 0) -> int:
        """Cancel the timeout with token ``target`` (res 0, -ENOENT, -EALREADY)."""
        return self.prep_sqe(Op.TIMEOUT_REMOVE, -1, target, flags=flags, user_data=user_data)

    def prep_link_timeout(self, seconds: float, user_data: Any = _NO_USER_DATA, *,
                          flags: int = 0) -> int:
        """Bound the previous op (which must carry ``LINK``) by ``seconds``:
        on expiry it is cancelled (-ECANCELED) and this completes -ETIME."""
        ts = timespec(seconds)
        return self.prep_sqe(Op.LINK_TIMEOUT, -1, ts.address, 1, 0, 0, flags, 0, 0, 0, 0,
                             user_data, ts)

    def prep_poll_add(self, fd: int, events: int = select.POLLIN,
                      user_data: Any = _NO_USER_DATA, *, multishot: bool = False,
                      flags: int = 0) -> int:
        """res is the ready event mask (multishot: one completion per event)."""
        return self.prep_sqe(Op.POLL_ADD, fd, 0, POLL_ADD_MULTI if multishot else 0, 0,
                             events, flags, 0, 0, 0, 0, user_data, None, None, multishot)

    def prep_poll_remove(self, target: int, user_data: Any = _NO_USER_DATA, *,
                         flags: int = 0) -> int:
        """Cancel the poll with token ``target`` (res 0 or -ENOENT)."""
        return self.prep_sqe(Op.POLL_REMOVE, -1, target, flags=flags, user_data=user_data)

    def prep_cancel(self, target: int | None = None, user_data: Any = _NO_USER_DATA, *,
                    fd: int | None = None, all: bool = False, any: bool = False,
                    fixed_file: bool = False, flags: int = 0) -> int:
        """Async cancel by token (``target``), by ``fd``, or ``any`` op (the
        kernel treats ``any`` as every op); with ``all`` every match.  res: 0
        for one op cancelled, the count with ``all``/``any``, -ENOENT (none
        found), -EALREADY (too far along)."""
        cf = (ASYNC_CANCEL_ALL if all else 0) | (ASYNC_CANCEL_ANY if any else 0)
        if fd is not None:
            cf |= ASYNC_CANCEL_FD | (ASYNC_CANCEL_FD_FIXED if fixed_file else 0)
        elif target is None and not any:
            raise ValueError("give a target token, fd=..., or any=True")
        return self.prep_sqe(Op.ASYNC_CANCEL, -1 if fd is None else fd, target or 0, 0, 0, cf,
                             flags, user_data=user_data)

    def prep_socket(self, domain: int, type: int, protocol: int = 0,
                    user_data: Any = _NO_USER_DATA, *, file_index: int | None = None,
                    flags: int = 0) -> int:
        """socket(2); res is the new fd (SOCK_CLOEXEC is added), or with
        ``file_index`` a registered-file slot (as for prep_openat)."""
        if file_index is None:
            fi, type = 0, type | socket.SOCK_CLOEXEC
        else:
            fi = file_index if file_index == 0xFFFFFFFF else file_index + 1
        return self.prep_sqe(Op.SOCKET, domain, 0, protocol, type, 0,
                             flags, 0, 0, fi, 0, user_data)

    def prep_accept(self, fd: int, user_data: Any = _NO_USER_DATA, *, multishot: bool = False,
                    sock_flags: int = socket.SOCK_CLOEXEC, flags: int = 0) -> int:
        """accept4(2); res is the connection's fd.  ``multishot``: one
        completion per connection until cancelled or an error."""
        return self.prep_sqe(Op.ACCEPT, fd, 0, 0, 0, sock_flags, flags,
                             ACCEPT_MULTISHOT if multishot else 0, 0, 0, 0, user_data,
                             None, None, multishot)

    def prep_connect(self, fd: int, address: Any, user_data: Any = _NO_USER_DATA, *,
                     family: int | None = None, flags: int = 0) -> int:
        """connect(2) to ``address`` (see :func:`sockaddr`; pinned until completion)."""
        sa = Pin(sockaddr(address, family))
        return self.prep_sqe(Op.CONNECT, fd, sa.address, 0, sa.nbytes, 0, flags, 0, 0, 0, 0,
                             user_data, sa)

    def prep_send(self, fd: int, buf: Any, user_data: Any = _NO_USER_DATA, *,
                  msg_flags: int = 0, flags: int = 0) -> int:
        """send(2) of ``buf`` (pinned until the final completion)."""
        p = Pin(buf)
        return self.prep_sqe(Op.SEND, fd, p.address, p.nbytes, 0, msg_flags, flags, 0, 0, 0, 0,
                             user_data, p)

    def prep_recv(self, fd: int, buf: Any = None, user_data: Any = _NO_USER_DATA, *,
                  msg_flags: int = 0, buffer_group: int | None = None,
                  multishot: bool = False, flags: int = 0) -> int:
        """recv(2) into ``buf``, or (``buffer_group=``) into a buffer picked
        from a provided-buffer ring: the completion's ``buffer_id`` says which.
        ``multishot`` (needs ``buffer_group``): one completion per chunk."""
        if buffer_group is None:
            if buf is None or multishot:
                raise ValueError("recv needs buf, or buffer_group= (required for multishot)")
            p = Pin(buf, True)
            return self.prep_sqe(Op.RECV, fd, p.address, p.nbytes, 0, msg_flags, flags, 0, 0,
                                 0, 0, user_data, p)
        if buf is not None:
            raise ValueError("give either buf or buffer_group, not both")
        return self.prep_sqe(Op.RECV, fd, 0, 0, 0, msg_flags, flags | SQE.BUFFER_SELECT,
                             RECV_MULTISHOT if multishot else 0, buffer_group, 0, 0, user_data,
                             None, None, multishot)

    def _msghdr(self, buffers: Sequence[Any], writable: bool, address: Any) -> tuple[Pin, Any]:
        iov, pins = iovecs(buffers, writable)
        name = Pin(sockaddr(address)) if address is not None else None
        hdr = bytearray(56)
        struct.pack_into("QI4xQQQQi", hdr, 0, name.address if name else 0,
                         name.nbytes if name else 0, iov.address, len(pins), 0, 0, 0)
        h = Pin(hdr, True)
        return h, (h, iov, pins, name)

    def prep_sendmsg(self, fd: int, buffers: Sequence[Any], user_data: Any = _NO_USER_DATA, *,
                     address: Any = None, msg_flags: int = 0, flags: int = 0) -> int:
        """sendmsg(2) of ``buffers`` (to ``address`` for unconnected sockets)."""
        h, keep = self._msghdr(buffers, False, address)
        return self.prep_sqe(Op.SENDMSG, fd, h.address, 1, 0, msg_flags, flags, 0, 0, 0, 0,
                             user_data, keep)

    def prep_recvmsg(self, fd: int, buffers: Sequence[Any], user_data: Any = _NO_USER_DATA, *,
                     msg_flags: int = 0, flags: int = 0) -> int:
        """recvmsg(2) into ``buffers``."""
        h, keep = self._msghdr(buffers, True, None)
        return self.prep_sqe(Op.RECVMSG, fd, h.address, 1, 0, msg_flags, flags, 0, 0, 0, 0,
                             user_data, keep)

    def prep_shutdown(self, fd: int, how: int = socket.SHUT_RDWR,
                      user_data: Any = _NO_USER_DATA, *, flags: int = 0) -> int:
        """shutdown(2) (``how``: SHUT_RD, SHUT_WR or SHUT_RDWR)."""
        return self.prep_sqe(Op.SHUTDOWN, fd, 0, how, flags=flags, user_data=user_data)

    def prep_splice(self, fd_in: int, off_in: int, fd_out: int, off_out: int, nbytes: int,
                    user_data: Any = _NO_USER_DATA, *, splice_flags: int = 0,
                    flags: int = 0) -> int:
        """splice(2); an offset of -1 means "the fd's own position" (pipes)."""
        oi, oo = file_offset(off_in, "off_in"), file_offset(off_out, "off_out")
        return self.prep_sqe(Op.SPLICE, fd_out, oi, nbytes, oo, splice_flags,
                             flags, 0, 0, fd32(fd_in, "fd_in"), 0, user_data)

    def prep_tee(self, fd_in: int, fd_out: int, nbytes: int, user_data: Any = _NO_USER_DATA, *,
                 splice_flags: int = 0, flags: int = 0) -> int:
        """tee(2): duplicate up to ``nbytes`` from pipe ``fd_in`` to pipe ``fd_out``."""
        return self.prep_sqe(Op.TEE, fd_out, 0, nbytes, 0, splice_flags, flags, 0, 0,
                             fd32(fd_in, "fd_in"), 0, user_data)

    def prep_msg_ring(self, ring_fd: int, res: int, target_user_data: int,
                      user_data: Any = _NO_USER_DATA, *, flags: int = 0) -> int:
        """Post a CQE (``res``, ``target_user_data``) into another ring.  The
        target sees it as a *foreign* completion whose user_data is that raw
        int -- never as the completion of one of its own ops, even if the int
        equals one of its tokens (see docs/kernel-ring.md)."""
        res = operator.index(res)
        if not -(1 << 31) <= res < (1 << 31):
            raise OverflowError(f"res {res} out of range for a 32-bit int")
        return self.prep_sqe(Op.MSG_RING, ring_fd, MSG_DATA, res & 0xFFFFFFFF,
                             target_user_data, 0, flags, user_data=user_data)

    def prep_uring_cmd(self, fd: int, cmd_op: int, cmd: bytes = b"",
                       user_data: Any = _NO_USER_DATA, *, keep: Any = None,
                       addr: int = 0, length: int = 0, flags: int = 0) -> int:
        """IORING_OP_URING_CMD: a driver-specific command (``cmd_op`` in the
        SQE's off field, ``cmd`` in its tail: 16 bytes, 80 with sqe128).  Pin
        any memory the command points at via ``keep``."""
        return self.prep_sqe(Op.URING_CMD, fd, addr, length, cmd_op & 0xFFFFFFFF, 0, flags,
                             0, 0, 0, 0, user_data, keep, cmd)

    # -- conveniences --------------------------------------------------------

    def wait(self, wait_nr: int = 1, timeout: float | None = None) -> list[Any]:
        """Submit, wait for ``wait_nr`` completions (or the timeout) and reap."""
        self.submit_and_wait(wait_nr, timeout)
        return self.reap()

    def completions(self, timeout: float | None = None) -> Iterable[Any]:
        """Yield completions until nothing is in flight (or the timeout between
        two completions passes, then raise TimeoutError)."""
        while self.inflight or self.cq_ready:
            if not self.cq_ready and not self.submit_and_wait(1, timeout):
                raise TimeoutError(f"no completion within {timeout} s")
            yield from self.reap()


@functools.cache
def probe() -> KernelProbe:
    """Probe the running kernel once: supported opcodes, features, and which
    setup flags a ring can be created with (each tried for real)."""
    with KernelRing(8) as r:
        ops, feats, base = r.supported_ops(), Feature(r.features), Setup(r.setup_flags)
    ok = Setup(0) | base
    trials = [Setup.SQE128, Setup.CQE32, Setup.COOP_TASKRUN,
              Setup.COOP_TASKRUN | Setup.TASKRUN_FLAG,
              Setup.SINGLE_ISSUER, Setup.SINGLE_ISSUER | Setup.DEFER_TASKRUN,
              Setup.SUBMIT_ALL, Setup.NO_SQARRAY, Setup.SQPOLL]
    for t in trials:
        try:
            KernelRing(8, flags=int(t), no_sqarray=False).close()
            ok |= t
        except (OSError, UnsupportedError):
            pass
    return KernelProbe(opcodes=ops, features=feats, setup_flags=ok)
