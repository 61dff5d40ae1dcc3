"""Fault injection: SIGKILL a subsystem server, a client, or an executor
worker at random points of a mixed workload, many times over; after each
kill every op got exactly one final completion, survivors keep working, and
nothing leaks (fds, subring mappings, threads, processes, /dev/shm).

Bounded by default (a few hundred kills in ~25 s); ``SUBRING_RELIAB_SCALE=N``
multiplies the iterations."""

from __future__ import annotations

import errno
import os
import random
import threading
import time

import pytest
from reliab_util import (
    ForkServer,
    Ledger,
    Snapshot,
    connect_when_up,
    kill9,
    scale,
    subring_mappings,
    wait_gone,
)
from subsys_helpers import server_stats, wait_until

import subring
from subring import PeerDiedError

pytestmark = [pytest.mark.fault, pytest.mark.timeout(600)]

PHASES = ["idle", "prepared", "inflight", "completing", "attaching", "pool"]
DEAD = (-errno.ECONNRESET, -errno.ECANCELED)


@pytest.fixture
def forkserver():
    fs = ForkServer()
    try:
        yield fs
    finally:
        fs.close()


def _connect_quiet(path, out):
    try:
        out.append(subring.connect(path, entries=16, timeout=2))
    except (OSError, ConnectionError, TimeoutError) as e:   # refused / reset / gone
        out.append(e)


def _server_kill_round(fs, path, rng: random.Random) -> dict:
    """One server life: start, attach, a workload, SIGKILL at a random point
    of ``phase``, then check the client's side of the contract."""
    pid = fs.serve(path)
    c = connect_when_up(path, entries=32, slot_size=256)
    echo, slow, defer, add = (c.op_index(n) for n in ("echo", "slow", "defer", "add"))
    ledger, expect = Ledger(), {}
    phase = rng.choice(PHASES)
    ids = iter(range(1, 1 << 30))
    other: list = []

    def prep(n: int) -> None:
        for _ in range(n):
            if c.inflight >= c.max_inflight or c.peer_dead:
                return
            uid = next(ids)
            try:
                prep_one(uid)
            except PeerDiedError:      # noticed the death while preparing: fine
                return
            ledger.sure.append(uid)

    def prep_one(uid: int) -> None:
        if True:
            kind = rng.randrange(4)
            if kind == 0:
                data = bytes([uid & 0xFF]) * rng.choice((1, 80, 200))
                c.prep_call(echo, data, user_data=uid)
                expect[uid] = data
            elif kind == 1:
                c.prep_call(slow, None, rng.randrange(0, 4), uid, user_data=uid)
                expect[uid] = uid
            elif kind == 2:
                c.prep_call(defer, None, 1, user_data=uid)     # held until the server dies
            else:
                c.prep_call(add, None, uid, 1, user_data=uid)
                expect[uid] = uid + 1

    def reap() -> None:
        for comp in c.reap():
            ledger.done.append(comp.user_data)
            want = expect.get(comp.user_data)
            if comp.res in DEAD:
                continue
            assert comp.res >= 0, (phase, comp, comp.error_text)
            if want is not None:
                assert comp.result() == want, (phase, comp.user_data)

    try:
        _workload(c, pid, path, phase, rng, prep, reap, other)
        wait_gone(pid)
        # every op gets its final completion within a bounded wait
        deadline = time.monotonic() + 10
        while c.inflight or c.cq_ready:
            assert time.monotonic() < deadline, f"{phase}: {c.inflight} ops never completed"
            c.submit_and_wait(1, timeout=0.5)
            reap()
        problems = ledger.check()
        assert not problems, (phase, problems)
        with pytest.raises(PeerDiedError):
            c.prep_call(echo, b"after death")
            c.submit()
        assert c.inflight == 0
    finally:
        kill9(pid)
        c.close()
        for o in other:
            if isinstance(o, (subring.SubsystemClient, subring.BufferPool)):
                o.close()
    return {"phase": phase, "ops": len(ledger.sure)}


def _workload(c, pid, path, phase, rng, prep, reap, other) -> None:
    if phase == "prepared":
        prep(rng.randrange(1, 20))
        kill9(pid)
    elif phase == "inflight":
        prep(rng.randrange(1, 30))
        c.submit()
        time.sleep(rng.uniform(0, 0.005))
        kill9(pid)
    elif phase == "completing":
        prep(30)
        timer = threading.Timer(rng.uniform(0, 0.01), kill9, (pid,))
        timer.start()
        end = time.monotonic() + 0.05
        while time.monotonic() < end and not c.peer_dead:
            c.submit_and_wait(1, timeout=0.01)
            reap()
            prep(5)
        timer.join()
    elif phase == "attaching":
        t = threading.Thread(target=_connect_quiet, args=(path, other))
        t.start()
        time.sleep(rng.uniform(0, 0.003))
        kill9(pid)
        t.join(30)
        assert not t.is_alive(), "connect() did not return after the server died"
    elif phase == "pool":
        pool = subring.BufferPool(2, 4096)
        t = threading.Thread(target=lambda: other.append(_try_pool(c, pool)))
        t.start()
        time.sleep(rng.uniform(0, 0.002))
        kill9(pid)
        t.join(30)
        assert not t.is_alive(), "register_pool() did not return after the server died"
        other.append(pool)
    else:
        kill9(pid)


def _try_pool(c, pool):
    try:
        c.register_pool(pool, timeout=2)
    except (OSError, ValueError, TimeoutError, ConnectionError) as e:
        return e
    return None


def test_kill_server_at_random_points(tmp_path, forkserver):
    """SIGKILL the server in every phase, restart it on the same socket path
    (a stale socket must be replaced), many times; a client of another
    server is unaffected throughout."""
    rng = random.Random(1234)
    survivor_path = str(tmp_path / "survivor.sock")
    forkserver.serve(survivor_path)
    survivor = connect_when_up(survivor_path)
    before = Snapshot()
    path = str(tmp_path / "victim.sock")
    rounds = int(60 * scale())
    phases: dict[str, int] = {}
    for k in range(rounds):
        info = _server_kill_round(forkserver, path, rng)
        phases[info["phase"]] = phases.get(info["phase"], 0) + 1
        assert survivor.call("add", arg0=k, arg1=1, timeout=10) == k + 1
    assert set(phases) == set(PHASES), phases
    leaks = before.leaks()
    assert not leaks, leaks
    survivor.close()


def test_kill_clients_at_random_points(tmp_path, forkserver):
    """SIGKILL client processes at random points of their life (attaching,
    with ops in flight, mid-completion, with a pool); the server drops each
    one, keeps serving a survivor, and its fds and mappings return to the
    baseline."""
    rng = random.Random(99)
    path = str(tmp_path / "srv.sock")
    spid = forkserver.serve(path)
    survivor = connect_when_up(path)
    base_stats = server_stats(survivor)
    base_fds = len(os.listdir(f"/proc/{spid}/fd"))
    base_maps = len(subring_mappings(spid))
    rounds = int(80 * scale())
    live: list[int] = []
    try:
        _client_kills(forkserver, path, rng, rounds, live, survivor)
        _check_server_recovered(spid, survivor, base_stats, base_fds, base_maps, rounds)
    finally:
        for victim in live:
            kill9(victim)
        survivor.close()


def _client_kills(forkserver, path, rng, rounds, live, survivor) -> None:
    for k in range(rounds):
        live.append(forkserver.client(path, seed=k))
        # kill at a random point of the clients' lives: some while attaching
        time.sleep(rng.choice((0, 0.001, 0.005, 0.02, 0.05)))
        while len(live) > rng.randrange(0, 4):
            victim = live.pop(rng.randrange(len(live)))
            kill9(victim)
            wait_gone(victim)
        if k % 10 == 0:
            assert survivor.call("add", arg0=k, arg1=2, timeout=10) == k + 2
    while live:
        victim = live.pop()
        kill9(victim)
        wait_gone(victim)


def _check_server_recovered(spid, survivor, base_stats, base_fds, base_maps, rounds) -> None:
    assert os.path.exists(f"/proc/{spid}"), "the server died"
    # requests the dead clients left deferred hold their queues (and so the
    # mappings) until completed: complete them into nothing
    survivor.call("flush", timeout=10)
    wait_until(lambda: server_stats(survivor)["clients"] == base_stats["clients"], 20,
               what="the server to drop every dead client")
    wait_until(lambda: len(os.listdir(f"/proc/{spid}/fd")) <= base_fds, 20,
               what=f"server fds back to {base_fds}")
    wait_until(lambda: len(subring_mappings(spid)) <= base_maps, 20,
               what=f"server mappings back to {base_maps}")
    st = server_stats(survivor)
    # every client that attached was dropped (some died before attaching)
    assert st["connects"] - st["disconnects"] == base_stats["connects"] - base_stats[
        "disconnects"], st
    assert st["connects"] > rounds // 3, st
    assert survivor.call("echo", b"still here", timeout=10) == b"still here"


def test_kill_executor_workers_at_random_points():
    """SIGKILL executor workers while tasks are queued, running and
    completing: every future resolves exactly once (its result, or
    BrokenProcessPool for the tasks the dead worker held), the pool replaces
    the worker and keeps working, and shutdown leaves nothing behind."""
    import concurrent.futures as cf

    import executor_funcs as ef

    from subring import RingExecutor
    from subring.executor import BrokenProcessPool

    rng = random.Random(5)
    before = Snapshot()
    rounds = int(12 * scale())
    outcomes = {"ok": 0, "broken": 0}
    with RingExecutor(max_workers=2) as ex:
        for k in range(rounds):
            pids = {f.result(timeout=30) for f in [ex.submit(ef.getpid) for _ in range(8)]}
            futs = [ex.submit(ef.sleep_return, rng.choice((0, 0.001, 0.01)), i)
                    for i in range(rng.randrange(5, 40))]
            done_calls = []
            for f in futs:
                f.add_done_callback(done_calls.append)
            time.sleep(rng.uniform(0, 0.02))
            victim = rng.choice(sorted(pids))
            kill9(victim)
            wait_gone(victim)
            for i, f in enumerate(futs):
                try:
                    assert f.result(timeout=30) == i
                    outcomes["ok"] += 1
                except BrokenProcessPool:
                    outcomes["broken"] += 1
            deadline = time.monotonic() + 10
            while len(done_calls) < len(futs) and time.monotonic() < deadline:
                time.sleep(0.001)
            assert sorted(map(id, done_calls)) == sorted(map(id, futs)), \
                "a future's callbacks ran twice or never"
            # the pool goes on.  (One retry: a task sent to the victim before
            # its death was noticed fails -- the open bug pinned down by
            # test_executor_task_submitted_after_idle_worker_died_runs.)
            try:
                got = ex.submit(ef.inc, k).result(timeout=30)
            except BrokenProcessPool as e:
                assert f"pid {victim}" in str(e), e
                got = ex.submit(ef.inc, k).result(timeout=30)
            assert got == k + 1
            cf.wait(futs, timeout=0)
    # (the caller has let go of every future: what they hold is theirs to keep)
    del futs, done_calls, f
    leaks = before.leaks(settle=10)
    assert not leaks, leaks
    assert outcomes["broken"] > 0 and outcomes["ok"] > 0, outcomes


def test_executor_task_submitted_after_idle_worker_died_runs():
    """Bug (found by the worker-kill test): a task submitted after an idle
    worker had died -- its process gone, its sockets closed -- was sent to it
    and failed with BrokenProcessPool, although that worker held nothing and
    the pool promises to replace dead workers and go on."""
    import executor_funcs as ef

    from subring import RingExecutor

    with RingExecutor(max_workers=1) as ex:
        for k in range(10):
            pid = ex.submit(ef.getpid).result(timeout=30)
            kill9(pid)
            wait_gone(pid)
            assert ex.submit(ef.inc, k).result(timeout=30) == k + 1, k


def test_executor_done_futures_do_not_keep_arenas_after_shutdown():
    """Bug (found by the worker-kill test's leak check): finished futures
    holding plain results kept a reference to their worker, so each
    worker's 256 MiB arena stayed mapped after shutdown() for as long as the
    caller kept any future."""
    import gc

    import executor_funcs as ef

    from subring import RingExecutor

    def arenas() -> int:
        return sum("exec-arena" in m for m in subring_mappings())

    before = arenas()
    with RingExecutor(max_workers=2) as ex:
        futs = [ex.submit(ef.inc, i) for i in range(10)]
        assert [f.result(timeout=30) for f in futs] == list(range(1, 11))
    deadline = time.monotonic() + 10
    while arenas() > before and time.monotonic() < deadline:
        gc.collect()
        time.sleep(0.05)
    assert arenas() == before, f"{arenas() - before} arena mappings kept by done futures"
    assert all(f.done() for f in futs)
