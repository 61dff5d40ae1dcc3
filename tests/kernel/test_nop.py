"""NOP round trips: tokens, user_data objects, Completion fields, result().

These run against the real kernel across the config matrix (``ring``).
"""

from __future__ import annotations


import pytest

from subring import SQE, Completion, Op
from ringhelpers import reap_n



def test_nop_round_trip_fields(ring):
    tok = ring.prep_nop("hello")
    assert isinstance(tok, int)
    assert ring.inflight == 1
    (c,) = reap_n(ring, 1)
    assert isinstance(c, Completion)
    assert c.user_data == "hello"
    assert c.res == 0
    assert c.flags == 0
    assert c.op == "nop"
    assert c.opcode == Op.NOP == 0
    assert c.more is False
    assert c.buffer_id is None
    if ring.cqe_size == 32:
        assert isinstance(c.extra, tuple) and len(c.extra) == 2
        assert c.extra == (0, 0)
    else:
        assert ring.cqe_size == 16
        assert c.extra is None
    assert c.result() == 0
    assert ring.inflight == 0
    assert ring.cq_ready == 0
    assert ring.reap() == []


def test_completion_is_immutable(plain_ring):
    plain_ring.prep_nop(7)
    (c,) = reap_n(plain_ring, 1)
    for attr, value in [("res", 1), ("user_data", 8), ("flags", 1), ("op", "read"),
                        ("opcode", 22), ("more", True), ("buffer_id", 1), ("extra", None)]:
        with pytest.raises(AttributeError):
            setattr(c, attr, value)
    assert c.res == 0 and c.user_data == 7
    r = repr(c)
    assert "nop" in r and "user_data=7" in r and "res=0" in r


def test_none_user_data_is_the_token(ring):
    toks = [ring.prep_nop(None), ring.prep_nop(user_data=None), ring.prep_nop()]
    comps = reap_n(ring, 3)
    assert sorted(c.user_data for c in comps) == sorted(toks)
    assert all(type(c.user_data) is int and c.result() == 0 for c in comps)


class _Thing:
    pass


def test_user_data_any_python_object(ring):
    thing = _Thing()
    objs = [0, -1, 1, 2**64 - 1, 2**64, 2**200, -(2**100), 1.5, "text", b"bytes",
            bytearray(b"ba"), (1, 2), [3, 4], {"k": "v"}, frozenset({1}), thing,
            _Thing, len, lambda: None, True, False, ..., Op.NOP]
    toks = [ring.prep_nop(o) for o in objs]
    assert len(set(toks)) == len(objs)
    comps = reap_n(ring, len(objs))
    got = [c.user_data for c in comps]
    # Identity, not just equality: the very object comes back.
    assert sorted(map(id, got)) == sorted(map(id, objs))
    for c in comps:
        assert c.res == 0 and c.op == "nop"
    assert ring.inflight == 0


def test_int_user_data_equal_to_another_token_is_not_confused(plain_ring):
    """An int user_data that happens to equal a live token stays the user's int."""
    t1 = plain_ring.prep_nop("first")
    t2 = plain_ring.prep_nop(t1)          # user_data == t1's token
    comps = reap_n(plain_ring, 2)
    by_ud = {repr(c.user_data): c for c in comps}
    assert set(by_ud) == {repr("first"), repr(t1)}
    assert t2 != t1


def test_tokens_unique_among_inflight(ring):
    n = ring.max_inflight
    toks = [ring.prep_nop() for _ in range(n)]
    assert len(set(toks)) == n
    # Generation 0 is never issued: token 0 is reserved for internal use.
    assert 0 not in toks
    assert all(0 < t < 2**64 for t in toks)
    assert ring.inflight == n
    comps = reap_n(ring, n)
    assert sorted(c.user_data for c in comps) == sorted(toks)
    assert ring.inflight == 0


def test_reused_slot_gets_a_new_token(plain_ring):
    seen = set()
    for _ in range(50):
        tok = plain_ring.prep_nop()
        assert tok not in seen, "a token was reissued after its op completed"
        seen.add(tok)
        (c,) = reap_n(plain_ring, 1)
        assert c.user_data == tok


def test_inflight_counts_prepared_not_submitted(ring):
    for k in range(5):
        ring.prep_nop(k)
        assert ring.inflight == k + 1
    ring.submit()
    # Submitting does not complete anything in our bookkeeping: only reaping does.
    assert ring.inflight == 5
    comps = reap_n(ring, 5)
    assert sorted(c.user_data for c in comps) == [0, 1, 2, 3, 4]
    assert ring.inflight == 0


def test_nop_with_sqe_flags(ring):
    for flags in (0, SQE.ASYNC, SQE.DRAIN, SQE.ASYNC | SQE.DRAIN):
        ring.prep_nop(("a", flags), flags=flags)
        ring.prep_nop(("b", flags), flags=flags)
        comps = reap_n(ring, 2)
        assert sorted(c.user_data for c in comps) == [("a", flags), ("b", flags)]
        assert all(c.res == 0 and c.result() == 0 for c in comps)


def test_reap_max(plain_ring):
    for k in range(6):
        plain_ring.prep_nop(k)
    plain_ring.submit_and_wait(6, timeout=5)
    first = plain_ring.reap(max=2)
    assert len(first) == 2
    assert plain_ring.cq_ready == 4
    assert plain_ring.inflight == 4
    assert plain_ring.reap(max=0) == []
    rest = plain_ring.reap()
    assert len(rest) == 4
    assert sorted(c.user_data for c in first + rest) == list(range(6))
    assert plain_ring.inflight == 0


def test_wait_and_completions_helpers(ring):
    ring.prep_nop("w1")
    ring.prep_nop("w2")
    got = ring.wait(2, timeout=5)
    while len(got) < 2:
        more = ring.wait(2 - len(got), timeout=5)
        assert more, "wait() timed out"
        got += more
    assert sorted(c.user_data for c in got) == ["w1", "w2"]
    for k in range(4):
        ring.prep_nop(k)
    ring.submit()
    got = [c.user_data for c in ring.completions(timeout=5)]
    assert sorted(got) == [0, 1, 2, 3]
    assert ring.inflight == 0
