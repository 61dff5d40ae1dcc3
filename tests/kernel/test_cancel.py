"""Async cancel (IORING_OP_ASYNC_CANCEL) against the real kernel: by token,
by fd (plain and registered), any/all, and a cancel race where every op must
get exactly one final completion whatever the interleaving."""

from __future__ import annotations

import collections
import errno
import os
import time

import pytest

from subring import SQE
from ringhelpers import collect as _collect, need as _need, one as _one



def _nothing_for(ring, seconds: float) -> None:
    ring.submit_and_wait(1, seconds)
    got = ring.reap()
    assert got == [], f"unexpected completions: {got!r}"


@pytest.fixture
def pipes():
    made = []

    def make():
        r, w = os.pipe()
        made.extend((r, w))
        return r, w

    yield make
    for fd in made:
        os.close(fd)


# --------------------------------------------------------------------------
# by token
# --------------------------------------------------------------------------

def test_cancel_by_token_read_on_empty_pipe(ring, pipes):
    _need("async_cancel", "read")
    r, _ = pipes()
    buf = bytearray(16)
    tok = ring.prep_read(r, buf, user_data="read")
    ring.submit()
    _nothing_for(ring, 0.02)
    assert ring.inflight == 1
    ctok = ring.prep_cancel(tok, user_data="cancel")
    assert ctok != tok
    by = {c.user_data: c for c in _collect(ring, 2)}
    assert by["cancel"].res == 0 and by["cancel"].op == "async_cancel"
    assert by["read"].res == -errno.ECANCELED
    assert not by["read"].more
    assert ring.inflight == 0
    _nothing_for(ring, 0.02)


def test_cancel_convenience_method(ring, pipes):
    _need("async_cancel", "read")
    r, _ = pipes()
    tok = ring.prep_read(r, bytearray(4), user_data="read")
    ring.submit()
    ctok = ring.cancel(tok)  # submits by itself
    assert isinstance(ctok, int)
    by = {c.user_data: c for c in _collect(ring, 2)}
    # no user_data for the cancel: its user_data is its token
    assert by[ctok].res == 0
    assert by["read"].res == -errno.ECANCELED
    # wait=True: returns after a completion is ready
    tok = ring.prep_read(r, bytearray(4), user_data="read2")
    ring.submit()
    ctok = ring.cancel(tok, wait=True, timeout=5)
    by = {c.user_data: c for c in _collect(ring, 2)}
    assert by[ctok].res == 0 and by["read2"].res == -errno.ECANCELED


def test_cancel_in_same_submission(ring, pipes):
    _need("async_cancel", "read")
    r, _ = pipes()
    tok = ring.prep_read(r, bytearray(4), user_data="read")
    ring.prep_cancel(tok, user_data="cancel")
    by = {c.user_data: c.res for c in _collect(ring, 2)}
    assert by == {"cancel": 0, "read": -errno.ECANCELED}


def test_cancelled_read_buffer_pinned_until_final_completion(plain_ring, pipes):
    _need("async_cancel", "read")
    r, _ = pipes()
    buf = bytearray(8)
    tok = plain_ring.prep_read(r, buf)
    plain_ring.prep_cancel(tok, user_data="cancel")
    plain_ring.submit()
    # whether or not the CQEs are posted already: until reaped, still pinned
    with pytest.raises(BufferError):
        buf.extend(b"x")
    _collect(plain_ring, 2)
    buf.extend(b"x")
    assert len(buf) == 9


def test_cancel_completed_op_is_enoent(ring):
    _need("async_cancel", "nop")
    tok = ring.prep_nop(user_data="nop")
    assert _one(ring).res == 0
    ring.prep_cancel(tok, user_data="cancel")
    c = _one(ring)
    assert c.user_data == "cancel"
    assert c.res == -errno.ENOENT
    with pytest.raises(FileNotFoundError):
        c.result()
    assert ring.inflight == 0


def test_cancel_completed_but_unreaped_op_is_enoent(ring, pipes):
    _need("async_cancel", "read")
    r, w = pipes()
    os.write(w, b"x")
    tok = ring.prep_read(r, bytearray(1), user_data="read")
    _collect_ready = ring.submit_and_wait(1, 5)
    assert _collect_ready >= 1
    ring.prep_cancel(tok, user_data="cancel")
    by = {c.user_data: c.res for c in _collect(ring, 2)}
    assert by == {"read": 1, "cancel": -errno.ENOENT}


def test_cancel_unknown_token_is_enoent(plain_ring):
    _need("async_cancel")
    plain_ring.prep_cancel(0xDEAD_0000_0001, user_data="cancel")
    assert _one(plain_ring).res == -errno.ENOENT


def test_cancel_timeout_by_token(ring):
    _need("async_cancel", "timeout")
    tok = ring.prep_timeout(10.0, user_data="t")
    ring.submit()
    ring.prep_cancel(tok, user_data="cancel")
    by = {c.user_data: c.res for c in _collect(ring, 2)}
    assert by == {"cancel": 0, "t": -errno.ECANCELED}


def test_cancel_poll_by_token(ring, pipes):
    _need("async_cancel", "poll_add")
    r, _ = pipes()
    tok = ring.prep_poll_add(r, user_data="poll")
    ring.submit()
    _nothing_for(ring, 0.02)
    ring.prep_cancel(tok, user_data="cancel")
    by = {c.user_data: c.res for c in _collect(ring, 2)}
    assert by == {"cancel": 0, "poll": -errno.ECANCELED}


def test_cancel_argument_checks(plain_ring):
    with pytest.raises(ValueError):
        plain_ring.prep_cancel()
    assert plain_ring.inflight == 0 and plain_ring.sq_pending == 0


# --------------------------------------------------------------------------
# by fd, any, all
# --------------------------------------------------------------------------

def test_cancel_by_fd_one_then_all(ring, pipes):
    _need("async_cancel", "read")
    r1, _ = pipes()
    r2, w2 = pipes()
    for k in range(3):
        ring.prep_read(r1, bytearray(4), user_data=("r1", k))
    ring.prep_read(r2, bytearray(4), user_data="r2")
    ring.submit()
    _nothing_for(ring, 0.02)
    assert ring.inflight == 4
    # without ALL: the first match only
    ring.prep_cancel(fd=r1, user_data="one")
    cs = _collect(ring, 2)
    by = {c.user_data: c for c in cs}
    assert by["one"].res == 0
    cancelled = [c for c in cs if c.user_data != "one"]
    assert len(cancelled) == 1
    assert cancelled[0].user_data[0] == "r1" and cancelled[0].res == -errno.ECANCELED
    # with ALL: every remaining match, res = how many
    ring.prep_cancel(fd=r1, all=True, user_data="all")
    cs = _collect(ring, 3)
    by = {c.user_data: c for c in cs}
    assert by["all"].res == 2
    assert sorted(c.user_data for c in cs if c.user_data != "all") == sorted(
        {("r1", 0), ("r1", 1), ("r1", 2)} - {cancelled[0].user_data})
    assert all(c.res == -errno.ECANCELED for c in cs if c.user_data != "all")
    # the read on the other pipe is untouched
    assert ring.inflight == 1
    os.write(w2, b"abcd")
    c = _one(ring)
    assert c.user_data == "r2" and c.res == 4
    # nothing left for that fd
    ring.prep_cancel(fd=r1, all=True, user_data="none")
    c = _one(ring)
    assert c.res in (0, -errno.ENOENT)  # ALL with no match: 0 or -ENOENT by kernel


def test_cancel_by_registered_fd(ring, pipes):
    _need("async_cancel", "read")
    r, _ = pipes()
    r2, _ = pipes()
    ring.register_files([r2, r])
    for k in range(2):
        ring.prep_read(1, bytearray(4), user_data=k, flags=SQE.FIXED_FILE)
    ring.prep_read(0, bytearray(4), user_data="other", flags=SQE.FIXED_FILE)
    ring.submit()
    _nothing_for(ring, 0.02)
    ring.prep_cancel(fd=1, fixed_file=True, all=True, user_data="cancel")
    by = {c.user_data: c.res for c in _collect(ring, 3)}
    assert by == {"cancel": 2, 0: -errno.ECANCELED, 1: -errno.ECANCELED}
    assert ring.inflight == 1
    ring.prep_cancel(fd=0, fixed_file=True, user_data="cancel2")
    by = {c.user_data: c.res for c in _collect(ring, 2)}
    assert by == {"cancel2": 0, "other": -errno.ECANCELED}


def test_cancel_any_and_all(ring, pipes):
    """ANY matches every op; the kernel treats it as ANY|ALL (res = count)."""
    _need("async_cancel", "read", "timeout", "poll_add")
    r, _ = pipes()
    for rnd in range(2):
        ring.prep_read(r, bytearray(4), user_data="read")
        ring.prep_timeout(10.0, user_data="timeout")
        ring.prep_poll_add(r, user_data="poll")
        ring.submit()
        _nothing_for(ring, 0.02)
        assert ring.inflight == 3
        if rnd == 0:
            ring.prep_cancel(any=True, user_data="cancel")
        else:
            ring.prep_cancel(any=True, all=True, user_data="cancel")
        cs = _collect(ring, 4)
        by = {c.user_data: c for c in cs}
        assert by["cancel"].res == 3
        assert set(by) == {"read", "timeout", "poll", "cancel"}
        assert all(c.res == -errno.ECANCELED for c in cs if c.user_data != "cancel")
        assert ring.inflight == 0
    ring.prep_cancel(any=True, user_data="nothing")
    assert _one(ring).res == 0  # a count: nothing matched
    _nothing_for(ring, 0.02)


# --------------------------------------------------------------------------
# the race
# --------------------------------------------------------------------------

_CANCEL_RES = {0, -errno.ENOENT, -errno.EALREADY}


def _race_round(ring, pipes, kind: int, same_submission: bool):
    r, w = pipes()
    buf = bytearray(4)
    if kind == 0:
        tok = ring.prep_nop(user_data="t")
    elif kind == 1:
        tok = ring.prep_nop(user_data="t", flags=SQE.ASYNC)
    elif kind == 2:
        os.write(w, b"full")  # completes at once
        tok = ring.prep_read(r, buf, user_data="t")
    elif kind == 3:
        tok = ring.prep_read(r, buf, user_data="t")  # blocks until cancelled
    elif kind == 4:
        tok = ring.prep_read(r, buf, user_data="t", flags=SQE.ASYNC)
    else:
        tok = ring.prep_read(r, buf, user_data="t")
    if not same_submission:
        ring.submit()
    if kind == 5:
        os.write(w, b"late")  # races the cancel
    ring.prep_cancel(tok, user_data="c")
    ring.submit()
    counts: collections.Counter = collections.Counter()
    res: dict = {}
    recancels = 0
    deadline = time.monotonic() + 5
    while (counts["t"] < 1 or counts["c"] < 1) and time.monotonic() < deadline:
        ring.submit_and_wait(1, 0.1)
        got = ring.reap()
        for c in got:
            counts[c.user_data] += 1
            res.setdefault(c.user_data, []).append(c.res)
            if c.user_data == "t":
                assert not c.more
        if (not got and counts["c"] >= 1 and counts["t"] == 0
                and res["c"][-1] == -errno.EALREADY and recancels < 20):
            # -EALREADY: "too far along to stop" -- it may still block (e.g.
            # an io-wq read that went on to wait for data): ask again, as an
            # application would.  Each cancel is one more op, counted below.
            ring.prep_cancel(tok, user_data="c")
            ring.submit()
            recancels += 1
            counts["c"] -= 1
    assert counts == {"t": 1, "c": 1}, (kind, same_submission, counts, res)
    (t,) = res["t"]
    c = res["c"][0]
    assert all(x in _CANCEL_RES for x in res["c"]), (kind, res)
    if c == 0:
        assert t in (-errno.ECANCELED, -errno.EINTR), (kind, res)
    elif c == -errno.ENOENT:
        # it had completed: a real result (an io-wq ASYNC op may also have
        # been failed with -ECANCELED by io-wq itself, see the batched test)
        assert t >= 0 or (kind in (1, 4) and t == -errno.ECANCELED), (kind, res)
    if t >= 0 and kind >= 2:
        assert t == 4 and buf in (b"full", b"late"), (kind, res, buf)
    if kind == 3:
        assert t < 0, res  # nothing ever arrives
    if kind in (0, 2) and same_submission is False:
        # already complete (inline) before the cancel was even prepared
        assert c == -errno.ENOENT, (kind, res)
    return t, c


def test_cancel_race_every_op_completes_exactly_once(ring, pipes):
    _need("async_cancel", "nop", "read")
    outcomes: collections.Counter = collections.Counter()
    for i in range(120):
        kind = i % 6
        same = (i // 6) % 2 == 0
        _t, c = _race_round(ring, pipes, kind, same)
        outcomes[(kind, c)] += 1
        assert ring.inflight == 0, (i, kind, same)
    _nothing_for(ring, 0.02)  # no stray completions
    st = ring.statistics()
    assert st.inflight == 0
    assert st.completed >= 240
    assert st.foreign_completions == 0
    # both outcomes really happened: something was cancelled, something was not
    assert any(c == 0 for (_, c) in outcomes), outcomes
    assert any(c == -errno.ENOENT for (_, c) in outcomes), outcomes


def test_cancel_race_batched_nops(ring):
    """Many NOPs and their cancels in one submission, repeatedly: each NOP
    completes exactly once, each cancel once."""
    _need("async_cancel", "nop")
    for rnd in range(20):
        toks = {}
        for k in range(8):
            flags = SQE.ASYNC if (k + rnd) % 2 else 0
            toks[k] = ring.prep_nop(user_data=("nop", k), flags=flags)
        for k in range(8):
            ring.prep_cancel(toks[k], user_data=("cancel", k))
        cs = _collect(ring, 16)
        counts = collections.Counter(c.user_data for c in cs)
        assert all(v == 1 for v in counts.values()) and len(counts) == 16, counts
        res = {c.user_data: c.res for c in cs}
        for k in range(8):
            n, cr = res[("nop", k)], res[("cancel", k)]
            assert cr in _CANCEL_RES, (rnd, k, res)
            if cr == 0:
                assert n == -errno.ECANCELED, (rnd, k, res)
            elif cr == -errno.ENOENT:
                # Observed (6.18, SQPOLL and DEFER_TASKRUN rings): io-wq
                # occasionally fails an ASYNC NOP with -ECANCELED on its own
                # while the cancel aimed at it finds nothing.  Kernel
                # behaviour; what subring owes is one completion per op.
                allowed = (0, -errno.ECANCELED) if (k + rnd) % 2 else (0,)
                assert n in allowed, (rnd, k, hex(ring.setup_flags), sorted(res.items()))
        assert ring.inflight == 0
    _nothing_for(ring, 0.02)
