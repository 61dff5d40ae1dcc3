"""SQ/CQ index wrap-around and op-table generation tags.

What is practical to test from Python against the kernel ring:

* The ring *positions* (index & mask) wrap many thousands of times: a ring of
  8 SQEs / 16 CQEs driven through 200k operations laps the SQ 25k times and
  the CQ 12.5k times, with batch sizes that are not divisors of the ring size
  so every head/tail alignment is exercised.
* The free-running uint32 indices themselves wrapping past 2**32 is NOT
  reachable here: the kernel starts every ring at 0 and we cannot seed the
  indices, and 2**32 operations take hours from Python.  Likewise a slot's
  32-bit generation tag wrapping back to 1 needs 2**32 reuses of one slot.
  Those paths are plain unsigned arithmetic in ring.h / optable.h and would
  need a C-level or user-space-peer test to reach.
"""

from __future__ import annotations

import array
import os
import time

import pytest

try:
    import numpy as np
except ImportError:      # optional (the dev extra has it): those tests skip
    np = None
needs_numpy = pytest.mark.skipif(np is None, reason="numpy is not installed")

from subring import KernelRing
from ringhelpers import reap_n

MASK32 = 0xFFFFFFFF


def test_indices_wrap_many_times(make_ring):
    ring = make_ring(8)
    assert ring.sq_entries == 8
    total = 200_000
    sizes = [8, 5, 3, 7, 1, 6, 8, 2, 4]      # not all divisors of 8: every alignment
    ud = array.array("Q", bytes(8 * 8))
    res = array.array("i", bytes(4 * 8))
    done = 0
    step = 0
    t0 = time.monotonic()
    while done < total:
        b = min(sizes[step % len(sizes)], total - done)
        step += 1
        assert ring.prep_nops(b, user_data=done) == b
        deadline = time.monotonic() + 5
        got = 0
        seen = []
        while got < b:
            assert time.monotonic() < deadline, f"batch at {done} stalled"
            ring.submit_and_wait(b - got, timeout=5)
            n = ring.reap_into(ud, res)
            seen += ud[:n]
            assert list(res[:n]) == [0] * n
            got += n
        assert sorted(seen) == list(range(done, done + b)), f"batch at {done}: {seen}"
        done += b
    elapsed = time.monotonic() - t0
    st = ring.statistics()
    assert st.submitted == total
    assert st.completed == total
    assert st.inflight == 0 and ring.inflight == 0
    assert st.cq_dropped == 0
    assert ring.sq_pending == 0 and ring.cq_ready == 0
    assert elapsed < 30, f"200k NOPs took {elapsed:.1f} s"


def test_per_op_reap_wraps(make_ring):
    """Single prep_nop / reap() on a tiny ring, 20k times, odd batch sizes."""
    ring = make_ring(4)
    n = 0
    k = 0
    while n < 20_000:
        b = (k % 3) + 1                      # 1, 2, 3, 1, 2, 3 ... on a 4-entry SQ
        k += 1
        for j in range(b):
            ring.prep_nop(n + j)
        comps = reap_n(ring, b)
        assert sorted(c.user_data for c in comps) == list(range(n, n + b))
        n += b
    assert ring.inflight == 0
    assert ring.statistics().completed == n


def test_reads_wrap_and_land_correctly(make_ring, datafile):
    path, data = datafile
    ring = make_ring(8)
    fd = os.open(path, os.O_RDONLY)
    try:
        size = 64
        x = 12345
        for batch in range(1500):
            b = 5 if batch % 2 else 3
            offs = []
            for _ in range(b):
                x = (x * 1103515245 + 12345) & 0x7FFFFFFF
                offs.append(x % (len(data) - size))
            buf = bytearray(b * size)
            ring.prep_reads(fd, buf, size, offs, user_data=batch * 8)
            comps = reap_n(ring, b)
            assert sorted(c.user_data for c in comps) == list(range(batch * 8, batch * 8 + b))
            for c in comps:
                k = c.user_data - batch * 8
                assert c.res == size
                assert buf[k * size:(k + 1) * size] == data[offs[k]:offs[k] + size]
    finally:
        os.close(fd)


def test_generation_tags_advance_on_slot_reuse(new_ring):
    """One slot, reused 10k times: same slot index, a new generation each time."""
    ring = new_ring(8, max_inflight=1)
    prev = None
    for _ in range(10_000):
        tok = ring.prep_nop()
        slot, gen = tok & MASK32, tok >> 32
        assert slot == 0
        assert gen >= 1
        if prev is not None:
            assert gen == prev + 1, (prev, gen)
        prev = gen
        (c,) = reap_n(ring, 1)
        assert c.user_data == tok


def test_tokens_never_repeat_across_many_reuses(make_ring):
    ring = make_ring(8, max_inflight=6)
    seen: set[int] = set()
    for _ in range(3000):
        toks = [ring.prep_nop() for _ in range(6)]
        assert all((t & MASK32) < 6 for t in toks)           # slot index < max_inflight
        assert len(set(toks)) == 6                          # unique among in flight
        assert seen.isdisjoint(toks)                        # and never reissued
        seen.update(toks)
        comps = reap_n(ring, 6)
        assert sorted(c.user_data for c in comps) == sorted(toks)
    assert len(seen) == 18000


def test_stale_token_cqe_is_foreign_after_slot_reuse(make_ring):
    """Invariant 6: a CQE carrying an old token of a reused slot (here forged
    with MSG_RING from another ring) is delivered as a foreign completion and
    never completes the op now living in that slot."""
    ring = make_ring(8, max_inflight=1)          # one slot: it must be reused
    r, w = os.pipe()
    sender = KernelRing(4)
    try:
        old = ring.prep_nop("old")
        (c,) = reap_n(ring, 1)
        assert c.user_data == "old"
        buf = bytearray(8)
        cur = ring.prep_read(r, buf, -1, "current")
        ring.submit()
        assert cur & MASK32 == old & MASK32, "expected the freed slot to be reused"
        assert cur != old
        sender.prep_msg_ring(ring.fd, 4242, old, "sent")
        (s,) = reap_n(sender, 1)
        assert s.res == 0, s
        foreign = reap_n(ring, 1)[0]
        assert foreign.user_data == old        # raw int, not the current op's user_data
        assert foreign.res == 4242
        assert ring.inflight == 1               # the read is still in flight
        assert ring.statistics().foreign_completions == 1
        with pytest.raises(BufferError):
            buf.append(0)                       # ... and its buffer still pinned
        os.write(w, b"data")
        (c,) = reap_n(ring, 1)
        assert c.user_data == "current" and c.res == 4 and buf[:4] == b"data"
        assert ring.inflight == 0
    finally:
        sender.close()
        os.close(r)
        os.close(w)
