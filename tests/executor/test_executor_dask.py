"""Both directions between RingExecutor and Dask, on a real one-machine
``distributed`` cluster (a Scheduler and a Worker process on localhost,
always closed, every wait bounded):

* a Dask worker runs its tasks on a RingExecutor (RingExecutorPlugin);
* code written for a RingExecutor runs unchanged on Client.get_executor().

Skipped, with the reason, when the optional ``distributed`` package (the
``dask`` extra) is not installed."""

from __future__ import annotations

import gc
import os

import executor_funcs as ef
import pytest

distributed = pytest.importorskip(
    "distributed", reason="distributed is not installed (pip install 'subring[dask]')")
dask = pytest.importorskip("dask")

from subring.executor import RingExecutor
from subring.executor.dask_plugin import RingExecutorPlugin

T = 60


def pid_alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def _fds() -> dict[str, str]:
    out = {}
    for fd in os.listdir("/proc/self/fd"):
        try:
            out[fd] = os.readlink(f"/proc/self/fd/{fd}")
        except OSError:
            pass
    return out


@pytest.fixture(autouse=True)
def _no_leaked_fds():
    """Replaces conftest's check for this module: Dask's client keeps a pool
    of sockets that grows with use and is closed with the client, so sockets
    are checked once, when the cluster is gone (see ``client``); every other
    kind of fd is checked per test."""
    gc.collect()
    before = _fds()
    yield
    gc.collect()
    leaked = {fd: what for fd, what in _fds().items()
              if fd not in before and not what.startswith("socket:")}
    assert not leaked, f"test leaked file descriptors: {leaked}"


@pytest.fixture(scope="module")
def client():
    """A LocalCluster with one worker *process* (non-daemonic, so it may
    start RingExecutor workers), and a Client on it.  Once both are closed,
    no fd opened meanwhile is left."""
    from multiprocessing import resource_tracker

    resource_tracker.ensure_running()       # (spawned Nannies start it, for good)
    gc.collect()
    before = _fds()
    with dask.config.set({"distributed.worker.daemon": False}):
        cluster = distributed.LocalCluster(n_workers=1, threads_per_worker=2, processes=True,
                                           dashboard_address=":0", silence_logs=40)
    c = distributed.Client(cluster, timeout=T)
    try:
        c.wait_for_workers(1, timeout=T)
        yield c
    finally:
        c.close(timeout=T)
        cluster.close(timeout=T)
    assert ef.wait_until(lambda: gc.collect() is not None and
                         not set(_fds()) - set(before), 10), \
        {fd: w for fd, w in _fds().items() if fd not in before}


def test_dask_worker_runs_its_tasks_on_a_ring_executor(client):
    np = pytest.importorskip("numpy")
    (dask_worker_pid,) = client.run(os.getpid).values()
    client.register_plugin(RingExecutorPlugin(max_workers=2))
    try:
        pids = client.gather(client.map(ef.pid_and_parent, range(8), pure=False), errors="raise")
        # every task ran in a RingExecutor worker: a child of the Dask worker
        assert {ppid for _, ppid in pids} == {dask_worker_pid}
        assert dask_worker_pid not in {pid for pid, _ in pids}
        assert client.submit(ef.inc, 41).result(T) == 42
        a = np.arange(1 << 17, dtype="float64")                       # 1 MiB
        np.testing.assert_array_equal(client.submit(ef.double, a).result(T), a * 2)
        with pytest.raises(ValueError, match="bad item 3"):
            client.submit(ef.raise_if, 3, 3).result(T)
    finally:
        client.unregister_worker_plugin(RingExecutorPlugin.name)
    # teardown shut the RingExecutor down: its workers are gone
    ring_pids = {pid for pid, _ in pids}
    assert ef.wait_until(lambda: not any(pid_alive(p) for p in ring_pids), 10)
    # and the Dask worker runs tasks in its own threads again
    assert client.submit(ef.pid_and_parent, 0, pure=False).result(T)[0] == dask_worker_pid


def test_ring_executor_code_runs_unchanged_on_client_get_executor(client):
    with RingExecutor(2) as ex:
        local = ef.executor_pipeline(ex)
    remote = ef.executor_pipeline(client.get_executor(pure=False))
    assert local == remote
    assert local["map"] == list(range(1, 21)) and local["error"] == "bad item 1"
