"""IORING_OP_URING_CMD on sockets: SOCKET_URING_OP_SIOCINQ / SIOCOUTQ, and the
payload-size check of prep_uring_cmd."""

from __future__ import annotations

import contextlib
import errno
import socket
import time

import pytest

import subring
from ringhelpers import collect as _collect

SOCKET_URING_OP_SIOCINQ = 0
SOCKET_URING_OP_SIOCOUTQ = 1



@pytest.fixture
def tcp_pair():
    with contextlib.ExitStack() as es:
        lst = es.enter_context(socket.socket())
        lst.bind(("127.0.0.1", 0))
        lst.listen(1)
        lst.settimeout(5)
        a = es.enter_context(socket.create_connection(lst.getsockname(), timeout=5))
        b, _ = lst.accept()
        es.enter_context(b)
        b.settimeout(5)
        yield a, b


def _siocinq(ring, fd: int, user_data=None) -> int:
    ring.prep_uring_cmd(fd, SOCKET_URING_OP_SIOCINQ, user_data=user_data)
    (c,) = _collect(ring, 1)
    assert c.op == "uring_cmd"
    if c.res in (-errno.EOPNOTSUPP, -errno.EINVAL):
        pytest.skip(f"socket uring_cmd SIOCINQ unsupported here (res {c.res})")
    return c.res


def _need_uring_cmd():
    if not subring.probe().supports("uring_cmd"):
        pytest.skip("kernel lacks IORING_OP_URING_CMD")


def _wait_queued(sock: socket.socket, n: int) -> None:
    """Wait (bounded) until n bytes are readable on sock (loopback is fast
    but asynchronous)."""
    deadline = time.monotonic() + 2
    while time.monotonic() < deadline:
        if len(sock.recv(n + 1, socket.MSG_PEEK | socket.MSG_DONTWAIT)) >= n:
            return
        time.sleep(0.001)
    raise AssertionError(f"{n} bytes never arrived")


def test_uring_cmd_siocinq_counts_queued_bytes(ring, tcp_pair):
    _need_uring_cmd()
    a, b = tcp_pair
    assert _siocinq(ring, a.fileno(), "empty") == 0
    b.sendall(b"x" * 1234)
    _wait_queued(a, 1234)
    assert _siocinq(ring, a.fileno()) == 1234
    b.sendall(b"y" * 766)
    _wait_queued(a, 2000)
    assert _siocinq(ring, a.fileno()) == 2000
    assert len(a.recv(500)) == 500
    assert _siocinq(ring, a.fileno()) == 1500


def test_uring_cmd_siocinq_on_udp(plain_ring):
    _need_uring_cmd()
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as rx, \
            socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as tx:
        rx.bind(("127.0.0.1", 0))
        tx.sendto(b"d" * 300, rx.getsockname())
        deadline = time.monotonic() + 2
        res = 0
        while time.monotonic() < deadline:
            res = _siocinq(plain_ring, rx.fileno())
            if res:
                break
            time.sleep(0.001)
        assert res == 300  # UDP: size of the first datagram


def test_uring_cmd_siocoutq(plain_ring, tcp_pair):
    _need_uring_cmd()
    a, _ = tcp_pair
    _siocinq(plain_ring, a.fileno())  # skips when socket commands are unsupported
    plain_ring.prep_uring_cmd(a.fileno(), SOCKET_URING_OP_SIOCOUTQ)
    (c,) = _collect(plain_ring, 1)
    assert c.res >= 0  # nothing unacknowledged to speak of on idle loopback


def test_uring_cmd_unknown_socket_cmd(plain_ring, tcp_pair):
    _need_uring_cmd()
    a, _ = tcp_pair
    _siocinq(plain_ring, a.fileno())
    plain_ring.prep_uring_cmd(a.fileno(), 0x7FFF_0000)
    (c,) = _collect(plain_ring, 1)
    assert c.res in (-errno.EOPNOTSUPP, -errno.EINVAL)


def test_uring_cmd_on_file_without_support(plain_ring, tmp_path):
    _need_uring_cmd()
    p = tmp_path / "f"
    p.write_bytes(b"")
    with open(p, "rb") as f:
        plain_ring.prep_uring_cmd(f.fileno(), SOCKET_URING_OP_SIOCINQ)
        (c,) = _collect(plain_ring, 1)
    assert c.res == -errno.EOPNOTSUPP


def test_uring_cmd_payload_too_long_for_sqe(make_ring):
    ring = make_ring()
    limit = 80 if ring.sqe_size == 128 else 16
    before = ring.statistics()
    with pytest.raises(ValueError):
        ring.prep_uring_cmd(0, 0, b"\0" * (limit + 1))
    assert ring.inflight == 0 and ring.sq_pending == 0
    assert ring.statistics().submitted == before.submitted
    if ring.sqe_size == 64:
        with pytest.raises(ValueError):
            ring.prep_uring_cmd(0, 0, b"\0" * 80)  # needs sqe128


def test_uring_cmd_payload_at_limit_is_accepted(make_ring, tcp_pair):
    _need_uring_cmd()
    ring = make_ring()
    a, _ = tcp_pair
    limit = 80 if ring.sqe_size == 128 else 16
    # socket commands ignore the payload; what matters is that it fits
    ring.prep_uring_cmd(a.fileno(), SOCKET_URING_OP_SIOCINQ, b"\0" * limit,
                        user_data="full")
    (c,) = _collect(ring, 1)
    assert c.user_data == "full"
    if c.res in (-errno.EOPNOTSUPP, -errno.EINVAL):
        pytest.skip("socket uring_cmd unsupported here")
    assert c.res == 0
