"""A raw client writes garbage into its own ring region (impossible indices,
random SQE bytes, bogus slot/pool references) and into the control channel.
The server must survive, keep serving a well-behaved client, and answer the
garbage with error completions or by disconnecting the offender."""

from __future__ import annotations

import errno
import json
import os
import random
import socket
import struct
import time

import pytest
from subsys_helpers import (
    IORING_CQE_BUFFER_SHIFT,
    IORING_CQE_F_BUFFER,
    OFF_SQ_FLAGS,
    OFF_SQ_HEAD,
    OFF_STATE,
    SR_CQE_F_ERRTEXT,
    SR_INLINE_MAX,
    SR_OPF_RESULT,
    SR_PAYLOAD_INLINE,
    SR_PAYLOAD_NONE,
    SR_PAYLOAD_POOL,
    SR_PAYLOAD_SLOT,
    SR_STATE_RUNNING,
    SR_STATE_STOPPED,
    SR_URING_MAGIC,
    RawClient,
    pack_sqe,
    raw_connect,
    raw_exchange,
    server_stats,
    start_server,
    unpack_sqe,
    wait_until,
)

import subring
from subring import BufferPool
from subring.subsystem import attach

TARGET = "subsys_examples:FuzzTarget"
POOL_COUNT, POOL_SIZE = 4, 512


@pytest.fixture(scope="module")
def fsrv(tmp_path_factory):
    path = tmp_path_factory.mktemp("fuzz") / "fuzz.sock"
    with start_server(path, TARGET) as s:
        yield s


@pytest.fixture
def good(fsrv):
    """A well-behaved client; checks at teardown that the server survived."""
    c = fsrv.connect()
    try:
        assert c.call("echo", b"hello") == b"hello"
        yield c
        assert fsrv.alive(), fsrv.log()
        assert c.call("echo", b"still here") == b"still here"
        assert "Traceback" not in fsrv.log(), fsrv.log()
    finally:
        c.close()


@pytest.fixture
def raw(fsrv):
    r = RawClient(fsrv.path, entries=16, slot_size=256)
    try:
        yield r
    finally:
        r.close()


def _good_roundtrip(c, rnd: random.Random) -> None:
    data = rnd.randbytes(rnd.randrange(0, 300))
    assert c.call("echo", data, timeout=5) == data
    assert c.call("add", None, len(data), 1, timeout=5) == len(data) + 1


# ---------------------------------------------------------------------------
# the region as the server built it
# ---------------------------------------------------------------------------


def test_raw_region_header(raw, fsrv):
    assert raw.magic == SR_URING_MAGIC and raw.version == 1
    assert raw.sq_entries == raw.cq_entries == raw.nslots == 16
    assert (raw.sqe_size, raw.cqe_size, raw.slot_size) == (128, 16, 256)
    assert raw.server_pid == fsrv.pid and raw.client_pid == os.getpid()
    assert raw.region_size == len(raw.mm)
    assert raw.sqes_off >= 576 and raw.cqes_off >= raw.sqes_off + 16 * 128
    assert raw.send_off >= raw.cqes_off + 16 * 16
    assert raw.result_off >= raw.send_off + 16 * 256
    assert raw.result_off + 16 * 256 <= raw.region_size
    assert raw.get_state() == SR_STATE_RUNNING
    assert raw.reply["entries"] == 16 and raw.reply["name"] == "fuzz-target"
    # the region is sealed against resizing (no SIGBUS games)
    import fcntl
    need = fcntl.F_SEAL_SHRINK | fcntl.F_SEAL_GROW | fcntl.F_SEAL_SEAL
    assert raw.seals & need == need


def test_raw_client_well_behaved_roundtrip(raw):
    echo, add = raw.ops["echo"], raw.ops["add"]
    raw.write_send_slot(3, b"S" * 200)
    cqes = raw.call([
        pack_sqe(echo, op_flags=SR_PAYLOAD_INLINE | SR_OPF_RESULT, fd=1, length=5,
                 inline=b"hello", user_data=1),
        pack_sqe(echo, op_flags=SR_PAYLOAD_SLOT | SR_OPF_RESULT, fd=3, length=200,
                 user_data=2),
        pack_sqe(add, op_flags=SR_OPF_RESULT, fd=0, off=40, addr=2, user_data=3),
        pack_sqe(0, user_data=4),
    ])
    by = {ud: (res, flags) for ud, res, flags in cqes}
    assert by[1] == (5, IORING_CQE_F_BUFFER | (1 << IORING_CQE_BUFFER_SHIFT))
    assert raw.result_slot(1, 5) == b"hello"
    assert by[2] == (200, IORING_CQE_F_BUFFER | (3 << IORING_CQE_BUFFER_SHIFT))
    assert raw.result_slot(3, 200) == b"S" * 200
    assert by[3] == (42, 0) and by[4] == (0, 0)
    # the server armed NEED_WAKEUP when it went to sleep (hybrid default)
    wait_until(lambda: raw.get_sq_flags() & 1, 2, what="NEED_WAKEUP")


# ---------------------------------------------------------------------------
# one bad field at a time: exact error completions
# ---------------------------------------------------------------------------

R = SR_OPF_RESULT
BAD_SQES = {
    "unknown-op-flag-bits": (dict(op="echo", op_flags=R | (1 << 3)), -errno.EINVAL),
    "high-op-flag-bit": (dict(op="echo", op_flags=R | (1 << 31)), -errno.EINVAL),
    "slot-out-of-range": (dict(op="echo", op_flags=R, fd=16), -errno.EINVAL),
    "slot-negative": (dict(op="echo", op_flags=R, fd=-1), -errno.EINVAL),
    "inline-too-long": (dict(op="echo", op_flags=R | SR_PAYLOAD_INLINE, length=81),
                        -errno.EINVAL),
    "inline-huge": (dict(op="echo", op_flags=R | SR_PAYLOAD_INLINE, length=2**32 - 1),
                    -errno.EINVAL),
    "slot-payload-too-long": (dict(op="echo", op_flags=R | SR_PAYLOAD_SLOT, length=257),
                              -errno.EINVAL),
    "pool-without-pool": (dict(op="echo", op_flags=R | SR_PAYLOAD_POOL, length=1),
                          -errno.EFAULT),
    "unknown-opcode": (dict(op=200, op_flags=R), -errno.EOPNOTSUPP),
    "opcode-255": (dict(op=255, op_flags=R | (1 << 9), fd=-5), -errno.EOPNOTSUPP),
    "nop-with-garbage": (dict(op=0, op_flags=0xFFFFFFFF, fd=-7, length=2**32 - 1), 0),
    "bytes-result-without-result-flag": (dict(op="echo", op_flags=SR_PAYLOAD_INLINE,
                                              length=3), -errno.ENOBUFS),
    "result-larger-than-slot": (dict(op="retsize", op_flags=R, off=257), -errno.EMSGSIZE),
    "int-result-out-of-range": (dict(op="add", op_flags=R, off=2**31 - 1, addr=1),
                                -errno.ERANGE),
}


@pytest.mark.parametrize("case", list(BAD_SQES))
def test_bad_sqe_gets_exact_error(raw, good, case):
    fields, expect = BAD_SQES[case]
    fields = dict(fields)
    op = fields.pop("op")
    opcode = raw.ops[op] if isinstance(op, str) else op
    (ud, res, flags), = raw.call([pack_sqe(opcode, user_data=0xABCDEF, **fields)])
    assert (ud, res) == (0xABCDEF, expect)
    assert flags == 0
    # the queue is still usable after an error completion
    (ud, res, flags), = raw.call([pack_sqe(raw.ops["add"], op_flags=R, off=1, addr=2,
                                           user_data=7)])
    assert (ud, res) == (7, 3)
    assert not raw.disconnected()
    _good_roundtrip(good, random.Random(case))


def test_pool_references_are_bounds_checked(raw, good):
    reply = raw.register_pool(POOL_COUNT, POOL_SIZE)
    assert reply == {"ok": True}
    with raw.pool.buffer(1) as b:
        b[:] = bytes(range(256)) * 2
    xor, blen = raw.ops["pool_xor"], raw.ops["blen"]
    P = SR_PAYLOAD_POOL | R
    cases = [
        (dict(buf_index=1, file_index=0, length=POOL_SIZE), POOL_SIZE),
        (dict(buf_index=3, file_index=POOL_SIZE, length=0), 0),
        (dict(buf_index=3, file_index=POOL_SIZE - 7, length=7), 7),
        (dict(buf_index=POOL_COUNT, file_index=0, length=1), -errno.EFAULT),
        (dict(buf_index=0xFFFF, file_index=0, length=1), -errno.EFAULT),
        (dict(buf_index=0, file_index=POOL_SIZE, length=1), -errno.EFAULT),
        (dict(buf_index=0, file_index=1, length=POOL_SIZE), -errno.EFAULT),
        (dict(buf_index=0, file_index=2**32 - 1, length=2), -errno.EFAULT),
        (dict(buf_index=0, file_index=0, length=2**32 - 1), -errno.EFAULT),
    ]
    cqes = raw.call([pack_sqe(blen, op_flags=P, user_data=k, fd=k, **f)
                     for k, (f, _) in enumerate(cases)])
    assert sorted((u, r) for u, r, _ in cqes) == [(k, e) for k, (_, e) in enumerate(cases)]
    # in-place modification through the pool, seen by the raw client
    (ud, res, _), = raw.call([pack_sqe(xor, op_flags=P, off=0xFF, buf_index=1,
                                       file_index=10, length=20, user_data=99)])
    assert res == 20
    with raw.pool.buffer(1) as b:
        assert bytes(b[10:30]) == bytes(x ^ 0xFF for x in (bytes(range(256)) * 2)[10:30])
        assert bytes(b[:10]) == bytes(range(10))
    # a non-pool payload is read-only for the handler
    (ud, res, flags), = raw.call([pack_sqe(xor, op_flags=R | SR_PAYLOAD_INLINE, length=4,
                                           fd=5, user_data=5)])
    assert res == -errno.EINVAL
    assert flags == SR_CQE_F_ERRTEXT | (5 << IORING_CQE_BUFFER_SHIFT)
    assert "ValueError: not a pool payload" in raw.error_text(5)
    _good_roundtrip(good, random.Random(1))


# ---------------------------------------------------------------------------
# impossible indices: the offender is disconnected, nobody else notices
# ---------------------------------------------------------------------------

def _impossible_tails(raw):
    head = raw.get_sq_head()
    return {"beyond-entries": head + raw.sq_entries + 1, "far-ahead": head + 2**31,
            "behind-head": head - 1}


@pytest.mark.parametrize("variant", ["beyond-entries", "far-ahead", "behind-head"])
def test_impossible_sq_tail_disconnects(fsrv, good, variant):
    with RawClient(fsrv.path, entries=16) as raw:
        raw.call([pack_sqe(0, user_data=1)])           # some history first
        before = server_stats(good)
        raw.set_sq_tail(_impossible_tails(raw)[variant] & 0xFFFFFFFF)
        raw.ring()
        assert raw.wait_disconnected(5), "a client with an impossible sq_tail stayed attached"
        assert raw.get_state() == SR_STATE_STOPPED
        assert fsrv.alive()
        _good_roundtrip(good, random.Random(variant))
        wait_until(lambda: server_stats(good)["clients"] == before["clients"] - 1, 5,
                   what="the offender to be dropped")


@pytest.mark.parametrize("delta", [1, 1000, 2**31, -(16 + 1), -(2**31)])
def test_bogus_cq_head_disconnects(fsrv, good, delta):
    with RawClient(fsrv.path, entries=16) as raw:
        raw.call([pack_sqe(0, user_data=k) for k in range(3)])
        raw.set_cq_head((raw.get_cq_tail() + delta) & 0xFFFFFFFF)
        raw.ring()
        assert raw.wait_disconnected(5), f"cq_head = tail{delta:+d} was accepted"
        assert fsrv.alive()
        _good_roundtrip(good, random.Random(delta))


def test_cq_head_within_range_is_legal(fsrv, good):
    """A client may 'skip' completions (head moved up to the tail) or not
    consume them (the server stops taking SQEs: backpressure, no overflow)."""
    with RawClient(fsrv.path, entries=8) as raw:
        add = raw.ops["add"]
        # fill the CQ without consuming it: at most 8 ops are taken
        raw.push([pack_sqe(add, op_flags=R, off=k, user_data=k) for k in range(8)])
        wait_until(lambda: raw.cq_ready() == 8, 5, what="a full CQ")
        raw.push([pack_sqe(add, op_flags=R, off=100 + k, user_data=100 + k) for k in range(4)])
        time.sleep(0.2)
        assert raw.cq_ready() == 8                       # no overflow, nothing lost
        assert (raw.get_sq_tail() - raw.get_sq_head()) & 0xFFFFFFFF == 4
        first = raw.take_cqes()
        assert [(u, r) for u, r, _ in first] == [(k, k) for k in range(8)]
        raw.ring()
        rest = raw.wait_cqes(4, timeout=5)
        assert [(u, r) for u, r, _ in rest] == [(100 + k, 100 + k) for k in range(4)]
        # skipping: set head = tail without reading is legal
        raw.push([pack_sqe(0, user_data=1)])
        wait_until(lambda: raw.cq_ready() == 1, 5, what="cqe")
        raw.cq_head = raw.get_cq_tail()
        raw.set_cq_head(raw.cq_head)
        assert raw.call([pack_sqe(add, op_flags=R, off=5, addr=5, user_data=9)])[0][:2] == (9, 10)
        assert not raw.disconnected()
        _good_roundtrip(good, random.Random(3))


def test_server_never_trusts_its_own_indices_in_shared_memory(fsrv, good):
    """Scribbling over words only the server writes (sq_head, sq_flags, state,
    the header) changes nothing: the server keeps private copies."""
    with RawClient(fsrv.path, entries=16) as raw:
        raw.call([pack_sqe(0, user_data=k) for k in range(5)])
        rnd = random.Random(5)
        for _ in range(20):
            raw.write_header_bytes(0, rnd.randbytes(80))
            raw.write_header_bytes(OFF_SQ_HEAD, rnd.randbytes(4))
            raw.write_header_bytes(OFF_SQ_FLAGS, rnd.randbytes(4))
            raw.write_header_bytes(OFF_STATE, rnd.randbytes(4))
            sqes = [pack_sqe(raw.ops["add"], op_flags=R, off=k, addr=1, user_data=k)
                    for k in range(rnd.randrange(1, 9))]
            for s in sqes:                               # push without trusting sq_head
                raw.write_sqe(raw.sq_tail, s)
                raw.sq_tail = (raw.sq_tail + 1) & 0xFFFFFFFF
            raw.set_sq_tail(raw.sq_tail)
            raw.ring()
            got = raw.wait_cqes(len(sqes), timeout=5)
            assert [(u, r) for u, r, _ in got] == [(k, k + 1) for k in range(len(sqes))]
            assert raw.get_sq_head() == raw.sq_tail      # rewritten by the server
        assert not raw.disconnected()
        _good_roundtrip(good, rnd)


# ---------------------------------------------------------------------------
# random garbage, checked against a model of the server's validation
# ---------------------------------------------------------------------------


def _s64(v: int) -> int:
    return v - 2**64 if v >= 2**63 else v


class Model:
    """What the server must answer to an SQE (abi.h + the FuzzTarget ops)."""

    def __init__(self, raw: RawClient, has_pool: bool) -> None:
        self.raw = raw
        self.names = {i: n for n, i in raw.ops.items()}
        self.has_pool = has_pool

    def expect(self, s: dict, send_slots: dict[int, bytes]) -> dict:
        """{"res": int or None (any), "flags": int or None, "data": bytes or
        None, "defer": value or None, "errtext": str or None}"""
        out = {"res": None, "flags": None, "data": None, "defer": None, "errtext": None}
        op = s["opcode"]
        if op == 0:
            out.update(res=0, flags=0)
            return out
        name = self.names.get(op)
        if name is None:
            out.update(res=-errno.EOPNOTSUPP, flags=0)
            return out
        of, slot, ln = s["op_flags"], s["fd"] & 0xFFFFFFFF, s["len"]
        bad = None
        where = of & 3
        if of & ~7 or slot >= self.raw.nslots or where == SR_PAYLOAD_INLINE and ln > SR_INLINE_MAX or where == SR_PAYLOAD_SLOT and ln > self.raw.slot_size:
            bad = -errno.EINVAL
        elif where == SR_PAYLOAD_POOL and (not self.has_pool or s["buf_index"] >= POOL_COUNT
                                           or s["file_index"] + ln > POOL_SIZE):
            bad = -errno.EFAULT
        if bad is not None:
            out.update(res=bad, flags=0)
            return out
        want = bool(of & SR_OPF_RESULT)
        n = 0 if where == SR_PAYLOAD_NONE else ln
        payload = {SR_PAYLOAD_NONE: b"", SR_PAYLOAD_INLINE: s["inline"][:n],
                   SR_PAYLOAD_SLOT: send_slots.get(slot, b"")[:n]}.get(where)
        arg0, arg1 = _s64(s["off"]), _s64(s["addr"])
        buf_flags = IORING_CQE_F_BUFFER | (slot << IORING_CQE_BUFFER_SHIFT)
        err_flags = (SR_CQE_F_ERRTEXT | (slot << IORING_CQE_BUFFER_SHIFT)) if want else 0

        def bytes_result(size: int, data: bytes | None) -> None:
            if not want:
                out.update(res=-errno.ENOBUFS, flags=0)
            elif size > self.raw.slot_size:
                out.update(res=-errno.EMSGSIZE, flags=0)
            else:
                out.update(res=size, flags=buf_flags, data=data)

        if name == "echo":
            bytes_result(n, payload)
        elif name == "add":
            v = arg0 + arg1
            out.update(res=v if -(2**31) <= v < 2**31 else -errno.ERANGE, flags=0)
        elif name == "fail":
            k = arg0 % 4
            res, txt = [(-errno.ENOENT, "KeyError: 'fuzz key'"),
                        (-errno.EINVAL, "ValueError: fuzz value"),
                        (-errno.EBADMSG, "fuzz os"),
                        (-errno.EIO, "RuntimeError: fuzz runtime")][k]
            out.update(res=res, flags=err_flags, errtext=txt if want else None)
        elif name == "blen":
            out.update(res=n, flags=0)
        elif name == "defer":
            out.update(defer=arg0 & 0x7FFFFFFF)
        elif name == "pool_xor":
            if where != SR_PAYLOAD_POOL:
                out.update(res=-errno.EINVAL, flags=err_flags,
                           errtext="ValueError: not a pool payload" if want else None)
            else:
                out.update(res=n, flags=0)
        elif name == "retsize":
            size = arg0 & 0x1FFF
            bytes_result(size, bytes(size))
        # "stats": anything
        return out


def _random_u64(rnd: random.Random) -> int:
    return rnd.choice([0, 1, 2, 3, 7, 255, 256, 0x1FFF, 2**31 - 1, 2**31, 2**63 - 1, 2**63,
                       2**64 - 1, rnd.getrandbits(64), rnd.getrandbits(16),
                       (-rnd.getrandbits(20)) & (2**64 - 1)])


def _random_sqe(rnd: random.Random, raw: RawClient, ud: int, valid_ops: list[int]) -> bytes:
    if rnd.random() < 0.15:                     # pure noise (user_data kept unique)
        b = bytearray(rnd.randbytes(128))
        struct.pack_into("<Q", b, 32, ud)
        return bytes(b)
    r = rnd.random()
    opcode = rnd.choice(valid_ops) if r < 0.75 else (
        rnd.randrange(256) if r < 0.9 else len(raw.ops) + rnd.randrange(3))
    where = rnd.randrange(4)
    op_flags = where | (SR_OPF_RESULT if rnd.random() < 0.85 else 0)
    if rnd.random() < 0.08:
        op_flags |= 1 << rnd.randrange(3, 32)
    slot = rnd.randrange(raw.nslots) if rnd.random() < 0.9 else rnd.choice(
        [raw.nslots, raw.nslots + 1, -1, 2**31 - 1, -(2**31), rnd.getrandbits(31)])
    limit = {SR_PAYLOAD_NONE: 64, SR_PAYLOAD_INLINE: SR_INLINE_MAX,
             SR_PAYLOAD_SLOT: raw.slot_size, SR_PAYLOAD_POOL: POOL_SIZE}[where]
    buf_index = rnd.randrange(POOL_COUNT) if rnd.random() < 0.9 else rnd.choice(
        [POOL_COUNT, 0xFFFF, rnd.getrandbits(16)])
    if rnd.random() < 0.88:
        length = rnd.randrange(limit + 1)
        file_index = rnd.randrange(POOL_SIZE - length + 1) if where == SR_PAYLOAD_POOL \
            else rnd.getrandbits(32)
    else:
        length = rnd.choice([limit + 1, 2**32 - 1, 2**31, rnd.getrandbits(32)])
        file_index = rnd.choice([0, POOL_SIZE, 2**32 - 1, rnd.getrandbits(32)])
    return pack_sqe(opcode, flags=rnd.getrandbits(8), ioprio=rnd.getrandbits(16), fd=slot,
                    off=_random_u64(rnd), addr=_random_u64(rnd), length=length,
                    op_flags=op_flags, user_data=ud, buf_index=buf_index,
                    personality=rnd.getrandbits(16), file_index=file_index,
                    inline=rnd.randbytes(SR_INLINE_MAX))


def test_random_garbage_sqes(fsrv, good):
    rnd = random.Random(20240601)
    good_rnd = random.Random(99)
    iterations, time_cap = 2500, 25.0
    t_start = time.monotonic()
    stats = {"cqes": 0, "errors": 0, "disconnects": 0, "batches": 0, "defers": 0}
    errors_seen: set[int] = set()

    def new_raw() -> tuple[RawClient, Model, list[int]]:
        r = RawClient(fsrv.path, entries=16, slot_size=256)
        assert r.register_pool(POOL_COUNT, POOL_SIZE) == {"ok": True}
        ops = [i for n, i in r.ops.items() if n != "stats"]
        return r, Model(r, True), ops

    raw, model, valid_ops = new_raw()
    held: int | None = None                         # our latest held defer
    held_value: dict[int, int] = {}
    next_ud = 1
    try:
        for it in range(iterations):
            if time.monotonic() - t_start > time_cap:   # bounded in time: stop, don't fail
                assert it >= 200, f"fuzz too slow: only {it} iterations in {time_cap} s"
                break
            action = rnd.random()
            if action < 0.04 or action > 0.985:
                # protocol violation: impossible sq_tail or bogus cq_head
                if action < 0.04:
                    raw.set_sq_tail((raw.get_sq_head() + raw.sq_entries + 1 +
                                     rnd.randrange(2**30)) & 0xFFFFFFFF)
                else:
                    raw.set_cq_head((raw.get_cq_tail() + 1 + rnd.randrange(2**30))
                                    & 0xFFFFFFFF)
                raw.ring()
                assert raw.wait_disconnected(5), f"iteration {it}: violation not punished"
                assert raw.get_state() == SR_STATE_STOPPED
                stats["disconnects"] += 1
                raw.close()
                raw, model, valid_ops = new_raw()
                held = None
            else:
                n = rnd.randrange(1, 9)
                send_slots: dict[int, bytes] = {}
                sqes, expects = [], {}
                for _ in range(n):
                    raw_sqe = _random_sqe(rnd, raw, next_ud, valid_ops)
                    s = unpack_sqe(raw_sqe)
                    slot = s["fd"] & 0xFFFFFFFF
                    if (s["op_flags"] & 3) == SR_PAYLOAD_SLOT and slot < raw.nslots \
                            and slot not in send_slots:
                        send_slots[slot] = rnd.randbytes(raw.slot_size)
                    sqes.append(raw_sqe)
                    expects[next_ud] = s
                    next_ud += 1
                for slot, content in send_slots.items():
                    raw.write_send_slot(slot, content)
                slots_used = [unpack_sqe(x)["fd"] & 0xFFFFFFFF for x in sqes]
                outstanding = {}
                for ud, s in expects.items():
                    e = model.expect(s, send_slots)
                    if e["defer"] is not None:
                        if held is not None:
                            outstanding[held] = {"res": held_value[held], "flags": 0}
                        held = ud
                        held_value[ud] = e["defer"]
                        stats["defers"] += 1
                    else:
                        outstanding[ud] = e
                raw.push(sqes)
                deadline = time.monotonic() + 5
                while outstanding:
                    assert time.monotonic() < deadline, \
                        f"iteration {it}: no CQE for {sorted(outstanding)}"
                    assert not raw.disconnected(), f"iteration {it}: valid-index batch dropped"
                    for ud, res, flags in raw.take_cqes():
                        assert ud in outstanding, f"iteration {it}: unexpected CQE {ud} {res}"
                        e = outstanding.pop(ud)
                        s = expects.get(ud)
                        if e["res"] is not None:
                            assert res == e["res"], (it, s, e, res)
                        if e["flags"] is not None:
                            assert flags == e["flags"], (it, s, e, hex(flags))
                        slot = (s["fd"] & 0xFFFFFFFF) if s else None
                        unique = s is not None and slots_used.count(slot) == 1
                        if e.get("data") is not None and unique:
                            assert raw.result_slot(slot, len(e["data"])) == e["data"], (it, s)
                        if e.get("errtext") and unique:
                            assert e["errtext"] in raw.error_text(slot), (it, s)
                        stats["cqes"] += 1
                        if res < 0:
                            stats["errors"] += 1
                            errors_seen.add(-res)
                    if outstanding:
                        time.sleep(0.0002)
                stats["batches"] += 1
            if it % 4 == 0:
                _good_roundtrip(good, good_rnd)
            if it % 50 == 0:
                assert fsrv.alive(), fsrv.log()
    finally:
        raw.close()
    assert fsrv.alive(), fsrv.log()
    _good_roundtrip(good, good_rnd)
    # the fuzzing reached the interesting outcomes
    assert stats["disconnects"] >= 5, stats
    assert {errno.EINVAL, errno.EFAULT, errno.EOPNOTSUPP, errno.ENOBUFS, errno.EMSGSIZE,
            errno.ERANGE, errno.ENOENT} <= errors_seen, (stats, errors_seen)
    assert stats["defers"] >= 10 and stats["cqes"] >= 1000, stats
    wait_until(lambda: server_stats(good)["clients"] == 1, 5,
               what="every fuzzing connection to be gone")


def test_garbage_never_read_back(fsrv, good):
    """Several raw clients each fill their ring with noise and never read a
    CQE, then vanish: the server stays up and keeps serving."""
    rnd = random.Random(7)
    raws = []
    try:
        for k in range(6):
            r = RawClient(fsrv.path, entries=16, slot_size=64)
            raws.append(r)
            r.push([bytes(rnd.randbytes(128)) for _ in range(16)])
            _good_roundtrip(good, rnd)
        for r in raws:
            assert not r.disconnected()
            wait_until(lambda r=r: r.get_sq_head() == r.sq_tail, 5, what="noise consumed")
    finally:
        for r in raws:
            r.close()
    _good_roundtrip(good, rnd)
    wait_until(lambda: server_stats(good)["clients"] == 1, 5, what="raw clients dropped")


@pytest.mark.parametrize("mode", ["interrupt", "hybrid"])
def test_regression_full_cq_with_queued_sqes_starves_the_server(tmp_path, mode):
    """A client that leaves SQEs queued while its CQ is full (it stopped
    reading completions) makes ServerLoop.run() spin forever: loop_any_work()
    reports that queue as 'work' although loop_process() cannot take it, so the
    loop never reaches epoll_wait -- it burns a CPU and never sees control
    events: new clients cannot attach, dead ones are not noticed."""
    with start_server(tmp_path / "s.sock", TARGET, mode=mode) as srv, \
            srv.connect() as c, RawClient(srv.path, entries=8) as raw:
        raw.push([pack_sqe(0, user_data=k) for k in range(8)])
        wait_until(lambda: raw.cq_ready() == 8, 5, what="a full CQ")
        raw.push([pack_sqe(0, user_data=100 + k) for k in range(8)])   # cannot be taken
        time.sleep(0.1)
        assert c.call("echo", b"x") == b"x"          # data path of others still works
        r0 = server_stats(c)["rounds"]
        time.sleep(0.5)
        rounds = server_stats(c)["rounds"] - r0
        try:
            with srv.connect(timeout=1) as c2:
                attached = c2.call("echo", b"y") == b"y"
        except (TimeoutError, OSError):
            attached = False
        assert attached and rounds < 1000, \
            f"new client attached: {attached}; idle server loop rounds in 0.5 s: {rounds}"


# ---------------------------------------------------------------------------
# the control channel
# ---------------------------------------------------------------------------


def test_control_garbage_is_refused_or_dropped(fsrv, good):
    # too large for one message: truncated -> dropped
    reply, raw_reply = raw_exchange(fsrv.path, b"{" + b" " * (attach.MAX_MESSAGE + 10) + b"}")
    assert raw_reply == b""
    # more fds than the protocol allows: dropped, our fds stay ours
    fds = [os.eventfd(0) for _ in range(6)]
    try:
        reply, raw_reply = raw_exchange(fsrv.path, b'{"subring": 1}', fds)
        assert raw_reply == b""
    finally:
        for fd in fds:
            os.close(fd)
    for hello, ok in [({"subring": 1, "entries": 10**50}, True),
                      ({"subring": 1, "entries": 3, "slot_size": -5}, True),
                      ({"subring": 1, "entries": float("nan")}, False),
                      ({"subring": 1, "entries": -1}, False),
                      ({"subring": 1, "entries": None}, False),
                      ({"subring": 1, "slot_size": {"a": 1}}, False)]:
        data = json.dumps(hello).encode()            # allow_nan: NaN is valid here
        reply, _ = raw_exchange(fsrv.path, data)
        assert reply is not None and reply["ok"] is ok, (hello, reply)
        if ok:
            assert 1 <= reply["entries"] <= 64 and reply["slot_size"] >= 64
    # an int with too many digits for Python's parser: dropped or refused
    reply, raw_reply = raw_exchange(fsrv.path, b'{"subring": 1, "entries": ' +
                                    b"9" * 5000 + b"}")
    assert reply is None or reply["ok"] is False
    # a peer that connects and says nothing, or closes at once
    s = raw_connect(fsrv.path)
    s.close()
    s = raw_connect(fsrv.path)
    try:
        _good_roundtrip(good, random.Random(11))
    finally:
        s.close()
    assert fsrv.alive()


CRASHERS = {
    "deeply-nested-json": lambda path: raw_exchange(path, b"[" * 30000 + b"]" * 30000),
    "infinite-entries": lambda path: raw_exchange(path, b'{"subring": 1, "entries": Infinity}'),
    "infinite-slot-size": lambda path: raw_exchange(
        path, b'{"subring": 1, "slot_size": -Infinity}'),
    "infinite-pool-count": lambda path: _pool_message(
        path, b'{"cmd": "pool", "count": Infinity, "size": 4096}'),
}


def _pool_message(path: str, msg: bytes):
    s = raw_connect(path)
    try:
        attach.send(s, {"subring": 1, "entries": 4})
        reply, fds = attach.recv(s)
        for fd in fds:
            os.close(fd)
        assert reply["ok"]
        with BufferPool(1, 4096) as pool:
            socket.send_fds(s, [msg], [pool.fd])
            data = s.recv(attach.MAX_MESSAGE)
        return (json.loads(data) if data else None), data
    finally:
        s.close()


@pytest.mark.parametrize("case", list(CRASHERS))
def test_regression_control_message_crashes_server(tmp_path, case):
    """Malformed but size-limited control messages from an untrusted peer must
    be refused (or the peer dropped), never stop the server.  json.loads may
    raise RecursionError, and int(float('inf')) raises OverflowError: neither
    is caught by attach.recv()/Subsystem._control()."""
    with start_server(tmp_path / "s.sock", TARGET) as srv:
        reply, _ = CRASHERS[case](srv.path)
        assert reply is None or reply.get("ok") is False
        time.sleep(0.2)
        assert srv.alive(), f"server died:\n{srv.log()[-1500:]}"
        with srv.connect() as c:
            assert c.call("echo", b"alive") == b"alive"


# ---------------------------------------------------------------------------
# issue 13 bug 14: a scribbled sq_tail under a real SubsystemClient
# ---------------------------------------------------------------------------


def _client_region_address(server_pid: int, entries: int = 16) -> int:
    """Address of the region this process mapped for its connection to the
    server `server_pid` with `entries` SQ entries (found in /proc/self/maps;
    the header names the server and the size)."""
    import ctypes

    found = []
    with open("/proc/self/maps") as f:
        for line in f:
            if "memfd:subring-queue" not in line:
                continue
            start = int(line.split("-", 1)[0], 16)
            magic = ctypes.c_uint32.from_address(start).value
            spid = ctypes.c_uint32.from_address(start + 72).value   # server_pid
            sqn = ctypes.c_uint32.from_address(start + 8).value      # sq_entries
            if magic == SR_URING_MAGIC and spid == server_pid and sqn == entries:
                found.append(start)
    assert len(found) == 1, f"expected one region of server {server_pid}, found {found}"
    return found[0]


def _scribble_run(fsrv, seed: int) -> None:
    import ctypes

    rnd = random.Random(seed)
    c = fsrv.connect(entries=16)
    try:
        region = _client_region_address(fsrv.pid)
        tail = ctypes.c_uint32.from_address(region + 128)           # sq_tail
        tokens: list[int] = []
        for k in range(rnd.randrange(0, 12)):
            tokens.append(c.prep_call(c.ops["echo"], b"x" * rnd.randrange(0, 100)))
        c.submit()
        tail.value = (tail.value + rnd.choice([1, 2, 5, 5, 7, 15, 16, 17, -1, -5, 2**31])) \
            & 0xFFFFFFFF
        got: list[int] = []
        deadline = time.monotonic() + 10
        more = rnd.randrange(0, 12)
        while time.monotonic() < deadline:
            if more:
                try:
                    tokens.append(c.prep_call(c.ops["echo"], b"y"))
                    more -= 1
                except subring.PeerDiedError:
                    more = 0
                except subring.RingFullError:
                    pass
            try:
                c.submit_and_wait(1, timeout=0.05)
            except SystemError as e:                       # the bug
                pytest.fail(f"seed {seed}: submit raised SystemError: {e}")
            for comp in c.reap():
                if comp.user_data in tokens:
                    got.append(comp.user_data)
            if not more and c.inflight == 0:
                break
        assert c.inflight == 0, f"seed {seed}: {c.inflight} ops never completed"
        assert sorted(got) == sorted(tokens), f"seed {seed}: not one completion per op"
    finally:
        c.close()


def test_regression_scribbled_sq_tail_never_raises_system_error(fsrv, good):
    """Issue 13 bug 14: `sr_sq_publish` read the client's own tail back from
    shared memory, so a scribbled `sq_tail` made submit() raise SystemError,
    and some ops never completed.  Now the client keeps a private copy; a
    broken protocol fails the connection (the server drops it) and every op
    gets exactly one final completion."""
    for seed in range(32):
        _scribble_run(fsrv, seed)
        assert fsrv.alive(), fsrv.log()
    _good_roundtrip(good, random.Random(0))


def test_scribbled_sq_tail_gets_the_client_dropped(fsrv, good):
    """The server drops the scribbling client (it stays attached otherwise)."""
    import ctypes

    before = server_stats(good)["clients"]
    c = fsrv.connect(entries=16)
    try:
        region = _client_region_address(fsrv.pid)
        tail = ctypes.c_uint32.from_address(region + 128)
        assert c.call("echo", b"a") == b"a"
        head = ctypes.c_uint32.from_address(region + 192)          # sq_head (server's)
        target = (tail.value + 5) & 0xFFFFFFFF
        tail.value = target                                         # 5 SQEs it never wrote
        # (no doorbell was rung: wake the server through another client, and
        # wait until it has taken the 5 phantom SQEs)
        wait_until(lambda: good.call("echo", b"w") == b"w" and head.value == target, 5,
                   what="the server to take the phantom SQEs")
        tok = c.prep_call(c.ops["echo"], b"b")
        c.submit_and_wait(1, timeout=2)
        deadline = time.monotonic() + 5
        done = []
        while c.inflight and time.monotonic() < deadline:
            c.submit_and_wait(1, timeout=0.1)
            done += [x for x in c.reap() if x.user_data == tok]
        assert len(done) == 1 and done[0].res in (-errno.EPROTO, -errno.ECONNRESET, 1)
        wait_until(lambda: server_stats(good)["clients"] == before, 5,
                   what="the server to drop the client that broke the protocol")
        with pytest.raises(subring.PeerDiedError):
            c.prep_call(c.ops["echo"], b"c")
    finally:
        c.close()
