"""Round trips between a client and a real subsystem process: payloads
(inline / slot / pool), results, errors, batches, PENDING, many concurrent
ops, op names, the op table and client statistics."""

from __future__ import annotations

import array
import errno
import json
import os
import random
import time
import zlib
from collections import Counter

import pytest
from subsys_examples import EchoTest
from subsys_helpers import call_json, drain, server_stats, start_server, wait_until

import subring
from subring import BufferPool, PeerDiedError

SR_INLINE_MAX = 80


@pytest.fixture(scope="module")
def srv(tmp_path_factory):
    """One EchoTest server for the module (no fds of ours are involved)."""
    path = tmp_path_factory.mktemp("calls") / "echo.sock"
    with start_server(path) as s:
        yield s
    assert not os.path.exists(path)


@pytest.fixture
def client(srv):
    c = srv.connect()
    try:
        yield c
    finally:
        if not srv.alive():
            pytest.fail(f"server died during the test:\n{srv.log()}")
        c.close()


@pytest.fixture
def pool():
    p = BufferPool(4, 8192)
    try:
        yield p
    finally:
        p.close()


# ---------------------------------------------------------------------------
# the op table
# ---------------------------------------------------------------------------


def test_op_table_and_identity(client, srv):
    assert client.name == "echo-test"
    assert client.ops["nop"] == 0
    expected = [s.name for s in EchoTest.op_table()]
    assert list(client.ops) == expected
    assert sorted(client.ops.values()) == list(range(len(expected)))
    assert client.op_index("echo") == client.ops["echo"]
    with pytest.raises(KeyError, match="no op 'missing'"):
        client.op_index("missing")
    assert client.op_docs["echo"] == "Return the payload."
    assert client.server_pid == srv.pid
    assert client.call("getpid") == srv.pid
    assert client.max_inflight == 256 and client.slot_size == 4096
    assert "echo-test" in repr(client)


def test_request_attributes(client):
    r = json.loads(client.call("where", b"abc", 5, -6))
    assert r == {"op": client.ops["where"], "arg0": 5, "arg1": -6,
                 "user_data": r["user_data"], "len": 3, "pid": os.getpid()}
    # 64-bit arguments travel unchanged (signed)
    r = json.loads(client.call("where", None, 2**63 - 1, -(2**63)))
    assert (r["arg0"], r["arg1"], r["len"]) == (2**63 - 1, -(2**63), 0)


def test_user_data_is_opaque_object(client):
    tok = object()
    client.prep_call(client.ops["add"], None, 1, 2, user_data=tok)
    client.prep_call(client.ops["add"], None, 3, 4, user_data="str-token")
    client.prep_call(client.ops["add"], None, 5, 6)     # no user_data: the token
    comps = drain(client, 3, timeout=5)
    by = {id(c.user_data) if c.user_data is tok else c.user_data: c.res for c in comps}
    assert by[id(tok)] == 3 and by["str-token"] == 7
    assert sorted(c.res for c in comps) == [3, 7, 11]


# ---------------------------------------------------------------------------
# payloads
# ---------------------------------------------------------------------------


@pytest.mark.parametrize("n", [0, 1, 79, 80, 81, 200, 4095, 4096])
def test_payload_sizes_roundtrip(client, n):
    data = bytes(random.Random(n).randbytes(n))
    assert client.call("echo", data) == data
    assert client.call("length", data) == n
    assert client.call("crc", bytearray(data)) == zlib.crc32(data) & 0x7FFFFFFF


def test_payload_buffer_kinds(client):
    assert client.call("echo", memoryview(b"xxhelloxx")[2:7]) == b"hello"
    assert client.call("echo", array.array("i", [1, 2])) == array.array("i", [1, 2]).tobytes()
    with pytest.raises(TypeError):
        client.prep_call(client.ops["echo"], "a str is not bytes")
    assert client.inflight == 0


def test_payload_is_copied_at_prep_time(client):
    buf = bytearray(b"A" * 300)              # a slot payload
    small = bytearray(b"B" * 10)             # an inline payload
    client.prep_call(client.ops["echo"], buf, user_data="big")
    client.prep_call(client.ops["echo"], small, user_data="small")
    buf[:] = b"Z" * 300
    small[:] = b"Y" * 10
    got = {c.user_data: c.result() for c in drain(client, 2, timeout=5)}
    assert got == {"big": b"A" * 300, "small": b"B" * 10}


def test_payload_too_large_is_refused_before_sending(client):
    before = client.statistics()
    with pytest.raises(ValueError, match="slot_size"):
        client.prep_call(client.ops["echo"], b"x" * 4097)
    with pytest.raises(ValueError):
        client.call("echo", b"x" * 100_000)
    with pytest.raises(ValueError):
        client.prep_calls(client.ops["echo"], b"x" * 8194, 4097)
    after = client.statistics()
    assert client.inflight == 0 and after.submitted == before.submitted
    assert client.call("echo", b"still fine") == b"still fine"


def test_small_slot_connection(srv):
    with srv.connect(slot_size=64, entries=8) as c:
        assert c.max_inflight == 8
        # 80 bytes still travel inline even though the slot is smaller
        assert c.call("length", b"i" * 80) == 80
        assert c.call("echo", b"s" * 64) == b"s" * 64
        with pytest.raises(ValueError):
            c.prep_call(c.ops["echo"], b"x" * 81)
        # results larger than the slot: -EMSGSIZE
        with pytest.raises(OSError) as ei:
            c.call("echo", b"i" * 80)
        assert ei.value.errno == errno.EMSGSIZE
        assert c.call("nbytes", arg0=64) == b"\x5a" * 64


def test_regression_reported_slot_size_matches_effective_limit(srv):
    """connect(slot_size=100): the server rounds slots up to 128 bytes and the
    client enforces 128, but ``client.slot_size`` says 100."""
    with srv.connect(slot_size=100) as c:
        assert c.call("echo", b"x" * 81) == b"x" * 81
        try:
            c.prep_call(c.ops["echo"], b"y" * (c.slot_size + 1))
        except ValueError:
            ok = True
        else:
            drain(c, 1, timeout=5)
            ok = False
        assert ok, (f"client.slot_size is {c.slot_size} but a payload of "
                    f"{c.slot_size + 1} bytes was accepted (the effective slot is larger)")


def test_entries_are_rounded_and_capped(srv):
    with srv.connect(entries=5) as c:
        assert c.max_inflight == 8
    with srv.connect(entries=100_000) as c:
        assert c.max_inflight == 4096
        for k in range(4096):
            c.prep_call(0, user_data=k)
        with pytest.raises(subring.RingFullError):
            c.prep_call(0)
        comps = drain(c, timeout=10)
        assert sorted(x.user_data for x in comps) == list(range(4096))


# ---------------------------------------------------------------------------
# pool payloads
# ---------------------------------------------------------------------------


def test_pool_payload_zero_copy_in_place(client, pool):
    client.register_pool(pool)
    assert client.pool is pool
    rnd = random.Random(7)
    data = rnd.randbytes(8192)
    with pool.buffer(2) as b:
        b[:] = data
    # handler sees the pool buffer (writable) and modifies it in place
    assert client.call("writable") == 0
    client.prep_call_pool(client.ops["writable"], 2, 0, 10, user_data="w")
    client.prep_call_pool(client.ops["crc"], 2, 0, 8192, user_data="crc")
    client.prep_call_pool(client.ops["pool_xor"], 2, 100, 1000, 0xFF, user_data="xor")
    got = {c.user_data: c.result() for c in drain(client, 3, timeout=5)}
    assert got == {"w": 1, "crc": zlib.crc32(data) & 0x7FFFFFFF, "xor": 1000}
    expect = bytearray(data)
    expect[100:1100] = bytes(x ^ 0xFF for x in data[100:1100])
    with pool.buffer(2) as b:
        assert bytes(b) == bytes(expect)
    # a pool payload larger than the slot is fine (zero-copy), on any buffer
    for i in range(4):
        assert client.prep_call_pool(client.ops["length"], i, 0, 8192)
    assert [c.res for c in drain(client, 4, timeout=5)] == [8192] * 4
    # edges: empty payload at the very end of the buffer
    client.prep_call_pool(client.ops["length"], 3, 8192, 0)
    assert drain(client, 1, timeout=5)[0].res == 0


@pytest.mark.parametrize("bad", [(4, 0, 1), (0, 8192, 1), (0, 0, 8193), (1, 4096, 4097),
                                 (2**16, 0, 1), (0, 2**32 - 1, 2)])
def test_pool_out_of_range_is_index_error(client, pool, bad):
    client.register_pool(pool)
    before = client.statistics().submitted
    with pytest.raises(IndexError):
        client.prep_call_pool(client.ops["length"], *bad)
    assert client.inflight == 0 and client.statistics().submitted == before


def test_pool_misuse(client, pool):
    with pytest.raises(ValueError, match="no BufferPool"):
        client.prep_call_pool(client.ops["length"], 0, 0, 1)
    client.register_pool(pool)
    with pytest.raises(ValueError, match="already registered"):
        client.register_pool(pool)
    assert client.call("echo", b"ok") == b"ok"


# ---------------------------------------------------------------------------
# results
# ---------------------------------------------------------------------------


def test_results_ints_and_none(client):
    assert client.call("ret_none") == 0
    assert client.call("add", None, 40, 2) == 42
    assert client.call("ret_int", arg0=2**31 - 1) == 2**31 - 1
    assert client.call("ret_int", arg0=0) == 0
    # a negative int is -errno
    with pytest.raises(FileNotFoundError):
        client.call("ret_int", arg0=-errno.ENOENT)
    client.prep_call(client.ops["ret_int"], None, -errno.EAGAIN, user_data=1)
    (c,) = drain(client, 1, timeout=5)
    assert c.res == -errno.EAGAIN and c.error_text is None and c.data is None
    # out of int32 range: -ERANGE
    for v in (2**31, -(2**31) - 1, 2**62):
        with pytest.raises(OSError) as ei:
            client.call("ret_int", arg0=v)
        assert ei.value.errno == errno.ERANGE


def test_results_bytes(client):
    client.prep_call(client.ops["echo"], b"payload", user_data="e")
    (c,) = drain(client, 1, timeout=5)
    assert c.res == 7 and c.data == b"payload" and c.result() == b"payload"
    assert c.op == "echo" and c.error_text is None
    assert c.buffer_id is not None      # CQE flag BUFFER: the result slot
    assert client.call("nbytes", arg0=4096) == b"\x5a" * 4096
    assert client.call("nbytes", arg0=0) == b""          # empty bytes, not 0
    assert client.call("ret_obj", arg0=3) == b"ba"       # bytearray
    assert client.call("ret_obj", arg0=4) == b"mv"       # memoryview
    assert client.call("ret_obj", arg0=2) == 1           # True is an int


def test_result_larger_than_slot_is_emsgsize(client):
    client.prep_call(client.ops["nbytes"], None, 4097, user_data=1)
    (c,) = drain(client, 1, timeout=5)
    assert c.res == -errno.EMSGSIZE and c.data is None
    with pytest.raises(OSError) as ei:
        c.result()
    assert ei.value.errno == errno.EMSGSIZE and "nbytes" in str(ei.value)


@pytest.mark.parametrize("which", [0, 1, 6])
def test_invalid_result_types_are_einval(client, which):
    with pytest.raises(OSError) as ei:
        client.call("ret_obj", arg0=which)       # float, str, object()
    assert ei.value.errno == errno.EINVAL


# ---------------------------------------------------------------------------
# errors
# ---------------------------------------------------------------------------

ERRORS = [
    (0, errno.ENOENT, "KeyError: 'no-such-key'", FileNotFoundError),
    (1, errno.EINVAL, "ValueError: bad value here", OSError),
    (2, errno.EXDEV, "custom os error", OSError),
    (3, errno.EIO, "RuntimeError: boom runtime", OSError),
    (4, errno.EINVAL, "TypeError: wrong type given", OSError),
    (5, errno.ENOSYS, "NotImplementedError: not there yet", OSError),
    (6, errno.EIO, "ZeroDivisionError: division by zero!", OSError),
    (7, errno.ENOENT, "FileNotFoundError: [Errno 2] missing file", FileNotFoundError),
]


@pytest.mark.parametrize("sel,err,text,exc", ERRORS, ids=[str(e[0]) for e in ERRORS])
def test_exceptions_map_to_errno_with_text(client, sel, err, text, exc):
    client.prep_call(client.ops["raise"], None, sel, errno.EXDEV, user_data="u")
    (c,) = drain(client, 1, timeout=5)
    assert c.res == -err
    assert c.user_data == "u" and c.op == "raise"
    assert text in c.error_text
    assert c.data is None
    with pytest.raises(exc) as ei:
        c.result()
    assert ei.value.errno == err
    assert text in str(ei.value) and "raise" in str(ei.value)
    # call() raises the same
    with pytest.raises(exc) as ei:
        client.call("raise", arg0=sel, arg1=errno.EXDEV)
    assert ei.value.errno == err and text in str(ei.value)
    # ... and the subsystem keeps running
    assert client.call("add", None, 1, 1) == 2


def test_error_text_is_truncated_to_the_slot(srv):
    with srv.connect(slot_size=64) as c:
        c.prep_call(c.ops["raise"], None, 12, user_data=1)
        (comp,) = drain(c, 1, timeout=5)
        assert comp.res == -errno.EIO
        assert comp.error_text.startswith("Exception: xxx")
        assert len(comp.error_text.encode()) <= 62


@pytest.mark.parametrize("sel,err", [(8, errno.ETIMEDOUT), (9, errno.EPERM)],
                         ids=["TimeoutError", "PermissionError"])
def test_regression_oserror_subclass_without_errno_mapping(client, sel, err):
    """server_request.c srv_request_finish() has branches mapping TimeoutError ->
    ETIMEDOUT and PermissionError -> EPERM, but they sit after the OSError
    branch (both are OSError subclasses), so an errno-less TimeoutError or
    PermissionError is reported as EIO."""
    with pytest.raises(OSError) as ei:
        client.call("raise", arg0=sel)
    assert ei.value.errno == err


def test_other_mapped_exceptions(client):
    with pytest.raises(OSError) as ei:
        client.call("raise", arg0=10)                 # IndexError (LookupError)
    assert ei.value.errno == errno.ENOENT
    with pytest.raises(OSError) as ei:
        client.call("raise", arg0=11)                 # MemoryError
    assert ei.value.errno == errno.ENOMEM


def test_unknown_op_index_and_nop(client):
    n = len(client.ops)
    for bad in (n, n + 1, 255):
        client.prep_call(bad, b"x", user_data=bad)
    client.prep_call(0, b"ignored", 1, 2, user_data="nop")
    client.prep_nop(user_data="nop2")
    comps = {c.user_data: c for c in drain(client, 5, timeout=5)}
    for bad in (n, n + 1, 255):
        assert comps[bad].res == -errno.EOPNOTSUPP
        with pytest.raises(OSError) as ei:
            comps[bad].result()
        assert ei.value.errno == errno.EOPNOTSUPP
    assert comps["nop"].res == 0 and comps["nop"].op == "nop"
    assert comps["nop2"].res == 0
    with pytest.raises(ValueError):
        client.prep_call(256)
    with pytest.raises((ValueError, OverflowError)):
        client.prep_call(-1)
    with pytest.raises(OSError) as ei:
        client.call(255)
    assert ei.value.errno == errno.EOPNOTSUPP
    assert client.call("nop") == 0


# ---------------------------------------------------------------------------
# batches
# ---------------------------------------------------------------------------


def test_prep_calls_batch_and_reap_into(srv):
    with srv.connect(entries=512) as client:
        _prep_calls_batch_and_reap_into(client)
    with srv.connect(entries=8) as small:
        with pytest.raises(subring.RingFullError):
            small.prep_calls(small.ops["length"], bytes(9), 1)
        assert small.inflight == 0
        assert small.prep_calls(small.ops["length"], bytes(8), 1) == 8
        assert {c.res for c in drain(small, 8, timeout=5)} == {1}


def _prep_calls_batch_and_reap_into(client):
    n = 500
    size = 4
    data = b"".join(k.to_bytes(4, "little") for k in range(n))
    assert client.prep_calls(client.ops["length"], data, size, user_data=1000) == n
    ud = array.array("Q", [0] * n)
    res = array.array("i", [0] * n)
    flags = array.array("I", [0] * n)
    got = 0
    deadline = time.monotonic() + 10
    while got < n and time.monotonic() < deadline:
        client.submit_and_wait(1, timeout=1)
        got += client.reap_into(memoryview(ud)[got:],
                                memoryview(res)[got:], memoryview(flags)[got:])
    assert got == n
    assert sorted(ud) == list(range(1000, 1000 + n))
    assert set(res) == {4}
    assert client.inflight == 0
    # user_data None -> k; count < len(data)/size; a slot-sized element
    big = b"".join(bytes([k]) * 100 for k in range(10))
    assert client.prep_calls(client.ops["echo"], big, 100, count=5) == 5
    comps = drain(client, 5, timeout=5)
    assert {c.user_data: c.data for c in comps} == {k: bytes([k]) * 100 for k in range(5)}
    with pytest.raises(ValueError):
        client.prep_calls(client.ops["echo"], b"abc", 2, count=2)


def test_batch_handler_gets_consecutive_ops(client):
    b = client.ops["bsize"]
    # published at once, so the server takes them in as few rounds as its
    # per-client budget allows: every request reports the size of its batch
    for n in (64, 100, 200):
        client.prep_calls(b, bytes(n), 0, count=n)
        sizes = Counter(c.res for c in drain(client, n, timeout=5))
        assert sum(sizes.values()) == n
        assert all(count % size == 0 for size, count in sizes.items()), sizes
        assert max(sizes) >= 64, sizes        # really batched
    # a different op in between splits the batch
    for k, op in enumerate(["bsize"] * 3 + ["add"] + ["bsize"] * 2):
        client.prep_call(client.ops[op], None, 1, 1, user_data=k)
    got = {c.user_data: c.res for c in drain(client, 6, timeout=5)}
    assert got == {0: 3, 1: 3, 2: 3, 3: 2, 4: 2, 5: 2}


def test_batch_handler_results(client):
    def run(op, n, payload=None):
        for k in range(n):
            client.prep_call(client.ops[op], payload if payload is not None else None, k,
                             user_data=k)
        return {c.user_data: c for c in drain(client, n, timeout=5)}

    assert {k: c.res for k, c in run("bdouble", 10).items()} == {k: 2 * k for k in range(10)}
    assert {c.res for c in run("bnone", 5).values()} == {0}
    assert {c.res for c in run("bbad", 4).values()} == {-errno.EINVAL}
    failed = run("braise", 3)
    assert {c.res for c in failed.values()} == {-errno.ENOENT}
    assert all("KeyError: 'batch failed'" in c.error_text for c in failed.values())
    rev = run("bbytes", 4, b"abc")
    assert {c.data for c in rev.values()} == {b"cba"}
    assert client.call("bdouble", b"\x05") == 10     # a batch of one, via call()


def test_regression_short_batch_result_fails_the_missing_requests(client):
    """Issue 13 bug 16: a batch handler returning fewer results than requests
    gave the missing ones res 0 (a vector handler gave -EINVAL).  One rule
    now: each request without a result fails with EINVAL and says why."""
    for k in range(6):
        client.prep_call(client.ops["bshort"], None, k, user_data=k)
    got = {c.user_data: c for c in drain(client, 6, timeout=5)}
    assert sorted(c.res for c in got.values()) == [-errno.EINVAL] * 3 + [7] * 3
    for c in got.values():
        if c.res < 0:
            assert "returned 3 results for 6 requests" in c.error_text


def test_short_vector_result_fails_the_missing_calls(tmp_path):
    """The same rule for a vector handler: calls beyond its results: EINVAL."""
    with start_server(tmp_path / "v.sock", "subsys_examples:VectorShort") as srv, \
            srv.connect() as c:
        for k in range(4):
            c.prep_call(c.ops["vshort"], b"x", user_data=k)
        got = sorted(x.res for x in drain(c, 4, timeout=5))
        assert got.count(-errno.EINVAL) >= 1 and all(r in (1, -errno.EINVAL) for r in got)


# ---------------------------------------------------------------------------
# PENDING
# ---------------------------------------------------------------------------


def test_pending_completed_later(client):
    d = client.ops["defer"]
    for k in (1, 2, 3):
        client.prep_call(d, None, k, user_data=f"d{k}")
    client.submit()
    # nothing completes while the handler holds them
    assert client.submit_and_wait(1, timeout=0.2) == 0
    assert client.reap() == []
    assert client.inflight == 3
    client.prep_call(client.ops["flush"], None, 0, 1, user_data="flush")
    got = {c.user_data: c.res for c in drain(client, 4, timeout=5)}
    assert got == {"d1": 10, "d2": 20, "d3": 30, "flush": 3}


def test_pending_fail_and_bytes(client):
    d = client.ops["defer"]
    client.prep_call(d, None, 7, user_data="a")
    client.prep_call(client.ops["flush"], None, 1, user_data="f")
    got = {c.user_data: c for c in drain(client, 2, timeout=5)}
    assert got["a"].res == -errno.EBUSY and "deferred 7 busy" in got["a"].error_text
    assert got["f"].res == 1
    client.prep_call(d, None, 9, user_data="b")
    client.prep_call(client.ops["flush"], None, 2, user_data="f")
    got = {c.user_data: c for c in drain(client, 2, timeout=5)}
    assert got["b"].data == b"late:9" and got["b"].result() == b"late:9"


def test_pending_dropped_completes_with_ecanceled(client):
    client.prep_call(client.ops["defer_drop"], user_data="x")
    (c,) = drain(client, 1, timeout=5)
    assert c.res == -errno.ECANCELED
    with pytest.raises(OSError) as ei:
        client.call("defer_drop")
    assert ei.value.errno == errno.ECANCELED


def test_pending_from_a_closed_client_completes_into_nothing(srv):
    with srv.connect() as a, srv.connect() as b:
        a.prep_call(a.ops["defer"], None, 1)
        a.submit()
        deadline = time.monotonic() + 5
        while b.call("held") < 1:
            assert time.monotonic() < deadline
            time.sleep(0.005)
        gone = server_stats(b)["disconnects"] + 1
        a.close()          # abandons its in-flight op
        while server_stats(b)["disconnects"] < gone:
            assert time.monotonic() < deadline
            time.sleep(0.005)
        # b's own deferred op is completed (alive), a's into nothing
        b.prep_call(b.ops["defer"], None, 2, user_data="mine")
        b.prep_call(b.ops["flush"], None, 0, user_data="flush")
        got = {c.user_data: c.res for c in drain(b, 2, timeout=5)}
        assert got == {"mine": 20, "flush": 1}


def test_close_abandons_at_once_but_a_held_pool_payload_can_still_be_written(srv, pool):
    """What docs/subsystems.md says close() does with ops in flight: it does
    not wait (the op is held for as long as the server likes), its result
    never comes -- and the one exception: a handler that still holds a
    prep_call_pool payload may write into that BufferPool buffer after close."""
    pool.buffer(0)[:4] = b"init"
    with srv.connect() as b:
        a = srv.connect()
        a.register_pool(pool)
        a.prep_call_pool(a.ops["defer"], 0, 0, 16, user_data="held")
        a.submit()
        wait_until(lambda: b.call("held") >= 1, 5, what="the server to hold the op")
        gone = server_stats(b)["disconnects"] + 1
        t0 = time.monotonic()
        a.close(timeout=5)                     # abandons: does not wait for "held"
        assert time.monotonic() - t0 < 0.5
        assert a.closed and a.inflight == 0
        wait_until(lambda: server_stats(b)["disconnects"] >= gone, 5,
                   what="the server to see the client go")
        assert b.call("flush", None, 3) == 0   # completed into nothing
        assert bytes(pool.buffer(0)[:4]) == b"LATE"


# ---------------------------------------------------------------------------
# many ops in flight
# ---------------------------------------------------------------------------


def test_thousands_of_concurrent_ops_exactly_once(srv):
    total = 20_000
    with srv.connect(entries=1024) as c:
        add, echo = c.ops["add"], c.ops["echo"]
        seen: dict[int, int] = {}
        next_ud = 0
        deadline = time.monotonic() + 30
        while len(seen) < total:
            assert time.monotonic() < deadline, f"only {len(seen)} of {total} completed"
            while next_ud < total and c.inflight < c.max_inflight:
                if next_ud % 3 == 0:
                    c.prep_call(echo, next_ud.to_bytes(8, "little") * (1 + next_ud % 20),
                                user_data=next_ud)
                else:
                    c.prep_call(add, None, next_ud, 1, user_data=next_ud)
                next_ud += 1
            c.submit_and_wait(1, timeout=2)
            for comp in c.reap():
                ud = comp.user_data
                assert ud not in seen, f"duplicate completion for {ud}"
                if ud % 3 == 0:
                    assert comp.op == "echo"
                    assert comp.data == ud.to_bytes(8, "little") * (1 + ud % 20)
                    seen[ud] = comp.res
                else:
                    assert comp.op == "add" and comp.res == ud + 1
                    seen[ud] = comp.res
        assert sorted(seen) == list(range(total))
        assert c.inflight == 0
        st = c.statistics()
        assert st.submitted == st.completed == total
        assert st.max_inflight == 1024


def test_completions_of_synchronous_ops_keep_submission_order(client):
    for k in range(200):
        client.prep_call(client.ops["add"], None, k, 0, user_data=k)
    comps = drain(client, 200, timeout=5)
    assert [c.user_data for c in comps] == list(range(200))


# ---------------------------------------------------------------------------
# statistics
# ---------------------------------------------------------------------------


def test_client_statistics(srv):
    with srv.connect(entries=64) as c:
        s0 = c.statistics()
        assert isinstance(s0, subring.ClientStatistics)
        assert (s0.submitted, s0.completed, s0.inflight, s0.max_inflight) == (0, 0, 0, 64)
        for k in range(10):
            c.call("add", None, k, k)
        for k in range(5):
            c.prep_call(c.ops["echo"], b"x", user_data=k)
        s1 = c.statistics()
        assert s1.inflight == 5 and s1.submitted == 10
        c.submit()
        assert c.statistics().submitted == 15
        drain(c, 5, timeout=5)
        s2 = c.statistics()
        assert (s2.submitted, s2.completed, s2.inflight) == (15, 15, 0)
        assert s2.sq_full_flushes == 0
        for k in range(64):
            c.prep_call(0, user_data=k)
        drain(c, 64, timeout=5)
        assert c.statistics().completed == 79


def test_server_statistics_count_clients(srv, client):
    s0 = server_stats(client)
    assert s0["clients"] == s0["connects"] - s0["disconnects"] >= 1
    with srv.connect() as other:
        s1 = server_stats(client)
        assert s1["connects"] == s0["connects"] + 1      # attach is synchronous
        assert s1["clients"] == s1["connects"] - s1["disconnects"]
        assert other.call("nop") == 0
    deadline = time.monotonic() + 5
    while server_stats(client)["disconnects"] < s1["disconnects"] + 1:
        assert time.monotonic() < deadline, "server did not notice the closed client"
        time.sleep(0.01)
    s2 = server_stats(client)
    assert s2["clients"] == s2["connects"] - s2["disconnects"]
    assert s2["clients"] <= s1["clients"] - 1
    assert s2["ops"] > s0["ops"]


def test_closed_client_refuses_use(srv):
    c = srv.connect()
    c.close()
    assert c.closed
    with pytest.raises(subring.RingClosedError):
        c.prep_call(0)
    with pytest.raises(subring.RingClosedError):
        c.call("nop")
    c.close()           # idempotent
    assert "closed" in repr(c)


def test_call_refuses_with_ops_in_flight(client):
    client.prep_call(client.ops["add"], None, 1, 1)
    with pytest.raises(RuntimeError, match="in flight"):
        client.call("add")
    drain(client, 1, timeout=5)
    assert client.call("add", None, 2, 2) == 4


def test_connect_kwargs_and_peer_alive(client):
    assert client.peer_dead is False
    assert isinstance(PeerDiedError("x"), ConnectionResetError)
    assert call_json(client, "stats")["mode"] == "hybrid"


def test_regression_unknown_op_index_is_not_named_after_a_kernel_op(client):
    """A subsystem op index outside the subsystem's table must not be reported
    (Completion.op, and the message of result()) under the name of the
    kernel io_uring opcode with the same number (index 40 -> 'msg_ring')."""
    kernel_names = {o.name.lower() for o in subring.Op}
    client.prep_call(40, user_data="x")
    (c,) = drain(client, 1, timeout=5)
    assert c.res == -errno.EOPNOTSUPP
    assert c.op not in kernel_names, f"unknown subsystem op 40 reported as {c.op!r}"


# ---------------------------------------------------------------------------
# issue 13 bug 16: exception text, blocking handlers
# ---------------------------------------------------------------------------


def test_regression_exception_whose_str_raises_still_gets_its_type_as_text(client):
    """Issue 13 bug 16: when str(exc) raised, request_finish passed Py_None to
    a %U format (undefined behaviour; observed: EIO with no text)."""
    comp = None
    tok = client.prep_call(client.ops["bad_str"], None)
    for c in drain(client, 1, timeout=5):
        if c.user_data == tok:
            comp = c
    assert comp is not None and comp.res == -errno.EIO
    assert comp.error_text == "BadStr: <str() of the exception failed>"
    assert client.call("add", None, 1, 1) == 2          # the server carries on


def test_defer_to_thread_keeps_other_clients_served(client, srv):
    """A handler that would block hands the work to a thread (PENDING) and
    the loop keeps serving: another client's calls complete meanwhile."""
    tok = client.prep_call(client.ops["slow_threaded"], None, 3000, 99)
    client.submit()
    with srv.connect() as other:
        for k in range(20):
            assert other.call("add", None, k, 1, timeout=5) == k + 1
    # all 20 were served while the slow op was still running on its thread
    assert client.inflight == 1 and not client.reap(), "the slow handler blocked the loop"
    got = [c for c in drain(client, 1, timeout=10) if c.user_data == tok]
    assert got[0].res == 99
    # an exception on the thread maps like a handler's
    with pytest.raises(FileNotFoundError, match="KeyError: 'thread -1'"):
        client.call("slow_threaded", None, 1, -1, timeout=10)


def test_client_refuses_a_server_of_another_ring_abi(tmp_path):
    """A server whose attach reply names another ring ABI version (another
    subring build) is refused with AbiMismatchError before the client maps
    its region; the fds that came with the reply are closed, not leaked."""
    import socket
    import threading

    from subring import _core
    from subring.subsystem import attach
    from subring.subsystem import AbiMismatchError

    path = str(tmp_path / "other-abi.sock")
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    listener.bind(path)
    listener.listen(1)
    listener.settimeout(10)
    other = _core.URING_ABI_VERSION + 1

    def fake_server():
        conn, _ = listener.accept()
        with conn:
            conn.settimeout(10)
            assert json.loads(conn.recv(65536))["subring"] == attach.PROTOCOL
            fds = [os.eventfd(0) for _ in range(3)]
            try:
                attach.send(conn, {"ok": True, "abi": other, "name": "other", "ops": [],
                                  "entries": 8, "slot_size": 256, "server_pid": os.getpid()},
                           fds)
            finally:
                for fd in fds:
                    os.close(fd)
            conn.recv(1)            # until the client hangs up

    thread = threading.Thread(target=fake_server, daemon=True)
    thread.start()
    try:
        with pytest.raises(AbiMismatchError) as ei:
            subring.connect(path, timeout=10)
        assert (ei.value.server_abi, ei.value.client_abi) == (other, _core.URING_ABI_VERSION)
        assert f"ring ABI {other}" in str(ei.value)
    finally:
        thread.join(10)
        listener.close()
    assert not thread.is_alive()
