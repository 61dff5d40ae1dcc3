"""RingExecutor: large results are lent as views of the shared arena
(``_core.Lease``) instead of copied out.  A lent range must never be reused
while anything can still reach it, must come back once nothing can, must
not take over the arena (leases are capped at a quarter of it, copies beyond
that), and must survive the executor's shutdown without keeping a descriptor.
"""

from __future__ import annotations

import gc
import os
import sys
import weakref
from concurrent.futures.process import BrokenProcessPool

import executor_funcs as ef
import numpy as np
import pytest
from executor_funcs import make_executor  # noqa: F401 - fixture

from subring import BufferPool, _core

T = 30
MIB = 1 << 20


def _arena_maps() -> int:
    with open("/proc/self/maps") as f:
        return sum("subring-exec-arena" in line for line in f)


def _arena(ex):
    (h,) = [h for h in ex._workers if not h.dead][:1]
    return h.arena


def test_big_result_is_a_writable_view_of_the_arena(make_executor):
    ex = make_executor(1, start="eager")
    a = ef.make_array((MIB // 8,), "float64")
    r = ex.submit(ef.double, a).result(T)
    np.testing.assert_array_equal(r, a * 2)
    assert r.flags.writeable
    assert _arena(ex).leased > 0                 # lent, not copied
    r[:] = 7.0                                   # the caller owns it: writes are fine
    assert float(r.sum()) == 7.0 * r.size


def test_lent_range_is_not_reused_while_held(make_executor):
    """The regression this design must never have: a later result written
    over memory an earlier result still shows."""
    ex = make_executor(1, start="eager")
    a = ef.make_array((MIB // 8,), "float64", seed=1)
    kept = ex.submit(ef.double, a).result(T)
    view = memoryview(kept)[100:200]          # a derived view alone must also hold it
    expect = (a * 2).copy()
    for i in range(40):                        # plenty of arena turnover
        b = ef.make_array((MIB // 8,), "float64", seed=100 + i)
        np.testing.assert_array_equal(ex.submit(ef.double, b).result(T), b * 2)
    np.testing.assert_array_equal(kept, expect)
    del kept                                   # the derived view alone holds it now
    gc.collect()
    for i in range(20):
        b = ef.make_array((MIB // 8,), "float64", seed=200 + i)
        ex.submit(ef.double, b).result(T)
    assert bytes(view) == expect[100:200].tobytes()


def test_range_comes_back_when_the_last_view_goes(make_executor):
    ex = make_executor(1, start="eager")
    a = ef.make_array((MIB // 8,), "float64")
    r = ex.submit(ef.double, a).result(T)
    sub = r[10:20]
    arena = _arena(ex)
    lent = arena.leased
    assert lent >= MIB
    del r
    gc.collect()
    assert arena.leased == lent and not arena.returns      # the slice still holds it
    del sub
    gc.collect()
    assert len(arena.returns) == 1                           # queued for the next alloc
    ex.submit(ef.double, a).result(T)                        # which takes it back
    assert arena.leased <= lent


def test_leases_are_capped_and_the_rest_is_copied(make_executor):
    """Holding more results than the lease cap allows must not stall the
    pool: the excess results are copies, and every one stays correct."""
    ex = make_executor(1, start="eager", arena_size=16 * MIB)
    a = ef.make_array((MIB // 8,), "float64")
    held = [ex.submit(ef.double, a + i).result(T) for i in range(12)]   # 12 MiB > cap 4 MiB
    arena = _arena(ex)
    assert 0 < arena.leased <= arena.lease_cap
    for i, r in enumerate(held):
        np.testing.assert_array_equal(r, (a + i) * 2)
    # and the pool still has room for tasks as big as it promises
    big = np.ones((12 * MIB - 4096) // 8)
    np.testing.assert_array_equal(ex.submit(ef.double, big).result(T), big * 2)


def test_task_data_over_three_quarters_of_the_arena_is_refused(make_executor):
    ex = make_executor(1, start="eager", arena_size=8 * MIB)
    with pytest.raises(ValueError, match="3/4 of arena_size"):
        ex.submit(ef.identity, np.ones(7 * MIB // 8)).result(T)
    # a result over the limit fails its own future, and the pool goes on
    with pytest.raises(MemoryError, match="3/4 of arena_size"):
        ex.submit(ef.make_bytes, 7 * MIB, "bytearray").result(T)
    assert ex.submit(ef.inc, 1).result(T) == 2


def test_results_outlive_shutdown_without_a_descriptor():
    fds = ef.open_fds()
    maps = _arena_maps()
    ex = ef.RingExecutor(1, start="eager")
    a = ef.make_array((MIB // 8,), "float64")
    r = ex.submit(ef.double, a).result(T)
    ef.bounded_shutdown(ex, wait=True)
    del ex
    gc.collect()
    np.testing.assert_array_equal(r, a * 2)        # still valid after shutdown
    assert ef.open_fds() <= fds                     # no descriptor kept for it
    assert _arena_maps() == maps + 1                # only its mapping lives on
    del r
    gc.collect()
    assert _arena_maps() == maps                    # and goes with the last view


def test_done_futures_let_go_of_their_worker_and_executor():
    """A finished or cancelled future holds its outcome and nothing else: no
    claim (ClaimTable -> WorkerHandle -> arena -> its mapping), no call, no
    executor -- so a kept future keeps no worker's arena mapped after
    shutdown (see tests/reliability/test_fault_kill.py)."""
    maps = _arena_maps()
    ex = ef.RingExecutor(1, start="eager")
    ok = ex.submit(ef.inc, 1)
    bad = ex.submit(ef.raise_if, 3, 3)
    slow = ex.submit(ef.sleep_return, 0.5, "slow")
    queued = ex.submit(ef.inc, 2)                  # in the ring behind ``slow``
    cancelled = queued.cancel()
    assert ok.result(T) == 2 and slow.result(T) == "slow"
    assert bad.exception(T) is not None
    ef.bounded_shutdown(ex, wait=True)
    del ex
    gc.collect()
    for f in (ok, bad, slow) + ((queued,) if cancelled else ()):
        assert f.done()
        assert f.claim is None and f._executor is None, f
        assert f.frame is None and f.oob is None, f
    assert _arena_maps() == maps


def test_small_results_are_not_lent(make_executor):
    ex = make_executor(1, start="eager")
    assert ex.submit(ef.make_bytes, 1000).result(T) == ef.make_bytes(1000)
    assert _arena(ex).leased == 0


# -- the two C building blocks -------------------------------------------------


def test_lease_calls_back_once_after_the_last_export():
    backing = bytearray(4096)
    calls = []
    lease = _core.Lease(memoryview(backing)[:100], lambda: calls.append(1))
    assert len(lease) == 100
    mv = memoryview(lease)
    arr = np.frombuffer(mv[10:], dtype=np.uint8)
    ref = weakref.ref(lease)
    del lease, mv
    gc.collect()
    assert calls == [] and ref() is not None
    arr[0] = 5
    assert backing[10] == 5                         # the same memory, not a copy
    del arr
    gc.collect()
    assert calls == [1] and ref() is None


def test_lease_bad_arguments():
    with pytest.raises(TypeError):
        _core.Lease(bytearray(10), "not callable")
    with pytest.raises(BufferError):
        _core.Lease(b"read-only", lambda: None)       # lent memory is writable


def test_lease_callback_error_is_reported_not_raised(monkeypatch):
    seen = []
    monkeypatch.setattr(sys, "unraisablehook", lambda u: seen.append(u.exc_type))
    lease = _core.Lease(bytearray(10), lambda: 1 / 0)
    del lease                                          # must not raise here
    gc.collect()
    assert seen == [ZeroDivisionError]


def test_shared_map_keeps_no_descriptor_and_unmaps_with_its_last_view():
    fd = os.memfd_create("subring-test-map", os.MFD_CLOEXEC)
    os.ftruncate(fd, 3 * 4096)
    m = _core.SharedMap(fd, 3 * 4096)
    os.close(fd)
    v = memoryview(m)
    v[:5] = b"hello"
    assert m.exports == 1
    m.discard(4096, 4096)
    with pytest.raises(ValueError):
        m.discard(1, 4096)                              # not page-aligned
    with pytest.raises(ValueError):
        m.discard(0, 5 * 4096)                          # past the end
    with pytest.raises(ValueError):
        m.privatize(0, 4 * 4096)                        # past the end
    m.privatize(0, 5)                                   # page 0 is now private ...
    assert bytes(v[:5]) == b"hello"                     # ... with the same contents
    del m
    assert bytes(v[:5]) == b"hello"                     # the view keeps the map
    v.release()
    with pytest.raises(ValueError):
        _core.SharedMap(-1, 0)
    with pytest.raises(OSError):
        _core.SharedMap(-1, 4096)


def test_buffer_pool_close_still_refuses_while_views_live():
    pool = BufferPool(2, 4096)
    arr = pool.array(1)
    with pytest.raises(BufferError):
        pool.close()
    arr[0] = 1                                          # still mapped and usable
    del arr
    pool.close()
    with pytest.raises(ValueError):
        pool.buffer(0)


def test_regression_a_fork_child_keeps_its_lent_results(make_executor):
    """A lent result is a view of shared memory.  After fork() the child must
    keep what it saw even when the parent drops the result and the arena
    range is reused (the child's copy is made private at fork)."""
    ex = make_executor(1, start="eager")
    a = ef.make_array((MIB // 8,), "float64", seed=3)
    r = ex.submit(ef.double, a).result(T)
    expect = (a * 2).tobytes()
    go_r, go_w = os.pipe()
    pid = os.fork()
    if pid == 0:                                   # the child: wait, then check
        code = 2
        try:
            os.close(go_w)
            os.read(go_r, 1)                       # the parent has reused the range
            code = 0 if r.tobytes() == expect else 1
        finally:
            os._exit(code)
    os.close(go_r)
    try:
        del r
        gc.collect()
        for i in range(12):                        # overwrite the arena, this range included
            b = ef.make_array((MIB // 8,), "float64", seed=50 + i)
            np.testing.assert_array_equal(ex.submit(ef.double, b).result(T), b * 2)
        assert _arena(ex).leased < 2 * MIB         # the old range was returned (and reused)
    finally:
        os.write(go_w, b"x")
        os.close(go_w)
        _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0, "the child's result changed under it"


def test_a_lent_result_outlives_its_dead_worker(make_executor):
    """The worker that produced a lent result dies: the result stays valid
    (its arena is detached, not unmapped), the pool replaces the worker and
    goes on, and dropping the result later frees the mapping."""
    maps = _arena_maps()
    ex = make_executor(1, start="eager")
    a = ef.make_array((MIB // 8,), "float64", seed=9)
    r = ex.submit(ef.double, a).result(T)
    expect = (a * 2).copy()
    assert isinstance(ex.submit(ef.die, "sigkill").exception(T), BrokenProcessPool)
    for i in range(5):                                   # the replacement, with its own arena
        b = ef.make_array((MIB // 8,), "float64", seed=20 + i)
        np.testing.assert_array_equal(ex.submit(ef.double, b).result(T), b * 2)
    np.testing.assert_array_equal(r, expect)
    r[:] = 1.0                                           # still ours to write
    assert ef.wait_until(lambda: _arena_maps() == maps + 2, T)   # old (held) + new arena
    del r
    gc.collect()
    assert ef.wait_until(lambda: _arena_maps() == maps + 1, T)   # the old one is gone
