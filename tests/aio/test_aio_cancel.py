"""The asyncio cancellation contract of subring.aio, stage by stage.

Cancelled before the task ran, while in flight, racing the completion, by
``asyncio.timeout``/``wait_for``, while waiting for room, and multishot
streams.  The invariants checked everywhere: the task ends with its result or
``CancelledError`` (nothing else), the op's buffer stays pinned until its
final completion is reaped, ``ring.inflight`` returns to 0, and a cancelled
read never consumes data that arrives later.
"""

from __future__ import annotations

import asyncio
import os
import random
import select
import socket

import pytest
from aio_support import run

from subring import KernelRing
from subring.aio import AsyncRing

pytestmark = pytest.mark.timeout(60)


async def settle(ring, timeout: float = 2.0) -> None:
    """Wait until every op (and cancel op) of ``ring`` has been reaped."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while ring.inflight and loop.time() < deadline:
        await asyncio.sleep(0.002)
    assert ring.inflight == 0, f"{ring.inflight} ops still in flight after {timeout}s"


def readable(fd: int) -> bool:
    return bool(select.select([fd], [], [], 0)[0])


@pytest.fixture
def datafile(tmp_path):
    data = random.Random(99).randbytes(1 << 18)
    p = tmp_path / "data.bin"
    p.write_bytes(data)
    return p, data


# ---------------------------------------------------------------------------
# cancelled before the task ever ran
# ---------------------------------------------------------------------------

def test_cancel_before_task_ran(pipes):
    ((r, w),) = pipes(1)

    async def main():
        async with AsyncRing(own=True) as ar:
            submitted = ar.ring.statistics().submitted
            buf = bytearray(10)
            t = asyncio.create_task(ar.readinto(r, buf))
            t.cancel()
            with pytest.raises(asyncio.CancelledError):
                await t
            assert t.cancelled()
            assert ar.ring.inflight == 0                       # nothing was prepared
            await asyncio.sleep(0.01)
            assert ar.ring.statistics().submitted == submitted
            buf.extend(b"x")                                  # never pinned
            os.write(w, b"data")
            await asyncio.sleep(0.01)
            assert os.read(r, 100) == b"data"                 # nobody reads the pipe

    run(main)


def test_cancel_before_task_ran_many_kinds(pipes, tmp_path):
    ((r, _),) = pipes(1)

    async def main():
        async with AsyncRing(own=True) as ar:
            coros = [ar.nop(), ar.read(r, 5), ar.sleep(5), ar.mkdir(tmp_path / "never"),
                     ar.statx(tmp_path)]
            tasks = [asyncio.create_task(c) for c in coros]
            for t in tasks:
                t.cancel()
            res = await asyncio.gather(*tasks, return_exceptions=True)
            assert all(isinstance(x, asyncio.CancelledError) for x in res), res
            assert ar.ring.inflight == 0
        assert not (tmp_path / "never").exists()

    run(main)


# ---------------------------------------------------------------------------
# cancelled while in flight
# ---------------------------------------------------------------------------

def test_cancel_in_flight_pipe_read_pins_buffer_until_reaped(pipes):
    ((r, w),) = pipes(1)

    async def main():
        async with AsyncRing(own=True) as ar:
            buf = bytearray(16)
            seen: dict[str, object] = {}

            async def reader():
                try:
                    return await ar.readinto(r, buf)
                except asyncio.CancelledError:
                    # The cancel has at most been prepared, not submitted: the
                    # kernel may still write into buf, so it must be pinned.
                    seen["inflight"] = ar.ring.inflight
                    try:
                        buf.extend(b"!")
                        seen["resized"] = True
                    except BufferError:
                        seen["resized"] = False
                    raise

            t = asyncio.create_task(reader())
            await asyncio.sleep(0.02)
            assert not t.done() and ar.ring.inflight == 1
            with pytest.raises(BufferError):
                buf.extend(b"x")                              # pinned while in flight
            t.cancel()
            with pytest.raises(asyncio.CancelledError):
                await t
            # the read (and perhaps its queued cancel) still counted, buf pinned
            assert seen["inflight"] in (1, 2) and seen["resized"] is False, seen
            await settle(ar.ring)                             # final completion reaped
            buf.extend(b"x")                                  # ...and released
            assert len(buf) == 17
            os.write(w, b"later")
            await asyncio.sleep(0.02)
            assert os.read(r, 100) == b"later"                # the cancelled read took nothing
            st = ar.ring.statistics()
            assert st.submitted == st.completed

    run(main)


def test_cancel_in_flight_many_pipe_reads(pipes):
    ps = pipes(20)

    async def main():
        async with AsyncRing(own=True) as ar:
            tasks = [asyncio.create_task(ar.read(r, 10)) for r, _ in ps]
            await asyncio.sleep(0.02)
            assert ar.ring.inflight == 20
            for t in tasks[::2]:
                t.cancel()
            await asyncio.sleep(0.02)
            for _, w in ps:
                os.write(w, b"x")
            res = await asyncio.wait_for(asyncio.gather(*tasks, return_exceptions=True), 5)
            for k, x in enumerate(res):
                if k % 2 == 0:
                    assert isinstance(x, asyncio.CancelledError), x
                else:
                    assert x == b"x"
            await settle(ar.ring)
            for k, (r, _) in enumerate(ps):
                # the byte sent to a cancelled reader is still in its pipe
                assert readable(r) == (k % 2 == 0)

    run(main)


def test_cancel_kernel_timeout_op():
    async def main():
        async with AsyncRing(own=True) as ar:
            loop = asyncio.get_running_loop()
            t = asyncio.create_task(ar.sleep(30))
            await asyncio.sleep(0.01)
            t0 = loop.time()
            t.cancel()
            with pytest.raises(asyncio.CancelledError):
                await t
            assert loop.time() - t0 < 1
            await settle(ar.ring)

    run(main)


# ---------------------------------------------------------------------------
# cancellation racing the completion
# ---------------------------------------------------------------------------

def test_cancel_racing_completion_regular_file(datafile):
    """Reads that complete almost at once, cancelled after 0-2 loop iterations
    or a random tiny delay: each task ends with exactly the right bytes or
    CancelledError, and every op is reaped."""
    path, data = datafile

    async def main():
        rnd = random.Random(2024)
        outcomes = {"ok": 0, "cancelled": 0}
        async with AsyncRing(KernelRing(256), own=True) as ar:
            fd = os.open(path, os.O_RDONLY)
            try:
                for it in range(250):
                    reqs = [(rnd.randrange(len(data) - 600), rnd.randrange(1, 600))
                            for _ in range(16)]
                    tasks = [asyncio.create_task(ar.read(fd, n, off)) for off, n in reqs]
                    if it % 2:
                        for _ in range(rnd.randrange(3)):
                            await asyncio.sleep(0)
                    else:
                        await asyncio.sleep(rnd.random() * 2e-4)
                    for t in tasks:
                        if rnd.random() < 0.6:
                            t.cancel()
                    res = await asyncio.gather(*tasks, return_exceptions=True)
                    for (off, n), x in zip(reqs, res):
                        if isinstance(x, asyncio.CancelledError):
                            outcomes["cancelled"] += 1
                        else:
                            assert x == data[off:off + n], (off, n, x)
                            outcomes["ok"] += 1
                await settle(ar.ring)
            finally:
                os.close(fd)
        return outcomes

    outcomes = run(main)
    assert sum(outcomes.values()) == 250 * 16
    # the race really was exercised both ways
    assert outcomes["ok"] > 100 and outcomes["cancelled"] > 100, outcomes


def test_cancel_racing_completion_readinto_releases_every_buffer(datafile):
    path, data = datafile

    async def main():
        rnd = random.Random(7)
        async with AsyncRing(KernelRing(256), own=True) as ar:
            fd = os.open(path, os.O_RDONLY)
            bufs = []
            try:
                for _ in range(100):
                    batch = []
                    for _ in range(8):
                        off = rnd.randrange(len(data) - 256)
                        b = bytearray(256)
                        bufs.append(b)
                        batch.append((off, b, asyncio.create_task(ar.readinto(fd, b, off))))
                    for _ in range(rnd.randrange(2)):
                        await asyncio.sleep(0)
                    for _, _, t in batch:
                        if rnd.random() < 0.5:
                            t.cancel()
                    for off, b, t in batch:
                        try:
                            n = await t
                        except asyncio.CancelledError:
                            continue
                        assert n == 256 and b == data[off:off + 256]
                await settle(ar.ring)
            finally:
                os.close(fd)
            for b in bufs:
                b.extend(b"!")              # no pin survived its op

    run(main)


def test_cancel_racing_nops_and_short_timers():
    async def main():
        rnd = random.Random(3)
        async with AsyncRing(KernelRing(256), own=True) as ar:
            for _ in range(150):
                tasks = [asyncio.create_task(ar.nop()) for _ in range(8)]
                tasks += [asyncio.create_task(ar.sleep(rnd.random() * 1e-4)) for _ in range(4)]
                for _ in range(rnd.randrange(3)):
                    await asyncio.sleep(0)
                for t in tasks:
                    if rnd.random() < 0.5:
                        t.cancel()
                res = await asyncio.gather(*tasks, return_exceptions=True)
                for x in res[:8]:
                    assert x == 0 or isinstance(x, asyncio.CancelledError), x
                for x in res[8:]:
                    assert x is None or isinstance(x, asyncio.CancelledError), x
            await settle(ar.ring)

    run(main)


# ---------------------------------------------------------------------------
# asyncio.timeout / wait_for
# ---------------------------------------------------------------------------

def test_asyncio_timeout_around_pipe_read(pipes):
    ((r, w),) = pipes(1)

    async def main():
        async with AsyncRing(own=True) as ar:
            loop = asyncio.get_running_loop()
            t0 = loop.time()
            with pytest.raises(TimeoutError):
                async with asyncio.timeout(0.05):
                    await ar.read(r, 10)
            assert 0.04 <= loop.time() - t0 < 1.0
            await settle(ar.ring)
            os.write(w, b"after")
            await asyncio.sleep(0.01)
            assert os.read(r, 10) == b"after"
            # and the pipe is usable through the ring again
            os.write(w, b"again")
            assert await asyncio.wait_for(ar.read(r, 10), 2) == b"again"

    run(main)


def test_wait_for_around_pipe_read(pipes):
    ((r, w),) = pipes(1)

    async def main():
        async with AsyncRing(own=True) as ar:
            for _ in range(10):
                with pytest.raises(asyncio.TimeoutError):
                    await asyncio.wait_for(ar.read(r, 10), 0.01)
            await settle(ar.ring)
            assert not readable(r)
            os.write(w, b"z")
            assert await asyncio.wait_for(ar.read(r, 10), 2) == b"z"
            await settle(ar.ring)

    run(main)


def test_wait_for_completes_in_time(pipes):
    ((r, w),) = pipes(1)

    async def main():
        async with AsyncRing(own=True) as ar:
            asyncio.get_running_loop().call_later(0.01, os.write, w, b"quick")
            assert await asyncio.wait_for(ar.read(r, 10), 5) == b"quick"
            assert ar.ring.inflight == 0

    run(main)


# ---------------------------------------------------------------------------
# cancellation while waiting for room (backpressure)
# ---------------------------------------------------------------------------

def test_cancel_task_waiting_for_room(pipes):
    ps = pipes(4)

    async def main():
        ring = KernelRing(4, max_inflight=5)
        async with AsyncRing(ring, own=True) as ar:
            blockers = [asyncio.create_task(ar.read(r, 1)) for r, _ in ps]
            await asyncio.sleep(0.01)
            assert ring.inflight == 4
            order: list[int] = []

            async def waiter(i):
                await ar.nop()
                order.append(i)
                return i

            waiters = [asyncio.create_task(waiter(i)) for i in range(12)]
            await asyncio.sleep(0.01)
            assert ring.inflight == 4 and not order
            for t in waiters[::3]:
                t.cancel()
            await asyncio.sleep(0.01)
            assert ring.inflight == 4                   # cancelled waiters took no room
            os.write(ps[0][1], b"a")                    # free one slot
            res = await asyncio.wait_for(asyncio.gather(*waiters, return_exceptions=True), 5)
            for i, x in enumerate(res):
                if i % 3 == 0:
                    assert isinstance(x, asyncio.CancelledError)
                else:
                    assert x == i
            assert order == [i for i in range(12) if i % 3]   # FIFO among survivors
            for _, w in ps[1:]:
                os.write(w, b"b")
            assert await asyncio.gather(*blockers) == [b"a", b"b", b"b", b"b"]
            await settle(ring)
            # the ring is fully usable afterwards
            assert await asyncio.gather(*(ar.nop() for _ in range(50))) == [0] * 50

    run(main)


def test_cancel_all_room_waiters_then_ring_still_works(pipes):
    ps = pipes(2)

    async def main():
        ring = KernelRing(2, max_inflight=2)
        async with AsyncRing(ring, own=True) as ar:
            blockers = [asyncio.create_task(ar.read(r, 1)) for r, _ in ps]
            await asyncio.sleep(0.01)
            waiters = [asyncio.create_task(ar.nop()) for _ in range(10)]
            await asyncio.sleep(0.01)
            for t in waiters:
                t.cancel()
            res = await asyncio.gather(*waiters, return_exceptions=True)
            assert all(isinstance(x, asyncio.CancelledError) for x in res)
            for _, w in ps:
                os.write(w, b"q")
            assert await asyncio.wait_for(asyncio.gather(*blockers), 5) == [b"q", b"q"]
            await settle(ring)
            # a newcomer is not stuck behind the cancelled waiters
            assert await asyncio.wait_for(ar.nop(), 2) == 0

    run(main)


def test_regression_cancelled_woken_waiter_overgrants_room():
    """BUG: a waiter that is woken (room granted) and cancelled before it ran
    "passes its turn on" by calling _dispatch(), which recomputes the room as
    ``max_inflight - inflight`` -- counting again the slots already granted to
    the other woken waiters that have not run yet.  It wakes that many more,
    and the surplus fail with RingFullError.  Deterministic: 4 nops fill a
    4-slot ring and complete in one flush, waking W0-W3; the first nop's task
    cancels W0 before W0 runs."""

    async def main():
        ring = KernelRing(4, max_inflight=4)
        async with AsyncRing(ring, own=True) as ar:
            waiters: list[asyncio.Task] = []

            async def canceller():
                await ar.nop()
                waiters[0].cancel()          # W0 was just granted room, not yet run

            first = [asyncio.create_task(canceller())]
            first += [asyncio.create_task(ar.nop()) for _ in range(3)]
            waiters += [asyncio.create_task(ar.nop()) for _ in range(8)]
            await asyncio.gather(*first)
            res = await asyncio.gather(*waiters, return_exceptions=True)
            await settle(ring)
        return res

    res = run(main)
    assert isinstance(res[0], asyncio.CancelledError)
    errors = [x for x in res[1:] if isinstance(x, BaseException)]
    assert not errors, f"{len(errors)} of 7 waiters failed: {errors[:1]!r}"
    assert res[1:] == [0] * 7


def test_regression_cancel_in_flight_on_full_ring_leaks_op(pipes):
    """BUG: cancelling an in-flight op while the ring is at max_inflight does
    nothing -- AsyncRing._cancel_token swallows the RingFullError of
    prep_cancel ("the op completes on its own") and never retries.  The task
    sees CancelledError, but the read stays in flight: it holds its slot, eats
    the next data written to the pipe (which is then discarded), and
    cancelling the other reads cannot get the ring back to 0 in flight."""
    ps = pipes(4)

    async def main():
        ring = KernelRing(4, max_inflight=4)
        async with AsyncRing(ring, own=True) as ar:
            tasks = [asyncio.create_task(ar.read(r, 10)) for r, _ in ps]
            await asyncio.sleep(0.02)
            tasks[0].cancel()
            with pytest.raises(asyncio.CancelledError):
                await tasks[0]
            await asyncio.sleep(0.2)
            os.write(ps[0][1], b"precious")
            await asyncio.sleep(0.05)
            kept = readable(ps[0][0])
            for t in tasks[1:]:
                t.cancel()
            await asyncio.gather(*tasks[1:], return_exceptions=True)
            try:
                await settle(ring, 1.0)
                settled = True
            except AssertionError:
                settled = False
        return kept, settled

    kept, settled = run(main)
    assert kept, "data written after the cancel was consumed by the cancelled read"
    assert settled, "cancelled reads still in flight 1 s after their tasks were cancelled"


# ---------------------------------------------------------------------------
# multishot streams
# ---------------------------------------------------------------------------

def test_recv_stream_close_ends_iteration():
    async def main():
        a, b = socket.socketpair()
        try:
            async with AsyncRing(own=True) as ar:
                st = ar.recv_stream(a, buffers=8, size=256)
                got = []

                async def consume():
                    async for chunk in st:
                        got.append(chunk)
                    return "ended"

                t = asyncio.create_task(consume())
                b.send(b"one")
                await asyncio.sleep(0.02)
                assert got == [b"one"] and ar.ring.inflight == 1
                st.close()
                assert await asyncio.wait_for(t, 2) == "ended"
                await settle(ar.ring)
                b.send(b"after close")
                await asyncio.sleep(0.01)
                assert a.recv(100) == b"after close"          # not taken by the old op
                st.close()                                    # idempotent
        finally:
            a.close()
            b.close()

    run(main)


def test_recv_stream_cancel_iterating_task_ends_op():
    async def main():
        a, b = socket.socketpair()
        try:
            async with AsyncRing(own=True) as ar:
                st = ar.recv_stream(a, buffers=8, size=256)

                async def consume():
                    return [c async for c in st]

                t = asyncio.create_task(consume())
                await asyncio.sleep(0.02)
                assert ar.ring.inflight == 1
                t.cancel()
                with pytest.raises(asyncio.CancelledError):
                    await t
                await settle(ar.ring)
                b.send(b"kept")
                await asyncio.sleep(0.01)
                assert a.recv(100) == b"kept"
                # a fresh stream on the same socket works
                st2 = ar.recv_stream(a, buffers=8, size=256)
                b.send(b"new")
                assert await asyncio.wait_for(st2.__anext__(), 2) == b"new"
                st2.close()
                await settle(ar.ring)
        finally:
            a.close()
            b.close()

    run(main)


def test_accept_stream_close_and_cancel():
    async def main():
        lst = socket.create_server(("127.0.0.1", 0))
        port = lst.getsockname()[1]
        clients: list[socket.socket] = []
        try:
            async with AsyncRing(own=True) as ar:
                acc = ar.accept_stream(lst)
                c = socket.socket()
                clients.append(c)
                await ar.connect(c, ("127.0.0.1", port))
                fd = await asyncio.wait_for(acc.__anext__(), 2)
                os.close(fd)
                acc.close()
                with pytest.raises(StopAsyncIteration):
                    await asyncio.wait_for(acc.__anext__(), 2)
                await settle(ar.ring)

                # cancel the task iterating a second accept stream
                acc2 = ar.accept_stream(lst)

                async def accept_all():
                    return [x async for x in acc2]

                t = asyncio.create_task(accept_all())
                await asyncio.sleep(0.02)
                assert ar.ring.inflight == 1
                t.cancel()
                with pytest.raises(asyncio.CancelledError):
                    await t
                await settle(ar.ring)
                # a connection made now is not swallowed by the dead op
                c2 = socket.socket()
                clients.append(c2)
                c2.connect(("127.0.0.1", port))
                lst.settimeout(2)
                conn, _ = lst.accept()
                conn.close()
        finally:
            for c in clients:
                c.close()
            lst.close()

    run(main)


# ---------------------------------------------------------------------------
# issue 13, bug 5
# ---------------------------------------------------------------------------

def test_regression_cancel_sqes_take_room_promised_to_woken_waiters(datafile):
    """BUG (issue 13 #5): a cancel SQE was prepared whenever the ring had a
    free slot, including slots promised to waiters that had just been woken
    but had not prepared their read yet; those reads then failed with
    RingFullError -- breaking "FIFO backpressure, nothing is dropped".
    Every task must end with its data or CancelledError, nothing else."""
    path, data = datafile
    fd = os.open(path, os.O_RDONLY)

    async def main():
        ar = AsyncRing(KernelRing(8, cq_entries=16), own=True)
        try:
            tasks = [asyncio.ensure_future(ar.read(fd, 16, 0)) for _ in range(3000)]
            victims = random.Random(1).sample(tasks, 1000)
            for i in range(0, 1000, 200):
                for t in victims[i:i + 200]:
                    t.cancel()
                await asyncio.sleep(0.001)
            results = await asyncio.gather(*tasks, return_exceptions=True)
            await settle(ar.ring)
        finally:
            await ar.aclose()
        return results

    try:
        results = run(main)
    finally:
        os.close(fd)
    failures = [r for r in results if isinstance(r, BaseException)
                and not isinstance(r, asyncio.CancelledError)]
    assert not failures, f"{len(failures)} tasks failed, e.g. {failures[0]!r}"
    assert all(r == data[:16] for r in results if isinstance(r, bytes))
    assert sum(isinstance(r, bytes) for r in results) >= 2000
