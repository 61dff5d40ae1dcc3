"""Linked operations against the real kernel: LINK, HARDLINK, DRAIN and
CQE_SKIP_SUCCESS, and subring's bookkeeping of them (one final completion per
op, slots and buffers released)."""

from __future__ import annotations

import errno
import os
import time
import warnings

import pytest

import subring
from subring import SQE, Feature, KernelRing, RingFullError
from ringhelpers import collect as _collect, need as _need, run_child

LINK = SQE.LINK
HARDLINK = SQE.HARDLINK
SKIP = SQE.SKIP_SUCCESS


def _need_skip() -> None:
    if not subring.probe().features & Feature.CQE_SKIP:
        pytest.skip("kernel lacks IOSQE_CQE_SKIP_SUCCESS (FEAT_CQE_SKIP)")


def _nothing_for(ring, seconds: float) -> None:
    ring.submit_and_wait(1, seconds)
    got = ring.reap()
    assert got == [], f"unexpected completions: {got!r}"


def _bad_fd() -> int:
    fd = os.open("/", os.O_RDONLY)
    os.close(fd)
    return fd


# --------------------------------------------------------------------------
# LINK
# --------------------------------------------------------------------------

def test_link_chain_runs_in_order(ring, tmp_path):
    _need("nop", "write", "read", "fsync")
    fd = os.open(tmp_path / "f", os.O_CREAT | os.O_RDWR, 0o600)
    try:
        out = bytearray(11)
        ring.prep_nop(user_data=0, flags=LINK)
        ring.prep_write(fd, b"hello", 0, user_data=1, flags=LINK)
        ring.prep_write(fd, b" world", 5, user_data=2, flags=LINK)
        ring.prep_fsync(fd, user_data=3, flags=LINK)
        ring.prep_read(fd, out, 0, user_data=4, flags=LINK)
        ring.prep_nop(user_data=5)
        cs = _collect(ring, 6)
        assert [c.user_data for c in cs] == [0, 1, 2, 3, 4, 5]
        assert [c.res for c in cs] == [0, 5, 6, 0, 11, 0]
        assert out == b"hello world"  # the read saw both writes
    finally:
        os.close(fd)
    assert ring.inflight == 0


def test_link_chain_waits_for_slow_head(ring, pipe):
    _need("read", "nop")
    r, w = pipe
    buf = bytearray(3)
    ring.prep_read(r, buf, user_data="read", flags=LINK)
    ring.prep_nop(user_data="nop")
    ring.submit()
    _nothing_for(ring, 0.03)  # the NOP waits for the read
    assert ring.inflight == 2
    os.write(w, b"abc")
    cs = _collect(ring, 2)
    assert [c.user_data for c in cs] == ["read", "nop"]
    assert [c.res for c in cs] == [3, 0]


def test_link_chain_failing_midway(ring):
    _need("nop", "read")
    bad = _bad_fd()
    bufs = [bytearray(4) for _ in range(5)]
    ring.prep_nop(user_data=0, flags=LINK)
    ring.prep_nop(user_data=1, flags=LINK)
    ring.prep_read(bad, bufs[2], 0, user_data=2, flags=LINK)
    ring.prep_read(bad, bufs[3], 0, user_data=3, flags=LINK)
    ring.prep_nop(user_data=4)
    cs = _collect(ring, 5)
    res = {c.user_data: c.res for c in cs}
    assert res == {0: 0, 1: 0, 2: -errno.EBADF, 3: -errno.ECANCELED, 4: -errno.ECANCELED}
    assert len({c.user_data for c in cs}) == 5  # each op exactly once
    with pytest.raises(OSError) as ei:
        next(c for c in cs if c.user_data == 4).result()
    assert ei.value.errno == errno.ECANCELED
    assert ring.inflight == 0
    _nothing_for(ring, 0.02)
    for b in bufs:  # all unpinned
        b.extend(b"!")


def test_link_short_read_breaks_chain(plain_ring, tmp_path):
    """A short read counts as a failure for links."""
    _need("read", "nop")
    (tmp_path / "small").write_bytes(b"0123456789")
    fd = os.open(tmp_path / "small", os.O_RDONLY)
    try:
        buf = bytearray(100)
        plain_ring.prep_read(fd, buf, 0, user_data="read", flags=LINK)
        plain_ring.prep_nop(user_data="nop")
        res = {c.user_data: c.res for c in _collect(plain_ring, 2)}
        assert res == {"read": 10, "nop": -errno.ECANCELED}
    finally:
        os.close(fd)


def test_link_chain_ends_at_submission_boundary(ring):
    """The last op carrying LINK in a submission ends its chain; the next
    submission is independent (its failure does not reach back)."""
    _need("nop", "read")
    ring.prep_nop(user_data="a", flags=LINK)
    ring.submit()
    ring.prep_read(_bad_fd(), bytearray(1), user_data="b")
    res = {c.user_data: c.res for c in _collect(ring, 2)}
    assert res == {"a": 0, "b": -errno.EBADF}


def test_independent_chains_in_one_submission(ring):
    _need("nop", "read")
    bad = _bad_fd()
    ring.prep_read(bad, bytearray(1), user_data=("x", 0), flags=LINK)
    ring.prep_nop(user_data=("x", 1))
    ring.prep_nop(user_data=("y", 0), flags=LINK)
    ring.prep_nop(user_data=("y", 1))
    res = {c.user_data: c.res for c in _collect(ring, 4)}
    assert res == {("x", 0): -errno.EBADF, ("x", 1): -errno.ECANCELED,
                   ("y", 0): 0, ("y", 1): 0}


def test_link_chain_longer_than_sq_is_refused(make_ring):
    _need("nop")
    ring = make_ring(8)
    n = ring.sq_entries
    for k in range(n):
        ring.prep_nop(user_data=k, flags=LINK)
    with pytest.raises(RingFullError):
        ring.prep_nop(user_data="overflow")
    assert ring.inflight == n  # the refused op took nothing
    cs = _collect(ring, n)
    # the withdrawn chain: each op completes once, cancelled, in chain order
    assert [c.user_data for c in cs] == list(range(n))
    assert all(c.res == -errno.ECANCELED for c in cs)
    assert ring.inflight == 0
    ring.prep_nop(user_data="after")           # the ring works on
    assert [(c.user_data, c.res) for c in _collect(ring, 1)] == [("after", 0)]


def test_truncated_link_chain_does_not_run_after_ring_full(make_ring, tmp_path):
    """Issue 13 (11): after RingFullError inside a link chain, the part of the
    chain prepared so far used to run on the next submit -- a chain cut in
    two, its first half executed.  It is withdrawn instead: nothing of it runs,
    each op completes once with -ECANCELED, its buffers are released."""
    _need("write")
    ring = make_ring(8)
    fd = os.open(tmp_path / "f", os.O_CREAT | os.O_RDWR, 0o600)
    try:
        bufs = [bytearray(b"%02d" % k) for k in range(ring.sq_entries)]
        for k, b in enumerate(bufs):
            ring.prep_write(fd, b, 2 * k, user_data=k, flags=LINK)
        with pytest.raises(RingFullError, match="withdrawn"):
            ring.prep_write(fd, b"zz", 0, user_data="overflow")
        ring.submit()
        cs = _collect(ring, len(bufs))
        assert {c.res for c in cs} == {-errno.ECANCELED}
        assert sorted(c.user_data for c in cs) == list(range(len(bufs)))
        _nothing_for(ring, 0.05)
        assert os.fstat(fd).st_size == 0, "a withdrawn chain op ran"
        for b in bufs:
            b.extend(b"!")       # unpinned
        assert ring.inflight == 0
    finally:
        os.close(fd)


# --------------------------------------------------------------------------
# HARDLINK
# --------------------------------------------------------------------------

def test_hardlink_continues_after_failure(ring):
    _need("nop", "read")
    bad = _bad_fd()
    ring.prep_nop(user_data=0, flags=HARDLINK)
    ring.prep_read(bad, bytearray(4), user_data=1, flags=HARDLINK)
    ring.prep_nop(user_data=2, flags=HARDLINK)
    ring.prep_nop(user_data=3)
    cs = _collect(ring, 4)
    assert [c.user_data for c in cs] == [0, 1, 2, 3]
    assert [c.res for c in cs] == [0, -errno.EBADF, 0, 0]
    assert ring.inflight == 0


def test_hardlink_then_link_failure(plain_ring):
    _need("nop", "read")
    bad = _bad_fd()
    plain_ring.prep_read(bad, bytearray(4), user_data=0, flags=HARDLINK)
    plain_ring.prep_read(bad, bytearray(4), user_data=1, flags=LINK)  # fails: breaks here
    plain_ring.prep_nop(user_data=2)
    res = {c.user_data: c.res for c in _collect(plain_ring, 3)}
    assert res == {0: -errno.EBADF, 1: -errno.EBADF, 2: -errno.ECANCELED}


# --------------------------------------------------------------------------
# DRAIN
# --------------------------------------------------------------------------

def test_drain_waits_for_everything_before(ring, pipe):
    _need("nop", "read")
    r, w = pipe
    buf = bytearray(2)
    ring.prep_read(r, buf, user_data="read")
    ring.prep_nop(user_data="drained", flags=SQE.DRAIN)
    ring.prep_nop(user_data="after")
    ring.submit()
    _nothing_for(ring, 0.05)  # the drained NOP (and what follows) wait
    assert ring.inflight == 3
    os.write(w, b"go")
    cs = _collect(ring, 3)
    order = [c.user_data for c in cs]
    assert order[0] == "read"
    assert order.index("drained") < order.index("after")
    assert all(c.res >= 0 for c in cs)


def test_drain_without_pending_ops_runs_at_once(plain_ring):
    _need("nop")
    plain_ring.prep_nop(user_data="a")
    plain_ring.prep_nop(user_data="b", flags=SQE.DRAIN)
    cs = _collect(plain_ring, 2, timeout=2)
    assert [c.user_data for c in cs] == ["a", "b"]


# --------------------------------------------------------------------------
# CQE_SKIP_SUCCESS
# --------------------------------------------------------------------------

def test_skip_success_needs_link(plain_ring):
    _need_skip()
    with pytest.raises(ValueError):
        plain_ring.prep_nop(flags=SKIP)
    with pytest.raises(ValueError):
        plain_ring.prep_read(0, bytearray(1), flags=SKIP)
    with pytest.raises(ValueError):
        plain_ring.prep_nops(2, flags=SKIP | LINK)
    assert plain_ring.inflight == 0 and plain_ring.sq_pending == 0


def test_skip_success_suppresses_and_releases(ring):
    _need_skip()
    ring.prep_nop(user_data="s1", flags=SKIP | LINK)
    ring.prep_nop(user_data="s2", flags=SKIP | LINK)
    ring.prep_nop(user_data="last")
    assert ring.inflight == 3
    cs = _collect(ring, 1)
    assert [c.user_data for c in cs] == ["last"]
    assert cs[0].res == 0
    assert ring.inflight == 0  # the skipped ops' slots were released
    _nothing_for(ring, 0.03)
    st = ring.statistics()
    assert st.inflight == 0


def test_skip_success_unpins_buffers(ring, tmp_path):
    _need_skip()
    _need("write", "read", "nop")
    fd = os.open(tmp_path / "f", os.O_CREAT | os.O_RDWR, 0o600)
    try:
        wbuf = bytearray(b"payload!")
        rbuf = bytearray(8)
        ring.prep_write(fd, wbuf, 0, user_data="w", flags=SKIP | LINK)
        ring.prep_read(fd, rbuf, 0, user_data="r", flags=SKIP | LINK)
        ring.prep_nop(user_data="end")
        ring.submit()
        with pytest.raises(BufferError):
            wbuf.extend(b"x")  # pinned while in flight
        (c,) = _collect(ring, 1)
        assert c.user_data == "end" and c.res == 0
        assert rbuf == b"payload!"
        assert ring.inflight == 0
        wbuf.extend(b"x")  # both released with the chain's last completion
        rbuf.extend(b"x")
    finally:
        os.close(fd)


def test_skip_success_unpins_registered_buffer_use(ring, tmp_path):
    _need_skip()
    _need("read_fixed", "nop")
    (tmp_path / "f").write_bytes(b"fixed-data")
    fd = os.open(tmp_path / "f", os.O_RDONLY)
    try:
        reg = bytearray(64)
        ring.register_buffers([reg])
        ring.prep_read_fixed(fd, 0, 0, 10, user_data="rf", flags=SKIP | LINK)
        ring.prep_nop(user_data="end")
        (c,) = _collect(ring, 1)
        assert c.user_data == "end"
        assert reg[:10] == b"fixed-data"
        ring.unregister_buffers()  # no RingBusyError: the fixed op was retired
        reg.extend(b"x")
    finally:
        os.close(fd)


def test_skip_success_failing_op_posts_error(ring):
    """A skipped op that fails posts its error; the chain's non-skip tail
    still reports (here via HARDLINK, which keeps the chain going)."""
    _need_skip()
    _need("read", "nop")
    bad = _bad_fd()
    buf = bytearray(4)
    ring.prep_nop(user_data="ok", flags=SKIP | LINK)
    ring.prep_read(bad, buf, user_data="bad", flags=SKIP | HARDLINK)
    ring.prep_nop(user_data="end")
    cs = _collect(ring, 2)
    res = {c.user_data: c.res for c in cs}
    assert res == {"bad": -errno.EBADF, "end": 0}
    assert ring.inflight == 0
    _nothing_for(ring, 0.03)
    buf.extend(b"x")


def test_skip_success_failing_last_in_chain(ring):
    _need_skip()
    _need("read", "nop")
    ring.prep_nop(user_data="ok", flags=SKIP | LINK)
    ring.prep_read(_bad_fd(), bytearray(4), user_data="bad")
    (c,) = _collect(ring, 1)
    assert c.user_data == "bad" and c.res == -errno.EBADF
    assert ring.inflight == 0


def test_skip_then_non_skip_failure(ring):
    """NOP(skip) -> read(bad, LINK) -> NOP: the read reports, the tail is
    cancelled and reports, the skipped head is released."""
    _need_skip()
    _need("read", "nop")
    ring.prep_nop(user_data="head", flags=SKIP | LINK)
    ring.prep_read(_bad_fd(), bytearray(4), user_data="bad", flags=LINK)
    ring.prep_nop(user_data="tail")
    res = {c.user_data: c.res for c in _collect(ring, 2)}
    assert res == {"bad": -errno.EBADF, "tail": -errno.ECANCELED}
    assert ring.inflight == 0
    _nothing_for(ring, 0.03)


def test_regression_skip_success_failure_leaves_cancelled_successors_in_flight():
    """A failing CQE_SKIP_SUCCESS op in a LINK chain: the kernel posts its
    error CQE and cancels the rest of the chain *without* CQEs (io_uring_enter(2):
    "if there is no IOSQE_IO_HARDLINK, CQEs for all linked requests will be
    omitted").  subring used to wait for CQEs that never came (ops in flight
    forever, buffers pinned); it must make up one -ECANCELED completion for
    each silently cancelled op."""
    _need_skip()
    _need("read", "nop")
    ring = KernelRing(16)
    buf = bytearray(4)
    try:
        ring.prep_nop(user_data="ok", flags=SKIP | LINK)
        ring.prep_read(_bad_fd(), bytearray(4), user_data="bad", flags=SKIP | LINK)
        ring.prep_read(_bad_fd(), buf, user_data="cancelled")
        got = _collect(ring, 2)
        assert [(c.user_data, c.res) for c in got] == [
            ("bad", -errno.EBADF), ("cancelled", -errno.ECANCELED)]
        _nothing_for(ring, 0.1)
        assert ring.inflight == 0
        buf.extend(b"x")  # unpinned
    finally:
        ring.close(timeout=0.2)


def test_skip_success_chain_failure_completes_every_cancelled_member(ring):
    """Issue 13 (3): a failing SKIP_SUCCESS head cancels the rest of its chain
    without CQEs; only the *last* member used to get its made-up completion
    (the middle one was released silently, as if it had succeeded)."""
    _need_skip()
    _need("read", "nop")
    buf = bytearray(4)
    ring.prep_read(-1, buf, 0, "a", flags=LINK | SKIP)
    ring.prep_nop("b", flags=LINK | SKIP)
    ring.prep_nop("c")
    got = _collect(ring, 3)
    assert [(c.user_data, c.res) for c in got] == [
        ("a", -errno.EBADF), ("b", -errno.ECANCELED), ("c", -errno.ECANCELED)]
    assert ring.inflight == 0
    _nothing_for(ring, 0.05)
    buf.extend(b"x")


def test_close_with_failed_skip_success_chain_is_prompt_and_releases(ring):
    """Issue 13 (3): with such a chain in flight close() waited its full
    timeout for completions that never come, then leaked the buffers."""
    _need_skip()
    _need("read", "nop")
    buf = bytearray(4)
    ring.prep_read(-1, buf, 0, "a", flags=LINK | SKIP)
    ring.prep_nop("b", flags=LINK | SKIP)
    ring.prep_nop("c")
    ring.submit()
    t0 = time.monotonic()
    ring.close(timeout=3)
    assert time.monotonic() - t0 < 1.5
    buf.extend(b"x")          # released, not leaked


def test_wait_refuses_to_count_skip_success_ops_as_completing():
    """Issue 13 (3): prep_nop(LINK|SKIP_SUCCESS); prep_nop(); submit_and_wait(2)
    with no timeout blocked forever: the skipped op was counted as an op that
    will complete.  Run in a child process so the old behaviour fails the test
    instead of hanging it."""
    _need_skip()
    code = """
import subring
from subring import KernelRing, SQE
r = KernelRing(8)
r.prep_nop("a", flags=SQE.LINK | SQE.SKIP_SUCCESS)
r.prep_nop("b")
try:
    r.submit_and_wait(2)
except ValueError as e:
    print("refused")
print([c.user_data for c in r.wait(1, 5)])
r.close()
"""
    out = run_child(code, timeout=20)
    assert out.split() == ["refused", "['b']"]


def test_skip_success_last_op_of_submission_still_completes(ring):
    """Nothing follows it, so the library turns the skip off: the op posts
    its completion and nothing leaks."""
    _need_skip()
    _need("nop")
    ring.prep_nop(user_data="solo", flags=SKIP | LINK)
    (c,) = _collect(ring, 1)
    assert c.user_data == "solo" and c.res == 0
    assert ring.inflight == 0
    # again, after other ops
    ring.prep_nop(user_data="a")
    ring.prep_nop(user_data="b", flags=SKIP | LINK)
    ring.submit()
    ring.prep_nop(user_data="c")  # a later submission: not b's successor
    res = {c.user_data: c.res for c in _collect(ring, 3)}
    assert res == {"a": 0, "b": 0, "c": 0}
    assert ring.inflight == 0


def test_skip_success_last_op_buffer_released(ring, pipe):
    _need_skip()
    _need("write")
    _, w = pipe
    data = bytearray(b"tail")
    ring.prep_write(w, data, user_data="w", flags=SKIP | LINK)
    (c,) = _collect(ring, 1)
    assert c.user_data == "w" and c.res == 4
    data.extend(b"!")
    assert ring.inflight == 0


def test_skip_success_followed_by_batch_prep(ring):
    """A skipped op followed by a batch (prep_nops): nothing may leak."""
    _need_skip()
    _need("nop")
    ring.prep_nop(user_data="s", flags=SKIP | LINK)
    ring.prep_nops(3, user_data=100)
    deadline = time.monotonic() + 5
    got = []
    while ring.inflight and time.monotonic() < deadline:
        ring.submit_and_wait(1, 0.2)
        got += ring.reap()
    assert ring.inflight == 0, got
    uds = sorted(c.user_data for c in got if c.user_data != "s")
    assert uds == [100, 101, 102]
    assert sum(1 for c in got if c.user_data == "s") <= 1


def test_skip_success_on_every_op_but_last_of_long_chain(ring, tmp_path):
    _need_skip()
    _need("write", "nop")
    fd = os.open(tmp_path / "f", os.O_CREAT | os.O_RDWR, 0o600)
    try:
        bufs = [bytes([65 + k]) * 4 for k in range(10)]
        for k, b in enumerate(bufs):
            ring.prep_write(fd, b, 4 * k, user_data=k, flags=SKIP | LINK)
        ring.prep_nop(user_data="end")
        (c,) = _collect(ring, 1)
        assert c.user_data == "end"
        assert ring.inflight == 0
        assert os.pread(fd, 40, 0) == b"".join(bufs)
    finally:
        os.close(fd)


def test_close_with_an_unsubmitted_open_link_chain_is_prompt(ring, pipe):
    """close() appends its cancel-everything SQE after the prepared ops; with
    a link chain still open (its last op carries LINK) that cancel would join
    the chain and wait behind the blocked read it is meant to cancel (only
    the periodic re-cancel freed it).  The open chain is withdrawn first: it
    never runs, close() is prompt and warns about nothing."""
    _need("read", "async_cancel")
    rd, _ = pipe
    buf = bytearray(4)
    ring.prep_nop("first")
    ring.prep_read(rd, buf, -1, "blocked", flags=LINK)   # empty pipe: would block
    t0 = time.monotonic()
    with warnings.catch_warnings():
        warnings.simplefilter("error", ResourceWarning)   # a leak warning fails the test
        ring.close(timeout=2)
    assert time.monotonic() - t0 < 1.0
    buf.extend(b"x")                                    # released


def test_empty_batch_does_not_end_an_open_link_chain(make_ring):
    """prep_nops(0) / prep_reads with no offsets prepared nothing but marked
    the open chain closed, while the SQE before still carried LINK: the ring's
    idea of the chain and the kernel's parted (a later withdrawal missed the
    chain's head; close()'s cancel joined the chain)."""
    _need("nop")
    ring = make_ring(8)
    ring.prep_nop(user_data="head", flags=LINK)
    assert ring.prep_nops(0) == 0
    assert ring.prep_reads(-1, bytearray(8), 8, []) == 0
    for k in range(ring.sq_entries - 1):
        ring.prep_nop(user_data=k, flags=LINK)
    with pytest.raises(RingFullError, match="withdrawn"):
        ring.prep_nop(user_data="overflow", flags=LINK)
    got = _collect(ring, ring.sq_entries)
    assert [c.user_data for c in got] == ["head"] + list(range(ring.sq_entries - 1))
    assert {c.res for c in got} == {-errno.ECANCELED}      # the head did not run either
