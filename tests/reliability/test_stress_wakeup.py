"""Lost wake-up hunt: a client and a server that both sleep as soon as they
are idle (interrupt mode: every op needs the doorbell, every completion the
completion eventfd), pinned to the same CPU or to different CPUs, one op (or
a few) in flight at a time, while the server and the client are frozen and
thawed (SIGSTOP / SIGCONT) at random points of the arm -> fence -> re-check
-> sleep protocol.

A lost wake-up on the client side is a hang: the client's 10 s wait runs out
and the test fails with a dump of the shared region's indices and flags and
the server's scheduler state.  The server caps each sleep at 1 s, so a lost
doorbell shows as a ~1 s stall: more than a few of them fail the test too.

Random delays *inside* the C protocol steps come from the debug build's
hooks (ring.h SR_DEBUG_DELAY, built by ``scripts/sanitize.sh hooks``; the
amount is SUBRING_DEBUG_DELAY_NS, passed to both processes); in a normal
build the delays come from outside (SIGSTOP) and from sharing one CPU."""

from __future__ import annotations

import os
import random
import signal
import threading
import time

import pytest
from reliab_util import run_child, scale
from subsys_helpers import start_server

pytestmark = [pytest.mark.stress, pytest.mark.timeout(300)]

CPUS = sorted(os.sched_getaffinity(0))


def _perturb(pids: list[int], stop: threading.Event, seed: int, counts: dict) -> None:
    rng = random.Random(seed)
    while not stop.wait(rng.uniform(0.0005, 0.01)):
        pid = rng.choice(pids)
        try:
            os.kill(pid, signal.SIGSTOP)
            time.sleep(rng.choice((0, 0.0001, 0.001, 0.003)))
        except ProcessLookupError:
            return
        finally:
            try:
                os.kill(pid, signal.SIGCONT)
            except ProcessLookupError:
                pass
        counts["freezes"] = counts.get("freezes", 0) + 1


@pytest.mark.parametrize("placement", ["same-cpu", "two-cpus"])
@pytest.mark.parametrize("modes", [("interrupt", "interrupt"), ("hybrid", "interrupt"),
                                   ("interrupt", "hybrid")], ids=lambda m: f"srv-{m[0]}-cli-{m[1]}")
def test_no_lost_wakeup(tmp_path, placement, modes, monkeypatch):
    if placement == "two-cpus" and len(CPUS) < 2:
        pytest.skip("needs two CPUs")
    server_mode, client_mode = modes
    # only a SUBRING_DEBUG_HOOKS build reads it; both peers inherit it
    monkeypatch.setenv("SUBRING_DEBUG_DELAY_NS", os.environ.get("SUBRING_DEBUG_DELAY_NS",
                                                                "20000"))
    cpu_srv = CPUS[0]
    cpu_cli = CPUS[0] if placement == "same-cpu" else CPUS[1]
    with start_server(tmp_path / "w.sock", mode=server_mode) as srv:
        os.sched_setaffinity(srv.pid, {cpu_srv})
        stop = threading.Event()
        counts: dict = {}
        # the perturber freezes the server only (the client is our child's
        # child: freezing it is equivalent to a long descheduling, which the
        # same-cpu placement already gives)
        t = threading.Thread(target=_perturb, args=([srv.pid], stop, 17, counts), daemon=True)
        t.start()
        try:
            res = run_child("wakeup_pingpong", srv.path, 1.5 * scale(), client_mode,
                            1 if server_mode == "interrupt" else 3,
                            timeout=60 + 20 * scale(), cpus={cpu_cli})
        finally:
            stop.set()
            t.join(10)
        assert srv.alive(), srv.log()
    assert not res["errors"], "\n".join(res["errors"])
    assert res["ops"] > 50, res
    assert res["stalls_over_900ms"] <= 2, res
