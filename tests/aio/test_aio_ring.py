"""AsyncRing on the real kernel: concurrency, batching, backpressure, file ops.

Every test runs its coroutine with plain ``asyncio.run`` (or uvloop) under an
``asyncio.timeout``; every ring is closed and every fd released (the conftest
fails a test that leaks one).  Tests named ``test_regression_*`` are named
after a bug found (and fixed) here; each failed before its fix.
"""

from __future__ import annotations

import asyncio
import errno
import os
import random
import stat as stat_mod

import pytest

import subring.aio as aio
from subring import KernelRing
from subring.aio import AsyncRing

pytestmark = pytest.mark.timeout(60)

try:
    import uvloop
except ImportError:  # pragma: no cover - depends on the environment
    uvloop = None

needs_uvloop = pytest.mark.skipif(uvloop is None, reason="uvloop is not importable")


@pytest.fixture(scope="module", autouse=True)
def _uvloop_warmup():
    """libuv creates a process-wide pipe pair on first use and keeps it; make
    that happen before the per-test fd-leak check takes its snapshot."""
    if uvloop is not None:
        loop = uvloop.new_event_loop()
        loop.run_until_complete(asyncio.sleep(0))
        loop.close()
    yield


def run(fn, *args, timeout: float = 20.0, loop_factory=None):
    """Run ``fn(*args)`` (a coroutine function) in a fresh loop, bounded."""

    async def main():
        async with asyncio.timeout(timeout):
            return await fn(*args)

    with asyncio.Runner(loop_factory=loop_factory) as runner:
        return runner.run(main())


@pytest.fixture
def datafile(tmp_path):
    data = random.Random(1234).randbytes(1 << 20)
    p = tmp_path / "data.bin"
    p.write_bytes(data)
    return p, data


def _requests(n: int, size: int, seed: int) -> list[tuple[int, int]]:
    rnd = random.Random(seed)
    reqs = [(rnd.randrange(0, size - 1), rnd.randrange(1, 8192)) for _ in range(n)]
    reqs += [(size - 10, 100), (size, 50), (size + 4096, 10)]   # short read, EOF, past EOF
    return reqs


# ---------------------------------------------------------------------------
# many concurrent reads; one flush per loop iteration
# ---------------------------------------------------------------------------

async def _many_reads(path, data, ring_entries: int):
    # max_inflight = 2 * entries >= number of requests: no backpressure here
    async with AsyncRing(KernelRing(ring_entries), own=True) as ar:
        fd = os.open(path, os.O_RDONLY)
        try:
            reqs = _requests(2000, len(data), seed=7)
            before = ar.ring.statistics()
            tasks = [asyncio.create_task(ar.read(fd, n, off)) for off, n in reqs]
            results = await asyncio.gather(*tasks)
            after = ar.ring.statistics()
            assert ar.ring.inflight == 0
        finally:
            os.close(fd)
    return reqs, results, before, after


def _check_reads(data, reqs, results, before, after):
    assert len(results) == len(reqs)
    for (off, n), got in zip(reqs, results):
        assert isinstance(got, bytes)
        assert got == data[off:off + n], (off, n, len(got))
    ops = len(reqs)
    assert after.submitted - before.submitted == ops
    assert after.completed - before.completed == ops
    # every task was created in the same iteration: their SQEs must reach the
    # kernel in a handful of io_uring_enter calls, not one per op
    enters = after.enter_calls - before.enter_calls
    assert enters <= 10, f"{enters} io_uring_enter calls for {ops} reads"


def test_2000_concurrent_reads_byte_exact(datafile):
    path, data = datafile
    _check_reads(data, *run(_many_reads, path, data, 2048))


def test_2000_concurrent_readinto_slices_of_one_buffer(datafile):
    """readinto memoryview slices of one big buffer; every slice gets its data."""
    path, data = datafile

    async def main():
        async with AsyncRing(KernelRing(2048), own=True) as ar:
            fd = os.open(path, os.O_RDONLY)
            try:
                width = 512
                n = 2000
                big = bytearray(width * n)
                view = memoryview(big)
                offs = [(k * 7919) % (len(data) - width) for k in range(n)]
                counts = await asyncio.gather(*(
                    ar.readinto(fd, view[k * width:(k + 1) * width], offs[k]) for k in range(n)))
                view.release()
            finally:
                os.close(fd)
        assert counts == [width] * n
        for k in range(n):
            assert big[k * width:(k + 1) * width] == data[offs[k]:offs[k] + width], k
        big.extend(b"x")      # nothing pins it any more

    run(main)


def test_one_flush_per_loop_iteration():
    """Ops prepared in one iteration share one io_uring_enter."""

    async def main():
        async with AsyncRing(KernelRing(1024), own=True) as ar:
            rounds, per_round = 20, 200
            before = ar.ring.statistics().enter_calls
            for _ in range(rounds):
                await asyncio.gather(*(ar.nop() for _ in range(per_round)))
            enters = ar.ring.statistics().enter_calls - before
            # one flush per round (plus at most one extra per round)
            assert enters <= 2 * rounds, enters
            assert enters < rounds * per_round / 50

            # sequential awaits: one op per iteration, one enter each at most
            before = ar.ring.statistics().enter_calls
            for _ in range(100):
                await ar.nop()
            enters = ar.ring.statistics().enter_calls - before
            assert 1 <= enters <= 100

    run(main)


def test_read_errors_become_oserror(datafile):
    async def main():
        async with AsyncRing(own=True) as ar:
            r, w = os.pipe()
            os.close(w)
            try:
                with pytest.raises(OSError) as ei:
                    await ar.read(12345678, 10, 0)              # not an fd
                assert ei.value.errno == errno.EBADF
                # reading a directory
                dfd = os.open(os.path.dirname(datafile[0]), os.O_RDONLY | os.O_DIRECTORY)
                try:
                    with pytest.raises(IsADirectoryError):
                        await ar.read(dfd, 10, 0)
                finally:
                    os.close(dfd)
                assert await ar.read(r, 10) == b""              # EOF on a closed pipe
            finally:
                os.close(r)
            assert ar.ring.inflight == 0

    run(main)


# ---------------------------------------------------------------------------
# backpressure
# ---------------------------------------------------------------------------

def test_backpressure_500_nops_complete_in_fifo_order():
    """max_inflight=8, 500 concurrent awaits: all complete, none dropped, and
    (nops completing in submission order) room is granted first come first
    served."""

    async def main():
        ring = KernelRing(8, max_inflight=8)
        async with AsyncRing(ring, own=True) as ar:
            order: list[int] = []
            peak = 0

            async def one(i):
                nonlocal peak
                peak = max(peak, ring.inflight)
                res = await ar.nop()
                order.append(i)
                return res

            tasks = [asyncio.create_task(one(i)) for i in range(500)]
            results = await asyncio.gather(*tasks)
            assert results == [0] * 500
            assert ring.inflight == 0
            assert ring.statistics().completed >= 500
            assert peak <= 8
        return order

    order = run(main)
    assert sorted(order) == list(range(500))      # nobody starved or lost
    assert order == list(range(500))              # strict FIFO


def test_backpressure_500_reads_complete(datafile):
    path, data = datafile

    async def main():
        async with AsyncRing(KernelRing(8, max_inflight=8), own=True) as ar:
            fd = os.open(path, os.O_RDONLY)
            try:
                reqs = _requests(500, len(data), seed=3)
                results = await asyncio.gather(*(ar.read(fd, n, off) for off, n in reqs))
            finally:
                os.close(fd)
            assert ar.ring.inflight == 0
        for (off, n), got in zip(reqs, results):
            assert got == data[off:off + n]

    run(main)


def test_backpressure_sequential_workers_no_starvation(datafile):
    """30 workers x 50 sequential reads on an 8-slot ring: all finish."""
    path, data = datafile

    async def main():
        async with AsyncRing(KernelRing(8, max_inflight=8), own=True) as ar:
            fd = os.open(path, os.O_RDONLY)
            done = [0] * 30
            try:
                async def worker(k):
                    for j in range(50):
                        off = (k * 50 + j) * 97
                        assert await ar.read(fd, 64, off) == data[off:off + 64]
                        done[k] += 1

                await asyncio.gather(*(worker(k) for k in range(30)))
            finally:
                os.close(fd)
            assert done == [50] * 30
            assert ar.ring.inflight == 0

    run(main)


def test_backpressure_room_granted_fifo_one_slot_at_a_time():
    """(AsyncRing keeps one slot for cancels: max_inflight=5 -> 4 ops.) Fill a 4-slot ring with pipe reads, queue 20 nops behind them, then free
    one slot: the queued nops run through that slot in arrival order."""

    async def main():
        ring = KernelRing(4, max_inflight=5)
        pipes = [os.pipe() for _ in range(4)]
        try:
            async with AsyncRing(ring, own=True) as ar:
                blockers = [asyncio.create_task(ar.read(r, 1)) for r, _ in pipes]
                for _ in range(5):
                    await asyncio.sleep(0)
                assert ring.inflight == 4
                order: list[int] = []

                async def waiter(i):
                    await ar.nop()
                    order.append(i)

                waiters = [asyncio.create_task(waiter(i)) for i in range(20)]
                await asyncio.sleep(0.02)
                assert order == [] and ring.inflight == 4       # all wait for room
                os.write(pipes[0][1], b"a")                      # one slot frees
                assert await blockers[0] == b"a"
                await asyncio.wait_for(asyncio.gather(*waiters), 5)
                assert order == list(range(20))
                for _, w in pipes[1:]:
                    os.write(w, b"b")
                assert await asyncio.gather(*blockers[1:]) == [b"b"] * 3
                assert ring.inflight == 0
        finally:
            for r, w in pipes:
                os.close(r)
                os.close(w)

    run(main)


async def _timers_through_8_slots(n: int = 400):
    ar = AsyncRing(KernelRing(8, max_inflight=8), own=True)
    try:
        rnd = random.Random(1)

        async def one(i):
            await ar.sleep(rnd.random() * 0.002)
            return i

        results = await asyncio.gather(*(one(i) for i in range(n)), return_exceptions=True)
    finally:
        await ar.aclose()
    return results


def test_regression_backpressure_overgrant_with_async_completions():
    """BUG: AsyncRing._dispatch wakes ``max_inflight - inflight`` waiters every
    time it runs, but woken waiters take their slot only when their task next
    runs.  Two dispatches in one loop iteration (the scheduled flush and the
    eventfd callback) wake twice as many waiters as there is room, and the
    extra ones get RingFullError instead of waiting."""
    results = run(_timers_through_8_slots)
    errors = [r for r in results if isinstance(r, BaseException)]
    assert not errors, f"{len(errors)} of {len(results)} awaits failed: {errors[:2]!r}"
    assert results == list(range(len(results)))


def test_regression_backpressure_overgrant_default_ring_2000_reads(datafile):
    """BUG (same cause): 2000 concurrent reads on ``AsyncRing()`` (256 entries,
    max_inflight 512) -- the SQ fills, is auto-submitted, completions signal the
    eventfd, and the double dispatch over-grants: ~512 reads fail with
    RingFullError instead of waiting for room."""
    path, data = datafile

    async def main():
        async with AsyncRing() as ar:
            fd = os.open(path, os.O_RDONLY)
            try:
                reqs = _requests(2000, len(data), seed=11)
                results = await asyncio.gather(*(ar.read(fd, n, off) for off, n in reqs),
                                               return_exceptions=True)
            finally:
                os.close(fd)
        return reqs, results

    reqs, results = run(main)
    errors = [r for r in results if isinstance(r, BaseException)]
    assert not errors, f"{len(errors)} of {len(results)} reads failed: {errors[:2]!r}"
    for (off, n), got in zip(reqs, results):
        assert got == data[off:off + n]


# ---------------------------------------------------------------------------
# file operations through AsyncRing
# ---------------------------------------------------------------------------

def test_file_ops_through_asyncring(tmp_path):
    async def main():
        async with AsyncRing(own=True) as ar:
            d = tmp_path / "dir"
            assert await ar.mkdir(d, 0o750) == 0
            assert stat_mod.S_ISDIR(os.stat(d).st_mode)
            assert stat_mod.S_IMODE(os.stat(d).st_mode) == 0o750 & ~_umask()
            with pytest.raises(FileExistsError):
                await ar.mkdir(d)

            p = d / "f.bin"
            fd = await ar.openat(p, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o640)
            assert fd >= 0
            try:
                assert await ar.write(fd, b"hello ", -1) == 6        # file position
                assert await ar.write(fd, memoryview(b"world"), -1) == 5
                assert os.lseek(fd, 0, os.SEEK_CUR) == 11
                assert await ar.write(fd, bytearray(b"HELLO"), 0) == 5   # explicit offset
                assert os.lseek(fd, 0, os.SEEK_CUR) == 11                # unchanged
                assert await ar.fsync(fd) == 0
                assert await ar.fsync(fd, datasync=True) == 0
            finally:
                assert await ar.close(fd) == 0
            with pytest.raises(OSError) as ei:
                os.fstat(fd)
            assert ei.value.errno == errno.EBADF
            assert p.read_bytes() == b"HELLO world"

            # openat relative to a directory fd, then statx
            dfd = os.open(d, os.O_RDONLY | os.O_DIRECTORY)
            try:
                fd = await ar.openat("f.bin", os.O_RDONLY, dir_fd=dfd)
                try:
                    assert await ar.read(fd, 100, 0) == b"HELLO world"
                finally:
                    await ar.close(fd)
                sx_rel = await ar.statx("f.bin", dir_fd=dfd)
            finally:
                os.close(dfd)
            sx = await ar.statx(p)
            st = os.stat(p)
            for s in (sx, sx_rel):
                assert s.size == st.st_size == 11
                assert s.mode == st.st_mode
                assert s.ino == st.st_ino
                assert s.nlink == st.st_nlink
                assert s.uid == st.st_uid and s.gid == st.st_gid
                assert s.dev == st.st_dev
                assert abs(s.mtime - st.st_mtime) < 1e-6
            assert stat_mod.S_IMODE(sx.mode) == 0o640 & ~_umask()

            q = d / "g.bin"
            assert await ar.rename(p, q) == 0
            assert not p.exists() and q.read_bytes() == b"HELLO world"
            with pytest.raises(FileNotFoundError):
                await ar.rename(p, q)
            with pytest.raises(OSError) as ei:
                await ar.unlink(d, rmdir=True)                  # not empty
            assert ei.value.errno == errno.ENOTEMPTY
            assert await ar.unlink(q) == 0
            assert not q.exists()
            with pytest.raises(FileNotFoundError):
                await ar.unlink(q)
            with pytest.raises(FileNotFoundError):
                await ar.statx(q)
            with pytest.raises(FileNotFoundError):
                await ar.openat(q)
            assert await ar.unlink(d, rmdir=True) == 0
            assert not d.exists()
            assert ar.ring.inflight == 0

    run(main)


def test_concurrent_writes_at_offsets_then_read_back(tmp_path):
    p = tmp_path / "w.bin"
    chunks = [bytes([k % 256]) * 1000 for k in range(300)]

    async def main():
        async with AsyncRing(own=True) as ar:
            fd = await ar.openat(p, os.O_RDWR | os.O_CREAT | os.O_TRUNC)
            try:
                counts = await asyncio.gather(*(ar.write(fd, c, k * 1000)
                                                for k, c in enumerate(chunks)))
                assert counts == [1000] * 300
                await ar.fsync(fd)
                back = await ar.read(fd, 300_000 + 10, 0)
            finally:
                await ar.close(fd)
        return back

    back = run(main)
    assert back == b"".join(chunks)
    assert p.read_bytes() == back


def _umask() -> int:
    old = os.umask(0)
    os.umask(old)
    return old


# ---------------------------------------------------------------------------
# uvloop
# ---------------------------------------------------------------------------

async def _basic(path, data):
    loop = asyncio.get_running_loop()
    async with AsyncRing(KernelRing(2048), own=True) as ar:
        # many concurrent reads
        fd = os.open(path, os.O_RDONLY)
        try:
            reqs = _requests(1500, len(data), seed=5)
            results = await asyncio.gather(*(ar.read(fd, n, off) for off, n in reqs))
            for (off, n), got in zip(reqs, results):
                assert got == data[off:off + n]
        finally:
            os.close(fd)
        # a read that waits for data: completion arrives through the eventfd
        r, w = os.pipe()
        try:
            t = asyncio.create_task(ar.read(r, 100))
            await asyncio.sleep(0.01)
            assert not t.done()
            loop.call_later(0.01, os.write, w, b"ping")
            assert await asyncio.wait_for(t, 5) == b"ping"
            # cancel one in flight
            t = asyncio.create_task(ar.read(r, 100))
            await asyncio.sleep(0.01)
            t.cancel()
            with pytest.raises(asyncio.CancelledError):
                await t
            for _ in range(200):
                if ar.ring.inflight == 0:
                    break
                await asyncio.sleep(0.005)
            assert ar.ring.inflight == 0
            os.write(w, b"kept")
            assert os.read(r, 100) == b"kept"        # the cancelled read took nothing
        finally:
            os.close(r)
            os.close(w)
        # a kernel timeout
        t0 = loop.time()
        await ar.sleep(0.02)
        assert loop.time() - t0 >= 0.015
    return type(loop).__module__


def test_basic_default_loop(datafile):
    assert run(_basic, *datafile).startswith("asyncio")


@needs_uvloop
def test_basic_uvloop_runner(datafile):
    assert run(_basic, *datafile, loop_factory=uvloop.new_event_loop).startswith("uvloop")


@needs_uvloop
def test_basic_uvloop_run(datafile):
    async def main():
        async with asyncio.timeout(20):
            return await _basic(*datafile)

    assert uvloop.run(main()).startswith("uvloop")


@needs_uvloop
def test_regression_uvloop_backpressure_overgrant(datafile):
    """BUG (same cause as test_regression_backpressure_overgrant_*): under
    uvloop even page-cache reads through an 8-slot ring over-grant room; about
    half of 500 concurrent reads fail with RingFullError."""
    path, data = datafile

    async def main():
        async with AsyncRing(KernelRing(8, max_inflight=8), own=True) as ar:
            fd = os.open(path, os.O_RDONLY)
            try:
                reqs = _requests(500, len(data), seed=3)
                results = await asyncio.gather(*(ar.read(fd, n, off) for off, n in reqs),
                                               return_exceptions=True)
            finally:
                os.close(fd)
        return reqs, results

    reqs, results = run(main, loop_factory=uvloop.new_event_loop)
    errors = [r for r in results if isinstance(r, BaseException)]
    assert not errors, f"{len(errors)} of {len(results)} reads failed: {errors[:2]!r}"
    for (off, n), got in zip(reqs, results):
        assert got == data[off:off + n]


def test_asyncring_requires_running_loop():
    ring = KernelRing(8)
    try:
        with pytest.raises(RuntimeError):
            AsyncRing(ring)
    finally:
        ring.close()


def test_default_ring_is_a_kernel_ring():
    async def main():
        try:
            ar = aio.get_ring()
            assert isinstance(ar, AsyncRing) and isinstance(ar.ring, KernelRing)
            assert await ar.nop() == 0
        finally:
            await aio.close_default_ring()

    run(main)


# ---------------------------------------------------------------------------
# what a ring can do is asked of the ring; statistics
# ---------------------------------------------------------------------------

class _Delegating:
    """Not a KernelRing (nor a subclass): a plain object that forwards every
    attribute to one.  AsyncRing must work with it (duck typing)."""

    def __init__(self, ring):
        self._ring = ring

    def __getattr__(self, name):
        return getattr(self._ring, name)


def test_asyncring_asks_the_ring_not_its_class(datafile):
    path, data = datafile
    fd = os.open(path, os.O_RDONLY)

    async def main():
        kr = KernelRing(16, max_inflight=16)
        ring = _Delegating(kr)
        assert not isinstance(ring, KernelRing)
        try:
            async with AsyncRing(ring) as ar:
                got = await asyncio.gather(*(ar.read(fd, 100, k * 100) for k in range(40)))
                assert got == [data[k * 100:k * 100 + 100] for k in range(40)]
                r, w = os.pipe()
                try:                              # cancellable: a kernel ring's ops
                    t = asyncio.ensure_future(ar.readinto(r, bytearray(4)))
                    await asyncio.sleep(0.01)
                    t.cancel()
                    with pytest.raises(asyncio.CancelledError):
                        await t
                    while kr.inflight:
                        await asyncio.sleep(0.001)
                finally:
                    os.close(r)
                    os.close(w)
                st = ar.statistics()
        finally:
            kr.close()
        return st

    try:
        st = run(main)
    finally:
        os.close(fd)
    assert st.cancels == 1 and st.limit == 15        # one slot kept for cancels
    with pytest.raises(TypeError):
        asyncio.run(_make(object()))


async def _make(ring):
    return AsyncRing(ring)


def test_asyncring_statistics_is_frozen_with_backend():
    import dataclasses

    async def main():
        async with AsyncRing(KernelRing(4, max_inflight=4)) as ar:
            waiters = [asyncio.ensure_future(ar.sleep(0.05)) for _ in range(6)]
            await asyncio.sleep(0.01)
            mid = ar.statistics()
            await asyncio.gather(*waiters)
            return mid, ar.statistics()

    mid, end = run(main)
    assert dataclasses.is_dataclass(mid) and mid.backend == "asyncio"
    assert mid.ring == "KernelRing" and mid.limit == 3
    assert mid.inflight == 3 and mid.waiting_for_room == 3
    assert end.room_waits >= 3 and end.flushes >= 2 and not end.closed
    with pytest.raises(dataclasses.FrozenInstanceError):
        mid.inflight = 0
