"""statistics(): a frozen snapshot whose counters move as documented."""

from __future__ import annotations

import dataclasses
import os
import time

import pytest

from subring import RingStatistics
from ringhelpers import reap_n

FIELDS = ["submitted", "completed", "inflight", "enter_calls", "overflow_events",
          "foreign_completions", "sq_full_flushes", "sq_dropped", "cq_dropped",
          "sq_entries", "cq_entries", "max_inflight"]
COUNTERS = FIELDS[:9]


def test_statistics_name_their_backend(plain_ring):
    """statistics() of every ring kind is a frozen dataclass with a `backend`
    field; a kernel ring's says "kernel" (the other fields keep their names)."""
    st = plain_ring.statistics()
    assert st.backend == "kernel"
    assert dataclasses.replace(st, submitted=0).backend == "kernel"


def test_statistics_is_a_frozen_dataclass(plain_ring):
    st = plain_ring.statistics()
    assert isinstance(st, RingStatistics)
    assert dataclasses.is_dataclass(st)
    assert [f.name for f in dataclasses.fields(st)] == FIELDS + ["backend"]
    for name in FIELDS:
        assert type(getattr(st, name)) is int, name
    with pytest.raises(dataclasses.FrozenInstanceError):
        st.submitted = 5
    with pytest.raises(dataclasses.FrozenInstanceError):
        del st.completed
    assert hash(st) == hash(plain_ring.statistics())      # frozen -> hashable
    assert st == plain_ring.statistics()


def test_fresh_ring_counters_are_zero(ring):
    st = ring.statistics()
    for name in COUNTERS:
        assert getattr(st, name) == 0, name
    assert st.sq_entries == ring.sq_entries == 64
    assert st.cq_entries == ring.cq_entries == 128
    assert st.max_inflight == ring.max_inflight == ring.cq_entries


def test_sizes_reported(make_ring):
    ring = make_ring(16, cq_entries=64, max_inflight=40)
    st = ring.statistics()
    assert (st.sq_entries, st.cq_entries, st.max_inflight) == (16, 64, 40)


def test_counters_move(ring):
    s0 = ring.statistics()
    ring.prep_nops(5)
    s1 = ring.statistics()
    assert s1.inflight == 5 == ring.inflight
    assert s1.submitted == 0 and s1.completed == 0     # prepared, not submitted
    deadline = time.monotonic() + 5
    while ring.cq_ready < 5:
        assert time.monotonic() < deadline
        ring.submit_and_wait(5, timeout=1)
    s2 = ring.statistics()
    assert s2.submitted == 5
    assert s2.enter_calls >= 1
    assert s2.completed == 0 and s2.inflight == 5      # completed = reaped
    comps = ring.reap()
    assert len(comps) == 5
    s3 = ring.statistics()
    assert s3.completed == 5 and s3.inflight == 0
    assert s3.submitted == 5
    # snapshots never change afterwards
    assert s0.submitted == 0 and s1.inflight == 5 and s2.completed == 0
    # another round, counted on top
    ring.prep_nops(3)
    reap_n(ring, 3)
    s4 = ring.statistics()
    assert (s4.submitted, s4.completed, s4.inflight) == (8, 8, 0)
    assert s4.enter_calls >= s3.enter_calls
    assert s4.overflow_events == 0 and s4.cq_dropped == 0 and s4.sq_dropped == 0
    assert s4.foreign_completions == 0 and s4.sq_full_flushes == 0


def test_enter_calls_exact_without_sqpoll(new_ring):
    with new_ring(8) as ring:
        ring.prep_nop()
        ring.submit()
        assert ring.statistics().enter_calls == 1
        assert ring.statistics().submitted == 1
        assert ring.submit() == 0                          # nothing to submit: no syscall
        assert ring.statistics().enter_calls == 1
        ring.submit_and_wait(1, timeout=5)
        e = ring.statistics().enter_calls
        assert ring.submit_and_wait(1, timeout=5) == 1    # already satisfied: no syscall
        assert ring.statistics().enter_calls == e
        ring.reap()                                        # reaping is not a syscall
        assert ring.statistics().enter_calls == e
        assert ring.statistics().completed == 1


def test_reap_into_counts_as_completed(plain_ring):
    import array
    plain_ring.prep_nops(4)
    plain_ring.submit_and_wait(4, timeout=5)
    ud, res = array.array("Q", bytes(8 * 8)), array.array("i", bytes(4 * 8))
    n = plain_ring.reap_into(ud, res)
    n += len(plain_ring.reap())
    assert n == 4
    assert plain_ring.statistics().completed == 4


def test_sq_full_flushes_counted(new_ring):
    with new_ring(4, cq_entries=32) as ring:
        for k in range(10):
            ring.prep_nop(k)
        st = ring.statistics()
        assert st.sq_full_flushes == 2
        assert st.submitted == 8
        reap_n(ring, 10)
        assert ring.statistics().submitted == 10


def test_foreign_completions_counted(plain_ring, new_ring):
    with new_ring(4) as sender:
        sender.prep_msg_ring(plain_ring.fd, 17, 0xABCDEF)
        reap_n(sender, 1)
    # A foreign CQE is not an op of ours: nothing in flight to wait for, so
    # poll with a timeout.
    deadline = time.monotonic() + 5
    got = []
    while not got:
        assert time.monotonic() < deadline
        plain_ring.submit_and_wait(1, timeout=0.1)
        got = plain_ring.reap()
    (c,) = got
    assert c.user_data == 0xABCDEF and c.res == 17
    st = plain_ring.statistics()
    assert st.foreign_completions == 1
    assert st.completed == 1
    assert st.inflight == 0


def test_inflight_matches_property_under_load(ring):
    r, w = os.pipe()
    try:
        bufs = [bytearray(1) for _ in range(3)]
        for b in bufs:
            ring.prep_read(r, b, -1)
        ring.prep_nops(4)
        assert ring.statistics().inflight == ring.inflight == 7
        comps = reap_n(ring, 4)
        assert ring.statistics().inflight == ring.inflight == 3
        assert all(c.op == "nop" for c in comps)
        os.write(w, b"abc")
        reap_n(ring, 3)
        assert ring.statistics().inflight == ring.inflight == 0
        assert ring.statistics().completed == 7
    finally:
        os.close(r)
        os.close(w)
