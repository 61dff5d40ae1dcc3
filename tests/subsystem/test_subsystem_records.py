"""Packed records (``prep_records``): many calls of a vector op in one SQE.

Every record must reach the vector handler as its own call, in order, with
the exact bytes; an op completes once with its number of records (or the
error all of them got); bad requests fail cleanly on both sides -- the
client refuses them, and a raw client that forges record SQEs gets error
completions while the server keeps serving."""

from __future__ import annotations

import errno
import json

import pytest
from subsys_helpers import SR_PAYLOAD_NONE, SR_PAYLOAD_SLOT, RawClient, pack_sqe, start_server

import subring

TARGET = "subsys_examples:RecordSink"
SR_OPF_RECORDS = 1 << 3
SR_RECORDS_MAX = 4096
T = 10


@pytest.fixture(scope="module")
def srv(tmp_path_factory):
    path = tmp_path_factory.mktemp("records") / "records.sock"
    with start_server(path, TARGET) as s:
        yield s


@pytest.fixture
def c(srv):
    """The client under test (small slots: few records per op), and a second
    connection with room for the server's report (``c.taken()``)."""
    cl = srv.connect(slot_size=256, entries=64)
    reader = srv.connect(slot_size=1 << 20)
    cl.taken = lambda: [(bytes.fromhex(h), a, b)
                        for h, a, b in json.loads(reader.call("taken", timeout=T))]
    try:
        yield cl
        assert srv.alive(), srv.log()
    finally:
        cl.close()
        reader.close()


def _complete(c, nops: int) -> list[tuple[int, int]]:
    got: list[tuple[int, int]] = []
    while len(got) < nops:
        assert c.submit_and_wait(nops - len(got), T)
        got += [(x.user_data, x.res) for x in c.reap()]
    return sorted(got)


def _records(n: int, size: int) -> bytes:
    return b"".join((k % 251).to_bytes(1, "little") * size for k in range(n))


@pytest.mark.parametrize("size,count", [(1, 1), (8, 10), (64, 4), (64, 9), (100, 7),
                                        (256, 3), (3, 1000)])
def test_every_record_arrives_once_in_order(c, size, count):
    data = _records(count, size)
    per = 256 // size
    nops = c.prep_records(c.ops["sink"], data, size, count)
    assert nops == -(-count // per)
    done = _complete(c, nops)
    assert [ud for ud, _ in done] == list(range(nops))              # user_data: op index
    assert [res for _, res in done] == [min(per, count - k * per) for k in range(nops)]
    calls = c.taken()
    assert [d for d, _, _ in calls] == [data[k * size:(k + 1) * size] for k in range(count)]
    assert all(a == 0 and b == 0 for _, a, b in calls)
    assert c.inflight == 0


def test_count_defaults_to_whole_records_and_user_data_base(c):
    data = _records(20, 16) + b"xyz"                    # a partial record is not sent
    nops = c.prep_records(c.ops["sink"], data, 16, user_data=1000)
    assert nops == 2                                    # 16 + 4 records per 256-byte slot
    assert _complete(c, nops) == [(1000, 16), (1001, 4)]
    assert len(c.taken()) == 20


def test_records_mix_with_plain_calls_of_the_same_op(c):
    """One Batch may hold plain ops and packed ones; each plain op keeps its
    own per-call result, a packed op reports its count."""
    op = c.ops["per_call"]
    c.prep_call(op, b"abc", user_data=1)
    c.prep_records(op, _records(5, 10), 10, user_data=2)
    c.prep_call(op, b"defgh", user_data=3)
    assert _complete(c, 3) == [(1, 3), (2, 5), (3, 5)]


def test_a_handler_error_fails_every_record_of_the_op(c):
    nops = c.prep_records(c.ops["explode"], _records(30, 20), 20)
    done = _complete(c, nops)
    assert done and all(res == -errno.EINVAL for _, res in done)
    assert c.call("plain", timeout=T) == 1              # the subsystem lives on


def test_client_refuses_bad_requests(c):
    with pytest.raises(TypeError, match="vector op"):
        c.prep_records(c.ops["plain"], b"x" * 8, 8)
    with pytest.raises(ValueError, match="record size"):
        c.prep_records(c.ops["sink"], b"x" * 8, 0)
    with pytest.raises(ValueError, match="record size"):
        c.prep_records(c.ops["sink"], b"x" * 1024, 512)     # larger than slot_size
    with pytest.raises(ValueError, match="need more"):
        c.prep_records(c.ops["sink"], b"x" * 10, 4, 3)
    with pytest.raises(ValueError, match="out of range"):
        c.prep_records(999, b"x" * 8, 8)
    with pytest.raises(TypeError):
        c.prep_records(c.ops["sink"], "not bytes", 1)
    with pytest.raises(subring.RingFullError):
        c.prep_records(c.ops["sink"], b"x" * 256 * 65, 256)  # 65 ops > 64 in flight
    assert c.inflight == 0                                  # nothing half-prepared


def test_closed_ring_refuses(srv):
    cl = srv.connect(slot_size=256)
    op = cl.ops["sink"]
    cl.close()
    with pytest.raises(subring.RingClosedError):
        cl.prep_records(op, b"x" * 8, 8)


# -- a raw client forging record SQEs --------------------------------------------


@pytest.fixture
def raw(srv):
    r = RawClient(srv.path, entries=16, slot_size=8192)
    try:
        yield r
    finally:
        r.close()


FORGED = {
    "zero-record-size": dict(length=64, personality=0),
    "length-not-a-multiple": dict(length=65, personality=8),
    "too-many-records": dict(length=SR_RECORDS_MAX + 1, personality=1),
    "records-without-payload": dict(length=64, personality=8, where=SR_PAYLOAD_NONE),
    "records-on-a-per-op-handler": dict(length=64, personality=8, op="plain"),
}


@pytest.mark.parametrize("case", list(FORGED))
def test_forged_record_sqes_get_einval(raw, srv, case):
    f = dict(FORGED[case])
    op = raw.ops[f.pop("op", "sink")]
    where = f.pop("where", SR_PAYLOAD_SLOT)
    raw.write_send_slot(0, bytes(range(256)) * 32)
    (ud, res, _), = raw.call([pack_sqe(op, fd=0, op_flags=where | SR_OPF_RECORDS,
                                       user_data=77, **f)])
    assert (ud, res) == (77, -errno.EINVAL)
    # a well-formed one on the same queue still works
    (ud, res, _), = raw.call([pack_sqe(raw.ops["sink"], fd=0, length=64, personality=8,
                                       op_flags=SR_PAYLOAD_SLOT | SR_OPF_RECORDS,
                                       user_data=78)])
    assert (ud, res) == (78, 8)
    assert not raw.disconnected() and srv.alive()
