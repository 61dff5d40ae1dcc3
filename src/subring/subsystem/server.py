"""Subsystem: a standalone process that serves io_uring-shaped rings.

The kernel is the model: it runs on its own, clients hand it work through a
submission ring and get results back through a completion ring, in shared
memory, with no system call per operation while both sides are busy.  A
:class:`Subsystem` is the same thing written in Python::

    class Store(subring.Subsystem):
        def __init__(self):
            super().__init__()
            self.data = {}

        @subring.op
        def put(self, req):                 # req.data: memoryview of the payload
            self.data[req.arg0] = bytes(req.data)

        @subring.op
        def get(self, req):
            return self.data[req.arg0]      # bytes -> the client's result buffer;
                                            # KeyError -> -ENOENT + its text

    Store().serve("/run/store.sock")

Handlers -- what a handler receives and may return, how exceptions map to
errno -- are described in :mod:`subring.subsystem.handlers`.

Modes (the interrupt plane)
---------------------------
``interrupt``: sleep in epoll as soon as there is no work; clients ring a
doorbell eventfd only when the server announced it sleeps (NEED_WAKEUP).
``poll``: never sleep (lowest latency, one CPU at 100 %).  ``hybrid``
(default): spin ``spin_us`` after the last work, then sleep.  Switch at run
time with :attr:`Subsystem.mode`.  Under load no mode makes a syscall.

Access and faults
-----------------
Only the server's uid, root and ``allow_uids`` may attach (SO_PEERCRED);
refusals carry a reason the client raises as ``AttachRefusedError``;
``allowed_ops`` restricts what a client may call (EACCES).  Each client has its
own queue pair; a client that breaks the protocol (impossible indices, bad
slot/pool references) gets error completions or is disconnected, and cannot
touch any other client's memory.  A client that dies is noticed through its
socket; its queue is dropped, ops its handlers still hold complete into
nothing.  A fork() in a handler does not keep the server's sockets alive in
the child.  Logging goes to ``logging.getLogger("subring.subsystem")``.  See
``docs/subsystems.md``.
"""

from __future__ import annotations

import errno
import logging
import os
import socket
import struct
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

from .. import _core
from .._ratelimit import RateLimitedLog
from . import attach, handlers
from .handlers import PENDING, ClientInfo, OpSpec
from .stats import ClientRow, SubsystemStatistics

__all__ = ["Subsystem"]

log = logging.getLogger("subring.subsystem")

_TOKEN_LISTEN = 0
_TOKEN_WAKE = 1
_FIRST_CLIENT_TOKEN = 16


class _Conn:
    __slots__ = ("attached", "closing", "deadline", "info", "queue", "sock", "token")

    def __init__(self, sock: socket.socket, token: int, info: ClientInfo,
                 deadline: float) -> None:
        self.sock = sock
        self.token = token
        self.info = info
        self.queue: Any = None
        self.attached = False
        self.deadline = deadline      # monotonic time by which it must say hello
        # Refused: our reply is sent and our side shut down for writing; we
        # wait (until `deadline`) for the peer to close before closing, since
        # closing with its hello still unread would make the kernel report
        # ECONNRESET to it instead of our reply.
        self.closing = False


class Subsystem:
    """Base class of a user-space subsystem.  Subclass it, mark operations
    with :func:`op`, and call :meth:`serve`."""

    #: name announced to clients (default: the class name)
    name: str | None = None
    #: limits a client can ask for
    max_entries = 4096
    max_slot_size = 1 << 20
    #: open connections at most (attached or not)
    max_clients = 1024
    #: worker threads of :meth:`defer_to_thread` (created on first use)
    handler_threads = 4

    def __init__(self) -> None:
        self._loop: Any = None
        self._stop = False
        self._wake_fd = -1
        self._conns: dict[int, _Conn] = {}
        self._next_token = _FIRST_CLIENT_TOKEN
        self._mode = "hybrid"
        self._spin_us = 50.0
        self._lock = threading.Lock()
        self._address = ""
        self._serving_pid = 0
        self._started = 0.0
        self._allowed: frozenset[int] = frozenset()
        self._attach_timeout = 5.0
        self._max_pending_per_uid = 16
        self._listener: socket.socket | None = None
        self._listen_paused_until = 0.0
        self._reserve_fd = -1
        self._ratelog = RateLimitedLog(log)
        self._counts = {"attaches": 0, "refused": 0, "dropped": 0}
        self._op_names: list[str] = []
        self._threads: ThreadPoolExecutor | None = None
        self._finished: deque[tuple[Any, Future[Any]]] = deque()
        self._bound_ino = (0, 0)

    # -- the op table ---------------------------------------------------------

    @classmethod
    def op_table(cls) -> list[OpSpec]:
        """Index 0 is the built-in ``nop`` (answered by the C core)."""
        return handlers.op_table(cls)

    def _handler_error(self, op_index: int, exc: BaseException) -> None:
        """Called by the C loop when a handler raised an exception that maps
        to EIO (an unexpected one: OSError, KeyError, ValueError... are
        results, not bugs, and are not logged)."""
        names = self._op_names
        name = names[op_index] if 0 <= op_index < len(names) else f"op{op_index}"
        self._ratelog(logging.ERROR, f"handler:{name}",
                      "handler %s.%s raised %s (the client got EIO)",
                      self.name or type(self).__name__, name, type(exc).__name__)
        log.debug("handler %s traceback", name, exc_info=exc)

    # -- modes ------------------------------------------------------------------

    @property
    def mode(self) -> str:
        """How the serving loop waits for work: ``'hybrid'`` (default),
        ``'interrupt'`` or ``'poll'``; may change while serving."""
        return self._mode

    @mode.setter
    def mode(self, value: str) -> None:
        if value not in ("hybrid", "interrupt", "poll"):
            raise ValueError("mode must be 'hybrid', 'interrupt' or 'poll'")
        self._mode = value
        if self._loop is not None:
            self._loop.mode = value

    @property
    def spin_us(self) -> float:
        """Hybrid mode: microseconds of idle spinning before sleeping."""
        return self._spin_us

    @spin_us.setter
    def spin_us(self, value: float) -> None:
        self._spin_us = float(value)
        if self._loop is not None:
            self._loop.spin_us = value

    # -- handlers that block ---------------------------------------------------

    def defer_to_thread(self, req: Any, fn: Callable[..., Any], *args: Any) -> Any:
        """Run ``fn(*args)`` on one of :attr:`handler_threads` worker threads
        and finish ``req`` with its result (or its exception, mapped like a
        handler's) back on the serving thread.  Returns :data:`PENDING`, so a
        handler that would block writes ``return self.defer_to_thread(req,
        slow, key)`` and the loop keeps serving every client meanwhile.

        ``req.data`` is only valid until the request completes: pass ``fn``
        what it needs (e.g. ``bytes(req.data)``), not the view."""
        if self._loop is None:
            raise RuntimeError("defer_to_thread() is for handlers of a serving subsystem")
        if self._threads is None:
            self._threads = ThreadPoolExecutor(self.handler_threads,
                                               thread_name_prefix="subring-handler")
        fut = self._threads.submit(fn, *args)
        fut.add_done_callback(lambda f: self._thread_done(req, f))
        return PENDING

    def _thread_done(self, req: Any, fut: Future[Any]) -> None:
        # On the worker thread: hand over to the serving thread (which alone
        # touches the rings) and wake it.
        self._finished.append((req, fut))
        fd = self._wake_fd
        if fd >= 0:
            try:
                os.eventfd_write(fd, 1)
            except OSError:
                pass

    def _complete_finished(self) -> None:
        while self._finished:
            req, fut = self._finished.popleft()
            if fut.cancelled():
                continue                   # dropped: completes -ECANCELED
            exc = fut.exception()
            try:
                if exc is not None:
                    req.fail_with(exc)
                else:
                    req.complete(fut.result())
            except Exception:
                log.exception("completing a deferred request failed")

    # -- hooks ------------------------------------------------------------------

    def on_connect(self, client: ClientInfo) -> None:
        """Called when a client attached (override; default does nothing)."""

    def on_disconnect(self, client: ClientInfo) -> None:
        """Called when a client left, died or was dropped."""

    def allowed_ops(self, client: ClientInfo) -> Iterable[str] | None:
        """The op names ``client`` may call (override; default None: all).
        Asked once at attach; any other op completes with ``EACCES`` (the
        built-in ``nop`` is always allowed)."""
        return None

    # -- serving ----------------------------------------------------------------

    @property
    def stopping(self) -> bool:
        """True once :meth:`stop` was called (until the next :meth:`serve`)."""
        return self._stop

    def stop(self) -> None:
        """Ask :meth:`serve` to return (thread-safe, signal-safe)."""
        self._stop = True
        loop, fd = self._loop, self._wake_fd
        if loop is not None:
            loop.stop()
        if fd >= 0:
            try:
                os.eventfd_write(fd, 1)
            except OSError:
                pass

    def serve(self, address: str, *, mode: str | None = None, spin_us: float | None = None,
              socket_mode: int | None = None, allow_uids: Iterable[int] | None = None,
              ready: Callable[[], None] | None = None, attach_timeout: float = 5.0,
              max_pending_per_uid: int = 16) -> None:
        """Serve clients on the Unix socket ``address`` until :meth:`stop`
        (or SIGINT/SIGTERM raise).

        Access: only the server's own user (and root) may attach or query
        statistics, plus the uids in ``allow_uids``; every connection's uid is
        checked with SO_PEERCRED.  ``socket_mode`` is the socket file's mode
        (default 0600, or 0666 when ``allow_uids`` names other users -- the
        uid check then does the refusing, with a reason the client sees).

        Robustness: a connection must send its hello within
        ``attach_timeout`` seconds; at most ``max_pending_per_uid``
        connections per uid may wait for their hello at once, and
        ``max_clients`` connections in total; at the fd limit the server
        refuses new connections (telling them why) and backs off, never
        spinning.  ``ready`` is called once the socket accepts connections.

        An existing socket file at ``address`` is replaced only if it is a
        socket nobody serves; anything else there is an error."""
        if mode is not None:
            self.mode = mode
        if spin_us is not None:
            self.spin_us = spin_us
        if attach_timeout <= 0:
            raise ValueError("attach_timeout must be > 0")
        if max_pending_per_uid < 1:
            raise ValueError("max_pending_per_uid must be >= 1")
        me = os.geteuid()
        extra = frozenset(int(u) for u in (allow_uids or ()))
        self._allowed = frozenset({me, 0}) | extra
        if socket_mode is None:
            socket_mode = 0o666 if extra - {me, 0} else 0o600
        self._attach_timeout = float(attach_timeout)
        self._max_pending_per_uid = int(max_pending_per_uid)
        listener = self._listen(address, socket_mode)
        loop = _core.ServerLoop()
        loop.mode = self._mode
        loop.spin_us = self._spin_us
        loop.set_handlers(handlers.bound_handlers(self))
        self._op_names = [s.name for s in self.op_table()]
        loop.set_error_hook(self._handler_error)
        self._wake_fd = os.eventfd(0, os.EFD_CLOEXEC | os.EFD_NONBLOCK)
        self._loop = loop
        self._stop = False
        self._address = address
        self._serving_pid = os.getpid()
        self._started = time.monotonic()
        self._listener = listener
        self._reserve_fd = os.open(os.devnull, os.O_RDONLY | os.O_CLOEXEC)
        try:
            loop.watch(listener.fileno(), _TOKEN_LISTEN)
            loop.watch(self._wake_fd, _TOKEN_WAKE)
            # Only now: until listen(), a client's connect() is refused (and
            # connect(wait=True) retries) instead of hanging in the backlog of
            # a server that cannot answer yet.
            listener.listen(128)
            if ready is not None:
                ready()
            while not self._stop:
                for ev in loop.run(self._next_timeout()):
                    self._event(ev, listener)
                self._housekeeping(listener)
        finally:
            if os.getpid() == self._serving_pid:
                self._shutdown(listener, address)
            # else: a fork child unwinding out of a handler: the parent still
            # serves; its fds are already neutralized here (see server_queue.c)

    def _shutdown(self, listener: socket.socket, address: str) -> None:
        if self._threads is not None:
            self._threads.shutdown(wait=False, cancel_futures=True)
            self._threads = None
        self._complete_finished()
        self._finished.clear()
        for conn in list(self._conns.values()):
            self._disconnect(conn)
        self._loop = None
        self._listener = None
        fd, self._wake_fd = self._wake_fd, -1     # no worker thread writes it any more
        os.close(fd)
        if self._reserve_fd >= 0:
            os.close(self._reserve_fd)
            self._reserve_fd = -1
        try:
            st = os.lstat(address)
            same = (st.st_dev, st.st_ino) == self._bound_ino
        except OSError:
            same = False
        listener.close()
        if same:          # ours, not a socket a newer server bound meanwhile
            try:
                os.unlink(address)
            except OSError:
                pass

    def _next_timeout(self) -> float:
        """Until the next attach deadline or listener resume (at most 1 s)."""
        now = time.monotonic()
        t = now + 1.0
        for conn in self._conns.values():
            if not conn.attached and conn.deadline < t:
                t = conn.deadline
        if self._listen_paused_until and self._listen_paused_until < t:
            t = self._listen_paused_until
        return max(0.0, t - now)

    def _housekeeping(self, listener: socket.socket) -> None:
        now = time.monotonic()
        for conn in [c for c in self._conns.values() if not c.attached and c.deadline <= now]:
            if conn.closing:
                self._disconnect(conn)
            else:
                self._refuse_conn(conn, "timeout",
                                  f"no hello within {self._attach_timeout:g} s")
        if self._listen_paused_until and now >= self._listen_paused_until:
            self._listen_paused_until = 0.0
            self._loop.watch(listener.fileno(), _TOKEN_LISTEN)
            self._accept(listener)

    def _event(self, ev: Any, listener: socket.socket) -> None:
        # (A method, so no local variable keeps a dropped client's queue --
        # and with it its shared memory -- alive until the next event.)
        if isinstance(ev, _core.ServerQueue):
            self._drop_queue(ev, "broke the ring protocol")
        elif ev == _TOKEN_LISTEN:
            if not self._listen_paused_until:
                self._accept(listener)
        elif ev == _TOKEN_WAKE:
            try:
                os.eventfd_read(self._wake_fd)
            except BlockingIOError:
                pass
            self._complete_finished()
        else:
            conn = self._conns.get(ev)
            if conn is not None:
                self._control(conn)

    def _listen(self, address: str, mode: int) -> socket.socket:
        s = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET | socket.SOCK_CLOEXEC)
        try:
            attach.replace_stale_socket(address)
            old = os.umask(0o777 & ~mode)
            try:
                s.bind(address)
            finally:
                os.umask(old)
            os.chmod(address, mode)
            st = os.lstat(address)
            self._bound_ino = (st.st_dev, st.st_ino)   # to unlink only our own file
            s.setblocking(False)      # listen() only once the loop runs (serve)
        except BaseException:
            s.close()
            raise
        return s

    def _accept(self, listener: socket.socket) -> None:
        while True:
            try:
                sock, _ = listener.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError as e:
                if e.errno in (errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM):
                    self._out_of_fds(listener, e)
                else:
                    self._ratelog(logging.WARNING, "accept", "accept failed: %s", e)
                return
            pid, uid, gid = struct.unpack("3i", sock.getsockopt(
                socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i")))
            sock.setblocking(False)
            token = self._next_token
            self._next_token += 1
            conn = _Conn(sock, token, ClientInfo(pid, uid, gid, token),
                         time.monotonic() + self._attach_timeout)
            refusal = self._admission(uid)
            self._conns[token] = conn
            self._loop.watch(sock.fileno(), token)
            if refusal is not None:
                self._refuse_conn(conn, *refusal)

    def _admission(self, uid: int) -> tuple[str, str] | None:
        """(code, reason) if a new connection from ``uid`` is refused."""
        if uid not in self._allowed:
            return "uid", f"uid {uid} is not allowed to attach (allow_uids)"
        live = [c for c in self._conns.values() if not c.closing]
        if len(live) >= self.max_clients:
            return "busy", f"too many connections (max_clients={self.max_clients})"
        waiting = sum(1 for c in live if not c.attached and c.info.uid == uid)
        if waiting >= self._max_pending_per_uid:
            return "busy", (f"too many connections of uid {uid} waiting to attach "
                            f"(max_pending_per_uid={self._max_pending_per_uid})")
        return None

    def _out_of_fds(self, listener: socket.socket, e: OSError) -> None:
        """At the fd limit: free the reserve fd, accept one connection to tell
        it why, and stop watching the listener for a while (no spinning on a
        listener that stays readable)."""
        self._ratelog(logging.WARNING, "fd-limit",
                      "cannot accept connections on %s: %s; refusing new clients "
                      "until descriptors are freed", self._address, e.strerror)
        if self._reserve_fd >= 0:
            os.close(self._reserve_fd)
            self._reserve_fd = -1
            try:
                sock, _ = listener.accept()
            except OSError:
                pass
            else:
                self._refuse(sock, "fd-limit", "the subsystem is out of file descriptors",
                             quiet=True)
                sock.close()
            try:
                self._reserve_fd = os.open(os.devnull, os.O_RDONLY | os.O_CLOEXEC)
            except OSError:
                self._reserve_fd = -1
        self._loop.unwatch(listener.fileno())
        self._listen_paused_until = time.monotonic() + 0.1

    def _refuse(self, sock: socket.socket, code: str, reason: str, *, who: str = "",
                quiet: bool = False) -> None:
        """Send the refusal and shut our side down for writing (the caller
        closes the socket)."""
        self._counts["refused"] += 1
        if not quiet:
            self._ratelog(logging.WARNING, f"refuse:{code}", "refused %s: %s",
                          who or "a connection", reason)
        try:
            sock.setblocking(False)
            attach.send(sock, attach.refusal(reason, code))
            sock.shutdown(socket.SHUT_WR)
        except OSError:
            pass

    def _refuse_conn(self, conn: _Conn, code: str, reason: str) -> None:
        self._refuse(conn.sock, code, reason, who=f"pid {conn.info.pid} uid {conn.info.uid}")
        lingering = sum(1 for c in self._conns.values() if c.closing)
        if lingering >= 64 or self._reserve_fd < 0:
            self._disconnect(conn)         # no room to wait for the peer: close now
            return
        conn.closing = True
        conn.deadline = time.monotonic() + 1.0

    def _control(self, conn: _Conn) -> None:
        """The client's socket is readable: a control message, or EOF."""
        if conn.closing:                      # refused: wait for its EOF
            try:
                data = conn.sock.recv(attach.MAX_MESSAGE)
            except BlockingIOError:
                return
            except OSError:
                data = b""
            if not data:
                self._disconnect(conn)
            return
        try:
            msg, fds = attach.recv(conn.sock)
        except BlockingIOError:
            return
        except (OSError, ValueError) as e:
            log.info("dropping client %s: %s", conn.info, e)
            self._disconnect(conn)
            return
        if msg is None:
            self._disconnect(conn)
            return
        try:
            if not conn.attached:
                if attach.is_stat_request(msg):
                    self._answer_stat(conn)
                else:
                    self._attach(conn, msg)
            elif msg.get("cmd") == "pool":
                self._attach_pool(conn, msg, fds)
            else:
                attach.send(conn.sock, attach.refusal("unknown command"))
        except Exception as e:  # noqa: BLE001 - a client's message must never stop the server
            if not conn.attached:
                self._counts["refused"] += 1
                log.info("refused attach from %s: %s: %s", conn.info, type(e).__name__, e)
            try:
                attach.send(conn.sock, attach.refusal(f"{type(e).__name__}: {e}"[:512],
                                                      None if conn.attached else "protocol"))
            except OSError:
                self._disconnect(conn)
        finally:
            for fd in fds:
                os.close(fd)

    def _answer_stat(self, conn: _Conn) -> None:
        try:
            attach.send(conn.sock, {"ok": True, "stat": self.statistics().to_dict()})
        except (OSError, ValueError) as e:
            log.info("statistics reply to %s failed: %s", conn.info, e)
        self._disconnect(conn)

    def _attach(self, conn: _Conn, hello: dict[str, Any]) -> None:
        entries, slot_size = attach.parse_hello(hello, self.max_entries, self.max_slot_size)
        q = _core.ServerQueue(entries, slot_size, conn.info.pid)
        q.info = conn.info
        table = self.op_table()
        allowed = self.allowed_ops(conn.info)
        if allowed is not None:
            names = set(allowed)
            bitmap = bytearray((handlers.MAX_OPS + 1) // 8)   # one bit per op index
            for spec in table:
                if spec.name in names:
                    bitmap[spec.index >> 3] |= 1 << (spec.index & 7)
            q.restrict(bytes(bitmap))
        reply = attach.attach_reply(self.name or type(self).__name__,
                                    [[s.name, s.batch, s.doc] for s in table], entries, slot_size)
        attach.send(conn.sock, reply, [q.region_fd, q.doorbell_fd, q.cq_efd])
        q.close_region_fd()
        conn.queue = q
        conn.attached = True
        self._counts["attaches"] += 1
        self._loop.add(q)
        try:
            self.on_connect(conn.info)
        except Exception:
            log.exception("on_connect failed")

    def _attach_pool(self, conn: _Conn, msg: dict[str, Any], fds: list[int]) -> None:
        if len(fds) != 1:
            raise ValueError("pool registration carries exactly one memfd")
        conn.queue.attach_pool(fds[0], attach.get_int(msg, "count", 0, 1, 1 << 20),
                               attach.get_int(msg, "size", 0, 1, 1 << 40))
        attach.send(conn.sock, {"ok": True})

    def _drop_queue(self, q: Any, why: str) -> None:
        self._counts["dropped"] += 1
        for conn in list(self._conns.values()):
            if conn.queue is q:
                log.warning("dropping client %s: %s", conn.info, why)
                self._disconnect(conn)
                return
        try:
            self._loop.remove(q)
        except KeyError:
            pass
        q.detach()

    def _disconnect(self, conn: _Conn) -> None:
        self._conns.pop(conn.token, None)
        try:
            self._loop.unwatch(conn.sock.fileno())
        except (OSError, ValueError):
            pass
        if conn.queue is not None:
            try:
                self._loop.remove(conn.queue)
            except KeyError:
                pass
            conn.queue.detach()
        conn.sock.close()
        if conn.attached:
            try:
                self.on_disconnect(conn.info)
            except Exception:
                log.exception("on_disconnect failed")

    # -- introspection -----------------------------------------------------------

    def statistics(self) -> SubsystemStatistics:
        """A frozen snapshot: server-wide counters and one row per attached
        client (what :func:`query_statistics` returns from another process)."""
        loop = self._loop
        raw = loop.stats() if loop is not None else {}
        rows = []
        for conn in list(self._conns.values()):
            if not conn.attached or conn.queue is None:
                continue
            rows.append(ClientRow.from_queue(conn.info, conn.queue.stats()))
        return SubsystemStatistics(
            backend="subsystem", name=self.name or type(self).__name__,
            address=self._address, pid=os.getpid(), mode=self._mode,
            spin_us=self._spin_us,
            uptime=(time.monotonic() - self._started) if self._started else 0.0,
            connections=len(self._conns), rounds=raw.get("rounds", 0),
            sleeps=raw.get("sleeps", 0), ops=raw.get("ops", 0),
            attaches=self._counts["attaches"], refused=self._counts["refused"],
            dropped=self._counts["dropped"], clients=tuple(rows))
