"""Fault injection on the kernel ring: close() and fork() with random mixes
of ops in flight (reads on empty pipes that only a cancel ends, timeouts,
polls, NOPs, completed-but-unreaped CQEs).  close() returns within its
timeout and releases every pinned buffer exactly once; a fork child's copy
refuses to work (ForkedRingError) and may be closed; the parent's ops all
complete exactly once afterwards."""

from __future__ import annotations

import functools
import os
import random
import select
import sys
import time

import pytest
from reliab_util import Ledger, scale

from subring import ForkedRingError, KernelRing

pytestmark = [pytest.mark.fault, pytest.mark.timeout(300)]


def _load(r: KernelRing, rng: random.Random, rd: int, ledger: Ledger, bufs: list) -> None:
    for _ in range(rng.randrange(1, r.max_inflight)):
        uid = len(ledger.sure) + 1
        kind = rng.randrange(5)
        if kind == 0:
            buf = bytearray(rng.choice((1, 16, 4096)))
            bufs.append(buf)
            r.prep_read(rd, buf, -1, user_data=uid)
        elif kind == 1:
            r.prep_timeout(rng.choice((0.0, 0.001, 30.0)), user_data=uid)
        elif kind == 2:
            r.prep_poll_add(rd, select.POLLIN, user_data=uid)
        elif kind == 3:
            r.prep_nop(user_data=uid)
        else:
            buf = bytearray(8)
            bufs.append(buf)
            r.prep_readv(rd, [buf], -1, user_data=uid)
        ledger.sure.append(uid)
    if rng.random() < 0.8:
        r.submit()
    if rng.random() < 0.5:
        r.submit_and_wait(1, timeout=0.002)


def test_close_with_ops_in_flight_releases_every_buffer():
    rng = random.Random(3)
    for k in range(int(300 * scale())):
        rd, wr = os.pipe()
        try:
            r = KernelRing(rng.choice((4, 16, 64)))
            ledger, bufs = Ledger(), []
            _load(r, rng, rd, ledger, bufs)
            refs = [sys.getrefcount(b) for b in bufs]
            if rng.random() < 0.3:
                ledger.done.extend(c.user_data for c in r.reap())
            t0 = time.monotonic()
            r.close(timeout=5)
            took = time.monotonic() - t0
            assert took < 5, f"round {k}: close() took {took:.2f} s"
            assert r.closed
            # the ring's pins are gone, and none was released twice: each
            # buffer is referenced by `bufs`, the loop variable and
            # getrefcount's argument only
            after = [sys.getrefcount(b) for b in bufs]
            assert after == [3] * len(bufs), (k, refs, after)
            assert not ledger.check(require_all=False)
        finally:
            os.close(rd)
            os.close(wr)


def test_fork_with_ops_in_flight():
    rng = random.Random(4)
    for k in range(int(100 * scale())):
        rd, wr = os.pipe()
        r = KernelRing(16)
        try:
            ledger, bufs = Ledger(), []
            _load(r, rng, rd, ledger, bufs)
            pid = os.fork()
            if pid == 0:     # the child: its copy must refuse, close() must work
                code = 0
                try:
                    for call in (r.prep_nop, r.submit, r.reap,
                                 functools.partial(r.submit_and_wait, 1, timeout=0.01)):
                        try:
                            call()
                            code = 3
                        except ForkedRingError:
                            pass
                    r.close()
                except BaseException:  # noqa: BLE001
                    code = 4
                finally:
                    os._exit(code)
            _, status = os.waitpid(pid, 0)
            assert os.waitstatus_to_exitcode(status) == 0, f"round {k}: child status {status}"
            # the parent's ring is untouched: feed the reads, cancel the rest
            os.write(wr, b"x" * 65536)
            r.prep_cancel(any=True, all=True, user_data=-1)
            ledger.sure.append(-1)
            deadline = time.monotonic() + 10
            while r.inflight:
                assert time.monotonic() < deadline, f"round {k}: {r.inflight} ops stuck"
                r.submit_and_wait(1, timeout=0.05)
                ledger.done.extend(c.user_data for c in r.reap())
            problems = [p for p in ledger.check(require_all=True)
                        if "never completed" in p or "more than once" in p]
            assert not problems, (k, problems)
        finally:
            r.close()
            os.close(rd)
            os.close(wr)


@pytest.mark.parametrize("blocker", ["read", "timeout", "poll"])
def test_close_with_drain_behind_blocked_op_does_not_time_out(blocker):
    """Bug (found by fuzz_prep_args): close() cancels with an SQE, and an
    IOSQE_IO_DRAIN op holds back every later SQE until the ops before it
    finished -- the blocked op it waits for is never cancelled, close() takes
    its whole timeout and keeps the buffers forever."""
    import warnings

    from subring import SQE
    rd, wr = os.pipe()
    try:
        r = KernelRing(8)
        buf = bytearray(4)
        if blocker == "read":
            r.prep_read(rd, buf, -1)
        elif blocker == "timeout":
            r.prep_timeout(1e6)
        else:
            r.prep_poll_add(rd, select.POLLIN)
        r.prep_nop(flags=SQE.DRAIN)
        r.submit()
        t0 = time.monotonic()
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            r.close(timeout=1.5)
        took = time.monotonic() - t0
        assert not [w for w in caught if issubclass(w.category, ResourceWarning)], \
            [str(w.message) for w in caught]
        assert took < 1.0, f"close() took {took:.2f} s"
        assert sys.getrefcount(buf) == 2         # the pin was released
    finally:
        os.close(rd)
        os.close(wr)
