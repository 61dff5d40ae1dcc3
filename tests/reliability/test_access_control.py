"""Access control of user-space subsystems: who may attach, and what an
attached client may reach.  The other uid is real: a forked child drops to
uid/gid 65534 (needs root; skipped otherwise) and tries to attach."""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import stat
import tempfile
import threading

import pytest
from subsys_helpers import (
    SR_OPF_RESULT,
    SR_PAYLOAD_POOL,
    RawClient,
    pack_sqe,
)

import subring

pytestmark = pytest.mark.fault

NOBODY = 65534


class Secret(subring.Subsystem):
    @subring.op
    def echo(self, req):
        return bytes(req.data)


@contextlib.contextmanager
def serving(sub, **kw):
    d = tempfile.mkdtemp(prefix="subring-acl-")
    os.chmod(d, 0o755)                 # the directory does not stop anyone
    path = os.path.join(d, "s.sock")
    ready = threading.Event()
    t = threading.Thread(target=sub.serve, args=(path,), kwargs={**kw, "ready": ready.set},
                         daemon=True)
    t.start()
    assert ready.wait(10)
    try:
        yield path
    finally:
        sub.stop()
        t.join(10)
        os.rmdir(d)


def attach_as(uid: int, path: str) -> int:
    """Fork; the child becomes ``uid`` and tries to attach.  Returns 0 if it
    attached and called echo, else the errno-ish code it failed with."""
    if os.geteuid() != 0:
        pytest.skip("needs root to switch to another uid")
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:
        code = 99
        try:
            os.close(r)
            os.setgroups([])
            os.setgid(uid)
            os.setuid(uid)
            try:
                with subring.connect(path, timeout=3) as c:
                    code = 0 if c.call("echo", b"hi", timeout=3) == b"hi" else 98
            except PermissionError:
                code = errno.EACCES
            except (ConnectionError, OSError) as e:
                code = getattr(e, "errno", None) or 97
        finally:
            os.write(w, bytes([code & 0xFF]))
            os._exit(0)
    os.close(w)
    try:
        data = os.read(r, 1)
    finally:
        os.close(r)
        os.waitpid(pid, 0)
    return data[0] if data else 96


def test_socket_mode_0600_keeps_other_uids_out():
    with serving(Secret()) as path:
        assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
        assert attach_as(NOBODY, path) == errno.EACCES


def test_other_uid_attaches_only_when_allowed():
    """Only the server's uid, root and ``allow_uids`` may attach -- even
    through a socket everyone may connect to (SO_PEERCRED is checked)."""
    with serving(Secret(), socket_mode=0o666) as path:
        assert attach_as(NOBODY, path) != 0          # world-writable socket, no uid list
    with serving(Secret(), socket_mode=0o666, allow_uids={0}) as path:
        assert attach_as(NOBODY, path) != 0          # not in allow_uids
    with serving(Secret(), socket_mode=0o666, allow_uids={0, NOBODY}) as path:
        assert attach_as(NOBODY, path) == 0


def test_region_and_pool_fds_are_sealed_and_private():
    with serving(Secret()) as path, RawClient(path) as raw:
        seals = raw.seals
        assert seals & fcntl.F_SEAL_SHRINK and seals & fcntl.F_SEAL_GROW and \
            seals & fcntl.F_SEAL_SEAL, hex(seals)
        assert raw.get_state() == 1


def test_client_cannot_name_another_clients_pool():
    """Client A registers a pool holding a secret; client B (with or without
    a pool of its own) names pool buffers in its SQEs: B gets -EFAULT or its
    own bytes, never A's."""
    with serving(Secret()) as path, RawClient(path) as a, RawClient(path) as b:
        assert a.register_pool(2, 4096)["ok"]
        a.pool.buffer(0)[:6] = b"SECRET"
        a.pool.buffer(1)[:6] = b"SECRET"
        echo = b.ops["echo"]
        sqes = [pack_sqe(echo, fd=k, op_flags=SR_PAYLOAD_POOL | SR_OPF_RESULT, length=6,
                         buf_index=k, file_index=0, user_data=k) for k in range(2)]
        cqes = b.call(sqes)
        assert sorted(res for _, res, _ in cqes) == [-errno.EFAULT] * 2
        assert b.register_pool(1, 4096)["ok"]
        b.pool.buffer(0)[:6] = b"public"
        cqes = b.call([pack_sqe(echo, fd=0, op_flags=SR_PAYLOAD_POOL | SR_OPF_RESULT,
                                length=6, buf_index=k, file_index=0, user_data=10 + k)
                       for k in range(2)])
        by_ud = {ud: (res, flags) for ud, res, flags in cqes}
        assert by_ud[11][0] == -errno.EFAULT            # B's pool has one buffer only
        assert by_ud[10][0] == 6
        slot = by_ud[10][1] >> 16
        assert b.result_slot(slot, 6) == b"public"


def test_unknown_op_index_is_refused():
    with serving(Secret()) as path, RawClient(path) as raw:
        n = len(raw.ops)
        cqes = raw.call([pack_sqe(op, user_data=op) for op in (n, n + 1, 200, 255)])
        assert sorted(res for _, res, _ in cqes) == [-errno.EOPNOTSUPP] * 4
