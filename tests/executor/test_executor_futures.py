"""RingExecutor futures: a task's future makes its Condition and waiter /
callback lists only when something needs them (see ``subring.executor.future.RingFuture``).  These
tests race every way of waiting on a future against its completion: other
threads blocking in result(), ``wait()`` in each mode, ``as_completed()``,
done-callbacks added before and after completion, cancel, asyncio."""

from __future__ import annotations

import asyncio
import concurrent.futures as cf
import threading

import executor_funcs as ef
import pytest

from subring.executor.future import RingFuture

T = 30


@pytest.fixture(scope="module")
def ex():
    e = ef.RingExecutor(2, start="eager")
    yield e
    ef.bounded_shutdown(e, wait=True, cancel_futures=True)


def test_a_future_made_and_read_by_one_thread_never_builds_a_condition(ex):
    f = ex.submit(ef.inc, 1)
    assert f.result(T) == 2
    assert f._cond is None and f._wl is None and f._cbs is None
    assert f.done() and not f.running() and not f.cancelled()
    assert f.exception(T) is None
    assert "finished" in repr(f)


def test_other_threads_blocked_in_result_are_woken(ex):
    """Threads that never drive (the completion thread finishes the future)
    wait on the lazily made Condition; none may miss the wake-up."""
    for _ in range(30):
        f = ex.submit(ef.sleep_return, 0.002, 7)
        got: list[object] = []

        def waiter():
            got.append(cf._base.Future.result(f, T))    # the plain, non-driving wait

        ts = [threading.Thread(target=waiter) for _ in range(3)]
        for t in ts:
            t.start()
        for t in ts:
            t.join(T)
        assert got == [7, 7, 7]


@pytest.mark.parametrize("mode", [cf.ALL_COMPLETED, cf.FIRST_COMPLETED, cf.FIRST_EXCEPTION])
def test_wait_counts_each_future_once(ex, mode):
    """wait() installs waiters on futures finishing at that very moment; a
    future counted twice would end ALL_COMPLETED early."""
    for rnd in range(20):
        fs = [ex.submit(ef.sleep_return, 0.0005 * (i % 4), i) for i in range(12)]
        done, not_done = cf.wait(fs, timeout=T, return_when=mode)
        if mode == cf.ALL_COMPLETED:
            assert not not_done and len(done) == 12
            assert all(f.done() for f in done)
        else:
            assert done and all(f.done() for f in done)
        assert sorted(f.result(T) for f in fs) == list(range(12))


def test_as_completed_yields_every_future_once(ex):
    fs = [ex.submit(ef.sleep_return, 0.001 * (i % 3), i) for i in range(40)]
    seen = [f.result() for f in cf.as_completed(fs, timeout=T)]
    assert sorted(seen) == list(range(40))


def test_done_callbacks_before_and_after_completion(ex):
    calls: list[int] = []
    lock = threading.Lock()

    def cb(f):
        with lock:
            calls.append(f.result())

    fs = []
    for i in range(50):
        f = ex.submit(ef.inc, i)
        f.add_done_callback(cb)                 # usually before it finishes
        fs.append(f)
    for f in fs:
        f.result(T)
    done = ex.submit(ef.inc, 100)
    done.result(T)
    done.add_done_callback(cb)                  # after: runs at once, here
    assert ef.wait_until(lambda: len(calls) == 51, T)
    assert sorted(calls) == sorted([i + 1 for i in range(50)] + [101])


def test_regression_wait_on_a_cancelled_pending_task_is_notified():
    """A cancelled task used to leave the queue without CANCELLED_AND_NOTIFIED:
    wait()/as_completed() on it slept until their timeout."""
    with ef.RingExecutor(1, start="eager", max_inflight_per_worker=1) as e:
        gate = e.submit(ef.sleep_return, 0.3, "gate")
        queued = [e.submit(ef.inc, i) for i in range(5)]
        woke = threading.Event()

        def waiter():
            cf.wait(queued[2:3], timeout=T)
            woke.set()

        t = threading.Thread(target=waiter)
        t.start()
        assert queued[2].cancel() and queued[2].cancelled() and queued[2].done()
        t.join(T)
        assert woke.is_set()
        with pytest.raises(cf.CancelledError):
            queued[2].result(T)
        assert gate.result(T) == "gate"
        assert [f.result(T) for i, f in enumerate(queued) if i != 2] == [1, 2, 4, 5]


def test_set_twice_is_an_error_with_or_without_a_condition():
    for make_cond in (False, True):
        f = RingFuture(None)
        if make_cond:
            f._condition                            # noqa: B018 - as a waiter would
        assert f.set_running_or_notify_cancel()
        f.set_result(1)
        with pytest.raises(cf.InvalidStateError):
            f.set_result(2)
        with pytest.raises(cf.InvalidStateError):
            f.set_exception(ValueError())
        assert f.result(0) == 1


def test_exception_results_keep_their_type_and_cause(ex):
    f = ex.submit(ef.raise_custom, "boom", 3)
    with pytest.raises(Exception) as ei:
        f.result(T)
    assert "boom" in str(ei.value) and ei.value.__cause__ is not None
    assert f.exception(T) is ei.value


def test_asyncio_wrap_future(ex):
    async def main():
        return await asyncio.gather(*(ex.run(ef.inc, i) for i in range(100)))

    assert asyncio.run(main()) == list(range(1, 101))


def test_regression_shutdown_cancel_futures_notifies_waiters(tmp_path):
    e = ef.RingExecutor(1, start="eager", max_inflight_per_worker=1)
    # The one worker runs `gate` until the queued futures are cancelled.  (It
    # slept 0.3 s: on a loaded machine the shutdown could come before it
    # started, and cancel it, or after it ended, and a queued one would run.)
    opened = tmp_path / "gate"
    gate = e.submit(ef.gated, str(opened), "gate")
    queued = [e.submit(ef.inc, i) for i in range(5)]
    assert ef.wait_until(gate.running, T)
    result: list[object] = []
    t = threading.Thread(target=lambda: result.append(cf.wait(queued, timeout=T)))
    t.start()
    opener = threading.Thread(target=lambda: ef.wait_until(
        lambda: all(f.cancelled() for f in queued), T) and opened.touch())
    opener.start()
    ef.bounded_shutdown(e, wait=True, cancel_futures=True)
    opener.join(T)
    t.join(T)
    done, not_done = result[0]
    assert not not_done and all(f.cancelled() for f in queued)
    assert gate.result(T) == "gate"


def test_futures_nobody_waits_on_complete_after_a_driver_leaves(ex):
    """While a thread drives (reaps inside result()), the completion thread
    parks; when the driver leaves tasks in flight, they must still finish
    and run their callbacks with nobody calling result()."""
    for _ in range(20):
        fired = threading.Event()
        slow = ex.submit(ef.sleep_return, 0.005, "slow")
        slow.add_done_callback(lambda f: fired.set())
        assert ex.submit(ef.inc, 1).result(T) == 2      # drive, leave `slow` in flight
        assert fired.wait(T)
        assert slow.result(0) == "slow"
