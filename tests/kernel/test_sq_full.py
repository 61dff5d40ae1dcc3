"""A full SQ, a full op table, link chains that do not fit, and waits that
could never return."""

from __future__ import annotations

import contextlib
import errno
import os
import signal
import threading
import time

import pytest

try:
    import numpy as np
except ImportError:      # optional (the dev extra has it): those tests skip
    np = None
needs_numpy = pytest.mark.skipif(np is None, reason="numpy is not installed")

from subring import SQE, RingFullError
from ringhelpers import reap_n, wait_ready, resizable


class Hung(Exception):
    """A blocking call did not return within the hang guard's time."""


@contextlib.contextmanager
def hang_guard(seconds: float):
    """Interrupt the main thread with SIGUSR1 after ``seconds``; the ring's wait
    retries EINTR after running signal handlers, so our handler's exception
    (Hung) ends a wait that would otherwise block forever."""
    state = {"armed": True}

    def handler(signum, frame):
        if state["armed"]:
            raise Hung(f"blocked for more than {seconds} s")

    old = signal.signal(signal.SIGUSR1, handler)
    timer = threading.Timer(seconds, signal.pthread_kill,
                            (threading.main_thread().ident, signal.SIGUSR1))
    timer.start()
    try:
        yield
    finally:
        state["armed"] = False
        timer.cancel()
        timer.join()
        signal.signal(signal.SIGUSR1, old)


# -- automatic flush of a full SQ ------------------------------------------------

def test_single_preps_beyond_sq_size_auto_flush(make_ring):
    ring = make_ring(8, cq_entries=64)
    assert ring.sq_entries == 8 and ring.max_inflight == 64
    for k in range(50):
        ring.prep_nop(k)
        assert ring.sq_pending <= 8
    st = ring.statistics()
    assert st.sq_full_flushes >= 50 // 8
    assert st.inflight == 50
    comps = reap_n(ring, 50)
    assert sorted(c.user_data for c in comps) == list(range(50))
    assert ring.inflight == 0


def test_sq_full_flush_count_is_exact_without_sqpoll(new_ring):
    ring = new_ring(8, cq_entries=64)
    for k in range(50):
        ring.prep_nop(k)
    # flushed when the 9th, 17th, ..., 49th SQE needed room
    assert ring.statistics().sq_full_flushes == 6
    assert ring.statistics().submitted == 48
    assert ring.sq_pending == 2
    reap_n(ring, 50)


def test_prep_nops_batch_beyond_sq_size(make_ring):
    ring = make_ring(8, cq_entries=64)
    assert ring.prep_nops(60, user_data=100) == 60
    assert ring.statistics().sq_full_flushes >= 7
    comps = reap_n(ring, 60)
    assert sorted(c.user_data for c in comps) == list(range(100, 160))


def test_prep_reads_batch_beyond_sq_size(datafile, new_ring):
    path, data = datafile
    ring = new_ring(8, cq_entries=64)
    fd = os.open(path, os.O_RDONLY)
    try:
        offs = [k * 4099 for k in range(40)]
        buf = bytearray(40 * 100)
        assert ring.prep_reads(fd, buf, 100, offs) == 40
        assert ring.statistics().sq_full_flushes >= 4
        comps = reap_n(ring, 40)
        for c in comps:
            k = c.user_data
            assert c.res == 100
            assert buf[k * 100:(k + 1) * 100] == data[offs[k]:offs[k] + 100]
    finally:
        os.close(fd)


# -- max_inflight -----------------------------------------------------------------

def test_ring_full_at_max_inflight(make_ring, pipe):
    ring = make_ring(8, max_inflight=4)
    assert ring.max_inflight == 4
    for k in range(4):
        ring.prep_nop(k)
    ring.submit()
    buf = bytearray(16)
    marker = object()
    with pytest.raises(RingFullError) as ei:
        ring.prep_nop(marker)
    assert isinstance(ei.value, BlockingIOError)
    with pytest.raises(RingFullError):
        ring.prep_read(pipe[0], buf, -1, marker)
    with pytest.raises(RingFullError):
        ring.prep_nops(1)
    with pytest.raises(RingFullError):
        ring.prep_reads(pipe[0], buf, 4, [-1])
    assert ring.inflight == 4
    assert resizable(buf), "a refused prep left its buffer pinned"
    # nothing lost
    comps = reap_n(ring, 4)
    assert sorted(c.user_data for c in comps) == [0, 1, 2, 3]
    # usable again
    for k in range(4):
        ring.prep_nop(10 + k)
    comps = reap_n(ring, 4)
    assert sorted(c.user_data for c in comps) == [10, 11, 12, 13]


def test_ring_full_with_prepared_but_unsubmitted_ops(new_ring):
    ring = new_ring(8, max_inflight=4)
    ring.prep_nops(4)
    with pytest.raises(RingFullError):
        ring.prep_nop()
    assert ring.sq_pending == 4
    comps = reap_n(ring, 4)
    assert sorted(c.user_data for c in comps) == [0, 1, 2, 3]


def test_ring_full_with_ops_that_do_not_complete(pipe, new_ring):
    r, w = pipe
    ring = new_ring(8, max_inflight=2)
    bufs = [bytearray(1), bytearray(1)]
    for k, b in enumerate(bufs):
        ring.prep_read(r, b, -1, k)
    ring.submit()
    with pytest.raises(RingFullError):
        ring.prep_nop()
    os.write(w, b"ab")
    comps = reap_n(ring, 2)
    assert sorted(c.user_data for c in comps) == [0, 1]
    assert all(c.res == 1 for c in comps)
    assert sorted(bytes(b) for b in bufs) == [b"a", b"b"]
    ring.prep_nop("after")
    assert reap_n(ring, 1)[0].user_data == "after"


# -- link chains ----------------------------------------------------------------------

def test_ring_full_inside_link_chain(make_ring, pipe):
    for link in (SQE.LINK, SQE.HARDLINK):
        _ring_full_inside_link_chain(make_ring(4, cq_entries=32), pipe, link)


def _ring_full_inside_link_chain(ring, pipe, link):
    """The chain cannot reach the kernel in one submission: the op that does
    not fit is refused, and the part of the chain prepared so far is
    withdrawn -- never run, never split -- each op completing once with
    -ECANCELED.  The SQ is free again at once."""
    assert ring.sq_entries == 4
    for k in range(4):
        ring.prep_nop(k, flags=link)
    buf = bytearray(8)
    with pytest.raises(RingFullError, match="link chain"):
        ring.prep_nop(4, flags=link)
    assert resizable(buf)
    assert ring.inflight == 4          # owed their completions
    st = ring.statistics()
    assert st.sq_full_flushes == 0 and st.submitted == 0   # the chain was not split
    assert ring.sq_space == 4
    ring.prep_read(pipe[0], buf, -1, "r")      # room again, no chain open
    comps = ring.reap()
    assert [(c.user_data, c.res) for c in comps] == [(k, -errno.ECANCELED) for k in range(4)]
    assert ring.inflight == 1
    os.write(pipe[1], b"x")
    assert [(c.user_data, c.res) for c in reap_n(ring, 1)] == [("r", 1)]
    # the ring is fine afterwards
    ring.prep_nop("after")
    assert reap_n(ring, 1)[0].user_data == "after"
    assert ring.statistics().submitted == 2


def test_closed_chain_allows_auto_flush(make_ring):
    ring = make_ring(4, cq_entries=32)
    for k in range(3):
        ring.prep_nop(k, flags=SQE.LINK)
    ring.prep_nop(3)                  # ends the chain
    ring.prep_nop(4)                  # SQ full, but no chain open: flushed
    assert ring.statistics().sq_full_flushes == 1
    comps = reap_n(ring, 5)
    assert sorted(c.user_data for c in comps) == [0, 1, 2, 3, 4]


def test_kernel_rejected_sqe_does_not_lose_later_ops(ring):
    """The kernel stops consuming a submission at an SQE it rejects (without
    SUBMIT_ALL).  The rejected op still completes with its errno and the ops
    behind it are not lost: they go in with the next submit."""
    ring.prep_nop("bad", flags=SQE.BUFFER_SELECT)   # NOP has no buffer select
    ring.prep_nop("good")
    comps = reap_n(ring, 2)
    by = {c.user_data: c for c in comps}
    assert by["bad"].res == -errno.EOPNOTSUPP
    with pytest.raises(OSError, match="nop"):
        by["bad"].result()
    assert by["good"].res == 0
    assert ring.inflight == 0 and ring.sq_pending == 0


# -- waits that could never return -------------------------------------------------

def test_submit_and_wait_nothing_in_flight_raises(ring):
    t0 = time.monotonic()
    with hang_guard(2.0):
        with pytest.raises(ValueError):
            ring.submit_and_wait(1)
        with pytest.raises(ValueError):
            ring.submit_and_wait()
        with pytest.raises(ValueError):
            ring.wait()
    assert time.monotonic() - t0 < 1.0
    assert ring.submit_and_wait(0) == 0
    _timeout_nothing_in_flight(ring)
    _more_than_in_flight(ring)


def _more_than_in_flight(ring):
    ring.prep_nops(2)
    with hang_guard(2.0), pytest.raises(ValueError):
        ring.submit_and_wait(3)
    assert ring.inflight == 2
    comps = reap_n(ring, 2)
    assert sorted(c.user_data for c in comps) == [0, 1]


def _timeout_nothing_in_flight(ring):
    t0 = time.monotonic()
    assert ring.submit_and_wait(1, timeout=0.05) == 0
    assert time.monotonic() - t0 < 2.0


def test_submit_and_wait_already_satisfied_returns_at_once(ring):
    ring.prep_nops(2)
    wait_ready(ring, 2)
    t0 = time.monotonic()
    with hang_guard(2.0):
        assert ring.submit_and_wait(2) == 2
        assert ring.submit_and_wait(1) == 2
    assert time.monotonic() - t0 < 1.0
    assert len(ring.reap()) == 2


def test_regression_wait_guard_counts_ready_completions_twice(plain_ring):
    """submit_and_wait(n) without a timeout must refuse (ValueError) when fewer
    than n completions can ever be ready.  The guard compares n with
    ``cq_ready + inflight``, but an op whose CQE is ready and not yet reaped is
    counted in both, so here (2 ops, both complete, n=3) it waits forever."""
    ring = plain_ring
    ring.prep_nops(2)
    wait_ready(ring, 2)
    assert ring.inflight == 2 and ring.cq_ready == 2
    try:
        with hang_guard(0.5), pytest.raises(ValueError):
            ring.submit_and_wait(3)
    except Hung:
        pytest.fail("submit_and_wait(3) with only 2 ops (both complete) blocked forever "
                    "instead of raising ValueError")
    assert len(ring.reap()) == 2


def test_submit_and_wait_times_out_then_cancel(ring, pipe):
    r, _ = pipe
    buf = bytearray(8)
    tok = ring.prep_read(r, buf, -1, "stuck")
    t0 = time.monotonic()
    ready = ring.submit_and_wait(1, timeout=0.05)
    elapsed = time.monotonic() - t0
    assert ready == 0
    assert 0.03 <= elapsed < 2.0, elapsed
    assert ring.inflight == 1
    # timeout=0 polls
    t0 = time.monotonic()
    assert ring.submit_and_wait(1, timeout=0) == 0
    assert time.monotonic() - t0 < 0.5
    ctok = ring.cancel(tok)
    comps = reap_n(ring, 2)
    by = {c.user_data: c for c in comps}
    assert by["stuck"].res == -errno.ECANCELED
    assert by[ctok].res == 0
    assert ring.inflight == 0
    assert resizable(buf)


def test_submit_and_wait_submits_even_if_it_times_out(ring, pipe):
    r, w = pipe
    ring.prep_nop("quick")
    ring.prep_read(r, bytearray(4), -1, "slow")
    t0 = time.monotonic()
    ready = ring.submit_and_wait(2, timeout=0.05)
    assert ready <= 1
    assert time.monotonic() - t0 < 2.0
    comps = reap_n(ring, 1)                  # the NOP was submitted by that call
    assert [c.user_data for c in comps] == ["quick"]
    assert ring.inflight == 1
    os.write(w, b"z")
    (c,) = reap_n(ring, 1)
    assert c.user_data == "slow" and c.res == 1
