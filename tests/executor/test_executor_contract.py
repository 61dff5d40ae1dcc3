"""The concurrent.futures contract that issue 10 found broken, one regression
test per bug (named after it), plus the new API (max_tasks_per_child,
statistics()).  Every wait is bounded; every process is cleaned up."""

from __future__ import annotations

import concurrent.futures as cf
import gc
import multiprocessing as mp
import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
import weakref
from concurrent.futures.process import BrokenProcessPool

import executor_funcs as ef
import pytest
from executor_funcs import make_executor  # noqa: F401 - fixture

from subring.executor import RingExecutor

T = 30
# the scripts below run in fresh interpreters: this tree's subring, and the
# folder of executor_funcs (tests/helpers/), which their workers import by name
HELPERS = os.path.dirname(os.path.abspath(ef.__file__))
SRC = os.path.join(os.path.dirname(os.path.dirname(HELPERS)), "src")


def wait_running(futs, n: int, timeout: float = T) -> None:
    assert ef.wait_until(lambda: sum(f.running() for f in futs) >= n, timeout), \
        [f._state for f in futs]


def pid_alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def run_script(code: str, timeout: float = 60.0) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([SRC, HELPERS]))
    return subprocess.run([sys.executable, "-c", textwrap.dedent(code)], env=env,
                          capture_output=True, text=True, timeout=timeout)


# -- cancellation: PENDING until a worker starts the task --------------------------------


def test_regression_tasks_in_a_ring_are_running_and_cannot_be_cancelled(make_executor, tmp_path):
    """20 tasks on 2 workers: running() was true for all 20 and cancel()
    failed for every one not started.  Now: at most one running per worker,
    cancel() succeeds for every task not started, and no cancelled task runs."""
    log = str(tmp_path / "ran")
    ex = make_executor(2, start="eager")
    futs = [ex.submit(ef.record, log, i, 0.3) for i in range(20)]
    wait_running(futs, 2)
    assert sum(f.running() for f in futs) == 2
    started = {i for i, f in enumerate(futs) if f.running()}
    cancelled = {i for i in range(20) if i not in started and futs[i].cancel()}
    # a task might start between the check above and its cancel(): at most 2 more
    assert len(cancelled) >= 16
    assert all(futs[i].cancelled() for i in cancelled)
    done, not_done = cf.wait(futs, T)
    assert not not_done
    ran = {int(x) for x in ef.recorded(log)}
    assert not ran & cancelled
    assert ran | cancelled == set(range(20))


def test_regression_shutdown_cancel_futures_cancels_nothing_queued_in_rings(make_executor, tmp_path):
    """shutdown(cancel_futures=True) cancelled 0 of 50 (they were all in
    rings); now every task no worker has started is cancelled."""
    log = str(tmp_path / "ran")
    ex = make_executor(2, start="eager")
    futs = [ex.submit(ef.record, log, i, 0.2) for i in range(50)]
    wait_running(futs, 2)
    ef.bounded_shutdown(ex, wait=True, cancel_futures=True)
    cancelled = {i for i, f in enumerate(futs) if f.cancelled()}
    assert len(cancelled) >= 46
    assert all(f.done() for f in futs)
    ran = {int(x) for x in ef.recorded(log)}
    assert not ran & cancelled and ran | cancelled == set(range(50))


def test_cancel_race_with_start_runs_or_cancels_never_both(make_executor, tmp_path):
    """Cancel every task while workers race to start them: each one either
    ran (cancel() False) or was cancelled (True) -- never both, never neither."""
    log = str(tmp_path / "ran")
    ex = make_executor(2, start="eager", max_inflight_per_worker=8)
    futs = [ex.submit(ef.record, log, i, 0.0) for i in range(300)]
    outcome = [f.cancel() for f in futs]
    cf.wait(futs, T)
    ran = {int(x) for x in ef.recorded(log)}
    for i, ok in enumerate(outcome):
        assert ok == (i not in ran), i
        assert futs[i].cancelled() == ok


def test_cancelled_in_ring_wakes_wait_and_as_completed(make_executor):
    ex = make_executor(1, start="eager")
    blocker = ex.submit(ef.sleep_return, 0.5, "b")
    queued = ex.submit(ef.inc, 1)
    wait_running([blocker], 1)
    got = []
    t = threading.Thread(target=lambda: got.append(cf.wait([queued], T)))
    t.start()
    time.sleep(0.05)
    assert queued.cancel()
    t.join(T)
    assert got and queued in got[0].done
    assert list(cf.as_completed([queued], timeout=T)) == [queued]
    assert blocker.result(T) == "b"


# -- interpreter exit ---------------------------------------------------------------


@pytest.mark.parametrize("how", ["no_shutdown", "shutdown_no_wait"])
def test_regression_pending_task_lost_silently_at_interpreter_exit(tmp_path, how):
    """The program exited in 0.25 s and the task never ran; PPE runs it."""
    log = str(tmp_path / "ran")
    r = run_script(f"""
        import executor_funcs as ef
        from subring import RingExecutor
        ex = RingExecutor(1)
        futs = [ex.submit(ef.record, {log!r}, i, 0.2) for i in range(3)]
        if {how!r} == "shutdown_no_wait":
            ex.shutdown(wait=False)
    """)
    assert r.returncode == 0, r.stderr
    assert sorted(ef.recorded(log)) == ["0", "1", "2"]


@pytest.mark.parametrize("method", ["fork", "forkserver", "spawn"])
def test_regression_submit_from_late_atexit_hook_accepted(method):
    """Accepted silently (fork), FileNotFoundError (forkserver),
    BrokenProcessPool (spawn); PPE raises RuntimeError."""
    r = run_script(f"""
        import atexit, multiprocessing as mp
        import executor_funcs as ef
        from subring import RingExecutor
        if __name__ == "__main__":
            ex = RingExecutor(1, mp_context=mp.get_context({method!r}))
            assert ex.submit(ef.inc, 1).result(60) == 2
            def late():
                try:
                    ex.submit(ef.inc, 2)
                except RuntimeError as e:
                    print("RuntimeError:", e)
                else:
                    print("accepted")
            atexit.register(late)
    """)
    assert r.returncode == 0, r.stderr
    assert "RuntimeError: cannot schedule new futures after" in r.stdout, r.stdout


def test_submit_after_shutdown_raises_runtime_error(make_executor):
    ex = make_executor(1)
    ex.shutdown()
    with pytest.raises(RuntimeError, match="after shutdown"):
        ex.submit(ef.inc, 1)


# -- start-up ------------------------------------------------------------------------


def test_regression_slow_worker_handshake_raises_timeout_error_from_submit(make_executor):
    """The handshake had 50 ms: a worker slow to answer its attach (a
    loaded machine) made submit() raise TimeoutError."""
    ex = make_executor(2, initializer=ef.hog_gil_after_init, initargs=(1.0,))
    futs = [ex.submit(ef.inc, i) for i in range(20)]        # must not raise
    assert [f.result(T) for f in futs] == [i + 1 for i in range(20)]
    assert ex.statistics().start_failures == 0


def test_regression_half_started_worker_survives_shutdown(make_executor, tmp_path):
    """A worker still starting (in its initializer) when the executor shuts
    down is stopped and reaped, not left running."""
    pids = str(tmp_path / "pids")
    before = ef.child_pids()
    ex = make_executor(1, initializer=ef.write_pid_then_sleep, initargs=(pids, 30.0))
    f = ex.submit(ef.inc, 1)
    assert ef.wait_until(lambda: ef.recorded(pids), T)
    t0 = time.monotonic()
    ef.bounded_shutdown(ex, wait=True, cancel_futures=True)
    assert time.monotonic() - t0 < 15
    assert f.cancelled()
    pid = int(ef.recorded(pids)[0])
    assert ef.wait_until(lambda: not pid_alive(pid), 10)
    assert ef.child_pids() <= before


def test_regression_submit_blocks_on_replacement_start_while_worker_idle(make_executor, tmp_path):
    """After a worker death, submit() waited for the replacement's whole
    start-up (3 s initializer) although the other worker was idle."""
    flag = str(tmp_path / "slow")
    ex = make_executor(2, start="eager", initializer=ef.sleep_if_exists, initargs=(flag, 3.0))
    open(flag, "w").close()                       # replacements take 3 s
    dead = ex.submit(ef.die, "exit")
    with pytest.raises(BrokenProcessPool):
        dead.result(T)
    t0 = time.monotonic()
    f = ex.submit(ef.sleep_return, 0.2, 1)            # to the idle worker
    g = ex.submit(ef.inc, 1)                          # wants the replacement too
    assert time.monotonic() - t0 < 0.5
    assert f.result(T) == 1 and g.result(T) == 2
    assert time.monotonic() - t0 < 2.5               # the live worker ran both


def test_regression_replacement_dying_in_startup_breaks_pool_forever(make_executor, tmp_path):
    """A replacement killed during its initializer broke the pool for good,
    even with on_worker_death='replace'.  Now it is retried with backoff."""
    pids = str(tmp_path / "pids")
    ex = make_executor(1, max_inflight_per_worker=1, start="eager",
                       initializer=ef.write_pid_then_sleep, initargs=(pids, 1.0))
    first = int(ef.recorded(pids)[0])
    futs = [ex.submit(ef.sleep_return, 0.5, i) for i in range(4)]
    wait_running(futs, 1)
    os.kill(first, signal.SIGKILL)
    assert ef.wait_until(lambda: len(ef.recorded(pids)) >= 2, T)   # the replacement, in init
    os.kill(int(ef.recorded(pids)[1]), signal.SIGKILL)
    outcomes = []
    for f in futs:
        try:
            outcomes.append(f.result(T))
        except BrokenProcessPool:
            outcomes.append("broken")
    assert outcomes[0] == "broken" and outcomes[1:] == [1, 2, 3]
    assert ex.submit(ef.inc, 1).result(T) == 2
    stats = ex.statistics()
    assert not stats.broken and stats.start_failures >= 1


@pytest.mark.parametrize("method", ["fork", "forkserver", "spawn"])
def test_regression_worker_orphaned_when_executor_killed_during_start(tmp_path, method):
    """The watchdog called stop() before serve() (which reset it), and under
    forkserver getppid() is never the executor: a worker outlived its
    executor.  Now a pidfd watch, armed before the initializer, ends it."""
    pids = str(tmp_path / "pids")
    code = f"""
        import multiprocessing as mp, time
        import executor_funcs as ef
        from subring import RingExecutor
        if __name__ == "__main__":
            ex = RingExecutor(1, mp_context=mp.get_context({method!r}),
                              initializer=ef.write_pid_then_sleep, initargs=({pids!r}, 3.0))
            ex.submit(ef.inc, 1)
            time.sleep(60)
    """
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([SRC, HELPERS]))
    p = subprocess.Popen([sys.executable, "-c", textwrap.dedent(code)], env=env,
                         stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        assert ef.wait_until(lambda: ef.recorded(pids), T)
        time.sleep(0.2)
        p.kill()
        p.wait(T)
        worker = int(ef.recorded(pids)[0])
        assert ef.wait_until(lambda: not pid_alive(worker), 10), "worker outlived its executor"
    finally:
        p.kill()
        p.wait(T)
        for pid in map(int, ef.recorded(pids)):
            if pid_alive(pid):
                os.kill(pid, signal.SIGKILL)


@pytest.mark.parametrize("method", ["fork", "forkserver", "spawn"])
def test_regression_worker_holding_the_gil_outlives_killed_executor(tmp_path, method):
    """A worker busy in a long C call holds the GIL, so its watch thread
    cannot run: it outlived a killed executor.  PR_SET_PDEATHSIG (set from the
    executor's long-lived launcher thread, or under the forkserver) ends it."""
    pids = str(tmp_path / "pids")
    code = f"""
        import multiprocessing as mp, time
        import executor_funcs as ef
        from subring import RingExecutor
        if __name__ == "__main__":
            ex = RingExecutor(1, mp_context=mp.get_context({method!r}),
                              initializer=ef.write_pid_then_sleep, initargs=({pids!r}, 0.0))
            f = ex.submit(ef.hold_gil)
            while not f.running():
                time.sleep(0.01)
            print("running", flush=True)
            time.sleep(60)
    """
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([SRC, HELPERS]))
    p = subprocess.Popen([sys.executable, "-c", textwrap.dedent(code)], env=env,
                         stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    try:
        assert p.stdout.readline().strip() == "running"
        worker = int(ef.recorded(pids)[0])
        p.kill()
        p.wait(T)
        assert ef.wait_until(lambda: not pid_alive(worker), 10), "worker outlived its executor"
    finally:
        p.kill()
        p.wait(T)
        p.stdout.close()
        for pid in map(int, ef.recorded(pids)):
            if pid_alive(pid):
                os.kill(pid, signal.SIGKILL)


# -- parameters ----------------------------------------------------------------------


def test_regression_max_inflight_5000_makes_submit_raise_ring_full():
    with pytest.raises(ValueError, match="max_inflight_per_worker"):
        RingExecutor(1, max_inflight_per_worker=5000)
    RingExecutor(1, max_inflight_per_worker=4096).shutdown()


def test_regression_slot_size_32mib_breaks_every_submit_and_leaks_workers():
    before = ef.child_pids()
    with pytest.raises(ValueError, match="slot_size"):
        RingExecutor(1, slot_size=32 << 20)
    assert ef.child_pids() <= before


@pytest.mark.parametrize("kw", [{"max_workers": -1}, {"max_tasks_per_child": 0},
                                {"slot_size": 8}, {"arena_size": 100}, {"mode": "fast"},
                                {"start_timeout": 0}, {"max_inflight_per_worker": 0}])
def test_bad_parameters_rejected_up_front(kw):
    kw = dict(kw)
    n = kw.pop("max_workers", 1)
    with pytest.raises(ValueError):
        RingExecutor(n, **kw)


# -- results -------------------------------------------------------------------------


def test_regression_system_exit_unpickling_result_leaves_future_running(make_executor):
    """SystemExit raised while unpickling a result escaped result() and left
    the future RUNNING forever.  Now it is the future's exception (as it is)."""
    ex = make_executor(1)
    f = ex.submit(ef.return_system_exit_on_unpickle)
    assert isinstance(f.exception(T), SystemExit)
    assert f.done()
    assert ex.submit(ef.inc, 1).result(T) == 2


def test_regression_system_exit_unpickling_result_kills_completion_thread(make_executor):
    """The same in the completion thread (nobody in result()): the thread
    died and later futures never finished through wait()/callbacks."""
    ex = make_executor(1)
    f = ex.submit(ef.return_system_exit_on_unpickle)
    done, _ = cf.wait([f], T)
    assert f in done and isinstance(f.exception(0), SystemExit)
    g = ex.submit(ef.inc, 1)
    called = threading.Event()
    g.add_done_callback(lambda _: called.set())
    assert called.wait(T)
    assert g.result(0) == 2


def test_regression_fetch_with_full_ring_kills_completion_thread(make_executor, tmp_path):
    """arena 16 MiB, 2 in flight, 4 KiB slots: a 10 MiB result's fetch
    waited for arena room while the ring filled up with new tasks; when the
    caller dropped a lent result, the fetch found room but no ring entry and
    RingFullError killed the completion thread."""
    np = pytest.importorskip("numpy")
    ex = make_executor(1, arena_size=16 << 20, max_inflight_per_worker=2, slot_size=4096,
                       start="eager")
    # a result lent to the caller (a view of the arena): ~the whole lease cap
    lent = ex.submit(ef.make_array, (((4 << 20) - 4096) // 8,), "float64").result(T)
    gate = str(tmp_path / "gate")
    a = ex.submit(ef.gated_big, gate, 10 << 20)       # its fetch will wait: 16 - 4 - 4 < 10
    b = ex.submit(ef.sleep_return, 1.0, np.zeros(4 << 17))     # 4 MiB argument
    c = ex.submit(ef.sleep_return, 1.0, np.zeros(1 << 17))     # 1 MiB, queued until a is done
    open(gate, "w").close()
    time.sleep(0.3)                                   # a done; b and c fill the ring
    del lent                                          # room for the fetch: 16 - 4 - 1 >= 10
    gc.collect()
    done, not_done = cf.wait([a, b, c], T)
    assert not not_done
    assert len(a.result(0)) == 10 << 20
    assert b.result(0).nbytes == 4 << 20 and c.result(0).nbytes == 1 << 20
    assert ex.submit(ef.inc, 1).result(T) == 2


def test_completion_thread_failure_breaks_pool_visibly(make_executor, monkeypatch):
    """Any failure the completion thread cannot handle breaks the pool: every
    future finishes (BrokenProcessPool), submit raises; the thread goes on."""
    ex = make_executor(1, start="eager")
    futs = [ex.submit(ef.sleep_return, 0.2, i) for i in range(3)]
    wait_running(futs, 1)

    def boom(*a, **k):
        raise RuntimeError("injected")

    monkeypatch.setattr(ex, "_reap", boom)
    done, not_done = cf.wait(futs, T)
    assert not not_done
    assert all(isinstance(f.exception(0), BrokenProcessPool) for f in futs)
    assert "injected" in str(futs[0].exception(0))
    with pytest.raises(BrokenProcessPool):
        ex.submit(ef.inc, 1)
    assert ex.statistics().broken


# -- API gaps ------------------------------------------------------------------------


def test_regression_failing_initializer_printed_not_logged_and_restarted():
    """A failing initializer was printed to stderr (not the concurrent.futures
    logger) and every submit started another worker that failed again.
    (In a fresh interpreter: pytest's own log handlers are inherited by forked
    workers and would swallow the record.)"""
    r = run_script("""
        import logging
        import executor_funcs as ef
        from concurrent.futures.process import BrokenProcessPool
        from subring import RingExecutor
        logging.basicConfig(format="LOGGED %(name)s %(levelname)s %(message)s")
        ex = RingExecutor(2, initializer=ef.raise_in_initializer)
        f = ex.submit(ef.inc, 1)
        try:
            f.result(60)
        except BrokenProcessPool as e:
            print("broken:", e)
        try:
            ex.submit(ef.inc, 2)
        except BrokenProcessPool:
            print("submit raises")
        s = ex.statistics()
        print("stats", s.broken, s.start_failures)
        ex.shutdown()
    """)
    assert r.returncode == 0, r.stderr
    assert "broken:" in r.stdout and "initializer" in r.stdout
    assert "submit raises" in r.stdout and "stats True 0" in r.stdout
    assert "LOGGED concurrent.futures CRITICAL Exception in initializer:" in r.stderr
    assert "ValueError: error in initializer" in r.stderr


def test_regression_map_keeps_every_yielded_result_alive(make_executor):
    """map() kept every result referenced through the generator (10 of 10)
    while the caller iterated; PPE keeps none."""
    ex = make_executor(2)
    for chunksize in (1, 3):
        alive = 0
        for box in ex.map(ef.make_box, range(10), chunksize=chunksize):
            ref = weakref.ref(box)
            del box
            gc.collect()
            alive += ref() is not None
        assert not alive, f"chunksize {chunksize}: {alive} of 10 still referenced"


@pytest.mark.parametrize("method", ["fork", "spawn"])
def test_max_tasks_per_child(make_executor, _resource_tracker, method):
    ex = make_executor(2, max_tasks_per_child=3, mp_context=mp.get_context(method))
    pids = [f.result(T) for f in [ex.submit(ef.pid_of_task) for _ in range(12)]]
    counts = {p: pids.count(p) for p in set(pids)}
    assert max(counts.values()) <= 3 and len(counts) >= 4, counts
    # retired workers are gone (bounded), and the pool goes on
    assert ex.submit(ef.inc, 1).result(T) == 2
    assert ef.wait_until(lambda: ex.statistics().workers + ex.statistics().starting <= 2, T)


@pytest.fixture(scope="module")
def _resource_tracker():
    """spawn/forkserver keep multiprocessing's resource tracker for good:
    start it before the fd-leak check looks."""
    from multiprocessing import resource_tracker

    resource_tracker.ensure_running()


def test_statistics_is_a_frozen_dataclass(make_executor):
    from subring.executor import ExecutorStatistics

    ex = make_executor(1)
    ex.submit(ef.inc, 1).result(T)
    s = ex.statistics()
    assert isinstance(s, ExecutorStatistics) and s.backend == "executor"
    assert s.submitted == 1 and s.completed == 1 and s.inflight == 0
    with pytest.raises(AttributeError):
        s.workers = 3                                  # type: ignore[misc]
    with pytest.warns(DeprecationWarning):
        assert s["workers"] == s.workers               # the old dict spelling, for a release
