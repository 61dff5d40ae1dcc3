"""Who may attach, and what a connection may do: uid checks (SO_PEERCRED),
refusals with reasons, the accept path under pressure (fd limit, silent
connections), op restrictions, per-connection buffers, file modes.

Tests that change uid fork a child that setuid()s to `nobody`; they need
root and are skipped otherwise."""

from __future__ import annotations

import contextlib
import errno
import json
import os
import shutil
import socket
import stat
import tempfile
import time

import pytest
from subsys_helpers import (
    SR_PAYLOAD_POOL,
    RawClient,
    drain,
    pack_sqe,
    start_py_server,
    start_server,
    wait_until,
)

import subring
from subring.subsystem import AttachRefusedError
from subring.subsystem import query_statistics

_ARE = AttachRefusedError

NOBODY = 65534

needs_root = pytest.mark.skipif(os.geteuid() != 0, reason="needs root to setuid() a child")


@pytest.fixture
def shared_dir():
    """A directory other users can traverse (tmp_path's parents are 0700)."""
    d = tempfile.mkdtemp(prefix="subring-access-", dir="/tmp")
    os.chmod(d, 0o755)
    try:
        yield d
    finally:
        shutil.rmtree(d, ignore_errors=True)


def _as_nobody(path: str, action: str = "call") -> dict:
    """Fork; the child becomes `nobody`, tries to attach (and call `add`) and
    reports what happened through a pipe."""
    rd, wr = os.pipe()
    pid = os.fork()
    if pid == 0:                                   # child
        code = 0
        try:
            os.close(rd)
            os.setgroups([])
            os.setgid(NOBODY)
            os.setuid(NOBODY)
            out: dict = {"uid": os.getuid()}
            try:
                if action == "stat":
                    st = query_statistics(path, timeout=5)
                    out["ok"] = True
                    out["clients"] = len(st.clients)
                else:
                    with subring.connect(path, timeout=5) as c:
                        out["ok"] = True
                        out["result"] = c.call("add", None, 20, 22, timeout=5)
            except _ARE as e:
                out.update(ok=False, exc="AttachRefusedError", code=e.code, reason=e.reason)
            except OSError as e:
                out.update(ok=False, exc=type(e).__name__, errno=e.errno, text=str(e))
            os.write(wr, json.dumps(out).encode())
        except BaseException:                      # pragma: no cover - report anything
            code = 1
        finally:
            os._exit(code)
    os.close(wr)
    try:
        data = b""
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            chunk = os.read(rd, 65536)
            if not chunk:
                break
            data += chunk
    finally:
        os.close(rd)
        _, status = os.waitpid(pid, 0)
    assert os.WIFEXITED(status) and os.WEXITSTATUS(status) == 0, status
    return json.loads(data)


# ---------------------------------------------------------------------------
# uids
# ---------------------------------------------------------------------------


@needs_root
def test_another_uid_cannot_attach_by_default(shared_dir):
    """Default: socket mode 0600, only the server's uid (and root)."""
    path = os.path.join(shared_dir, "s.sock")
    with start_py_server(path):
        assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
        got = _as_nobody(path)
        assert got["uid"] == NOBODY and not got["ok"]
        assert got["exc"] == "PermissionError", got


@needs_root
def test_another_uid_is_refused_with_a_reason_even_if_the_socket_is_open(shared_dir):
    """A world-connectable socket (socket_mode=0o666) still checks the uid."""
    path = os.path.join(shared_dir, "s.sock")
    with start_py_server(path, serve_kwargs={"socket_mode": 0o666}) as srv:
        got = _as_nobody(path)
        assert got == {"uid": NOBODY, "ok": False, "exc": "AttachRefusedError", "code": "uid",
                       "reason": f"uid {NOBODY} is not allowed to attach (allow_uids)"}, got
        stat_got = _as_nobody(path, "stat")
        assert not stat_got["ok"] and stat_got["code"] == "uid", stat_got
        with srv.connect() as c:                  # our own uid still attaches
            assert c.call("add", None, 1, 1) == 2
        assert "refused pid" in srv.log() and f"uid {NOBODY}" in srv.log()


@needs_root
def test_an_allowed_uid_attaches(shared_dir):
    path = os.path.join(shared_dir, "s.sock")
    with start_py_server(path, serve_kwargs={"allow_uids": [NOBODY]}):
        assert stat.S_IMODE(os.stat(path).st_mode) == 0o666   # the uid check guards
        got = _as_nobody(path)
        assert got == {"uid": NOBODY, "ok": True, "result": 42}, got


# ---------------------------------------------------------------------------
# the accept path (issue 13 bug 15)
# ---------------------------------------------------------------------------


def _log_count(srv, text: str) -> int:
    return srv.log().count(text)


def test_regression_accept_at_the_fd_limit_backs_off_and_says_why(tmp_path):
    """Issue 13 bug 15: at RLIMIT_NOFILE the server spun at 100 % CPU logging
    `accept failed: [Errno 24]` ~70,000 times a second.  Now it refuses the
    connection with a reason, backs off, logs rate-limited, and recovers when
    descriptors are freed."""
    path = tmp_path / "s.sock"
    with start_py_server(path, rlimit_nofile=40) as srv:
        clients = []
        refused = None
        try:
            for _ in range(40):                    # each attach costs the server 3 fds
                try:
                    clients.append(srv.connect(timeout=5))
                except _ARE as e:
                    refused = e
                    break
            assert refused is not None, "never reached the fd limit"
            assert refused.code in ("fd-limit", "protocol"), refused
            assert "descriptor" in refused.reason or "Errno 24" in refused.reason, refused
            # Connections keep knocking while the server is at its limit: it
            # must not spin (the bug: 100 % CPU) nor flood its log.
            knockers = []
            cpu0 = srv.cpu_seconds()
            t0 = time.monotonic()
            while time.monotonic() - t0 < 2.0:
                s = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
                with contextlib.suppress(OSError):
                    s.connect(str(path))
                knockers.append(s)
                time.sleep(0.02)
            cpu = srv.cpu_seconds() - cpu0
            for s in knockers:
                s.close()
            assert cpu < 0.6, f"server used {cpu:.2f} s of CPU in 2 s at its fd limit"
            assert _log_count(srv, "Errno 24") + _log_count(srv, "descriptors") < 20, \
                srv.log()[-2000:]
            assert srv.alive()
        finally:
            for c in clients:
                c.close()
        # descriptors freed: new clients attach again
        c = wait_until(lambda: _try_connect(srv), 10, what="attach after fds were freed")
        with c:
            assert c.call("add", None, 2, 2) == 4


def _try_connect(srv):
    try:
        return srv.connect(timeout=2)
    except (_ARE, OSError):
        return None


def test_regression_silent_connections_time_out_and_are_capped_per_uid(tmp_path):
    """Issue 13 bug 15: connections that never sent their hello locked every
    client out indefinitely.  Now at most `max_pending_per_uid` may wait per
    uid (the rest are refused with a reason at once) and each must say hello
    within `attach_timeout`."""
    path = tmp_path / "s.sock"
    kw = {"attach_timeout": 0.5, "max_pending_per_uid": 4}
    with start_py_server(path, serve_kwargs=kw) as srv:
        silent = []
        try:
            for _ in range(12):
                s = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
                s.connect(str(path))
                silent.append(s)
            replies = []
            for s in silent:
                s.settimeout(5)
                data = s.recv(65536)
                replies.append(json.loads(data) if data else None)
            codes = sorted(r["refused"] for r in replies if r)
            assert codes.count("busy") >= 8 - 1, replies     # beyond the cap: at once
            assert "timeout" in codes, replies                # the first ones: after 0.5 s
            assert all(r and r["ok"] is False and r["error"] for r in replies), replies
        finally:
            for s in silent:
                s.close()
        with srv.connect() as c:                  # nobody is locked out afterwards
            assert c.call("add", None, 3, 4) == 7
        st = query_statistics(str(path))
        assert st.refused >= 12 and st.connections == 1     # this query itself


def test_regression_refused_attach_reaches_the_client_as_attach_refused_error(tmp_path):
    """Issue 13 bug 15: a refused attach reached the client as a raw
    ConnectionResetError / BrokenPipeError with no reason."""
    path = tmp_path / "s.sock"
    with start_py_server(path, target="subsys_examples:TwoClients") as srv:
        with srv.connect() as a, srv.connect() as b:
            with pytest.raises(AttachRefusedError) as ei:
                srv.connect()
            assert ei.value.code == "busy" and "max_clients=2" in ei.value.reason
            assert ei.value.address == str(path) and str(path) in str(ei.value)
            assert isinstance(ei.value, ConnectionError)
            assert a.call("add", None, 1, 1) == 2 and b.call("add", None, 2, 2) == 4


# ---------------------------------------------------------------------------
# what a connection may touch
# ---------------------------------------------------------------------------


def test_client_cannot_name_another_clients_buffers(tmp_path):
    """Pool references resolve in the sender's own connection only: B naming
    buffer 0 (which A registered) gets EFAULT and A's data is untouched."""
    path = tmp_path / "s.sock"
    with start_server(path, "subsys_examples:FuzzTarget") as srv, srv.connect() as a:
        pool = subring.BufferPool(count=2, size=256)
        try:
            a.register_pool(pool)
            pool.buffer(0)[:6] = b"secret"
            with RawClient(srv.path, entries=8) as b:
                xor = b.ops["pool_xor"]
                cqes = b.call([pack_sqe(xor, op_flags=SR_PAYLOAD_POOL, buf_index=0,
                                        file_index=0, length=6, user_data=7, off=0xFF)])
                assert cqes[0][:2] == (7, -errno.EFAULT), cqes
                # and B's own slots: an index past its own region is refused too
                cqes = b.call([pack_sqe(xor, fd=b.nslots, user_data=8)])
                assert cqes[0][1] == -errno.EINVAL, cqes
            assert bytes(pool.buffer(0)[:6]) == b"secret"
        finally:
            a.close()
            pool.close()


def test_restricted_op_lists_are_enforced(tmp_path):
    """`Subsystem.allowed_ops(client)` limits what a connection may call: the
    rest completes with EACCES (checked in C for every SQE, batch ops
    included)."""
    path = tmp_path / "s.sock"
    with start_py_server(path, target="subsys_examples:Restricted") as srv, \
            srv.connect() as c:
        assert c.call("add", None, 1, 2) == 3
        with pytest.raises(PermissionError):
            c.call("echo", b"x")
        for k in range(8):
            c.prep_call(c.ops["bsize" if k % 2 else "echo"], None, user_data=k)
        got = {x.user_data: x.res for x in drain(c, 8, timeout=5)}
        assert set(got.values()) == {-errno.EACCES}, got
        assert c.call("nop") == 0                 # the built-in nop is always allowed
        assert c.call("add", None, 5, 5) == 10


def test_socket_and_memfds_have_safe_modes(tmp_path):
    path = tmp_path / "s.sock"
    with start_server(path) as srv:
        assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
        with RawClient(srv.path) as raw:
            assert raw.region_mode & 0o077 == 0, oct(raw.region_mode)
