"""Helpers for the user-space subsystem tests: real server processes, a raw
(protocol-level) client, CPU accounting, and small child-process clients.

* :func:`start_server` -- context manager: runs ``python -m subring.cli serve
  module:Class --socket PATH`` in a child process, waits until it is
  connectable, and always stops it (SIGTERM, then SIGKILL, both with
  timeouts), reaps it and removes its socket file.
* :func:`server_factory` -- fixture wrapping :func:`start_server` for a test
  (sockets in ``tmp_path``; every server started is cleaned up at teardown).
* :class:`RawClient` -- performs the attach handshake with ``subring.subsystem.attach``
  itself, receives the three fds, mmaps the region and exposes its indices,
  SQEs, CQEs and slots (layout from ``src/subring/_core/abi.h``) so a test can
  write arbitrary bytes and ring the doorbell.
* ``python -m subsys_helpers flood|hold ...`` -- clients run as child
  processes (for fairness and client-death tests).

Nothing here is a mock: every test talks to a real server process.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import mmap
import os
import select
import signal
import socket
import struct
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import subring
from subring.subsystem import attach

TESTS_DIR = Path(__file__).resolve().parent

# ---------------------------------------------------------------------------
# server processes
# ---------------------------------------------------------------------------


def _child_env() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(
        [str(TESTS_DIR)] + ([env["PYTHONPATH"]] if env.get("PYTHONPATH") else []))
    env.setdefault("PYTHONUNBUFFERED", "1")
    return env


def proc_cpu_seconds(pid: int) -> float:
    """utime + stime of process ``pid`` (all its threads), from /proc."""
    with open(f"/proc/{pid}/stat") as f:
        data = f.read()
    fields = data[data.rindex(")") + 2:].split()
    # fields[0] is field 3 (state); utime, stime are fields 14, 15
    ticks = int(fields[11]) + int(fields[12])
    return ticks / os.sysconf("SC_CLK_TCK")


def proc_state(pid: int) -> str | None:
    """The state letter of process ``pid`` (R, S, Z...), or None if gone."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            data = f.read()
    except FileNotFoundError:
        return None
    return data[data.rindex(")") + 2:].split()[0]


class ServerProcess:
    """A running ``subring serve`` child process."""

    def __init__(self, proc: subprocess.Popen, path: str, log_path: str, target: str) -> None:
        self.proc = proc
        self.path = path
        self.log_path = log_path
        self.target = target

    @property
    def pid(self) -> int:
        return self.proc.pid

    def alive(self) -> bool:
        return self.proc.poll() is None

    def log(self) -> str:
        try:
            with open(self.log_path, errors="replace") as f:
                return f.read()
        except OSError:
            return ""

    def cpu_seconds(self) -> float:
        return proc_cpu_seconds(self.pid)

    def connect(self, **kw: Any) -> subring.SubsystemClient:
        kw.setdefault("timeout", 5.0)
        return subring.connect(self.path, **kw)

    def kill(self, sig: int = signal.SIGKILL, timeout: float = 5.0) -> int:
        """Send ``sig`` and reap the process; returns its exit status."""
        if self.alive():
            self.proc.send_signal(sig)
        return self.proc.wait(timeout)

    def stop(self, timeout: float = 5.0) -> int | None:
        """SIGTERM, then SIGKILL: the process is gone (and reaped) afterwards."""
        if self.proc.poll() is None:
            try:
                self.proc.send_signal(signal.SIGTERM)
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout)
        return self.proc.returncode

    def __repr__(self) -> str:
        return f"<ServerProcess {self.target} pid={self.pid} {self.path}>"


def wait_connectable(srv: ServerProcess, timeout: float = 15.0) -> None:
    """Until ``connect(path, timeout=...)`` succeeds (then closes that client)."""
    deadline = time.monotonic() + timeout
    last: BaseException | None = None
    while time.monotonic() < deadline:
        if not srv.alive():
            raise RuntimeError(f"server {srv.target} exited with {srv.proc.returncode} "
                               f"during startup:\n{srv.log()}")
        try:
            c = subring.connect(srv.path,
                                timeout=max(0.05, min(2.0, deadline - time.monotonic())))
        except (OSError, ConnectionError) as e:       # not there yet, or slow to answer
            last = e
            time.sleep(0.01)
            continue
        c.close()
        return
    raise TimeoutError(f"server {srv.target} not connectable within {timeout} s "
                       f"({last!r}):\n{srv.log()}")


@contextlib.contextmanager
def _run_server(args: list[str], path: str, log_path: str, target: str, *,
                wait: bool, unlink: bool) -> Iterator[ServerProcess]:
    """Start a server process (output to ``log_path``), optionally wait until
    it accepts, and always stop it -- killed if it will not stop -- on exit."""
    log = open(log_path, "ab")
    try:
        proc = subprocess.Popen(args, stdin=subprocess.DEVNULL, stdout=log, stderr=log,
                                env=_child_env(), cwd=str(TESTS_DIR), close_fds=True)
    finally:
        log.close()
    srv = ServerProcess(proc, path, log_path, target)
    try:
        if wait:
            wait_connectable(srv)
        yield srv
    finally:
        try:
            srv.stop()
        finally:
            if proc.poll() is None:          # pragma: no cover - belt and braces
                proc.kill()
                proc.wait(10)
            if unlink:
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(path)


@contextlib.contextmanager
def start_server(path: str | os.PathLike, target: str = "subsys_examples:EchoTest", *,
                 mode: str | None = None, spin_us: float | None = None,
                 socket_mode: str | None = None, wait: bool = True,
                 log_path: str | None = None, unlink: bool = True) -> Iterator[ServerProcess]:
    """Run ``subring serve target --socket path`` in a child process.  On exit
    the process is stopped and reaped and (``unlink``) the socket removed."""
    path = str(path)
    log_path = log_path or path + ".log"
    args = [sys.executable, "-m", "subring.cli", "serve", target, "--socket", path]
    if mode is not None:
        args += ["--mode", mode]
    if spin_us is not None:
        args += ["--spin-us", str(spin_us)]
    if socket_mode is not None:
        args += ["--socket-mode", socket_mode]
    with _run_server(args, path, log_path, target, wait=wait, unlink=unlink) as srv:
        yield srv


_SERVE_SCRIPT = """
import importlib, json, resource, signal, sys
target, path, kw, nofile = sys.argv[1], sys.argv[2], json.loads(sys.argv[3]), int(sys.argv[4])
if nofile:
    resource.setrlimit(resource.RLIMIT_NOFILE, (nofile, nofile))
import logging
logging.basicConfig(level=logging.INFO, stream=sys.stderr,
                    format="%(levelname)s %(name)s: %(message)s")
mod, _, cls = target.partition(":")
sub = getattr(importlib.import_module(mod), cls)()
signal.signal(signal.SIGTERM, lambda *a: sub.stop())
if "allow_uids" in kw:
    kw["allow_uids"] = set(kw["allow_uids"])
sub.serve(path, **kw)
"""


@contextlib.contextmanager
def start_py_server(path: str | os.PathLike, target: str = "subsys_examples:EchoTest", *,
                    serve_kwargs: dict[str, Any] | None = None, rlimit_nofile: int = 0,
                    wait: bool = True) -> Iterator[ServerProcess]:
    """Like :func:`start_server`, but calls ``Subsystem.serve(path,
    **serve_kwargs)`` directly (every option, including ones the CLI does not
    have), optionally under ``RLIMIT_NOFILE``; logging goes to the log file."""
    path = str(path)
    log_path = path + ".log"
    args = [sys.executable, "-c", _SERVE_SCRIPT, target, path,
            json.dumps(serve_kwargs or {}), str(rlimit_nofile)]
    with _run_server(args, path, log_path, target, wait=wait, unlink=True) as srv:
        yield srv


@pytest.fixture
def server_factory(tmp_path):
    """``server_factory(target=..., mode=..., name=...) -> ServerProcess``;
    every server is stopped and its socket removed at teardown."""
    with contextlib.ExitStack() as stack:
        count = [0]

        def factory(target: str = "subsys_examples:EchoTest", *, name: str | None = None,
                    **kw: Any) -> ServerProcess:
            count[0] += 1
            path = tmp_path / (name or f"srv{count[0]}.sock")
            return stack.enter_context(start_server(path, target, **kw))

        yield factory


def call_json(client: subring.SubsystemClient, op: str, **kw: Any) -> Any:
    return json.loads(client.call(op, **kw))


def server_stats(client: subring.SubsystemClient) -> dict[str, Any]:
    """The server's statistics (EchoTest/FuzzTarget ``stats`` op)."""
    return call_json(client, "stats", timeout=5)


def wait_until(pred, timeout: float, interval: float = 0.01, what: str = "condition") -> Any:
    deadline = time.monotonic() + timeout
    while True:
        v = pred()
        if v:
            return v
        if time.monotonic() >= deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(interval)


def drain(client: subring.SubsystemClient, count: int | None = None,
          timeout: float = 10.0) -> list:
    """Reap until ``count`` completions arrived (default: until nothing is in
    flight any more); every wait is bounded by ``timeout``."""
    out: list = []
    deadline = time.monotonic() + timeout
    while True:
        out.extend(client.reap())
        if (len(out) >= count) if count is not None else not client.inflight:
            return out
        if count is not None and not client.inflight and not client.cq_ready:
            raise AssertionError(f"drain: {len(out)} of {count} completions and nothing "
                                 f"in flight")
        left = deadline - time.monotonic()
        if left <= 0:
            raise AssertionError(f"drain: {len(out)} completions, inflight="
                                 f"{client.inflight} after {timeout} s")
        client.submit_and_wait(1, timeout=min(left, 0.5))


# ---------------------------------------------------------------------------
# the raw client: the ring protocol by hand
# ---------------------------------------------------------------------------

# struct sr_uring_region header (abi.h), little-endian x86-64
HDR = struct.Struct("<IIIIIIIIQQQQQII")
assert HDR.size == 80
SR_URING_MAGIC = 0x474E5253
OFF_SQ_TAIL, OFF_SQ_HEAD, OFF_SQ_FLAGS = 128, 192, 256
OFF_CQ_TAIL, OFF_CQ_HEAD, OFF_CQ_FLAGS, OFF_STATE = 320, 384, 448, 512
SQE_SIZE, CQE_SIZE = 128, 16
# struct io_uring_sqe, first 64 bytes; cmd[] (inline payload) is bytes 48..128
SQE = struct.Struct("<BBHiQQIIQHHIQQ")
assert SQE.size == 64
CQE = struct.Struct("<QiI")
U32 = struct.Struct("<I")

SR_PAYLOAD_NONE, SR_PAYLOAD_INLINE, SR_PAYLOAD_SLOT, SR_PAYLOAD_POOL = 0, 1, 2, 3
SR_PAYLOAD_MASK = 3
SR_OPF_RESULT = 1 << 2
SR_OPF_RECORDS = 1 << 3
SR_OPF_KNOWN = SR_PAYLOAD_MASK | SR_OPF_RESULT | SR_OPF_RECORDS
SR_INLINE_MAX = 80
SR_SQ_NEED_WAKEUP = 1
SR_CQ_ARMED = 1
SR_STATE_RUNNING, SR_STATE_STOPPED = 1, 2
IORING_CQE_F_BUFFER = 1
SR_CQE_F_ERRTEXT = 1 << 15
IORING_CQE_BUFFER_SHIFT = 16


def pack_sqe(opcode: int = 0, *, flags: int = 0, ioprio: int = 0, fd: int = 0, off: int = 0,
             addr: int = 0, length: int = 0, op_flags: int = 0, user_data: int = 0,
             buf_index: int = 0, personality: int = 0, file_index: int = 0,
             inline: bytes = b"") -> bytes:
    """A 128-byte SQE.  ``fd`` is the data slot, ``off``/``addr`` arg0/arg1
    (as unsigned 64-bit), ``inline`` goes to cmd[0..80)."""
    head = SQE.pack(opcode & 0xFF, flags & 0xFF, ioprio & 0xFFFF, fd, off & (2**64 - 1),
                    addr & (2**64 - 1), length & 0xFFFFFFFF, op_flags & 0xFFFFFFFF,
                    user_data & (2**64 - 1), buf_index & 0xFFFF, personality & 0xFFFF,
                    file_index & 0xFFFFFFFF, 0, 0)
    cmd = inline[:SR_INLINE_MAX].ljust(SR_INLINE_MAX, b"\0")
    return head[:48] + cmd


def unpack_sqe(raw: bytes) -> dict[str, Any]:
    (opcode, flags, ioprio, fd, off, addr, length, op_flags, user_data, buf_index,
     personality, file_index, _a3, _p2) = SQE.unpack(raw[:64])
    return {"opcode": opcode, "flags": flags, "fd": fd, "off": off, "addr": addr,
            "len": length, "op_flags": op_flags, "user_data": user_data,
            "buf_index": buf_index, "file_index": file_index, "inline": raw[48:128]}


def raw_connect(path: str, timeout: float = 5.0) -> socket.socket:
    s = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET | socket.SOCK_CLOEXEC)
    try:
        s.settimeout(timeout)
        s.connect(path)
    except BaseException:
        s.close()
        raise
    return s


def raw_exchange(path: str, data: bytes, fds: list[int] | tuple[int, ...] = (),
                 timeout: float = 5.0) -> tuple[dict | None, bytes]:
    """Send one raw control message; return (parsed reply or None, raw reply).
    b'' means the server closed the connection.  fds sent back are closed."""
    s = raw_connect(path, timeout)
    try:
        if fds:
            socket.send_fds(s, [data], list(fds))
        else:
            s.send(data)
        msg, rfds, _flags, _ = socket.recv_fds(s, attach.MAX_MESSAGE, attach.MAX_FDS)
        for fd in rfds:
            os.close(fd)
    finally:
        s.close()
    return (json.loads(msg) if msg else None), msg


class RawClient:
    """A client that speaks the attach protocol and the ring ABI by hand."""

    def __init__(self, path: str, *, entries: int = 8, slot_size: int = 256,
                 hello: dict | None = None, timeout: float = 5.0) -> None:
        self.sock = raw_connect(path, timeout)
        self.mm: mmap.mmap | None = None
        self.doorbell_fd = self.cq_efd = -1
        self.pool: subring.BufferPool | None = None
        try:
            attach.send(self.sock, hello or {"subring": attach.PROTOCOL, "entries": entries,
                                             "slot_size": slot_size, "pid": os.getpid()})
            reply, fds = attach.recv(self.sock)
            if reply is None or not reply.get("ok") or len(fds) != 3:
                for fd in fds:
                    os.close(fd)
                raise ConnectionError(f"attach failed: {reply!r} ({len(fds)} fds)")
            self.reply = reply
            region_fd, self.doorbell_fd, self.cq_efd = fds
            try:
                st = os.fstat(region_fd)
                size = st.st_size
                self.region_mode = st.st_mode & 0o7777
                self.seals = fcntl.fcntl(region_fd, fcntl.F_GET_SEALS)
                self.mm = mmap.mmap(region_fd, size)
            finally:
                os.close(region_fd)
            (self.magic, self.version, self.sq_entries, self.cq_entries, self.sqe_size,
             self.cqe_size, self.nslots, self.slot_size, self.sqes_off, self.cqes_off,
             self.send_off, self.result_off, self.region_size, self.server_pid,
             self.client_pid) = HDR.unpack_from(self.mm, 0)
            self._words = memoryview(self.mm)[:4096].cast("I")
            self.ops = {t[0]: i for i, t in enumerate(reply["ops"])}
            # private shadows, like a real client
            self.sq_tail = self.get_sq_tail()
            self.cq_head = self.get_cq_head()
        except BaseException:
            self.close()
            raise

    # -- indices ----------------------------------------------------------------
    # Ring indices are shared words: they must be read and written with one
    # aligned 32-bit access each (as the C core does).  struct.pack_into
    # stores byte by byte, so the server could see a torn, impossible index
    # and (rightly) drop the client; a memoryview cast to "I" does one store.
    def _u32(self, off: int) -> int:
        return self._words[off >> 2]

    def _set_u32(self, off: int, v: int) -> None:
        self._words[off >> 2] = v & 0xFFFFFFFF

    def get_sq_tail(self) -> int:
        return self._u32(OFF_SQ_TAIL)

    def get_sq_head(self) -> int:
        return self._u32(OFF_SQ_HEAD)

    def get_sq_flags(self) -> int:
        return self._u32(OFF_SQ_FLAGS)

    def get_cq_tail(self) -> int:
        return self._u32(OFF_CQ_TAIL)

    def get_cq_head(self) -> int:
        return self._u32(OFF_CQ_HEAD)

    def get_state(self) -> int:
        return self._u32(OFF_STATE)

    def set_sq_tail(self, v: int) -> None:
        self._set_u32(OFF_SQ_TAIL, v)

    def set_cq_head(self, v: int) -> None:
        self._set_u32(OFF_CQ_HEAD, v)

    def set_cq_flags(self, v: int) -> None:
        self._set_u32(OFF_CQ_FLAGS, v)

    def write_header_bytes(self, off: int, data: bytes) -> None:
        self.mm[off:off + len(data)] = data

    # -- entries and slots ---------------------------------------------------------
    def write_sqe(self, index: int, raw: bytes) -> None:
        assert len(raw) == SQE_SIZE
        o = self.sqes_off + (index & (self.sq_entries - 1)) * SQE_SIZE
        self.mm[o:o + SQE_SIZE] = raw

    def read_cqe(self, index: int) -> tuple[int, int, int]:
        o = self.cqes_off + (index & (self.cq_entries - 1)) * CQE_SIZE
        return CQE.unpack_from(self.mm, o)

    def send_slot(self, slot: int) -> memoryview:
        o = self.send_off + slot * self.slot_size
        return memoryview(self.mm)[o:o + self.slot_size]

    def write_send_slot(self, slot: int, data: bytes) -> None:
        o = self.send_off + slot * self.slot_size
        self.mm[o:o + len(data)] = data

    def result_slot(self, slot: int, n: int) -> bytes:
        o = self.result_off + slot * self.slot_size
        return bytes(self.mm[o:o + n])

    def error_text(self, slot: int) -> str:
        o = self.result_off + slot * self.slot_size
        n = struct.unpack_from("<H", self.mm, o)[0]
        n = min(n, self.slot_size - 2)
        return bytes(self.mm[o + 2:o + 2 + n]).decode("utf-8", "replace")

    # -- actions -----------------------------------------------------------------
    def ring(self) -> None:
        os.eventfd_write(self.doorbell_fd, 1)

    def sq_space(self) -> int:
        return self.sq_entries - ((self.sq_tail - self.get_sq_head()) & 0xFFFFFFFF)

    def push(self, sqes: list[bytes], *, ring: bool = True) -> None:
        """Write SQEs at the tail, publish the tail, ring the doorbell."""
        if len(sqes) > self.sq_space():
            raise BlockingIOError(f"no room for {len(sqes)} SQEs")
        for raw in sqes:
            self.write_sqe(self.sq_tail, raw)
            self.sq_tail = (self.sq_tail + 1) & 0xFFFFFFFF
        self.set_sq_tail(self.sq_tail)
        if ring:
            self.ring()

    def cq_ready(self) -> int:
        return (self.get_cq_tail() - self.cq_head) & 0xFFFFFFFF

    def take_cqes(self) -> list[tuple[int, int, int]]:
        """Consume every CQE visible now (advancing cq_head properly)."""
        n = self.cq_ready()
        assert n <= self.cq_entries, f"server published an impossible cq_tail ({n} ready)"
        out = [self.read_cqe(self.cq_head + k) for k in range(n)]
        self.cq_head = (self.cq_head + n) & 0xFFFFFFFF
        self.set_cq_head(self.cq_head)
        return out

    def wait_cqes(self, n: int, timeout: float = 5.0) -> list[tuple[int, int, int]]:
        """Wait (polling, with a timeout) until ``n`` CQEs were consumed."""
        out: list = []
        deadline = time.monotonic() + timeout
        while len(out) < n:
            got = self.take_cqes()
            out.extend(got)
            if len(out) >= n:
                break
            if time.monotonic() >= deadline:
                raise TimeoutError(f"got {len(out)} of {n} CQEs within {timeout} s")
            if not got:
                time.sleep(0.0005)
        return out

    def call(self, sqes: list[bytes], timeout: float = 5.0) -> list[tuple[int, int, int]]:
        self.push(sqes)
        return self.wait_cqes(len(sqes), timeout)

    def disconnected(self, timeout: float = 0.0) -> bool:
        """True if the server closed our attach socket (EOF / HUP)."""
        r, _, _ = select.select([self.sock], [], [], timeout)
        if not r:
            return False
        try:
            data = self.sock.recv(attach.MAX_MESSAGE, socket.MSG_PEEK | socket.MSG_DONTWAIT)
        except BlockingIOError:
            return False
        except (ConnectionResetError, OSError):
            return True
        return data == b""

    def wait_disconnected(self, timeout: float = 5.0) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.disconnected(min(0.05, max(0.0, deadline - time.monotonic()))):
                return True
        return False

    def register_pool(self, count: int, size: int) -> dict:
        self.pool = subring.BufferPool(count, size)
        attach.send(self.sock, {"cmd": "pool", "count": count, "size": size}, [self.pool.fd])
        reply, fds = attach.recv(self.sock)
        for fd in fds:
            os.close(fd)
        return reply

    def close(self) -> None:
        if self.mm is not None:
            self._words.release()
            self.mm.close()
            self.mm = None
        for name in ("doorbell_fd", "cq_efd"):
            fd = getattr(self, name)
            if fd >= 0:
                os.close(fd)
                setattr(self, name, -1)
        if self.sock is not None:
            self.sock.close()
        if self.pool is not None:
            self.pool.close()
            self.pool = None

    def __enter__(self) -> RawClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


# ---------------------------------------------------------------------------
# child-process clients
# ---------------------------------------------------------------------------


@contextlib.contextmanager
def child_client(*args: str, ready_timeout: float = 10.0) -> Iterator[tuple[subprocess.Popen, dict]]:
    """Run ``python -m subsys_helpers ARGS``; wait for its first stdout line
    (a JSON "ready" message) and yield (process, that message).  The process
    is killed and reaped, and its pipes closed, on exit."""
    proc = subprocess.Popen([sys.executable, "-m", "subsys_helpers", *map(str, args)],
                            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, env=_child_env(), cwd=str(TESTS_DIR))
    try:
        r, _, _ = select.select([proc.stdout], [], [], ready_timeout)
        line = proc.stdout.readline() if r else b""
        if not line:
            proc.kill()
            _, err = proc.communicate(timeout=10)
            raise RuntimeError(f"child client {args} did not get ready: {err.decode()[-2000:]}")
        yield proc, json.loads(line)
    finally:
        if proc.poll() is None:
            proc.kill()
        try:
            proc.communicate(timeout=10)
        except subprocess.TimeoutExpired:   # pragma: no cover
            proc.kill()
            proc.communicate(timeout=10)


def _flood_main(path: str, seconds: float, spin_ms: int, depth: int) -> None:
    """Keep ``depth`` spin ops in flight for ``seconds``; print counts."""
    c = subring.connect(path, entries=max(depth, 64), timeout=5)
    spin = c.op_index("spin")
    print(json.dumps({"ready": True, "pid": os.getpid()}), flush=True)
    done = errors = 0
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        while c.inflight < depth:
            c.prep_call(spin, None, spin_ms, 1)
        c.submit_and_wait(1, timeout=5)
        for comp in c.reap():
            if comp.res == 1:
                done += 1
            else:
                errors += 1
    for comp in drain(c, timeout=30):
        done += comp.res == 1
    c.close()
    print(json.dumps({"done": done, "errors": errors}), flush=True)


def _hold_main(path: str, op: str, count: int, arg0: int) -> None:
    """Submit ``count`` ops ``op(arg0)``, wait until the server took them all
    from the SQ, report, then sleep until killed."""
    c = subring.connect(path, entries=256, timeout=5)
    index = c.op_index(op)
    for k in range(count):
        c.prep_call(index, None, arg0, k, user_data=k)
    c.submit()
    deadline = time.monotonic() + 5
    while c.sq_pending and time.monotonic() < deadline:
        time.sleep(0.001)
    print(json.dumps({"ready": True, "pid": os.getpid(), "inflight": c.inflight,
                      "sq_pending": c.sq_pending}), flush=True)
    time.sleep(60)


if __name__ == "__main__":
    cmd = sys.argv[1]
    if cmd == "flood":
        _flood_main(sys.argv[2], float(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5]))
    elif cmd == "hold":
        _hold_main(sys.argv[2], sys.argv[3], int(sys.argv[4]), int(sys.argv[5]))
    else:
        sys.exit(f"unknown command {cmd}")
