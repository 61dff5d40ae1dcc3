"""Socket operations of KernelRing against the real kernel.

Loopback (127.0.0.1, ::1) and AF_UNIX sockets only; every loop is bounded and
every socket is closed (the conftest fails a test that leaks an fd).
"""

from __future__ import annotations

import contextlib
import errno
import os
import socket
import time
import uuid

import pytest

import subring
from subring import SQE, CQEFlag
from ringhelpers import collect as _collect, need as _need, one as _one

LOOPBACK = "127.0.0.1"



def _need_kernel(major: int, minor: int, what: str) -> None:
    """For features the opcode probe cannot show (op flags)."""
    rel = os.uname().release.split("-")[0].split(".")
    try:
        have = (int(rel[0]), int(rel[1]))
    except (ValueError, IndexError):
        return
    if have < (major, minor):
        pytest.skip(f"{what} needs Linux {major}.{minor}+ (running {os.uname().release})")



def _some(ring, timeout: float = 5.0) -> list:
    """At least one completion (all that are ready) within timeout."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        ring.submit_and_wait(1, min(deadline - time.monotonic(), 0.5))
        got = ring.reap()
        if got:
            return got
    raise AssertionError(f"no completion within {timeout}s")


def _nothing_for(ring, seconds: float) -> None:
    ring.submit_and_wait(1, seconds)
    got = ring.reap()
    assert got == [], f"unexpected completions: {got!r}"


@pytest.fixture
def stack():
    with contextlib.ExitStack() as es:
        yield es


def _listener(stack, family=socket.AF_INET, host=LOOPBACK, backlog=16):
    s = stack.enter_context(socket.socket(family, socket.SOCK_STREAM))
    s.bind((host, 0))
    s.listen(backlog)
    s.settimeout(5)
    return s


def _tcp_pair(stack):
    """A connected loopback TCP pair (a, b), both blocking with timeouts."""
    lst = _listener(stack)
    a = stack.enter_context(socket.create_connection(lst.getsockname(), timeout=5))
    b, _ = lst.accept()
    stack.enter_context(b)
    b.settimeout(5)
    return a, b


def _adopt(stack, fd: int) -> socket.socket:
    """Own an fd that the ring returned (closed at the end of the test)."""
    s = socket.socket(fileno=fd)
    stack.enter_context(s)
    s.settimeout(5)
    return s


def _buffer_ring(ring, group_id: int, count: int, size: int):
    try:
        br = ring.register_buffer_ring(group_id, count, size)
    except OSError as e:
        if e.errno in (errno.EINVAL, errno.EOPNOTSUPP, errno.ENOSYS):
            pytest.skip(f"kernel lacks provided-buffer rings: {e}")
        raise
    return br


# --------------------------------------------------------------------------
# socket
# --------------------------------------------------------------------------

@pytest.mark.parametrize("family,type_", [
    (socket.AF_INET, socket.SOCK_STREAM),
    (socket.AF_INET, socket.SOCK_DGRAM),
    (socket.AF_UNIX, socket.SOCK_STREAM),
])
def test_socket_creates_fd(ring, stack, family, type_):
    _need("socket")
    ring.prep_socket(family, type_, user_data="sock")
    c = _one(ring)
    assert c.user_data == "sock" and c.op == "socket"
    s = _adopt(stack, c.result())
    assert s.family == family
    assert s.type == type_
    assert not s.get_inheritable()  # SOCK_CLOEXEC was added


def test_socket_bad_domain(plain_ring):
    _need("socket")
    plain_ring.prep_socket(12345, socket.SOCK_STREAM)
    c = _one(plain_ring)
    assert c.res in (-errno.EAFNOSUPPORT, -errno.EINVAL)
    with pytest.raises(OSError):
        c.result()


def test_socket_then_bind_listen_via_python(ring, stack):
    _need("socket", "accept")
    ring.prep_socket(socket.AF_INET, socket.SOCK_STREAM)
    lst = _adopt(stack, _one(ring).result())
    lst.bind((LOOPBACK, 0))
    lst.listen(4)
    ring.prep_accept(lst.fileno())
    ring.submit()
    cli = stack.enter_context(socket.create_connection(lst.getsockname(), timeout=5))
    conn = _adopt(stack, _one(ring).result())
    assert conn.getpeername() == cli.getsockname()


def test_regression_socket_file_index(plain_ring):
    """prep_socket(file_index=N) must create a direct descriptor in slot N.

    The kernel refuses SOCK_CLOEXEC together with a file_index, and
    prep_socket always adds SOCK_CLOEXEC: -EINVAL every time.
    """
    _need("socket")
    plain_ring.register_files_sparse(2)
    plain_ring.prep_socket(socket.AF_INET, socket.SOCK_DGRAM, file_index=1)
    c = _one(plain_ring)
    assert c.res == 0, f"socket into slot 1 failed: {c!r}"
    plain_ring.prep_close(1, fixed=True)
    assert _one(plain_ring).res == 0


# --------------------------------------------------------------------------
# accept
# --------------------------------------------------------------------------

def test_accept_single(ring, stack):
    _need("accept")
    lst = _listener(stack)
    ring.prep_accept(lst.fileno(), user_data="acc")
    ring.submit()
    _nothing_for(ring, 0.05)  # no client yet: the accept stays pending
    assert ring.inflight == 1
    cli = stack.enter_context(socket.create_connection(lst.getsockname(), timeout=5))
    c = _one(ring)
    assert c.user_data == "acc" and c.op == "accept" and not c.more
    conn = _adopt(stack, c.result())
    assert conn.getpeername() == cli.getsockname()
    assert not conn.get_inheritable()
    cli.sendall(b"ping")
    assert conn.recv(10) == b"ping"
    assert ring.inflight == 0


def test_accept_nonblocking_flag(plain_ring, stack):
    _need("accept")
    lst = _listener(stack)
    stack.enter_context(socket.create_connection(lst.getsockname(), timeout=5))
    plain_ring.prep_accept(lst.fileno(), sock_flags=socket.SOCK_NONBLOCK | socket.SOCK_CLOEXEC)
    fd = _one(plain_ring).result()
    conn = socket.socket(fileno=fd)
    stack.enter_context(conn)
    assert os.get_blocking(fd) is False


def test_accept_on_non_listening_socket(plain_ring, stack):
    _need("accept")
    s = stack.enter_context(socket.socket())
    plain_ring.prep_accept(s.fileno())
    c = _one(plain_ring)
    assert c.res == -errno.EINVAL
    # and on a non-socket
    r, w = os.pipe()
    stack.callback(os.close, r)
    stack.callback(os.close, w)
    plain_ring.prep_accept(r)
    assert _one(plain_ring).res == -errno.ENOTSOCK


def test_accept_multishot(ring, stack):
    _need("accept", "async_cancel")
    _need_kernel(5, 19, "multishot accept")
    lst = _listener(stack)
    tok = ring.prep_accept(lst.fileno(), user_data="multi", multishot=True)
    ring.submit()
    clients = [stack.enter_context(socket.create_connection(lst.getsockname(), timeout=5))
               for _ in range(4)]
    cs = _collect(ring, 4)
    peers = set()
    for c in cs:
        assert c.user_data == "multi"
        assert c.more, f"multishot accept ended early: {c!r}"
        assert c.flags & CQEFlag.MORE
        peers.add(_adopt(stack, c.result()).getpeername())
    assert peers == {cl.getsockname() for cl in clients}
    assert ring.inflight == 1  # still armed
    # one more client is still accepted by the same op
    late = stack.enter_context(socket.create_connection(lst.getsockname(), timeout=5))
    c = _one(ring)
    assert c.more
    assert _adopt(stack, c.result()).getpeername() == late.getsockname()
    # cancel: the cancel completes 0, the accept posts its final -ECANCELED
    ring.prep_cancel(tok, user_data="cancel")
    by = {c.user_data: c for c in _collect(ring, 2)}
    assert by["cancel"].res == 0
    assert by["multi"].res == -errno.ECANCELED
    assert not by["multi"].more
    assert ring.inflight == 0
    _nothing_for(ring, 0.02)


# --------------------------------------------------------------------------
# connect
# --------------------------------------------------------------------------

def test_connect_inet_loopback(ring, stack):
    _need("socket", "connect")
    lst = _listener(stack)
    ring.prep_socket(socket.AF_INET, socket.SOCK_STREAM)
    s = _adopt(stack, _one(ring).result())
    ring.prep_connect(s.fileno(), lst.getsockname(), user_data="conn")
    c = _one(ring)
    assert c.user_data == "conn" and c.op == "connect" and c.res == 0
    conn, addr = lst.accept()
    stack.enter_context(conn)
    assert addr == s.getsockname()
    assert s.getpeername() == lst.getsockname()


def test_connect_inet6_loopback(plain_ring, stack):
    _need("connect")
    if not socket.has_ipv6:
        pytest.skip("no IPv6 support")
    try:
        lst = _listener(stack, socket.AF_INET6, "::1")
    except OSError as e:
        pytest.skip(f"cannot bind ::1: {e}")
    s = stack.enter_context(socket.socket(socket.AF_INET6, socket.SOCK_STREAM))
    port = lst.getsockname()[1]
    plain_ring.prep_connect(s.fileno(), ("::1", port))
    assert _one(plain_ring).res == 0
    conn, addr = lst.accept()
    stack.enter_context(conn)
    assert addr[:2] == s.getsockname()[:2]


def test_connect_unix_path_and_abstract(ring, stack, tmp_path):
    _need("connect")
    path = str(tmp_path / "sock")
    if len(os.fsencode(path)) > 100:
        pytest.skip("tmp path too long for AF_UNIX")
    lst = stack.enter_context(socket.socket(socket.AF_UNIX, socket.SOCK_STREAM))
    lst.bind(path)
    lst.listen(2)
    lst.settimeout(5)
    abstract = b"\0subring-test-" + uuid.uuid4().hex.encode()
    alst = stack.enter_context(socket.socket(socket.AF_UNIX, socket.SOCK_STREAM))
    alst.bind(abstract)
    alst.listen(2)
    alst.settimeout(5)
    s1 = stack.enter_context(socket.socket(socket.AF_UNIX, socket.SOCK_STREAM))
    s2 = stack.enter_context(socket.socket(socket.AF_UNIX, socket.SOCK_STREAM))
    ring.prep_connect(s1.fileno(), path, user_data="path")
    ring.prep_connect(s2.fileno(), abstract, user_data="abstract")
    by = {c.user_data: c.res for c in _collect(ring, 2)}
    assert by == {"path": 0, "abstract": 0}
    for ls, cl in ((lst, s1), (alst, s2)):
        conn, _ = ls.accept()
        stack.enter_context(conn)
        cl.sendall(b"hi")
        assert conn.recv(2) == b"hi"
    assert s2.getpeername() == abstract


def test_connect_refused(plain_ring, stack):
    _need("connect")
    # a port with nothing listening: bind, learn the port, close
    tmp = socket.socket()
    tmp.bind((LOOPBACK, 0))
    port = tmp.getsockname()[1]
    tmp.close()
    s = stack.enter_context(socket.socket())
    plain_ring.prep_connect(s.fileno(), (LOOPBACK, port))
    c = _one(plain_ring)
    assert c.res == -errno.ECONNREFUSED
    with pytest.raises(ConnectionRefusedError) as ei:
        c.result()
    assert "connect" in str(ei.value)


def test_connect_rejects_host_names(plain_ring, stack):
    s = stack.enter_context(socket.socket())
    with pytest.raises(ValueError):
        plain_ring.prep_connect(s.fileno(), ("localhost", 80))
    assert plain_ring.inflight == 0 and plain_ring.sq_pending == 0


# --------------------------------------------------------------------------
# send / recv
# --------------------------------------------------------------------------

def test_send_recv_tcp(ring, stack):
    _need("send", "recv")
    a, b = _tcp_pair(stack)
    ring.prep_send(a.fileno(), b"hello over io_uring", user_data="send")
    c = _one(ring)
    assert c.user_data == "send" and c.op == "send"
    assert c.res == len(b"hello over io_uring")
    assert b.recv(100) == b"hello over io_uring"
    buf = bytearray(64)
    ring.prep_recv(a.fileno(), buf, user_data="recv")
    ring.submit()
    _nothing_for(ring, 0.03)  # nothing to read yet
    b.sendall(b"reply")
    c = _one(ring)
    assert c.user_data == "recv" and c.op == "recv"
    assert c.res == 5 and bytes(buf[:5]) == b"reply"


def test_send_recv_unix_socketpair_large(ring, stack):
    _need("send", "recv")
    a, b = socket.socketpair()
    stack.enter_context(a)
    stack.enter_context(b)
    payload = bytes(range(256)) * 64  # 16 KiB
    out = bytearray(len(payload))
    view = memoryview(out)
    ring.prep_send(a.fileno(), payload)
    sent = _one(ring).result()
    assert 0 < sent <= len(payload)
    got = 0
    for _ in range(100):
        if got >= sent:
            break
        ring.prep_recv(b.fileno(), view[got:])
        n = _one(ring).result()
        assert n > 0
        got += n
    view.release()
    assert got == sent
    assert bytes(out[:sent]) == payload[:sent]


def test_recv_eof_returns_zero(plain_ring, stack):
    _need("recv")
    a, b = _tcp_pair(stack)
    buf = bytearray(10)
    plain_ring.prep_recv(a.fileno(), buf)
    plain_ring.submit()
    b.shutdown(socket.SHUT_WR)
    assert _one(plain_ring).res == 0


def test_recv_msg_flags_peek(plain_ring, stack):
    _need("recv")
    a, b = _tcp_pair(stack)
    b.sendall(b"peekaboo")
    time.sleep(0.01)
    buf = bytearray(4)
    plain_ring.prep_recv(a.fileno(), buf, msg_flags=socket.MSG_PEEK)
    assert _one(plain_ring).res == 4
    assert buf == b"peek"
    assert a.recv(100) == b"peekaboo"  # still all there


def test_recv_argument_checks(plain_ring, stack):
    a, b = socket.socketpair()
    stack.enter_context(a)
    stack.enter_context(b)
    with pytest.raises(ValueError):
        plain_ring.prep_recv(a.fileno())  # no buf, no group
    with pytest.raises(ValueError):
        plain_ring.prep_recv(a.fileno(), bytearray(4), multishot=True)
    with pytest.raises(ValueError):
        plain_ring.prep_recv(a.fileno(), bytearray(4), buffer_group=1)
    with pytest.raises((TypeError, BufferError)):
        plain_ring.prep_recv(a.fileno(), b"read-only")
    assert plain_ring.inflight == 0 and plain_ring.sq_pending == 0


def test_recv_buffer_pinned_while_in_flight(plain_ring, stack):
    _need("recv")
    a, b = socket.socketpair()
    stack.enter_context(a)
    stack.enter_context(b)
    buf = bytearray(8)
    plain_ring.prep_recv(a.fileno(), buf)
    plain_ring.submit()
    with pytest.raises(BufferError):
        buf.extend(b"x")
    b.sendall(b"12")
    assert _one(plain_ring).res == 2
    buf.extend(b"x")
    assert buf[:2] == b"12" and len(buf) == 9


# --------------------------------------------------------------------------
# provided-buffer rings
# --------------------------------------------------------------------------

def test_recv_with_buffer_ring(ring, stack):
    _need("recv")
    a, b = _tcp_pair(stack)
    br = _buffer_ring(ring, 7, 4, 64)
    try:
        assert (br.group_id, br.count, br.size, br.closed) == (7, 4, 64, False)
        seen = []
        for k in range(6):  # more rounds than buffers: recycling must work
            msg = f"message {k}".encode()
            b.sendall(msg)
            ring.prep_recv(a.fileno(), buffer_group=7, user_data=k)
            c = _one(ring)
            assert c.user_data == k
            assert c.flags & CQEFlag.BUFFER
            bid = c.buffer_id
            assert bid is not None and 0 <= bid < 4
            assert c.res == len(msg)
            assert bytes(br.get(bid, c.res)) == msg
            assert len(br.get(bid)) == 64
            seen.append(bid)
            br.recycle(bid)
        assert len(set(seen)) > 1  # the kernel walks the ring
    finally:
        br.close()
    assert br.closed


def test_buffer_ring_exhausted_is_enobufs(plain_ring, stack):
    _need("recv")
    a, b = _tcp_pair(stack)
    br = _buffer_ring(plain_ring, 3, 2, 16)
    try:
        bids = []
        for _ in range(2):
            b.sendall(b"x" * 4)
            plain_ring.prep_recv(a.fileno(), buffer_group=3)
            c = _one(plain_ring)
            assert c.res == 4
            bids.append(c.buffer_id)
        assert sorted(bids) == [0, 1]
        b.sendall(b"y")
        plain_ring.prep_recv(a.fileno(), buffer_group=3)
        c = _one(plain_ring)
        assert c.res == -errno.ENOBUFS
        assert c.buffer_id is None
        br.recycle(bids[0])
        plain_ring.prep_recv(a.fileno(), buffer_group=3)
        c = _one(plain_ring)
        assert c.res == 1 and c.buffer_id == bids[0]
        assert bytes(br.get(c.buffer_id, 1)) == b"y"
    finally:
        br.close()


def test_buffer_ring_argument_checks(plain_ring):
    with pytest.raises(ValueError):
        plain_ring.register_buffer_ring(1, 3, 64)  # not a power of two
    with pytest.raises(ValueError):
        plain_ring.register_buffer_ring(1, 4, 0)
    with pytest.raises(ValueError):
        plain_ring.register_buffer_ring(70000, 4, 64)
    br = _buffer_ring(plain_ring, 1, 4, 32)
    try:
        with pytest.raises(IndexError):
            br.get(4)
        with pytest.raises(IndexError):
            br.recycle(4)
        with pytest.raises(ValueError):
            br.get(0, 33)
        with pytest.raises(OSError):
            plain_ring.register_buffer_ring(1, 4, 32)  # group id taken
    finally:
        br.close()
    with pytest.raises(subring.RingClosedError):
        br.recycle(0)


def test_recv_multishot_with_buffer_ring(ring, stack):
    _need("recv", "async_cancel")
    _need_kernel(6, 0, "multishot recv")
    a, b = _tcp_pair(stack)
    br = _buffer_ring(ring, 5, 16, 16)
    try:
        ring.prep_recv(a.fileno(), buffer_group=5, multishot=True, user_data="ms")
        ring.submit()
        received = bytearray()
        chunks = 0
        # 3 sends of 40 bytes: each needs >= 3 buffers of 16 bytes
        for k in range(3):
            msg = bytes([65 + k]) * 40
            b.sendall(msg)
            target = 40 * (k + 1)
            for _ in range(50):
                if len(received) >= target:
                    break
                for c in _some(ring):
                    assert c.user_data == "ms"
                    assert c.more, f"multishot recv ended early: {c!r}"
                    assert c.res > 0 and c.buffer_id is not None
                    assert c.res <= 16
                    received += br.get(c.buffer_id, c.res)
                    br.recycle(c.buffer_id)
                    chunks += 1
            assert len(received) == target
        assert received == b"A" * 40 + b"B" * 40 + b"C" * 40
        assert chunks >= 9  # a 16-byte buffer per chunk at most
        assert ring.inflight == 1
        # EOF ends it: res 0, no MORE
        b.shutdown(socket.SHUT_WR)
        c = _one(ring)
        assert c.user_data == "ms" and c.res == 0 and not c.more
        assert ring.inflight == 0
    finally:
        br.close()


def test_recv_multishot_cancel(ring, stack):
    _need("recv", "async_cancel")
    _need_kernel(6, 0, "multishot recv")
    a, b = _tcp_pair(stack)
    br = _buffer_ring(ring, 9, 4, 64)
    try:
        tok = ring.prep_recv(a.fileno(), buffer_group=9, multishot=True, user_data="ms")
        ring.submit()
        b.sendall(b"one")
        c = _one(ring)
        assert c.more and bytes(br.get(c.buffer_id, c.res)) == b"one"
        br.recycle(c.buffer_id)
        ring.prep_cancel(tok, user_data="cancel")
        by = {c.user_data: c for c in _collect(ring, 2)}
        assert by["cancel"].res == 0
        assert by["ms"].res == -errno.ECANCELED and not by["ms"].more
        assert ring.inflight == 0
    finally:
        br.close()


# --------------------------------------------------------------------------
# sendmsg / recvmsg
# --------------------------------------------------------------------------

def test_sendmsg_recvmsg_stream(ring, stack):
    _need("sendmsg", "recvmsg")
    a, b = socket.socketpair()
    stack.enter_context(a)
    stack.enter_context(b)
    ring.prep_sendmsg(a.fileno(), [b"abc", bytearray(b"defg"), memoryview(b"hij")],
                      user_data="sm")
    c = _one(ring)
    assert c.user_data == "sm" and c.op == "sendmsg" and c.res == 10
    bufs = [bytearray(4), bytearray(2), bytearray(10)]
    ring.prep_recvmsg(b.fileno(), bufs, user_data="rm")
    c = _one(ring)
    assert c.user_data == "rm" and c.op == "recvmsg" and c.res == 10
    assert bytes(bufs[0]) == b"abcd"
    assert bytes(bufs[1]) == b"ef"
    assert bytes(bufs[2][:4]) == b"ghij"


def test_sendmsg_udp_with_address(ring, stack):
    _need("sendmsg")
    rx = stack.enter_context(socket.socket(socket.AF_INET, socket.SOCK_DGRAM))
    rx.bind((LOOPBACK, 0))
    rx.settimeout(5)
    tx = stack.enter_context(socket.socket(socket.AF_INET, socket.SOCK_DGRAM))
    tx.bind((LOOPBACK, 0))
    ring.prep_sendmsg(tx.fileno(), [b"dgram-", b"parts"], address=rx.getsockname())
    assert _one(ring).res == 11
    data, addr = rx.recvfrom(100)
    assert data == b"dgram-parts"
    assert addr == tx.getsockname()


def test_recvmsg_udp_waits_for_datagram(ring, stack):
    _need("recvmsg")
    rx = stack.enter_context(socket.socket(socket.AF_INET, socket.SOCK_DGRAM))
    rx.bind((LOOPBACK, 0))
    tx = stack.enter_context(socket.socket(socket.AF_INET, socket.SOCK_DGRAM))
    bufs = [bytearray(3), bytearray(3)]
    ring.prep_recvmsg(rx.fileno(), bufs)
    ring.submit()
    _nothing_for(ring, 0.03)
    tx.sendto(b"123456789", rx.getsockname())
    c = _one(ring)
    assert c.res == 6  # truncated datagram: only what fits
    assert bufs == [bytearray(b"123"), bytearray(b"456")]


def test_sendmsg_to_unconnected_stream_fails(plain_ring, stack):
    _need("sendmsg")
    s = stack.enter_context(socket.socket())
    plain_ring.prep_sendmsg(s.fileno(), [b"x"], msg_flags=socket.MSG_NOSIGNAL)
    c = _one(plain_ring)
    assert c.res in (-errno.EPIPE, -errno.ENOTCONN)
    with pytest.raises(OSError):
        c.result()


# --------------------------------------------------------------------------
# shutdown
# --------------------------------------------------------------------------

def test_shutdown_write_side(ring, stack):
    _need("shutdown")
    a, b = _tcp_pair(stack)
    ring.prep_shutdown(a.fileno(), socket.SHUT_WR, user_data="sd")
    c = _one(ring)
    assert c.user_data == "sd" and c.op == "shutdown" and c.res == 0
    assert b.recv(10) == b""  # EOF for the peer
    b.sendall(b"still open")  # the other direction still works
    assert a.recv(100) == b"still open"


def test_shutdown_wakes_pending_recv(ring, stack):
    _need("shutdown", "recv")
    a, _ = _tcp_pair(stack)
    buf = bytearray(8)
    ring.prep_recv(a.fileno(), buf, user_data="recv")
    ring.submit()
    _nothing_for(ring, 0.02)
    ring.prep_shutdown(a.fileno(), socket.SHUT_RDWR, user_data="sd")
    by = {c.user_data: c.res for c in _collect(ring, 2)}
    assert by["sd"] == 0
    assert by["recv"] == 0


def test_shutdown_errors(plain_ring, stack):
    _need("shutdown")
    s = stack.enter_context(socket.socket())
    r, w = os.pipe()
    stack.callback(os.close, r)
    stack.callback(os.close, w)
    plain_ring.prep_shutdown(s.fileno(), user_data="notconn")
    plain_ring.prep_shutdown(r, user_data="notsock")
    by = {c.user_data: c.res for c in _collect(plain_ring, 2)}
    assert by["notconn"] == -errno.ENOTCONN
    assert by["notsock"] == -errno.ENOTSOCK


# --------------------------------------------------------------------------
# a whole exchange driven by the ring
# --------------------------------------------------------------------------

def test_echo_roundtrip_all_on_ring(ring, stack):
    """socket -> connect -> accept -> send -> recv -> shutdown, all via io_uring."""
    _need("socket", "connect", "accept", "send", "recv", "shutdown")
    lst = _listener(stack)
    ring.prep_accept(lst.fileno(), user_data="accept")
    ring.prep_socket(socket.AF_INET, socket.SOCK_STREAM, user_data="socket")
    by = {}
    for c in _collect(ring, 1):
        by[c.user_data] = c
    # accept is still pending (no client yet); the socket completed
    assert set(by) == {"socket"}
    cli = _adopt(stack, by["socket"].result())
    ring.prep_connect(cli.fileno(), lst.getsockname(), user_data="connect")
    by = {c.user_data: c for c in _collect(ring, 2)}
    assert by["connect"].res == 0
    srv = _adopt(stack, by["accept"].result())
    ring.prep_send(cli.fileno(), b"echo me", user_data="send", flags=SQE.LINK)
    ring.prep_shutdown(cli.fileno(), socket.SHUT_WR, user_data="shut")
    buf = bytearray(32)
    ring.prep_recv(srv.fileno(), buf, user_data="recv")
    by = {c.user_data: c for c in _collect(ring, 3)}
    assert by["send"].res == 7 and by["shut"].res == 0
    n = by["recv"].res
    assert 0 < n <= 7 and bytes(buf[:n]) == b"echo me"[:n]


def test_buffer_ring_recycle_refuses_buffers_you_do_not_hold(plain_ring, stack):
    """Issue 13 (11): recycle() accepted any buffer id -- one the kernel still
    held (never delivered), or the same id twice -- and so could overrun the
    ring.  Only a buffer a completion delivered, not recycled since, goes
    back."""
    _need("recv")
    a, b = _tcp_pair(stack)
    br = _buffer_ring(plain_ring, 9, 2, 16)
    try:
        for bid in range(2):
            with pytest.raises(ValueError, match="not yours"):
                br.recycle(bid)                 # the kernel holds both
        b.sendall(b"abc")
        plain_ring.prep_recv(a.fileno(), buffer_group=9)
        c = _one(plain_ring)
        assert c.res == 3
        br.recycle(c.buffer_id)                 # delivered: fine
        with pytest.raises(ValueError, match="not yours"):
            br.recycle(c.buffer_id)             # twice: refused
        # the ring still holds exactly its 2 buffers: 2 recvs work, a 3rd
        # finds none (an overrun would have handed out a duplicate)
        bids = []
        for _ in range(2):
            b.sendall(b"x")
            plain_ring.prep_recv(a.fileno(), buffer_group=9)
            c = _one(plain_ring)
            assert c.res == 1
            bids.append(c.buffer_id)
        assert sorted(bids) == [0, 1]
        b.sendall(b"y")
        plain_ring.prep_recv(a.fileno(), buffer_group=9)
        assert _one(plain_ring).res == -errno.ENOBUFS
    finally:
        br.close()


def test_buffer_ring_in_a_fork_child_raises_forked_ring_error(plain_ring):
    """Issue 13 (11): a BufferRing used in a fork child raised nothing (its
    ring refuses with ForkedRingError; the buffer ring did not)."""
    br = _buffer_ring(plain_ring, 11, 4, 16)
    try:
        r, w = os.pipe()
        pid = os.fork()
        if pid == 0:                 # child: report, never return into pytest
            code = 0
            for call in (lambda: br.recycle(0), lambda: br.get(0)):
                try:
                    call()
                    code |= 1
                except subring.ForkedRingError:
                    pass
                except BaseException:
                    code |= 2
            br.close()                # lets go of the parent's registration quietly
            os.write(w, bytes([code]))
            os._exit(0)
        os.close(w)
        try:
            got = os.read(r, 1)
        finally:
            os.close(r)
            os.waitpid(pid, 0)
        assert got == b"\x00"
        assert not br.closed          # the child's close did not touch the parent
        assert len(br.get(0)) == 16
    finally:
        br.close()
