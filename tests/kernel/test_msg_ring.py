"""IORING_OP_MSG_RING: ring A posts a completion into ring B."""

from __future__ import annotations

import errno
import os

import pytest

import subring
from subring import KernelRing
from ringhelpers import collect as _collect


@pytest.fixture(autouse=True)
def _need_msg_ring():
    if not subring.probe().supports("msg_ring"):
        pytest.skip("kernel lacks IORING_OP_MSG_RING")



@pytest.fixture
def target():
    r = KernelRing(16)
    yield r
    r.close()


def test_msg_ring_delivers_raw_user_data_and_res(ring, target):
    """Ring A (every configuration) -> ring B (default)."""
    ring.prep_msg_ring(target.fd, 42, 0xDEAD_BEEF_1234, user_data="sent")
    (a,) = _collect(ring, 1)
    assert a.user_data == "sent" and a.op == "msg_ring" and a.res == 0
    (b,) = _collect(target, 1)
    assert b.user_data == 0xDEAD_BEEF_1234
    assert isinstance(b.user_data, int)
    assert b.res == 42
    assert b.result() == 42
    assert not b.more
    st = target.statistics()
    assert st.foreign_completions == 1
    assert st.inflight == 0
    assert ring.statistics().foreign_completions == 0


def test_msg_ring_into_every_configuration(make_ring, plain_ring):
    """Ring A (default) -> ring B (every configuration, incl. DEFER_TASKRUN
    where the target must wait to run the task work that posts it)."""
    b = make_ring()
    plain_ring.prep_msg_ring(b.fd, 7, 1234)
    (a,) = _collect(plain_ring, 1)
    assert a.res == 0
    (c,) = _collect(b, 1)
    assert (c.user_data, c.res) == (1234, 7)
    assert b.statistics().foreign_completions == 1


def test_msg_ring_negative_res_and_large_user_data(plain_ring, target):
    plain_ring.prep_msg_ring(target.fd, -errno.EPIPE, (1 << 64) - 1)
    assert _collect(plain_ring, 1)[0].res == 0
    (b,) = _collect(target, 1)
    assert b.user_data == (1 << 64) - 1
    assert b.res == -errno.EPIPE
    with pytest.raises(BrokenPipeError):
        b.result()


def test_msg_ring_several_messages(ring, target):
    for k in range(5):
        ring.prep_msg_ring(target.fd, k, 1000 + k)
    assert [c.res for c in _collect(ring, 5)] == [0] * 5
    got = _collect(target, 5)
    assert sorted((c.user_data, c.res) for c in got) == [(1000 + k, k) for k in range(5)]
    assert target.statistics().foreign_completions == 5


def test_msg_ring_alongside_own_ops(ring, target):
    """B's own ops and foreign completions do not get mixed up."""
    target.prep_nop(user_data="own")
    target.submit()
    ring.prep_msg_ring(target.fd, 1, 99)
    _collect(ring, 1)
    got = {c.user_data: c.res for c in _collect(target, 2)}
    assert got == {"own": 0, 99: 1}
    st = target.statistics()
    assert st.foreign_completions == 1
    assert st.inflight == 0


def test_msg_ring_to_self(ring):
    ring.prep_msg_ring(ring.fd, 5, 0xABCDEF, user_data="self")
    got = {c.user_data: c.res for c in _collect(ring, 2)}
    assert got == {"self": 0, 0xABCDEF: 5}
    assert ring.statistics().foreign_completions == 1


def test_msg_ring_to_non_ring_fd(plain_ring):
    r, w = os.pipe()
    try:
        plain_ring.prep_msg_ring(r, 1, 2)
        (c,) = _collect(plain_ring, 1)
        assert c.res == -errno.EBADFD
    finally:
        os.close(r)
        os.close(w)


def test_msg_ring_to_closed_ring(plain_ring):
    other = KernelRing(8)
    fd = other.fd
    other.close()
    plain_ring.prep_msg_ring(fd, 1, 2)
    (c,) = _collect(plain_ring, 1)
    assert c.res == -errno.EBADF


def test_regression_msg_ring_user_data_zero_is_delivered(plain_ring, target):
    """prep_msg_ring promises "the target sees it as a completion whose
    user_data is that raw int"; with target_user_data=0 reap() silently drops
    the CQE (0 is treated as subring's internal close-time cancel)."""
    plain_ring.prep_msg_ring(target.fd, 17, 0)
    assert _collect(plain_ring, 1)[0].res == 0
    ready = target.submit_and_wait(1, 2.0)
    assert ready == 1  # the kernel did post it into B's CQ
    got = target.reap()
    assert [(c.user_data, c.res) for c in got] == [(0, 17)], (
        f"CQ had {ready} CQE(s), reap() returned {got!r}")
    assert target.statistics().foreign_completions == 1


def test_msg_ring_cqe_carrying_a_live_token_does_not_complete_that_op(plain_ring, target):
    """Issue 13 (9): a MSG_RING CQE whose user_data equals a live op's token
    completed that op early and released its buffer while the kernel still
    owned the read.  The target ring now knows which CQEs it issued: the
    message is a foreign completion, the read completes once, later, with
    its data in its (still pinned) buffer."""
    rd, wr = os.pipe()
    try:
        buf = bytearray(4)
        tok = target.prep_read(rd, buf, -1, "the-read")
        target.submit()
        plain_ring.prep_msg_ring(target.fd, 7, tok, "sender")
        _collect(plain_ring, 1)
        (c,) = _collect(target, 1)
        assert c.user_data == tok and c.res == 7 and c.op == "op"   # foreign
        assert target.inflight == 1
        assert target.statistics().foreign_completions == 1
        with pytest.raises(BufferError):
            buf.extend(b"x")          # still pinned for the kernel
        os.write(wr, b"abcd")
        (c,) = _collect(target, 1)
        assert (c.user_data, c.res, bytes(buf)) == ("the-read", 4, b"abcd")
        assert target.inflight == 0
    finally:
        os.close(rd)
        os.close(wr)
