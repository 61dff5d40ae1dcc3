"""Mounting a file system: ``mount(ops, mountpoint) -> FuseMount``.

The sequence (see docs/fuse.md): open ``/dev/fuse``, ``mount(2)`` with its fd,
start a watchdog process that unmounts if this process dies, answer FUSE_INIT
(offering io_uring when the kernel does and the caller allows it), then start
the serving threads -- one per queue (pinned to the queue's CPU) or one for
all, plus a ``/dev/fuse`` reader for FORGET / INTERRUPT -- which run the C
loops of ``subring._core.FuseConn`` with the GIL released while they wait.
"""

from __future__ import annotations

import asyncio
import atexit
import errno
import logging
import os
import stat
import threading
import time
import weakref
from dataclasses import dataclass
from typing import Any

from .. import _core
from . import fusermount
from .kernelparam import possible_cpus, uring_enabled

log = logging.getLogger("subring.fuse")

TRANSPORTS = ("auto", "uring", "classic")
THREADS = ("auto", "per-queue", "single")
#: What threads='auto' means per transport (measured on a 2-vCPU VM with
#: Python handlers, see docs/fuse.md): io_uring -- a pinned thread per queue
#: serves each caller on its own CPU; classic -- one reader, because several
#: threads blocked in read(/dev/fuse) wake each other across CPUs.
DEFAULT_THREADS = {"uring": "per-queue", "classic": "single"}
#: mount()'s default poll_us: how long an io_uring serving thread polls for
#: the next request before it sleeps (measured, docs/fuse.md "Polling keeps
#: the caller on its CPU"; the C core's FUSE_POLL_US is the same value).
DEFAULT_POLL_US = 50.0

MS_RDONLY, MS_NOSUID, MS_NODEV = 1, 2, 4
MNT_FORCE, MNT_DETACH = 1, 2


class FuseError(OSError):
    """Base of the errors mount() raises."""


class FuseUnavailableError(FuseError):
    """FUSE cannot be mounted here (no /dev/fuse, not root and no fusermount3)."""


class FuseTransportError(FuseError):
    """The requested transport is not available on this kernel/mount."""


class FuseOptionError(ValueError):
    """mount() refused an option's value; raised before anything is mounted."""


@dataclass(frozen=True)
class FuseStatistics:
    """Counters of one mount (a snapshot)."""

    backend: str            # 'fuse-uring' or 'fuse-classic'
    transport: str          # 'uring' or 'classic'
    threads: str            # 'per-queue' or 'single'
    queues: int             # io_uring queues (0 on classic)
    queue_depth: int        # entries per queue (0 on classic)
    requests: int           # requests answered or consumed (all paths)
    ring_requests: int      # ... of which arrived through io_uring entries
    dev_requests: int       # ... of which arrived by read() on /dev/fuse
    error_replies: int      # replies carrying an errno (ENOSYS included)
    handler_exceptions: int  # handlers that raised something other than OSError (-> EIO)
    async_requests: int     # requests answered by an ``async def`` handler
    forgets: int            # FORGET / BATCH_FORGET items
    interrupts: int         # INTERRUPT requests seen
    batches: int            # io_uring_enter calls of the ring loops (COMMIT_AND_FETCH batches)
    gil_spins: int          # a serving thread found another one holding the GIL and spun
    gil_spin_timeouts: int  # ... of which spun the whole ``gil_spin_us`` and then blocked
    poll_hits: int          # io_uring loops: a CQE (a request, an async answer) came while polling
    poll_timeouts: int      # ... polls that lasted the whole ``poll_us`` and then slept


def request_context() -> tuple[int, int, int]:
    """(uid, gid, pid) of the process that made the request being handled
    (valid inside a synchronous handler, on its thread)."""
    uid, gid, pid = _core.fuse_context()
    return int(uid), int(gid), int(pid)


_live: weakref.WeakSet[FuseMount] = weakref.WeakSet()


@atexit.register
def _unmount_all() -> None:
    for m in list(_live):
        try:
            m.unmount()
        except Exception:  # pragma: no cover - best effort at exit
            log.exception("unmounting %s at exit", m.mountpoint)


class FuseMount:
    """A mounted file system being served.  ``with mount(...) as m:`` unmounts
    on exit; :meth:`wait` serves until the mount goes away."""

    def __init__(self, ops: Any, mountpoint: str, *, transport: str, threads: str,
                 queue_depth: int, conn: Any, fd: int, watchdog: tuple[int, int],
                 info: dict[str, Any], helper: Any = None) -> None:
        self.ops = ops
        self.mountpoint = mountpoint
        self._transport = transport
        self._threads_mode = threads
        self._depth = queue_depth if transport == "uring" else 0
        self._conn = conn
        self._fd = fd
        self._watchdog = watchdog
        self._helper = helper          # fusermount3's socket (non-root mounts), or None
        self.info = info
        self._threads: list[threading.Thread] = []
        self._errors: list[BaseException] = []
        self._closed = False
        self._lock = threading.Lock()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._loop_thread: threading.Thread | None = None
        self._inflight: dict[int, Any] = {}     # unique -> concurrent Future of an async handler
        self._queues = possible_cpus() if transport == "uring" else []

    # ---- public ---------------------------------------------------------
    @property
    def transport(self) -> str:
        """'uring' (FUSE over io_uring) or 'classic' (/dev/fuse read/write)."""
        return self._transport

    @property
    def threads(self) -> str:
        """'per-queue' or 'single' (what serves the requests)."""
        return self._threads_mode

    @property
    def closed(self) -> bool:
        """True once :meth:`unmount` ran."""
        return self._closed

    def statistics(self) -> FuseStatistics:
        """A snapshot of the mount's counters."""
        s = self._conn.statistics()
        return FuseStatistics(
            backend="fuse-uring" if self._transport == "uring" else "fuse-classic",
            transport=self._transport, threads=self._threads_mode,
            queues=len(self._queues), queue_depth=self._depth, **s)

    def invalidate_inode(self, ino: int, offset: int = 0, length: int = 0) -> None:
        """Make the kernel drop what it caches of ``ino``: its attributes and
        its data in ``[offset, offset + length)`` (``length`` 0: to the end;
        ``offset`` < 0: attributes only).  For file systems whose contents
        change behind the kernel's back while caching is on.  Sent on
        /dev/fuse on either transport.  Do not call it from a handler of a
        request on the same inode (the kernel may wait for that request).
        Nothing cached (ENOENT from the kernel) is not an error."""
        try:
            self._notify().notify_inval_inode(ino, offset, length)
        except FileNotFoundError:
            pass

    def invalidate_entry(self, parent: int, name: bytes) -> None:
        """Make the kernel forget its cached lookup of ``name`` in directory
        ``parent`` (the next access looks it up again)."""
        try:
            self._notify().notify_inval_entry(parent, name)
        except FileNotFoundError:
            pass

    def _notify(self) -> Any:
        if self._closed:
            raise RuntimeError(f"{self.mountpoint} is unmounted")
        return self._conn

    def wait(self, timeout: float | None = None) -> bool:
        """Serve until the file system is unmounted (by :meth:`unmount`, by
        ``umount``, or the connection aborts).  Returns True when serving has
        ended (the rest -- watchdog, fd, event loop -- is then released as by
        :meth:`unmount`), False on timeout.  Signals are handled while
        waiting.  A serving thread's fatal error is raised here."""
        deadline = None if timeout is None else time.monotonic() + timeout
        for t in list(self._threads):
            while t.is_alive():
                left = 0.25 if deadline is None else min(0.25, deadline - time.monotonic())
                if left <= 0:
                    return False
                t.join(left)
        self.unmount()
        if self._errors:
            raise self._errors[0]
        return True

    def unmount(self, timeout: float = 10.0) -> None:
        """Unmount and stop serving (idempotent).  A mount still busy after a
        second of retries is detached lazily (it goes away when its last
        open file is closed)."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
        _live.discard(self)
        detached = self._umount()
        # Wake every ring loop that is still parked (a lazy unmount leaves
        # the connection up while files are open).
        self._conn.stop()
        deadline = time.monotonic() + timeout
        me = threading.current_thread()
        for t in self._threads:
            if t is not me:              # unmount() from a handler: do not join ourselves
                t.join(max(0.0, deadline - time.monotonic()))
        alive = [t.name for t in self._threads if t.is_alive()]
        if self._loop is not None:
            # Let libraries that tie resources to the loop's life (subring.aio's
            # default ring, async generators) close them, then stop it.
            try:
                asyncio.run_coroutine_threadsafe(self._loop.shutdown_asyncgens(),
                                                 self._loop).result(5.0)
            except Exception:
                log.exception("%s: shutting down the handlers' event loop", self.mountpoint)
            self._loop.call_soon_threadsafe(self._loop.stop)
            if self._loop_thread is not None:
                self._loop_thread.join(max(0.1, deadline - time.monotonic()))
            if not self._loop_thread or not self._loop_thread.is_alive():
                self._loop.close()
        self._stop_watchdog()
        if alive:
            log.warning("%s: serving threads %s did not stop (%s); the /dev/fuse fd is kept",
                        self.mountpoint, alive, "detached mount still in use" if detached
                        else "timeout")
        else:
            self._conn.close()          # closes the /dev/fuse fd it owns
        try:
            self.ops.destroy()
        except Exception:
            log.exception("%s: destroy() raised", self.mountpoint)

    def __enter__(self) -> FuseMount:
        return self

    def __exit__(self, *exc: object) -> None:
        self.unmount()

    def __repr__(self) -> str:
        state = "unmounted" if self._closed else "mounted"
        return f"<FuseMount {self.mountpoint!r} {self._transport} {state}>"

    # ---- internals --------------------------------------------------------
    def _umount(self) -> bool:
        """umount2(target, 0), retrying EBUSY for a second; then MNT_DETACH.
        Returns True when only a lazy detach worked."""
        def umount(flags: int) -> None:
            if self._helper is not None:
                fusermount.unmount(self.mountpoint, lazy=bool(flags & MNT_DETACH))
            else:
                _core.fuse_umount(self.mountpoint, flags)

        deadline = time.monotonic() + 1.0
        while True:
            try:
                umount(0)
                return False
            except OSError as e:
                if e.errno in (errno.EINVAL, errno.ENOENT):
                    return False          # already gone (umount from outside)
                if e.errno != errno.EBUSY or time.monotonic() >= deadline:
                    break
                time.sleep(0.02)
        try:
            umount(MNT_DETACH)
        except OSError as e:
            if e.errno not in (errno.EINVAL, errno.ENOENT):
                raise
        return True

    def _stop_watchdog(self) -> None:
        if self._helper is not None:
            self._helper.close()        # fusermount3 (auto_unmount) sees EOF and exits
            self._helper = None
        pid, wfd = self._watchdog
        if wfd >= 0:
            try:
                os.write(wfd, b"u")     # "unmounted cleanly": it exits without acting
            except OSError:
                pass
            os.close(wfd)
            self._watchdog = (pid, -1)
        if pid > 0:
            deadline = time.monotonic() + 5.0
            while time.monotonic() < deadline:
                done, _ = os.waitpid(pid, os.WNOHANG)
                if done:
                    break
                time.sleep(0.005)
            else:  # pragma: no cover - the watchdog only reads a pipe
                os.kill(pid, 9)
                os.waitpid(pid, 0)

    def _run(self, fn: Any, *args: Any) -> None:
        try:
            fn(*args)
        except Exception as e:  # a fatal ring error: never leave callers hanging
            self._errors.append(e)
            log.error("%s: serving thread %s failed: %s; unmounting",
                      self.mountpoint, threading.current_thread().name, e, exc_info=True)
            threading.Thread(target=self.unmount, name="fuse-abort", daemon=True).start()

    def _start(self) -> None:
        conn = self._conn
        name = os.path.basename(self.mountpoint.rstrip("/")) or "root"
        specs: list[tuple[str, Any, tuple[Any, ...]]] = []
        if self._transport == "uring":
            if self._threads_mode == "per-queue":
                for q in self._queues:
                    specs.append((f"fuse-{name}-q{q}", conn.serve_ring, ((q,), self._depth, q)))
            else:
                specs.append((f"fuse-{name}-ring", conn.serve_ring,
                              (tuple(self._queues), self._depth, -1)))
            specs.append((f"fuse-{name}-dev", conn.serve_dev, ()))
        else:
            n = 1 if self._threads_mode == "single" else len(possible_cpus())
            for i in range(n):
                specs.append((f"fuse-{name}-dev{i}", conn.serve_dev, ()))
        for tname, fn, args in specs:
            t = threading.Thread(target=self._run, args=(fn, *args), name=tname, daemon=True)
            self._threads.append(t)
            t.start()

    def _interrupt(self, unique: int) -> None:
        """FUSE_INTERRUPT: the caller was signalled; cancel its async handler
        (the request is then answered EINTR)."""
        fut = self._inflight.get(unique)
        if fut is not None:
            fut.cancel()

    def _run_async(self, coro: Any, pending: Any) -> None:
        """Called by the C dispatcher when a handler returned a coroutine."""
        if self._loop is None:
            with self._lock:
                if self._loop is None:
                    loop = asyncio.new_event_loop()
                    t = threading.Thread(target=loop.run_forever, daemon=True,
                                         name=f"fuse-{os.path.basename(self.mountpoint)}-asyncio")
                    t.start()
                    self._loop_thread, self._loop = t, loop
        fut = asyncio.run_coroutine_threadsafe(coro, self._loop)
        unique = pending.unique
        self._inflight[unique] = fut

        def done(f: Any) -> None:
            self._inflight.pop(unique, None)
            if f.cancelled():
                pending.fail(OSError(errno.EINTR, "interrupted"))
                return
            exc = f.exception()
            if exc is None:
                pending.reply(f.result())
            else:
                pending.fail(exc)
        fut.add_done_callback(done)


def _log_handler_error(opname: str, exc: BaseException) -> None:
    log.error("FUSE %s handler raised %s: %s (answered EIO)", opname, type(exc).__name__, exc,
              exc_info=(type(exc), exc, exc.__traceback__))


def _io_uring_problem() -> str | None:
    """Why this process cannot make the SQE128 ring FUSE over io_uring
    needs (io_uring disabled by sysctl, seccomp, an old kernel), or None.
    Probed before FUSE_INIT: once io_uring is negotiated there is no way
    back to /dev/fuse for the connection."""
    from ..kernel import KernelRing

    try:
        KernelRing(4, sqe128=True).close()
    except Exception as e:  # noqa: BLE001 - any failure means "not usable"; reported
        return f"cannot create an io_uring with SQE128: {e}"
    return None


def _check_mountpoint(mountpoint: str) -> str:
    path = os.path.abspath(os.fspath(mountpoint))
    st = os.stat(path)
    if not stat.S_ISDIR(st.st_mode):
        raise NotADirectoryError(errno.ENOTDIR, "mount point is not a directory", path)
    return path


def _mount_fd(path: str, fsname: str, subtype: str, flags: int,
              opts: str) -> tuple[int, Any]:
    """Open /dev/fuse and mount it on `path`: as root with mount(2) directly,
    otherwise through fusermount3.  Returns (fd, fusermount3 socket or None)."""
    if not os.path.exists("/dev/fuse"):
        raise FuseUnavailableError(errno.ENODEV,
                                   "/dev/fuse is absent (no FUSE in this kernel/container)")
    if os.geteuid() != 0:
        if fusermount.available() is None:
            raise FuseUnavailableError(errno.EPERM, "mounting FUSE needs root, or fusermount3 "
                                       "(Debian: apt install fuse3), neither is here")
        options = [f"fsname={fsname}", f"subtype={subtype}", "nosuid", "nodev"]
        options += [o for o in opts.split(",") if o]
        if flags & MS_RDONLY:
            options.append("ro")
        try:
            return fusermount.mount(path, options)
        except OSError as e:
            raise FuseUnavailableError(e.errno or errno.EPERM, e.strerror or str(e), path) from e
    fd = os.open("/dev/fuse", os.O_RDWR | os.O_CLOEXEC)
    try:
        st = os.stat(path)
        data = (f"fd={fd},rootmode={stat.S_IFDIR | 0o755:o},user_id={os.getuid()},"
                f"group_id={os.getgid()}{opts}")
        _core.fuse_mount(fsname, path, f"fuse.{subtype}", flags | MS_NOSUID | MS_NODEV, data)
        del st
    except BaseException:
        os.close(fd)
        raise
    return fd, None


def mount(ops: Any, mountpoint: str, *, transport: str = "auto", threads: str = "auto",
          queue_depth: int = 8, direct_io: bool = False, attr_timeout: float = 1.0,
          entry_timeout: float = 1.0, max_write: int = 131072, fsname: str = "subring",
          subtype: str | None = None, allow_other: bool = False, read_only: bool = False,
          default_permissions: bool = False, gil_spin_us: float = 20.0,
          poll_us: float = DEFAULT_POLL_US) -> FuseMount:
    """Mount ``ops`` (an :class:`~subring.fuse.Operations`) on the directory
    ``mountpoint`` and start serving it in background threads.

    ``transport``: 'uring' (FUSE over io_uring: the kernel must offer it, i.e.
    ``/sys/module/fuse/parameters/enable_uring`` was Y at mount time --
    otherwise :class:`FuseTransportError`), 'classic' (``/dev/fuse``
    read/write), or 'auto' (io_uring when offered, else classic; the choice is
    logged once and is :attr:`FuseMount.transport`).  ``threads``:
    'per-queue' (io_uring: one thread per CPU queue, pinned to it; classic:
    one reader thread per CPU), 'single' (one thread), 'auto' (the measured
    default: per-queue on io_uring, single on classic).  ``queue_depth``:
    io_uring entries per queue (each pins a ``max_write`` + 4 KiB buffer).
    ``direct_io``: bypass the page cache (every read/write reaches the
    handler).  Timeouts are how long the kernel
    may cache attributes and names, in seconds (0: ask every time).
    ``gil_spin_us``: a serving thread that finds another serving thread
    holding the GIL spins for it, up to this long after that thread took
    it, before blocking in CPython's wait (0: never spin;
    docs/fuse.md, "The GIL between serving threads").  ``poll_us``
    (io_uring transport): after answering, a serving thread polls its ring
    for the next request this long, yielding its CPU to anything runnable,
    before it sleeps -- which keeps an unpinned caller from bouncing between
    CPUs on every request (0: sleep at once; docs/fuse.md, "Polling keeps
    the caller on its CPU")."""
    if transport not in TRANSPORTS:
        raise FuseOptionError(f"transport must be one of {TRANSPORTS}, not {transport!r}")
    if threads not in THREADS:
        raise FuseOptionError(f"threads must be one of {THREADS}, not {threads!r}")
    if not 1 <= queue_depth <= 1024:
        raise FuseOptionError(f"queue_depth must be in 1..1024, not {queue_depth}")
    if not 4096 <= max_write <= 1 << 20 or max_write % 4096:
        raise FuseOptionError(
            f"max_write must be a multiple of 4096 in 4 KiB..1 MiB, not {max_write}")
    if attr_timeout < 0 or entry_timeout < 0:
        raise FuseOptionError("timeouts must be >= 0")
    if not 0 <= gil_spin_us <= 1000:
        raise FuseOptionError(f"gil_spin_us must be in [0, 1000], not {gil_spin_us}")
    if not 0 <= poll_us <= 10000:
        raise FuseOptionError(f"poll_us must be in [0, 10000], not {poll_us}")
    path = _check_mountpoint(mountpoint)
    subtype = subtype or type(ops).__name__.lower()
    opts = ""
    if allow_other:
        opts += ",allow_other"
    if default_permissions:
        opts += ",default_permissions"
    fd, helper = _mount_fd(path, fsname, subtype, MS_RDONLY if read_only else 0, opts)
    watchdog = (-1, -1)
    conn = None
    try:
        # Forked before any serving thread and before the ring exists; it
        # closes every other fd (so it never keeps the connection alive) and
        # lazily unmounts `path` if this process dies without unmounting.
        # (fusermount3's auto_unmount does the same for non-root mounts.)
        if helper is None:
            watchdog = _core.fuse_watchdog(path)
        conn = _core.FuseConn(fd, ops, max_write=max_write, direct_io=direct_io,
                              attr_timeout=attr_timeout, entry_timeout=entry_timeout,
                              on_error=_log_handler_error, gil_spin_us=gil_spin_us,
                              poll_us=poll_us)
        ring_problem = _io_uring_problem() if transport != "classic" else None
        info = conn.init(transport != "classic" and ring_problem is None, 10.0)
        active = "uring" if info["uring"] else "classic"
        if transport == "uring" and active != "uring":
            why = (ring_problem if ring_problem else
                   "enable_uring is N" if uring_enabled() is False else
                   "the kernel has no FUSE over io_uring" if uring_enabled() is None else
                   "the kernel did not offer it")
            raise FuseTransportError(errno.EOPNOTSUPP,
                                     f"FUSE over io_uring is not available ({why}); "
                                     "set /sys/module/fuse/parameters/enable_uring to Y "
                                     "before mounting, or use transport='classic'")
    except BaseException:
        m = FuseMount(ops, path, transport="classic", threads=threads, queue_depth=queue_depth,
                      conn=conn or _NullConn(fd), fd=fd, watchdog=watchdog, info={},
                      helper=helper)
        m._threads = []
        try:
            m.unmount()
        except Exception:
            log.exception("cleaning up the failed mount of %s", path)
        raise
    if threads == "auto":
        threads = DEFAULT_THREADS[active]
    m = FuseMount(ops, path, transport=active, threads=threads, queue_depth=queue_depth,
                  conn=conn, fd=fd, watchdog=watchdog, info=info, helper=helper)
    conn.set_async_runner(m._run_async, m._interrupt)
    if active == "uring":
        log.info("%s: FUSE over io_uring (%d queues x %d entries, %s threads)", path,
                 len(possible_cpus()), queue_depth, threads)
    else:
        why = ("requested" if transport == "classic" else
               ring_problem if ring_problem else
               "enable_uring is N" if uring_enabled() is False else "not offered by the kernel")
        log.info("%s: classic /dev/fuse transport (%s)", path, why)
    try:
        ops.init()
    except Exception:
        log.exception("%s: init() raised", path)
    _live.add(m)
    m._start()
    return m


class _NullConn:
    """Stands in for a FuseConn that was never made (it would own the fd)."""

    def __init__(self, fd: int) -> None:
        self.fd = fd

    def stop(self) -> None:
        """Nothing runs."""

    def close(self) -> None:
        """Close the fd."""
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1


__all__ = ["mount", "FuseMount", "FuseStatistics", "FuseError", "FuseUnavailableError",
           "FuseTransportError", "FuseOptionError", "request_context", "DEFAULT_THREADS",
           "DEFAULT_POLL_US"]
