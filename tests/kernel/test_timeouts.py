"""Timeouts: prep_timeout (relative, absolute, count-based, multishot),
timeout_remove and link_timeout, against the real kernel."""

from __future__ import annotations

import errno
import os
import time

import pytest

from subring import SQE, CQEFlag
from ringhelpers import collect as _collect, need as _need, one as _one, run_child


def _some(ring, timeout: float = 5.0) -> list:
    """At least one completion (all that are ready) within timeout."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        ring.submit_and_wait(1, min(deadline - time.monotonic(), 0.5))
        got = ring.reap()
        if got:
            return got
    raise AssertionError(f"no completion within {timeout}s")


def _finals_after_cancel(ring, target_ud, cancel_ud, limit: int = 20):
    """Reap until both the target's final completion and the cancel's
    completion arrived; extra multishot shots (MORE) that raced the cancel
    are allowed.  Returns (final, cancel, n_extra_shots)."""
    final = cancel = None
    extra = 0
    for _ in range(limit):
        for c in _some(ring):
            if c.user_data == cancel_ud:
                assert cancel is None, "cancel completed twice"
                cancel = c
            elif c.user_data == target_ud:
                assert final is None, f"completion after the final one: {c!r}"
                if c.more:
                    extra += 1
                else:
                    final = c
            else:
                raise AssertionError(f"unexpected completion {c!r}")
        if final is not None and cancel is not None:
            return final, cancel, extra
    raise AssertionError("no final completion after cancel")


def _nothing_for(ring, seconds: float) -> None:
    ring.submit_and_wait(1, seconds)
    got = ring.reap()
    assert got == [], f"unexpected completions: {got!r}"


# --------------------------------------------------------------------------
# prep_timeout
# --------------------------------------------------------------------------

def test_timeout_expires_with_etime_on_time(ring):
    _need("timeout")
    t0 = time.monotonic()
    tok = ring.prep_timeout(0.1, user_data="t")
    assert isinstance(tok, int)
    c = _one(ring)
    elapsed = time.monotonic() - t0
    assert c.user_data == "t" and c.op == "timeout"
    assert c.res == -errno.ETIME
    assert not c.more
    with pytest.raises(OSError) as ei:
        c.result()
    assert ei.value.errno == errno.ETIME
    assert 0.09 <= elapsed < 1.0, elapsed
    assert ring.inflight == 0


def test_timeout_does_not_fire_early(plain_ring):
    _need("timeout")
    t0 = time.monotonic()
    plain_ring.prep_timeout(0.2)
    plain_ring.submit()
    _nothing_for(plain_ring, 0.1)
    c = _one(plain_ring)
    assert c.res == -errno.ETIME
    assert time.monotonic() - t0 >= 0.19


def test_timeouts_complete_in_deadline_order(ring):
    _need("timeout")
    ring.prep_timeout(0.15, user_data="late")
    ring.prep_timeout(0.02, user_data="early")
    ring.prep_timeout(0.08, user_data="middle")
    cs = _collect(ring, 3)
    assert [c.user_data for c in cs] == ["early", "middle", "late"]
    assert all(c.res == -errno.ETIME for c in cs)


def test_timeout_zero_seconds(plain_ring):
    _need("timeout")
    plain_ring.prep_timeout(0)
    assert _one(plain_ring).res == -errno.ETIME


def test_timeout_etime_success(plain_ring):
    _need("timeout")
    plain_ring.prep_timeout(0.01, etime_success=True)
    c = _one(plain_ring)
    # ETIME_SUCCESS (5.16+) only changes link behaviour; the res stays -ETIME
    assert c.res == -errno.ETIME


def test_timeout_absolute(ring):
    _need("timeout")
    t0 = time.monotonic()
    deadline = time.clock_gettime(time.CLOCK_MONOTONIC) + 0.1
    ring.prep_timeout(deadline, absolute=True)
    c = _one(ring)
    assert c.res == -errno.ETIME
    assert 0.08 <= time.monotonic() - t0 < 1.0
    # an absolute time in the past fires at once
    ring.prep_timeout(1.0, absolute=True)
    t1 = time.monotonic()
    assert _one(ring).res == -errno.ETIME
    assert time.monotonic() - t1 < 0.5


def test_timeout_argument_checks(plain_ring):
    with pytest.raises(ValueError):
        plain_ring.prep_timeout(-1)
    assert plain_ring.inflight == 0 and plain_ring.sq_pending == 0


def test_timeout_count_completes_after_n_completions(ring):
    _need("timeout", "nop")
    ring.prep_timeout(10.0, count=3, user_data="count")
    ring.submit()
    _nothing_for(ring, 0.02)
    ring.prep_nop(user_data=1)
    ring.prep_nop(user_data=2)
    cs = _collect(ring, 2)
    assert sorted(c.user_data for c in cs) == [1, 2]
    assert ring.inflight == 1  # not yet: 2 of 3
    ring.prep_nop(user_data=3)
    t0 = time.monotonic()
    by = {c.user_data: c for c in _collect(ring, 2)}
    assert by[3].res == 0
    assert by["count"].res == 0  # satisfied by count, not expired
    assert time.monotonic() - t0 < 2.0
    assert ring.inflight == 0


def test_timeout_count_expires_if_too_few_completions(ring):
    _need("timeout", "nop")
    ring.prep_timeout(0.05, count=5, user_data="count")
    ring.prep_nop(user_data="nop")
    by = {c.user_data: c for c in _collect(ring, 2)}
    assert by["nop"].res == 0
    assert by["count"].res == -errno.ETIME


# --------------------------------------------------------------------------
# multishot timeouts
# --------------------------------------------------------------------------

def _need_multishot_timeout(ring):
    _need("timeout")
    # probe for real: IORING_TIMEOUT_MULTISHOT is 6.4+
    ring.prep_timeout(0.001, count=1, multishot=True, user_data="probe")
    c = _one(ring)
    if c.res == -errno.EINVAL:
        pytest.skip("kernel lacks IORING_TIMEOUT_MULTISHOT")
    assert c.res == -errno.ETIME and not c.more


def test_timeout_multishot_until_removed(ring):
    _need("timeout_remove")
    _need_multishot_timeout(ring)
    t0 = time.monotonic()
    tok = ring.prep_timeout(0.03, multishot=True, user_data="ms")
    ring.submit()
    shots = []
    for _ in range(3):
        (c,) = _collect(ring, 1)
        assert c.user_data == "ms"
        assert c.res == -errno.ETIME
        assert c.more and c.flags & CQEFlag.MORE
        shots.append(time.monotonic() - t0)
    assert shots[-1] >= 0.08  # three periods of 30 ms
    assert ring.inflight == 1
    ring.prep_timeout_remove(tok, user_data="rm")
    final, rm, extra = _finals_after_cancel(ring, "ms", "rm")
    assert extra <= 1  # one more period may race the remove
    assert rm.res == 0
    assert final.res == -errno.ECANCELED and not final.more
    assert ring.inflight == 0
    _nothing_for(ring, 0.05)  # no stray shots after the final one


def test_timeout_multishot_with_count(ring):
    _need_multishot_timeout(ring)
    ring.prep_timeout(0.02, count=3, multishot=True, user_data="ms3")
    cs = _collect(ring, 3)
    assert [c.res for c in cs] == [-errno.ETIME] * 3
    assert [c.more for c in cs] == [True, True, False]
    assert ring.inflight == 0
    _nothing_for(ring, 0.05)


def test_timeout_multishot_cancelled_via_async_cancel(ring):
    _need("async_cancel")
    _need_multishot_timeout(ring)
    tok = ring.prep_timeout(0.02, multishot=True, user_data="ms")
    ring.submit()
    c = _one(ring)
    assert c.more
    ring.prep_cancel(tok, user_data="cancel")
    final, cancel, extra = _finals_after_cancel(ring, "ms", "cancel")
    assert extra <= 1
    assert cancel.res == 0
    assert final.res == -errno.ECANCELED
    assert ring.inflight == 0


# --------------------------------------------------------------------------
# timeout_remove
# --------------------------------------------------------------------------

def test_timeout_remove_pending(ring):
    _need("timeout", "timeout_remove")
    tok = ring.prep_timeout(10.0, user_data="t")
    ring.submit()
    ring.prep_timeout_remove(tok, user_data="rm")
    t0 = time.monotonic()
    by = {c.user_data: c for c in _collect(ring, 2)}
    assert by["rm"].res == 0 and by["rm"].op == "timeout_remove"
    assert by["t"].res == -errno.ECANCELED
    assert time.monotonic() - t0 < 2.0
    assert ring.inflight == 0


def test_timeout_remove_in_same_submission(ring):
    _need("timeout", "timeout_remove")
    tok = ring.prep_timeout(10.0, user_data="t")
    ring.prep_timeout_remove(tok, user_data="rm")
    by = {c.user_data: c for c in _collect(ring, 2)}
    assert by["rm"].res == 0
    assert by["t"].res == -errno.ECANCELED


def test_timeout_remove_unknown_or_expired(plain_ring):
    _need("timeout", "timeout_remove")
    tok = plain_ring.prep_timeout(0.001, user_data="t")
    assert _one(plain_ring).res == -errno.ETIME
    plain_ring.prep_timeout_remove(tok, user_data="late")
    c = _one(plain_ring)
    assert c.user_data == "late"
    assert c.res == -errno.ENOENT
    with pytest.raises(FileNotFoundError):
        c.result()
    plain_ring.prep_timeout_remove(0x1234_5678, user_data="bogus")
    assert _one(plain_ring).res == -errno.ENOENT


def test_timeout_remove_does_not_touch_other_ops(ring, pipe):
    _need("timeout", "timeout_remove", "read")
    r, w = pipe
    buf = bytearray(4)
    rtok = ring.prep_read(r, buf, user_data="read")
    ring.submit()
    ring.prep_timeout_remove(rtok, user_data="rm")  # a read is not a timeout
    c = _one(ring)
    assert c.user_data == "rm" and c.res == -errno.ENOENT
    assert ring.inflight == 1
    os.write(w, b"data")
    c = _one(ring)
    assert c.user_data == "read" and c.res == 4 and buf == b"data"


# --------------------------------------------------------------------------
# link_timeout
# --------------------------------------------------------------------------

def test_link_timeout_cancels_read_on_empty_pipe(ring, pipe):
    _need("link_timeout", "read")
    r, _ = pipe
    buf = bytearray(8)
    t0 = time.monotonic()
    ring.prep_read(r, buf, user_data="read", flags=SQE.LINK)
    ring.prep_link_timeout(0.1, user_data="lt")
    by = {c.user_data: c for c in _collect(ring, 2)}
    elapsed = time.monotonic() - t0
    assert by["read"].res == -errno.ECANCELED
    assert by["lt"].res == -errno.ETIME
    assert by["lt"].op == "link_timeout"
    assert 0.08 <= elapsed < 2.0, elapsed
    assert ring.inflight == 0
    # the read buffer was released with the final completion
    buf.extend(b"!")


def test_link_timeout_not_triggered_when_op_finishes(ring, pipe):
    _need("link_timeout", "read")
    r, w = pipe
    os.write(w, b"ready")
    buf = bytearray(5)
    ring.prep_read(r, buf, user_data="read", flags=SQE.LINK)
    ring.prep_link_timeout(5.0, user_data="lt")
    t0 = time.monotonic()
    by = {c.user_data: c for c in _collect(ring, 2)}
    assert by["read"].res == 5 and buf == b"ready"
    assert by["lt"].res == -errno.ECANCELED  # disarmed
    assert time.monotonic() - t0 < 2.0


def test_link_timeout_read_completes_before_deadline(ring, pipe):
    _need("link_timeout", "read")
    r, w = pipe
    buf = bytearray(3)
    ring.prep_read(r, buf, user_data="read", flags=SQE.LINK)
    ring.prep_link_timeout(5.0, user_data="lt")
    ring.submit()
    _nothing_for(ring, 0.03)
    os.write(w, b"abc")
    by = {c.user_data: c for c in _collect(ring, 2)}
    assert by["read"].res == 3 and buf == b"abc"
    assert by["lt"].res == -errno.ECANCELED


def test_link_timeout_expiry_cancels_rest_of_chain(ring, pipe):
    """read(LINK) -> link_timeout(LINK) -> nop: the read is cancelled by the
    timeout, so the rest of the chain is cancelled too."""
    _need("link_timeout", "read", "nop")
    r, _ = pipe
    buf = bytearray(4)
    ring.prep_read(r, buf, user_data="read", flags=SQE.LINK)
    ring.prep_link_timeout(0.05, user_data="lt", flags=SQE.LINK)
    ring.prep_nop(user_data="nop")
    by = {c.user_data: c.res for c in _collect(ring, 3)}
    assert by == {"read": -errno.ECANCELED, "lt": -errno.ETIME, "nop": -errno.ECANCELED}
    assert ring.inflight == 0


def test_link_timeout_without_link_is_einval(plain_ring):
    _need("link_timeout", "nop")
    plain_ring.prep_nop(user_data="nop")  # not LINKed
    plain_ring.prep_link_timeout(0.05, user_data="lt")
    by = {c.user_data: c.res for c in _collect(plain_ring, 2)}
    assert by["nop"] == 0
    assert by["lt"] == -errno.EINVAL


# --------------------------------------------------------------------------
# waits: signals, infinite timeouts, out-of-range timeouts (issue 13)
# --------------------------------------------------------------------------

@pytest.fixture
def sigusr1():
    """Install a SIGUSR1 handler for the test; restore the old one after."""
    import signal
    old = signal.getsignal(signal.SIGUSR1)
    calls: list[int] = []

    def install(handler=None):
        signal.signal(signal.SIGUSR1, handler or (lambda *a: calls.append(1)))
        return calls

    yield install
    signal.signal(signal.SIGUSR1, old)


def _kill_later(delay: float):
    import signal
    import threading
    t = threading.Timer(delay, os.kill, (os.getpid(), signal.SIGUSR1))
    t.start()
    return t


def test_handled_signal_does_not_end_a_wait_without_timeout_early(ring, pipe, sigusr1):
    """Issue 13 (4): when the signal lands in the io_uring_enter that also
    submits, the kernel returns the count submitted (not -EINTR); the wait
    returned 0 completions after the signal and completions() raised
    TimeoutError "no completion within None s".  The wait resumes after the
    handler ran."""
    import threading
    calls = sigusr1()
    rd, wr = pipe
    buf = bytearray(4)
    ring.prep_read(rd, buf, -1, "r")            # empty pipe: waits
    killer = _kill_later(0.2)
    writer = threading.Timer(0.8, os.write, (wr, b"abcd"))
    writer.start()
    try:
        t0 = time.monotonic()
        n = ring.submit_and_wait(1)
        took = time.monotonic() - t0
    finally:
        killer.join()
        writer.join()
    assert calls == [1]
    assert n == 1 and took >= 0.6, (n, took)
    (c,) = ring.reap()
    assert (c.user_data, c.res, bytes(buf)) == ("r", 4, b"abcd")


def test_signal_handler_that_raises_ends_the_wait_with_its_exception(plain_ring, pipe,
                                                                      sigusr1):
    def boom(*a):
        raise KeyError("from the handler")

    sigusr1(boom)
    rd, wr = pipe
    plain_ring.prep_read(rd, bytearray(4), -1, "r")
    killer = _kill_later(0.2)
    try:
        with pytest.raises(KeyError, match="from the handler"):
            plain_ring.submit_and_wait(1)
    finally:
        killer.join()
    os.write(wr, b"x")                          # the read is still in flight
    assert [c.res for c in _collect(plain_ring, 1)] == [1]


def test_infinite_timeout_with_nothing_in_flight_is_refused_at_once():
    """Issue 13 (11): submit_and_wait(1, timeout=inf) with nothing in flight
    blocked forever (inf was a finite 9e18 ns, so the "would never return"
    check did not apply).  inf now means "no timeout" everywhere."""
    out = run_child("""
        import math
        from subring import KernelRing
        r = KernelRing(8)
        for t in (math.inf, None):
            try:
                r.submit_and_wait(1, timeout=t)
            except ValueError as e:
                print("refused")
        r.prep_nop("x")
        print(r.submit_and_wait(1, timeout=math.inf), r.reap()[0].user_data)
        r.close(timeout=math.inf)
    """, timeout=30)
    assert out.split() == ["refused", "refused", "1", "x"]


def test_prep_timeout_too_large_raises_overflow_error_not_struct_error(plain_ring):
    """Issue 13 (11): prep_timeout(1e300) raised struct.error."""
    import math
    for bad in (1e300, math.inf, 2.0 ** 63):
        with pytest.raises(OverflowError):
            plain_ring.prep_timeout(bad)
        with pytest.raises(OverflowError):
            plain_ring.prep_link_timeout(bad)
    with pytest.raises(ValueError):
        plain_ring.prep_timeout(math.nan)
    assert plain_ring.inflight == 0 and plain_ring.sq_pending == 0
