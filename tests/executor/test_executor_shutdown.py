"""RingExecutor shutdown: wait / no wait / cancel_futures, submit after
shutdown, context manager, done-callbacks that submit, wait()/as_completed(),
and nothing left behind (processes, fds, /dev/shm files, the temp dir).
Every shutdown is bounded (bounded_shutdown fails the test if it hangs)."""

from __future__ import annotations

import concurrent.futures as cf
import multiprocessing as mp
import os
import threading
import time
from concurrent.futures.process import BrokenProcessPool

import executor_funcs as ef
import pytest
from executor_funcs import bounded_shutdown, make_executor  # noqa: F401 - fixture

T = 30


@pytest.fixture
def baseline():
    """What exists before the test: children, fds, /dev/shm entries."""
    return {"children": ef.child_pids(), "fds": ef.open_fds(), "shm": ef.shm_files()}


def assert_clean(ex, baseline, timeout: float = 10.0) -> None:
    """After a shutdown: no child process, no new fd, no /dev/shm file, no
    temp dir -- waiting (bounded) for a background shutdown to finish."""

    def clean() -> bool:
        return (not mp.active_children() and ef.child_pids() <= baseline["children"]
                and not os.path.exists(ex._dir)
                and ef.open_fds() <= baseline["fds"]
                and ef.shm_files() <= baseline["shm"])

    if not ef.wait_until(clean, timeout, 0.02):
        leaked_fds = {}
        for fd in ef.open_fds() - baseline["fds"]:
            try:
                leaked_fds[fd] = os.readlink(f"/proc/self/fd/{fd}")
            except OSError:
                pass
        pytest.fail(f"not clean {timeout} s after shutdown: "
                    f"active_children={mp.active_children()} "
                    f"children={ef.child_pids() - baseline['children']} "
                    f"dir_exists={os.path.exists(ex._dir)} fds={leaked_fds} "
                    f"shm={ef.shm_files() - baseline['shm']}")
    assert not any(t.name == "RingExecutor-completions" and t.is_alive()
                   for t in threading.enumerate())


def test_shutdown_wait_completes_pending_work(baseline, make_executor):
    ex = make_executor(2, max_inflight_per_worker=1)
    futs = [ex.submit(ef.sleep_return, 0.02, i) for i in range(20)]
    assert ex.statistics().pending > 0
    bounded_shutdown(ex, wait=True)
    assert all(f.done() for f in futs)
    assert [f.result(0) for f in futs] == list(range(20))
    assert_clean(ex, baseline, timeout=1.0)        # wait=True: clean on return


def test_shutdown_no_wait_returns_at_once_and_work_completes(baseline, make_executor):
    ex = make_executor(2, max_inflight_per_worker=2)
    futs = [ex.submit(ef.sleep_return, 0.1, i) for i in range(10)]
    took = bounded_shutdown(ex, wait=False)
    assert took < 0.1, took
    with pytest.raises(RuntimeError):
        ex.submit(ef.inc, 1)
    assert [f.result(T) for f in futs] == list(range(10))
    assert_clean(ex, baseline)


def test_shutdown_no_wait_without_result_calls(baseline, make_executor):
    """Nobody calls result(): the completion thread alone finishes the work."""
    ex = make_executor(2)
    futs = [ex.submit(ef.sleep_return, 0.05, i) for i in range(8)]
    bounded_shutdown(ex, wait=False)
    done, not_done = cf.wait(futs, timeout=T)
    assert not not_done
    assert sorted(f.result(0) for f in done) == list(range(8))
    assert_clean(ex, baseline)


def test_shutdown_cancel_futures(baseline, make_executor):
    ex = make_executor(1, max_inflight_per_worker=1, start="eager")
    running = ex.submit(ef.sleep_return, 0.3, "ran")
    queued = [ex.submit(ef.sleep_return, 0.3, i) for i in range(6)]
    assert ex.statistics().pending == 6
    assert ef.wait_until(running.running, T)       # (else it would be cancelled too)
    took = bounded_shutdown(ex, wait=True, cancel_futures=True)
    assert took < 2.0, took                         # did not run the 6 queued tasks
    assert running.result(0) == "ran"
    assert all(f.cancelled() for f in queued)
    for f in queued:
        with pytest.raises(cf.CancelledError):
            f.result(0)
    assert_clean(ex, baseline, timeout=1.0)


def test_shutdown_cancel_futures_no_wait(baseline, make_executor):
    ex = make_executor(1, max_inflight_per_worker=1, start="eager")
    running = ex.submit(ef.sleep_return, 0.2, "ran")
    queued = [ex.submit(ef.sleep_return, 0.2, i) for i in range(4)]
    # (a task the worker has not started yet is cancelled too: wait for it)
    assert ef.wait_until(running.running, T)
    bounded_shutdown(ex, wait=False, cancel_futures=True)
    assert all(f.cancelled() for f in queued)
    assert running.result(T) == "ran"
    assert_clean(ex, baseline)


def test_submit_after_shutdown(baseline, make_executor):
    ex = make_executor(1)
    assert ex.submit(ef.inc, 1).result(T) == 2
    bounded_shutdown(ex)
    with pytest.raises(RuntimeError, match="shutdown"):
        ex.submit(ef.inc, 1)
    bounded_shutdown(ex)                            # idempotent
    assert_clean(ex, baseline, timeout=1.0)


def test_shutdown_unused_executor(baseline, make_executor):
    for start in ("lazy", "eager"):
        ex = make_executor(2, start=start)
        bounded_shutdown(ex)
        assert_clean(ex, baseline, timeout=1.0)


def test_context_manager(baseline, make_executor):
    t0 = time.monotonic()
    with make_executor(2) as ex:
        futs = [ex.submit(ef.sleep_return, 0.05, i) for i in range(6)]
        assert ex.submit(ef.inc, 1).result(T) == 2
    assert time.monotonic() - t0 < T
    assert all(f.done() for f in futs)               # __exit__ waited
    assert [f.result(0) for f in futs] == list(range(6))
    with pytest.raises(RuntimeError):
        ex.submit(ef.inc, 1)
    assert_clean(ex, baseline, timeout=1.0)


def test_context_manager_exits_on_exception(baseline, make_executor):
    with pytest.raises(KeyError):
        with make_executor(2) as ex:
            f = ex.submit(ef.sleep_return, 0.05, "x")
            raise KeyError("in the block")
    assert f.result(0) == "x"
    assert_clean(ex, baseline, timeout=1.0)


def test_done_callback_submits_more_work(make_executor):
    ex = make_executor(2)
    chain: list[int] = []
    finished = threading.Event()
    errors: list[BaseException] = []

    def cb(f):
        try:
            v = f.result()
            chain.append(v)
            if v < 10:
                ex.submit(ef.inc, v).add_done_callback(cb)
            else:
                finished.set()
        except BaseException as e:  # noqa: BLE001
            errors.append(e)
            finished.set()

    ex.submit(ef.inc, 0).add_done_callback(cb)
    assert finished.wait(T), chain
    assert not errors, errors
    assert chain == list(range(1, 11))


def test_done_callback_fan_out(make_executor):
    """Each callback submits two tasks; nobody calls result() on them."""
    ex = make_executor(2)
    lock = threading.Lock()
    futs: list[cf.Future] = []
    all_submitted = threading.Event()

    def cb(f):
        depth = f.result()
        if depth < 4:
            with lock:
                for _ in range(2):
                    nf = ex.submit(ef.inc, depth)
                    futs.append(nf)
                    nf.add_done_callback(cb)
                if len(futs) == 2 + 4 + 8:
                    all_submitted.set()

    root = ex.submit(ef.inc, 0)
    root.add_done_callback(cb)
    assert all_submitted.wait(T), len(futs)
    done, not_done = cf.wait(list(futs), timeout=T)
    assert not not_done
    assert sorted(f.result(0) for f in futs) == [2] * 2 + [3] * 4 + [4] * 8


def test_done_callback_on_already_done_future(make_executor):
    ex = make_executor(1)
    f = ex.submit(ef.inc, 1)
    assert f.result(T) == 2
    got = []
    f.add_done_callback(lambda fut: got.append(ex.submit(ef.inc, fut.result())))
    assert got[0].result(T) == 3


def test_wait_and_as_completed(make_executor):
    ex = make_executor(2)
    futs = [ex.submit(ef.sleep_return, 0.01 * (i % 5), i) for i in range(30)]
    done, not_done = cf.wait(futs, timeout=T)
    assert not not_done and len(done) == 30
    assert {f.result(0) for f in done} == set(range(30))

    futs = [ex.submit(ef.sleep_return, d, d) for d in (0.25, 0.01, 0.25)]
    done, not_done = cf.wait(futs, timeout=T, return_when=cf.FIRST_COMPLETED)
    assert futs[1] in done
    cf.wait(futs, timeout=T)

    futs = [ex.submit(ef.sleep_return, 0.25, 0), ex.submit(ef.raise_if, 1, 1)]
    done, not_done = cf.wait(futs, timeout=T, return_when=cf.FIRST_EXCEPTION)
    assert futs[1] in done and isinstance(futs[1].exception(0), ValueError)
    cf.wait(futs, timeout=T)

    futs = [ex.submit(ef.sleep_return, 0.01 * (5 - i % 5), i) for i in range(20)]
    got = [f.result(0) for f in cf.as_completed(futs, timeout=T)]
    assert sorted(got) == list(range(20))


def test_as_completed_timeout(make_executor):
    ex = make_executor(1)
    futs = [ex.submit(ef.sleep_return, 1.0, 0)]
    t0 = time.monotonic()
    with pytest.raises(TimeoutError):
        list(cf.as_completed(futs, timeout=0.2))
    assert time.monotonic() - t0 < 1.0


def test_nothing_left_after_heavy_use(baseline, make_executor):
    import numpy as np

    ex = make_executor(2, start="eager")
    a = ef.make_array((1 << 18,), "float64")            # 2 MiB
    futs = [ex.submit(ef.double, a) for _ in range(10)]
    futs += [ex.submit(ef.make_bytes, 3 << 20) for _ in range(2)]
    futs += [ex.submit(ef.inc, i) for i in range(50)]
    for f in futs[:10]:
        np.testing.assert_array_equal(f.result(T), a * 2)
    assert [f.result(T) for f in futs[12:]] == list(range(1, 51))
    # a dead worker (replaced), then more work
    assert isinstance(ex.submit(ef.die, "sigkill").exception(T), BrokenProcessPool)
    assert list(ex.map(ef.inc, range(100), chunksize=10)) == list(range(1, 101))
    bounded_shutdown(ex)
    assert_clean(ex, baseline, timeout=1.0)


def test_shutdown_with_tasks_in_flight_and_a_dying_worker(baseline, make_executor, tmp_path):
    gate = str(tmp_path / "gate")
    ex = make_executor(2, start="eager")
    futs = [ex.submit(ef.gated, gate, i) for i in range(6)] + [ex.submit(ef.die_gated, gate, "segv")]

    def open_gate():
        time.sleep(0.2)
        open(gate, "w").close()

    opener = threading.Thread(target=open_gate)
    opener.start()
    bounded_shutdown(ex, wait=True)
    opener.join()
    for f in futs:
        assert f.done()
    assert isinstance(futs[-1].exception(0), BrokenProcessPool)
    assert_clean(ex, baseline, timeout=1.0)


def test_shutdown_when_worker_killed_while_idle(baseline, make_executor):
    ex = make_executor(2, start="eager")
    pids = set()
    for _ in range(10):
        pids |= {f.result(T) for f in [ex.submit(ef.sleep_pid, 0.01) for _ in range(4)]}
        if len(pids) == 2:
            break
    for pid in pids:
        os.kill(pid, 9)
    time.sleep(0.1)
    bounded_shutdown(ex)
    assert_clean(ex, baseline, timeout=1.0)


def test_workers_exit_when_executor_process_dies(tmp_path):
    """The workers of an executor whose process is SIGKILLed go away too."""
    import subprocess
    import sys
    import textwrap

    script = tmp_path / "owner.py"
    script.write_text(textwrap.dedent(f"""
        import os, sys, time
        sys.path.insert(0, {os.path.dirname(ef.__file__)!r})
        import executor_funcs as ef
        if __name__ == "__main__":
            ex = ef.RingExecutor(2, start="eager")
            pids = set()
            while len(pids) < 2:
                pids |= {{f.result(30) for f in [ex.submit(ef.sleep_pid, 0.01) for _ in range(4)]}}
            print(" ".join(map(str, pids)), flush=True)
            time.sleep(60)
    """))
    proc = subprocess.Popen([sys.executable, str(script)], stdout=subprocess.PIPE, text=True)
    try:
        line = proc.stdout.readline()
        pids = [int(p) for p in line.split()]
        assert len(pids) == 2, line
        proc.kill()
        proc.wait(10)

        def gone() -> bool:
            for p in pids:
                try:
                    with open(f"/proc/{p}/stat") as f:
                        if f.read().rsplit(")", 1)[1].split()[0] != "Z":
                            return False
                except OSError:
                    pass
            return True

        assert ef.wait_until(gone, 10), f"workers {pids} outlived their executor"
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
        proc.stdout.close()


def test_regression_fork_child_exit_leaves_the_parents_directory(make_executor):
    """A fork() child that exits normally runs the executor's finalizer too;
    it used to delete the parent's socket directory, so the next worker the
    parent started (a replacement) could not bind its socket."""
    ex = make_executor(1, start="eager")
    pid = os.fork()
    if pid == 0:
        try:
            ex._finalizer()                  # what atexit does at a normal exit
        finally:
            os._exit(0)
    os.waitpid(pid, 0)
    assert os.path.isdir(ex._dir)
    assert isinstance(ex.submit(ef.die, "sigkill").exception(T), BrokenProcessPool)
    assert ex.submit(ef.inc, 1).result(T) == 2          # the replacement started
