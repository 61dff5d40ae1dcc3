"""Closing in subring.aio: aclose(), ``async with``, asyncio.run shutdown, and
the per-loop default ring."""

from __future__ import annotations

import asyncio
import errno
import gc
import logging
import os
import select
import warnings
import weakref

import pytest
from aio_support import run

import subring.aio as aio
from subring import KernelRing
from subring.aio import AsyncRing

pytestmark = pytest.mark.timeout(60)


def readable(fd: int) -> bool:
    return bool(select.select([fd], [], [], 0)[0])


def _fds() -> set[str]:
    return set(os.listdir("/proc/self/fd"))


def _cancelled_or_ecanceled(x: BaseException) -> bool:
    return isinstance(x, asyncio.CancelledError) or (
        isinstance(x, OSError) and x.errno == errno.ECANCELED)


# ---------------------------------------------------------------------------
# aclose
# ---------------------------------------------------------------------------

def test_aclose_cancels_and_reaps_inflight_ops_not_owned(pipes):
    ps = pipes(6)

    async def main():
        loop = asyncio.get_running_loop()
        ring = KernelRing(32)
        try:
            ar = AsyncRing(ring)                      # not owned
            bufs = [bytearray(8) for _ in ps]
            tasks = [asyncio.create_task(ar.readinto(r, b)) for (r, _), b in zip(ps, bufs)]
            tasks.append(asyncio.create_task(ar.sleep(30)))
            await asyncio.sleep(0.02)
            assert ring.inflight == 7
            t0 = loop.time()
            await ar.aclose()
            assert loop.time() - t0 < 2
            assert ring.inflight == 0                 # every final completion reaped
            assert not ring.closed                    # not ours to close
            for b in bufs:
                b.extend(b"!")                        # no pins left
            res = await asyncio.wait_for(asyncio.gather(*tasks, return_exceptions=True), 2)
            assert all(_cancelled_or_ecanceled(x) for x in res), res
            for r, w in ps:
                os.write(w, b"x")
                assert readable(r)                    # the reads were really cancelled
            # the ring can still be used synchronously
            ring.prep_nop(user_data="sync")
            ring.submit_and_wait(1, 2)
            assert [c.user_data for c in ring.reap()] == ["sync"]
            await ar.aclose()                         # idempotent
        finally:
            ring.close()

    run(main)


def test_aclose_owned_closes_ring(pipes):
    ((r, w),) = pipes(1)

    async def main():
        ar = AsyncRing()
        t = asyncio.create_task(ar.read(r, 5))
        await asyncio.sleep(0.01)
        assert ar.ring.inflight == 1
        await ar.aclose()
        assert ar.ring.closed
        res = await asyncio.gather(t, return_exceptions=True)
        assert _cancelled_or_ecanceled(res[0]), res
        os.write(w, b"x")
        assert readable(r)
        # after close: ops fail promptly instead of hanging
        with pytest.raises((RuntimeError, ValueError)):
            await asyncio.wait_for(ar.nop(), 2)
        with pytest.raises((RuntimeError, ValueError)):
            await asyncio.wait_for(ar.read(r, 1), 2)
        await ar.aclose()

    run(main)


def test_regression_aclose_on_full_ring_strands_tasks(pipes):
    """BUG: aclose() on a ring at max_inflight cannot queue its cancel-all
    (prep_cancel needs a slot; the RingFullError is swallowed), so it waits
    its whole timeout for completions that never come, then closes the
    ring -- KernelRing.close() cancels and reaps the ops internally, so the
    futures of the awaiting tasks are never resolved: those tasks hang forever.
    Waiters for room do get RuntimeError, as they should."""
    ps = pipes(2)

    async def main():
        loop = asyncio.get_running_loop()
        ar = AsyncRing(KernelRing(2, max_inflight=2), own=True)
        blockers = [asyncio.create_task(ar.read(r, 1)) for r, _ in ps]
        await asyncio.sleep(0.01)
        waiters = [asyncio.create_task(ar.nop()) for _ in range(5)]
        await asyncio.sleep(0.01)
        assert not any(t.done() for t in waiters)
        t0 = loop.time()
        await ar.aclose(timeout=1.0)
        took = loop.time() - t0
        done, pending = await asyncio.wait(blockers + waiters, timeout=1)
        for t in pending:
            t.cancel()
        await asyncio.gather(*pending, return_exceptions=True)
        assert ar.ring.closed
        return took, [t in pending for t in blockers], [
            t.exception() if t in done and not t.cancelled() else None for t in waiters]

    took, stranded, waiter_errors = run(main)
    assert all(isinstance(e, RuntimeError) for e in waiter_errors), waiter_errors
    assert not any(stranded), "tasks awaiting in-flight reads never finished after aclose()"
    assert took < 0.5, f"aclose() took {took:.1f} s to cancel two pipe reads"


def test_async_with_asyncring(pipes):
    ((r, w),) = pipes(1)

    async def main():
        async with AsyncRing() as ar:
            assert await ar.nop() == 0
            os.write(w, b"hi")
            assert await ar.read(r, 10) == b"hi"
            pending = asyncio.create_task(ar.read(r, 10))
            await asyncio.sleep(0.01)
        assert ar.ring.closed
        res = await asyncio.gather(pending, return_exceptions=True)
        assert _cancelled_or_ecanceled(res[0])

    run(main)


def test_async_with_closes_on_exception():
    async def main():
        with pytest.raises(ZeroDivisionError):
            async with AsyncRing() as ar:
                await ar.nop()
                raise ZeroDivisionError
        assert ar.ring.closed

    run(main)


def test_regression_op_after_aclose_of_borrowed_ring_hangs():
    """BUG: after ``aclose()`` of an AsyncRing that does not own its ring,
    ``read``/``write``/``call`` (the hot paths that skip ``_room``) still
    prepare an SQE on the open ring, but ``_flush`` returns early because the
    adapter is closed: the await never completes (nop raises RuntimeError as
    it should)."""

    async def main():
        ring = KernelRing(8)
        try:
            ar = AsyncRing(ring)
            await ar.aclose()
            with pytest.raises(RuntimeError):
                await ar.nop()
            r, w = os.pipe()
            try:
                os.write(w, b"data")
                try:
                    got = await asyncio.wait_for(ar.read(r, 4), 1)
                except TimeoutError:
                    got = "hang"
                except (RuntimeError, ValueError):
                    got = "raised"
            finally:
                os.close(r)
                os.close(w)
            leftover = ring.inflight
        finally:
            ring.close()
        return got, leftover

    got, leftover = run(main)
    assert got == "raised", f"read after aclose(): {got!r}, {leftover} op(s) left prepared"


# ---------------------------------------------------------------------------
# asyncio.run shutdown with ops in flight
# ---------------------------------------------------------------------------

def _check_quiet(ws, caplog):
    bad = [w for w in ws if issubclass(w.category, (ResourceWarning, RuntimeWarning))]
    assert not bad, [str(w.message) for w in bad]
    errors = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert not errors, [r.getMessage() for r in errors]


def test_asyncio_run_returns_with_pipe_reads_in_flight(pipes, caplog):
    """The program leaves reads on pipes in flight (tasks never awaited) and
    returns: asyncio.run cancels the tasks, which cancels their ops; it
    finishes quietly and the reads were really cancelled (inflight back to 0,
    data written afterwards stays in the pipes).  The ring outlives the loop
    here so that its state can be checked afterwards."""
    ps = pipes(5)
    ring = KernelRing(32)

    async def program():
        ar = AsyncRing(ring)
        for r, _ in ps:
            asyncio.ensure_future(ar.read(r, 10))
        await asyncio.sleep(0.02)
        assert ring.inflight == len(ps)

    try:
        caplog.set_level(logging.DEBUG, logger="asyncio")
        with warnings.catch_warnings(record=True) as ws:
            warnings.simplefilter("always")
            run(program)
            gc.collect()
        _check_quiet(ws, caplog)
        assert ring.inflight == 0
        for r, w in ps:
            os.write(w, b"y")
            assert os.read(r, 10) == b"y"
    finally:
        ring.close()


def test_asyncio_run_async_with_exits_with_reads_pending(pipes):
    """``async with AsyncRing()`` left while reads are pending: the ring is
    closed, each pending task ends (CancelledError or OSError ECANCELED --
    aclose cancels the ops), nothing leaks, no ResourceWarning."""
    ps = pipes(5)

    async def program():
        async with AsyncRing() as ar:
            tasks = [asyncio.ensure_future(ar.read(r, 10)) for r, _ in ps]
            await asyncio.sleep(0.02)
            assert ar.ring.inflight == len(ps)
        assert ar.ring.closed
        res = await asyncio.wait_for(asyncio.gather(*tasks, return_exceptions=True), 2)
        assert all(_cancelled_or_ecanceled(x) for x in res), res

    before = _fds()
    with warnings.catch_warnings(record=True) as ws:
        warnings.simplefilter("always")
        run(program)
        gc.collect()
    assert not [w for w in ws if issubclass(w.category, (ResourceWarning, RuntimeWarning))]
    assert _fds() <= before
    for r, w in ps:
        os.write(w, b"y")
        assert os.read(r, 10) == b"y"


def test_asyncio_run_returns_with_tasks_pending_default_ring(pipes, caplog):
    """Same with the default ring, closed explicitly at the end while the
    tasks are still waiting."""
    ps = pipes(4)

    async def program():
        ar = aio.get_ring()
        tasks = [asyncio.ensure_future(ar.read(r, 10)) for r, _ in ps]
        await asyncio.sleep(0.02)
        assert ar.ring.inflight == len(ps)
        await aio.close_default_ring()
        assert ar.ring.closed
        return tasks

    caplog.set_level(logging.DEBUG, logger="asyncio")
    with warnings.catch_warnings(record=True) as ws:
        warnings.simplefilter("always")
        tasks = run(program)
        gc.collect()
    _check_quiet(ws, caplog)
    for t in tasks:
        assert t.done()
    for r, w in ps:
        os.write(w, b"y")
        assert os.read(r, 10) == b"y"


def test_regression_unclosed_asyncring_leaks_eventfd(pipes, caplog):
    """BUG: a program that makes ``AsyncRing()`` and returns without aclose()
    (reads still in flight): once the loop is gone and the objects are
    collected the ring fd is closed, but the eventfd that
    ``KernelRing.enable_eventfd`` created is not -- only ``KernelRing.close()``
    closes it, and the ring's deallocation does not call it.  Repro:
    ``r = KernelRing(8); r.enable_eventfd(); del r; gc.collect()`` leaves an
    ``anon_inode:[eventfd]`` open."""
    ps = pipes(3)

    async def program():
        ar = AsyncRing()
        for r, _ in ps:
            asyncio.ensure_future(ar.read(r, 10))
        await asyncio.sleep(0.02)

    before = _fds()
    caplog.set_level(logging.DEBUG, logger="asyncio")
    with warnings.catch_warnings(record=True) as ws:
        warnings.simplefilter("always")
        run(program)
        gc.collect()
    _check_quiet(ws, caplog)
    for r, w in ps:                         # reads cancelled, data left alone
        os.write(w, b"y")
        assert os.read(r, 10) == b"y"
    leaked = {fd: _target(fd) for fd in _fds() - before}
    for fd in leaked:                       # keep the conftest check about *this* bug only
        try:
            os.close(int(fd))
        except OSError:
            pass
    assert not leaked, f"fds left open after the unclosed AsyncRing was collected: {leaked}"


def _target(fd: str) -> str:
    try:
        return os.readlink(f"/proc/self/fd/{fd}")
    except OSError:
        return "?"


# ---------------------------------------------------------------------------
# the default ring of each loop
# ---------------------------------------------------------------------------

def test_default_ring_per_loop():
    async def first():
        a = aio.get_ring()
        assert aio.get_ring() is a
        other = await asyncio.create_task(_get())          # another task, same loop
        assert other is a
        assert await a.nop() == 0
        return a

    async def _get():
        return aio.get_ring()

    async def second(prev):
        b = aio.get_ring()
        assert b is not prev and b.ring is not prev.ring
        assert await b.nop() == 0
        await aio.close_default_ring()
        assert b.ring.closed
        return b

    a = run(first)
    assert a.ring.closed        # closed when asyncio.run shut its loop down
    b = run(second, a)
    assert b.ring.closed


def test_close_default_ring_then_get_ring_makes_a_new_one():
    async def main():
        await aio.close_default_ring()                    # nothing yet: a no-op
        a = aio.get_ring()
        await aio.close_default_ring()
        assert a.ring.closed
        await aio.close_default_ring()                    # twice: a no-op
        b = aio.get_ring()
        assert b is not a and not b.ring.closed
        assert await b.nop() == 0
        await aio.close_default_ring()
        assert b.ring.closed

    run(main)


def test_default_ring_used_by_open_and_helpers(tmp_path):
    p = tmp_path / "f.txt"
    p.write_text("abc")

    async def main():
        try:
            ar = aio.get_ring()
            before = ar.ring.statistics().submitted
            async with aio.open(p) as f:
                assert await f.read() == "abc"
            await aio.stat(p)
            assert ar.ring.statistics().submitted > before
            assert aio.get_ring() is ar
        finally:
            await aio.close_default_ring()

    run(main)


def test_regression_default_ring_not_closed_when_loop_collected():
    """BUG: the module docstring promises the default ring is "closed when the
    loop is garbage-collected", but ``_default`` is a WeakKeyDictionary whose
    value (the AsyncRing) holds a strong reference to its key (``_loop``): the
    loop can never be collected, and every ``asyncio.run`` that used
    ``subring.aio.open``/``stat``/... without ``close_default_ring()`` leaks a
    ring and its eventfd for the life of the process."""

    async def main():
        ar = aio.get_ring()
        assert await ar.nop() == 0
        return weakref.ref(ar), weakref.ref(asyncio.get_running_loop())

    before = _fds()
    ref, loop_ref = run(main)
    gc.collect()
    ar = ref()
    try:
        assert loop_ref() is None, "the finished loop was never collected"
        assert ar is None or ar.ring.closed, "the default ring of a dead loop is still open"
        assert _fds() <= before
    finally:
        if ar is not None and not ar.ring.closed:      # clean up after the bug
            for k, v in list(aio.default._default.items()):
                if v() is ar:
                    del aio.default._default[k]
            ar.ring.close()


# ---------------------------------------------------------------------------
# issue 13: the default ring of a closed loop; aclose after the loop closed
# ---------------------------------------------------------------------------

def test_regression_default_ring_leaks_when_loop_closed_without_shutdown_asyncgens():
    """BUG (issue 13 #7): ``new_event_loop`` / ``run_until_complete`` /
    ``close`` (no ``shutdown_asyncgens``) x 100 leaked 200 fds: the
    per-loop table's value (the AsyncRing) held its key (the loop) strongly.
    The default ring must not keep its loop alive, and must be closed when
    the loop closes -- without waiting for a garbage collection."""

    async def use():
        ar = aio.get_ring()
        assert await ar.nop() == 0
        return weakref.ref(ar)

    before = _fds()
    gc.collect()
    gc.disable()                      # closed by loop.close(), not by a later gc
    try:
        refs = []
        for _ in range(100):
            loop = asyncio.new_event_loop()
            refs.append(loop.run_until_complete(use()))
            loop_ref = weakref.ref(loop)
            loop.close()
            del loop
            assert _fds() <= before, "the default ring outlived its closed loop"
    finally:
        gc.enable()
    gc.collect()
    assert loop_ref() is None, "a closed loop is kept alive"
    assert all(r() is None or r().ring.closed for r in refs)
    assert _fds() <= before


def test_regression_aclose_after_its_loop_closed_raises_runtimeerror():
    """BUG (issue 13 #11): ``aclose()`` of an AsyncRing whose loop was
    closed scheduled its flush on that closed loop: RuntimeError.  It must
    cancel what is left, reap it and close the ring."""
    r, w = os.pipe()
    try:
        loop = asyncio.new_event_loop()

        async def start():
            ar = AsyncRing(KernelRing(16), own=True)
            t = asyncio.ensure_future(ar.readinto(r, bytearray(8)))
            await asyncio.sleep(0.01)
            assert ar.ring.inflight == 1
            return ar, t

        ar, task = loop.run_until_complete(start())
        loop.close()
        asyncio.run(ar.aclose(timeout=5))            # another loop
        assert ar.ring.closed
        os.write(w, b"late")                          # the read was cancelled
        assert os.read(r, 4) == b"late"
        del task
    finally:
        os.close(r)
        os.close(w)
