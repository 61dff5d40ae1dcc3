"""Fuzz the client's CQE decoding: the fuzzer plays a malicious server.  A
UserRing (the client half) is attached to a ServerQueue's region in this
process; the client prepares ops, then the fuzzer writes arbitrary CQEs
(user_data: real tokens, stale tokens or garbage; any res; any flags, e.g.
BUFFER / ERRTEXT with any slot id), arbitrary result-slot bytes and any CQ
tail, and the client reaps.

Checks: no crash; only the ring's own errors (CorruptRingError for an
impossible tail); no op completes twice; inflight stays in [0, max]; result
data never comes from outside the op's own result slot; fds do not grow."""

from __future__ import annotations

import mmap
import os
import socket
import struct

from _common import instrument, instrumented, main

with instrumented():
    from subring import SubringError, _core

U32 = struct.Struct("<I")
CQE = struct.Struct("<QiI")
OFF_SQ_TAIL, OFF_SQ_HEAD, OFF_CQ_TAIL, OFF_CQ_HEAD = 128, 192, 320, 384
ENTRIES, SLOT = 8, 128


class Harness:
    def __init__(self) -> None:
        self.ring = None
        self.fresh()
        self.fds = len(os.listdir("/proc/self/fd"))

    def fresh(self) -> None:
        if self.ring is not None:
            self.ring.close()
            self.mm.close()
            self.peer.close()
            self.q.detach()
        self.q = _core.ServerQueue(ENTRIES, SLOT, os.getpid())
        self.mm = mmap.mmap(self.q.region_fd, 0)
        hdr = struct.unpack_from("<IIIIIIIIQQQQ", self.mm, 0)
        self.sqes_off, self.cqes_off, self.result_off = hdr[8], hdr[9], hdr[11]
        a, self.peer = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        self.ring = _core.UserRing(os.dup(self.q.region_fd), os.dup(self.q.doorbell_fd),
                                   os.dup(self.q.cq_efd), a.detach())
        self.q.close_region_fd()
        self.ring._set_opnames(("nop", "echo"), b"\0\0")
        self.ring.mode = "poll"
        self.cq_tail = 0
        self.completed: set = set()
        self.uid = 0

    def one(self, data: bytes) -> None:
        """Each input is self-contained (a fresh ring), so every finding
        replays: rounds of (prepare, fake CQEs, reap) until the bytes run out."""
        self.fresh()
        self.tokens = []
        while len(data) >= 2 and not self.ring.closed and not self.ring.peer_dead:
            nprep, ncqe = data[0] & 7, data[1] & 15
            used = 2 + 13 * ncqe + 1
            self.round(nprep, ncqe, data[2:used])
            data = data[used:]

    @instrument
    def round(self, nprep: int, ncqe: int, body: bytes) -> None:
        r = self.ring
        for _ in range(nprep):
            if r.inflight >= r.max_inflight or r.sq_space == 0:
                break
            self.uid += 1
            # str user_data: a CQE the ring did not expect comes back with its
            # raw int user_data, so it can never pass for one of ours
            r.prep_call(1, b"p" * (self.uid % 100), user_data=f"u{self.uid}")
        r.submit()
        # the "server" takes every SQE (so the SQ never fills) and learns the tokens
        sq_tail = U32.unpack_from(self.mm, OFF_SQ_TAIL)[0]
        sq_head = U32.unpack_from(self.mm, OFF_SQ_HEAD)[0]
        tokens = []
        for i in range(sq_head, sq_tail):
            o = self.sqes_off + (i & (ENTRIES - 1)) * 128
            tokens.append(struct.unpack_from("<Q", self.mm, o + 32)[0])
        U32.pack_into(self.mm, OFF_SQ_HEAD, sq_tail)
        self.tokens = (self.tokens + tokens)[-16:]
        for k in range(ncqe):
            chunk = body[13 * k:13 * k + 13]
            if len(chunk) < 13:
                break
            sel, res, flags = chunk[0], int.from_bytes(chunk[1:5], "little", signed=True), \
                int.from_bytes(chunk[5:9], "little")
            if sel < 200 and self.tokens:
                ud = self.tokens[sel % len(self.tokens)]
            else:
                ud = int.from_bytes(chunk[5:13], "little")
            o = self.cqes_off + (self.cq_tail & (ENTRIES - 1)) * 16
            CQE.pack_into(self.mm, o, ud, res, flags)
            slot = (flags >> 16) % ENTRIES
            ro = self.result_off + slot * SLOT
            self.mm[ro:ro + 4] = chunk[9:13]           # e.g. an error-text length prefix
            self.cq_tail += 1
        tail = self.cq_tail
        if len(body) > 13 * ncqe and body[13 * ncqe] == 0xEE:
            tail += body[-1]                           # an impossible tail
        U32.pack_into(self.mm, OFF_CQ_TAIL, tail & 0xFFFFFFFF)
        try:
            comps = r.reap()
        except SubringError:
            r.close()
            return
        for c in comps:
            _ = (c.res, c.flags, c.user_data, c.error_text)
            try:
                d = c.data
            except SubringError:
                d = None
            if d is not None and len(d) > SLOT:
                raise AssertionError(f"result of {len(d)} bytes from a {SLOT}-byte slot")
            if not isinstance(c.user_data, str):
                continue                               # foreign: not an op of ours
            if c.flags & 2:                            # IORING_CQE_F_MORE: not final
                continue
            if c.user_data in self.completed:
                raise AssertionError(f"op {c.user_data} completed twice")
            self.completed.add(c.user_data)
        if not 0 <= r.inflight <= r.max_inflight:
            raise AssertionError(f"inflight {r.inflight}")
        self.cq_tail = U32.unpack_from(self.mm, OFF_CQ_TAIL)[0]
        fds = len(os.listdir("/proc/self/fd"))
        if fds > self.fds + 6:
            raise AssertionError(f"fds grew from {self.fds} to {fds}")


H: Harness | None = None


def test_one_input(data: bytes) -> None:
    global H
    if H is None:
        H = Harness()
    H.one(data)


if __name__ == "__main__":
    main(test_one_input)
