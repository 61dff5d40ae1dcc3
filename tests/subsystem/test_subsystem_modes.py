"""Server modes (interrupt / poll / hybrid) x client wait modes: correctness
of round trips in every combination, switching modes at run time, and CPU
use while idle (interrupt and hybrid must sleep; poll spins)."""

from __future__ import annotations

import time

import pytest
from subsys_helpers import drain, proc_cpu_seconds, server_stats, start_server

MODES = ["interrupt", "hybrid", "poll"]
IDLE_CPU_MAX = 0.10       # seconds of CPU per second of idleness (10 % of a CPU)
SPIN_CPU_MIN = 0.10       # a spinning process gets at least this much, even on a busy box
IDLE_ROUNDS_MAX = 100     # server loop rounds while idle for ~1 s (it wakes ~once a second)
SPIN_ROUNDS_MIN = 2_000   # ... and while spinning (~150k per CPU-second here)


@pytest.fixture(scope="module", params=MODES)
def moded_server(request, tmp_path_factory):
    """A server started with ``subring serve --mode <mode>``."""
    path = tmp_path_factory.mktemp(f"mode-{request.param}") / "s.sock"
    with start_server(path, mode=request.param) as srv:
        srv.mode = request.param
        yield srv


def _traffic(c, n=50):
    for k in range(n):
        assert c.call("add", None, k, 3) == k + 3
    payload = bytes(range(256)) * 4
    assert c.call("echo", payload) == payload


@pytest.mark.parametrize("client_mode", MODES)
def test_roundtrips_in_every_mode_combination(moded_server, client_mode):
    srv = moded_server
    with srv.connect(mode=client_mode, entries=128) as c:
        assert c.mode == client_mode
        assert server_stats(c)["mode"] == srv.mode
        _traffic(c, 200)
        # a batch larger than the ring, refilled as completions arrive
        total, seen = 1000, set()
        nxt = 0
        deadline = time.monotonic() + 10
        while len(seen) < total:
            assert time.monotonic() < deadline
            while nxt < total and c.inflight < c.max_inflight:
                c.prep_call(c.ops["add"], None, nxt, 0, user_data=nxt)
                nxt += 1
            c.submit_and_wait(1, timeout=2)
            for comp in c.reap():
                assert comp.res == comp.user_data and comp.user_data not in seen
                seen.add(comp.user_data)
        # idle gaps: an interrupt/hybrid server goes to sleep and must be woken
        bells0 = c.statistics().doorbells
        for k in range(3):
            time.sleep(0.1)
            assert c.call("add", None, k, 1) == k + 1
        bells = c.statistics().doorbells - bells0
        if srv.mode == "poll":
            assert c.statistics().doorbells == 0, "a polling server never asks for a doorbell"
        else:
            assert bells >= 3, f"server in {srv.mode} mode slept but got {bells} doorbells"
        # waiting for a slow op: poll clients spin, the others sleep
        sleeps0 = c.statistics().sleeps
        assert c.call("slow", None, 60, 5, timeout=5) == 5
        sleeps = c.statistics().sleeps - sleeps0
        if client_mode == "poll":
            assert c.statistics().sleeps == 0
        else:
            assert sleeps >= 1
        # a wait that times out returns without a completion, in every mode
        c.prep_call(c.ops["slow"], None, 200, 9, user_data="late")
        t0 = time.monotonic()
        assert c.submit_and_wait(1, timeout=0.05) == 0
        assert time.monotonic() - t0 < 1.0
        (late,) = drain(c, 1, timeout=5)
        assert late.user_data == "late" and late.res == 9
    assert srv.alive()


def test_idle_server_cpu(moded_server):
    """After traffic, an idle interrupt/hybrid server sleeps (~0 CPU); a
    polling one spins."""
    srv = moded_server
    with srv.connect(mode="interrupt") as c:
        _traffic(c)
        time.sleep(0.1)                # let hybrid finish spinning
        rounds0 = server_stats(c)["rounds"]
        cpu0, t0 = proc_cpu_seconds(srv.pid), time.monotonic()
        time.sleep(0.8)
        used = (proc_cpu_seconds(srv.pid) - cpu0) / (time.monotonic() - t0)
        rounds = server_stats(c)["rounds"] - rounds0
        assert c.call("add", None, 1, 1) == 2          # still serving
    if srv.mode == "poll":
        assert used >= SPIN_CPU_MIN, f"poll server used only {used:.2f} CPU while idle"
        assert rounds >= SPIN_ROUNDS_MIN, rounds
    else:
        assert used < IDLE_CPU_MAX, f"idle {srv.mode} server used {used:.2f} CPU"
        assert rounds <= IDLE_ROUNDS_MAX, f"idle {srv.mode} server ran {rounds} rounds"


def test_server_mode_switch_at_run_time(tmp_path):
    with start_server(tmp_path / "s.sock", mode="hybrid") as srv, \
            srv.connect(mode="hybrid") as c:
        assert server_stats(c)["mode"] == "hybrid"
        results = {}
        for idx, mode in [(1, "interrupt"), (2, "poll"), (0, "hybrid"), (1, "interrupt")]:
            assert c.call("set_mode", None, idx) == 0
            assert server_stats(c)["mode"] == mode
            _traffic(c, 20)
            time.sleep(0.05)
            rounds0 = server_stats(c)["rounds"]
            cpu0, t0 = proc_cpu_seconds(srv.pid), time.monotonic()
            time.sleep(0.6)
            used = (proc_cpu_seconds(srv.pid) - cpu0) / (time.monotonic() - t0)
            results[len(results)] = (mode, used, server_stats(c)["rounds"] - rounds0)
            _traffic(c, 20)
        for mode, used, rounds in results.values():
            if mode == "poll":
                assert used >= SPIN_CPU_MIN and rounds >= SPIN_ROUNDS_MIN, results
            else:
                assert used < IDLE_CPU_MAX and rounds <= IDLE_ROUNDS_MAX, results
        with pytest.raises(OSError):          # IndexError in the handler -> ENOENT
            c.call("set_mode", None, 3)
        assert server_stats(c)["mode"] == "interrupt"


@pytest.mark.parametrize("client_mode", MODES)
def test_client_cpu_while_waiting(tmp_path, client_mode):
    """A client waiting for a slow op sleeps in interrupt/hybrid mode and
    spins in poll mode (the test process's own CPU time)."""
    with start_server(tmp_path / "s.sock", mode="interrupt") as srv, \
            srv.connect(mode=client_mode) as c:
        _traffic(c, 10)
        cpu0, t0 = time.process_time(), time.monotonic()
        assert c.call("slow", None, 600, 1, timeout=5) == 1
        wall = time.monotonic() - t0
        used = (time.process_time() - cpu0) / wall
        assert wall >= 0.59
    if client_mode == "poll":
        assert used >= SPIN_CPU_MIN, f"poll client used only {used:.2f} CPU waiting"
    else:
        assert used < IDLE_CPU_MAX, f"{client_mode} client used {used:.2f} CPU waiting"


def test_client_mode_switch_at_run_time(tmp_path):
    with start_server(tmp_path / "s.sock") as srv, srv.connect() as c:
        assert c.mode == "hybrid" and c.spin_us == pytest.approx(50.0)
        for round_ in range(3):
            for mode in MODES:
                c.mode = mode
                assert c.mode == mode
                _traffic(c, 10)
                assert c.call("slow", None, 5, round_) == round_
                # with ops in flight, too
                for k in range(20):
                    c.prep_call(c.ops["add"], None, k, 1, user_data=k)
                c.submit()
                c.mode = MODES[(MODES.index(mode) + 1) % 3]
                got = sorted((x.user_data, x.res) for x in drain(c, 20, timeout=5))
                assert got == [(k, k + 1) for k in range(20)]
        c.spin_us = 0
        assert c.spin_us == 0
        c.spin_us = 1000.5
        assert c.spin_us == pytest.approx(1000.5)
        _traffic(c, 10)
        with pytest.raises(ValueError):
            c.mode = "busy"
        with pytest.raises(ValueError):
            c.spin_us = -1
        with pytest.raises((TypeError, ValueError)):
            c.mode = None
        assert c.mode == MODES[0] or c.mode in MODES


@pytest.mark.parametrize("mode", ["interrupt", "poll"])
def test_connect_mode_argument(tmp_path, mode):
    with start_server(tmp_path / "s.sock", mode="interrupt", spin_us=0) as srv:
        with srv.connect(mode=mode, spin_us=10) as c:
            assert c.mode == mode and c.spin_us == pytest.approx(10)
            _traffic(c, 20)
        with pytest.raises(ValueError):
            srv.connect(mode="sideways")
        with srv.connect() as c:
            assert c.call("nop") == 0


def test_wait_mode_is_a_deprecated_spelling_of_mode(tmp_path):
    """One name for the notification mode everywhere: connect(mode=),
    client.mode, Subsystem.mode; client.wait_mode still works, with a
    DeprecationWarning."""
    with start_server(tmp_path / "s.sock") as srv, srv.connect(mode="poll") as c:
        assert c.mode == "poll"
        with pytest.warns(DeprecationWarning, match="mode"):
            assert c.wait_mode == "poll"
        with pytest.warns(DeprecationWarning):
            c.wait_mode = "interrupt"
        assert c.mode == "interrupt"
        assert c.statistics().mode == "interrupt"
