"""Fuzz the server's SQE validation and dispatch: an in-process ServerLoop
serves one ServerQueue whose region the fuzzer writes as a malicious client
would -- raw 128-byte SQEs, any tail, any CQ head, a registered pool or not.

Checks after each input: the process is alive (no crash), the loop either
answered every SQE it took with exactly one CQE or marked the queue corrupt
(then a fresh queue is made), the handlers only ever saw payloads inside the
queue's own region / pool, and fds do not grow."""

from __future__ import annotations

import errno
import mmap
import os
import struct

from _common import instrument, instrumented, main

with instrumented():
    import subring
    from subring import _core

U32 = struct.Struct("<I")
OFF_SQ_TAIL, OFF_SQ_HEAD, OFF_CQ_TAIL, OFF_CQ_HEAD = 128, 192, 320, 384
ENTRIES, SLOT, POOL_SIZE = 8, 256, 4096
seen_bad: list[str] = []


def h_echo(req):
    data = bytes(req.data)
    if len(data) > max(SLOT, POOL_SIZE):      # bigger than any slot or pool buffer
        seen_bad.append(f"payload of {len(data)} bytes")
    return data


def h_batch(reqs):
    return [len(r.data) for r in reqs]


def h_vector(batch):
    n = len(batch)
    _ = (batch.data, batch.offsets, batch.arg0, batch.arg1)
    return [0] * n


def h_fail(req):
    raise ValueError("no")


def h_pending(req):
    req.complete(req.arg0 & 0x7FFF)
    return subring.PENDING


HANDLERS = [None, (h_echo, 0), (h_batch, 1), (h_vector, 2), (h_fail, 0), (h_pending, 0)]


class Harness:
    def __init__(self) -> None:
        self.loop = _core.ServerLoop()
        self.loop.mode = "poll"
        self.loop.set_handlers(HANDLERS)
        self.pool = subring.BufferPool(2, POOL_SIZE)
        self.q = None
        self.fresh()
        self.fds = len(os.listdir("/proc/self/fd"))

    def fresh(self) -> None:
        if self.q is not None:
            try:
                self.loop.remove(self.q)
            except KeyError:
                pass
            self.q.detach()
            self.mm.close()
        self.q = _core.ServerQueue(ENTRIES, SLOT, os.getpid())
        self.mm = mmap.mmap(self.q.region_fd, 0)
        self.q.close_region_fd()
        self.q.attach_pool(self.pool.fd, 2, POOL_SIZE)     # maps it, keeps no fd
        self.loop.add(self.q)
        self.sq_tail = U32.unpack_from(self.mm, OFF_SQ_TAIL)[0]
        self.cq_head = U32.unpack_from(self.mm, OFF_CQ_HEAD)[0]
        hdr = struct.unpack_from("<IIIIIIIIQQ", self.mm, 0)
        self.sqes_off = hdr[8]
        self.cqes_off = hdr[9]

    @instrument
    def one(self, data: bytes) -> None:
        if len(data) < 4:
            return
        self.fresh()       # self-contained inputs: every finding replays alone
        ctl, body = data[:4], data[4:]
        n_sqes = min(len(body) // 64, ENTRIES)
        tail_mode, head_mode = ctl[0] & 3, ctl[1] & 3
        for k in range(n_sqes):
            raw = body[64 * k:64 * k + 64]
            # byte 48.. of an SQE is the inline payload area (cmd[]); reuse the raw bytes
            sqe = (raw + raw)[:128]
            o = self.sqes_off + ((self.sq_tail + k) & (ENTRIES - 1)) * 128
            self.mm[o:o + 128] = sqe
        tail = self.sq_tail + n_sqes
        if tail_mode == 1:
            tail = self.sq_tail + ctl[2]          # possibly impossible
        elif tail_mode == 2:
            tail = U32.unpack(ctl)[0]             # anything
        U32.pack_into(self.mm, OFF_SQ_TAIL, tail & 0xFFFFFFFF)
        if head_mode == 1:
            U32.pack_into(self.mm, OFF_CQ_HEAD, (self.cq_head - ctl[3]) & 0xFFFFFFFF)
        elif head_mode == 2:
            U32.pack_into(self.mm, OFF_CQ_HEAD, (self.cq_head + ctl[3]) & 0xFFFFFFFF)
        before_cq = U32.unpack_from(self.mm, OFF_CQ_TAIL)[0]
        before_sq = U32.unpack_from(self.mm, OFF_SQ_HEAD)[0]
        events = self.loop.run(0)
        corrupt = any(e is self.q for e in events) or self.q.corrupt
        del events                     # (it may hold the queue)
        taken = (U32.unpack_from(self.mm, OFF_SQ_HEAD)[0] - before_sq) & 0xFFFFFFFF
        posted = (U32.unpack_from(self.mm, OFF_CQ_TAIL)[0] - before_cq) & 0xFFFFFFFF
        if taken > ENTRIES or posted > ENTRIES:
            raise AssertionError(f"server moved its indices impossibly: took {taken}, "
                                 f"posted {posted}")
        if not corrupt and posted < taken:
            raise AssertionError(f"took {taken} SQEs but posted only {posted} CQEs")
        if seen_bad:
            raise AssertionError(f"a handler saw {seen_bad}")
        cqes = [struct.unpack_from("<QiI", self.mm,
                                   self.cqes_off + ((before_cq + k) & (ENTRIES - 1)) * 16)
                for k in range(posted)]
        feedback(cqes, taken, posted, corrupt)
        # consume the CQEs like a client, then start over if anything is odd
        self.cq_head = U32.unpack_from(self.mm, OFF_CQ_TAIL)[0]
        U32.pack_into(self.mm, OFF_CQ_HEAD, self.cq_head)
        self.sq_tail = U32.unpack_from(self.mm, OFF_SQ_HEAD)[0]
        U32.pack_into(self.mm, OFF_SQ_TAIL, self.sq_tail)
        fds = len(os.listdir("/proc/self/fd"))
        if fds > self.fds + 4:
            raise AssertionError(f"fds grew from {self.fds} to {fds}")


@instrument
def feedback(cqes: list[tuple[int, int, int]], taken: int, posted: int, corrupt: bool) -> int:
    """Distinct outcomes of the C code become distinct Python edges."""
    score = 0
    if corrupt:
        score += 1
    if taken == 0:
        score += 2
    elif taken == posted:
        score += 3
    elif taken > posted:
        score += 4
    for _ud, res, flags in cqes:
        if res == 0:
            score += 5
        elif res == -errno.EINVAL:
            score += 6
        elif res == -errno.EFAULT:
            score += 7
        elif res == -errno.EOPNOTSUPP:
            score += 8
        elif res == -errno.ECANCELED:
            score += 9
        elif res == -errno.ENOMEM:
            score += 10
        elif res == -errno.EIO:
            score += 11
        elif res < 0:
            score += 12
        elif res > 1000:
            score += 13
        elif res > 80:
            score += 14
        else:
            score += 15
        if flags & 1:
            score += 16
        if flags & (1 << 15):
            score += 17
        if flags >> 16:
            score += 18
    return score


H: Harness | None = None


def test_one_input(data: bytes) -> None:
    global H
    if H is None:
        H = Harness()
    H.one(data)


if __name__ == "__main__":
    main(test_one_input)
