#!/usr/bin/env python3
"""Bounded soak of subring: several clients with mixed payload sizes against
a subsystem server that is restarted now and then, mode switches, a kernel
ring, and asyncio cancellation storms -- reporting throughput over time,
memory growth (RSS, fds, /dev/shm) and every error.  Not part of the test
suite.  Exit status 0 only if no error was seen and nothing grew.

    PYTHONPATH=src:tests python3 scripts/soak.py --minutes 10 [--clients 3]
        [--restart-every 30] [--json out.json]
"""

from __future__ import annotations

import argparse
import asyncio
import errno
import json
import os
import random
import resource
import signal
import subprocess
import sys
import tempfile
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
# --src DIR: soak another tree's subring (default: this checkout's src/)
SRC = os.path.join(ROOT, "src")
if "--src" in sys.argv:
    SRC = os.path.abspath(sys.argv[sys.argv.index("--src") + 1])
sys.path[:0] = [SRC, os.path.join(ROOT, "tests", "helpers")]

import subring
from subring import KernelRing, PeerDiedError

DEAD = (-errno.ECONNRESET, -errno.ECANCELED)


def rss_kb() -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


class Soak:
    def __init__(self, args) -> None:
        self.args = args
        self.dir = tempfile.mkdtemp(prefix="subring-soak-")
        self.path = os.path.join(self.dir, "soak.sock")
        self.server: subprocess.Popen | None = None
        self.stop = threading.Event()
        self.lock = threading.Lock()
        self.ops = 0
        self.errors: list[str] = []
        self.counts = {"restarts": 0, "mode_switches": 0, "reconnects": 0, "kernel_ops": 0,
                       "cancelled": 0, "reset_completions": 0, "async_ops": 0}

    def error(self, msg: str) -> None:
        with self.lock:
            if len(self.errors) < 100:
                self.errors.append(f"{time.strftime('%H:%M:%S')} {msg}")

    def add(self, key: str | None, n: int) -> None:
        with self.lock:
            if key is None:
                self.ops += n
            else:
                self.counts[key] += n

    # -- the server ---------------------------------------------------------------
    def start_server(self) -> None:
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join([SRC, os.path.join(ROOT, "tests", "helpers")])
        with open(os.path.join(self.dir, "server.log"), "ab") as log:
            self.server = subprocess.Popen(
                [sys.executable, "-m", "subring.cli", "serve", "subsys_examples:EchoTest",
                 "--socket", self.path], stdin=subprocess.DEVNULL, stdout=log, stderr=log,
                env=env)

    def restarter(self) -> None:
        rng = random.Random(1)
        while not self.stop.wait(self.args.restart_every * rng.uniform(0.5, 1.5)):
            sig = rng.choice((signal.SIGKILL, signal.SIGTERM))
            self.server.send_signal(sig)
            try:
                self.server.wait(10)
            except subprocess.TimeoutExpired:
                self.error("server did not exit within 10 s of a signal")
                self.server.kill()
                self.server.wait(10)
            self.start_server()
            self.add("restarts", 1)

    # -- clients -------------------------------------------------------------------
    def client(self, k: int) -> None:
        rng = random.Random(100 + k)
        c = None
        while not self.stop.is_set():
            try:
                if c is None or c.peer_dead:
                    if c is not None:
                        self.drain(c)
                        c.close()
                        self.add("reconnects", 1)
                    c = subring.connect(self.path, entries=64, slot_size=rng.choice((256, 4096)),
                                        mode=rng.choice(("hybrid", "interrupt", "poll")),
                                        timeout=30)
                self.burst(c, rng)
            except PeerDiedError:
                continue
            except (ConnectionError, FileNotFoundError, TimeoutError) as e:
                if not self.stop.is_set():
                    time.sleep(0.05)       # server restarting
                    if isinstance(e, TimeoutError):
                        self.error(f"client {k}: {e!r}")
            except Exception as e:  # noqa: BLE001
                self.error(f"client {k}: {type(e).__name__}: {e}")
                time.sleep(0.1)
        if c is not None:
            self.drain(c)
            c.close()

    def drain(self, c) -> None:
        deadline = time.monotonic() + 10
        while c.inflight and time.monotonic() < deadline:
            c.submit_and_wait(1, timeout=0.5)
            self.check(c.reap())
        if c.inflight:
            self.error(f"{c.inflight} ops without a final completion 10 s after the end")

    def check(self, comps) -> None:
        n = 0
        for comp in comps:
            n += 1
            if comp.res in DEAD:
                self.add("reset_completions", 1)
            elif comp.res < 0:
                self.error(f"op failed: {comp!r} {comp.error_text}")
            elif isinstance(comp.user_data, tuple):
                want = comp.user_data[1]
                got = comp.result()
                if got != want:
                    self.error(f"wrong result: {got!r:.40} != {want!r:.40}")
        self.add(None, n)

    def burst(self, c, rng: random.Random) -> None:
        echo, add, set_mode = c.op_index("echo"), c.op_index("add"), c.op_index("set_mode")
        for _ in range(50):
            while c.inflight < c.max_inflight - 2:
                size = rng.choice((0, 8, 64, 80, 81, min(1000, c.slot_size), c.slot_size))
                data = os.urandom(size) if size else b""
                if rng.random() < 0.5:
                    c.prep_call(echo, data, user_data=("echo", data))
                else:
                    a = rng.randrange(1 << 30)   # res is an int32
                    c.prep_call(add, None, a, 1, user_data=("add", a + 1))
            if rng.random() < 0.01:
                c.prep_call(set_mode, None, rng.randrange(3))
                self.add("mode_switches", 1)
            if rng.random() < 0.05:
                c.mode = rng.choice(("hybrid", "interrupt", "poll"))
            c.submit_and_wait(rng.randrange(1, 8), timeout=5)
            self.check(c.reap())

    # -- kernel ring ---------------------------------------------------------------
    def kernel(self) -> None:
        rng = random.Random(7)
        fd = os.open("/dev/zero", os.O_RDONLY | os.O_CLOEXEC)
        try:
            while not self.stop.is_set():
                with KernelRing(rng.choice((8, 64, 256))) as r:
                    for _ in range(200):
                        while r.inflight < r.max_inflight - 4:
                            if rng.random() < 0.5:
                                r.prep_nop()
                            else:
                                r.prep_read(fd, bytearray(rng.choice((1, 512, 65536))), 0)
                        r.submit_and_wait(1, timeout=5)
                        comps = r.reap()
                        for comp in comps:
                            if comp.res < 0:
                                self.error(f"kernel op failed: {comp!r}")
                        self.add("kernel_ops", len(comps))
        except Exception as e:  # noqa: BLE001
            self.error(f"kernel: {type(e).__name__}: {e}")
        finally:
            os.close(fd)

    # -- asyncio cancellation storms ------------------------------------------------
    def storms(self) -> None:
        from subring import aio

        async def storm(rng: random.Random) -> None:
            rd, wr = os.pipe()
            ring = aio.AsyncRing(KernelRing(8, cq_entries=16), own=True)
            try:
                tasks = [asyncio.ensure_future(ring.read(rd, 16, -1)) for _ in range(300)]
                await asyncio.sleep(0)
                victims = rng.sample(tasks, 100)
                for t in victims:
                    t.cancel()
                os.write(wr, b"y" * 16 * 300)   # enough for every read, cancelled or not
                done, pending = await asyncio.wait(tasks, timeout=20)
                if pending:
                    self.error(f"asyncio storm: {len(pending)} tasks never finished")
                for t in done:
                    if t.cancelled():
                        self.add("cancelled", 1)
                    elif t.exception() is not None:
                        self.error(f"asyncio storm: {type(t.exception()).__name__}: "
                                   f"{t.exception()}")
                    else:
                        self.add("async_ops", 1)
            finally:
                await ring.aclose()
                os.close(rd)
                os.close(wr)

        rng = random.Random(11)
        while not self.stop.wait(rng.uniform(0.5, 2.0)):
            try:
                asyncio.run(asyncio.wait_for(storm(rng), 60))
            except Exception as e:  # noqa: BLE001
                self.error(f"asyncio storm: {type(e).__name__}: {e}")

    # -- run -----------------------------------------------------------------------
    def run(self) -> dict:
        a = self.args
        self.start_server()
        time.sleep(1.0)
        # /dev/shm is shared with everything else on the machine: count only
        # entries that appeared during the run and name subring
        shm0 = set(os.listdir("/dev/shm"))

        def shm_new() -> int:
            return len([f for f in set(os.listdir("/dev/shm")) - shm0 if "subring" in f])
        threads = [threading.Thread(target=self.client, args=(k,), daemon=True)
                   for k in range(a.clients)]
        threads += [threading.Thread(target=f, daemon=True)
                    for f in (self.restarter, self.kernel, self.storms)]
        for t in threads:
            t.start()
        samples = []
        t0 = time.monotonic()
        end = t0 + a.minutes * 60
        last_ops, last_t = 0, t0
        base = None
        while time.monotonic() < end:
            time.sleep(min(a.interval, max(0.0, end - time.monotonic())))
            now = time.monotonic()
            with self.lock:
                ops = self.ops
            s = {"t": round(now - t0, 1), "ops_per_s": round((ops - last_ops) / (now - last_t)),
                 "rss_kb": rss_kb(), "fds": len(os.listdir("/proc/self/fd")),
                 "threads": threading.active_count(),
                 "shm": shm_new(),
                 "errors": len(self.errors), **self.counts}
            samples.append(s)
            print(json.dumps(s), flush=True)
            last_ops, last_t = ops, now
            if base is None and now - t0 >= min(60, a.minutes * 60 / 4):
                base = s          # after warm-up
        self.stop.set()
        for t in threads:
            t.join(60)
        if self.server.poll() is None:
            self.server.terminate()
            self.server.wait(10)
        base = base or samples[0]
        last = samples[-1]
        report = {
            "subring": subring.__file__,
            "minutes": a.minutes, "clients": a.clients, "ops": self.ops, **self.counts,
            "ops_per_s_mean": round(self.ops / (a.minutes * 60)),
            "ops_per_s_min": min(s["ops_per_s"] for s in samples[1:] or samples),
            "rss_kb_after_warmup": base["rss_kb"], "rss_kb_end": last["rss_kb"],
            "fds_after_warmup": base["fds"], "fds_end": last["fds"],
            "shm_files_end": last["shm"], "errors": self.errors,
            "threads_alive_after_stop": [t.name for t in threads if t.is_alive()],
            "max_rss_kb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss,
        }
        growth = last["rss_kb"] - base["rss_kb"]
        report["rss_growth_kb"] = growth
        if self.ops == 0:
            # a server that never came up (clients retry connect() quietly while
            # it restarts) must not pass as a clean soak
            self.errors.append("no subsystem op completed: see server.log in " + self.dir)
        report["ok"] = (not self.errors and last["fds"] <= base["fds"] + 2 and last["shm"] == 0
                        and growth < 50_000 and not report["threads_alive_after_stop"])
        return report


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--minutes", type=float, default=10.0)
    p.add_argument("--clients", type=int, default=3)
    p.add_argument("--restart-every", type=float, default=30.0,
                   help="seconds between server restarts (randomised +-50%%)")
    p.add_argument("--interval", type=float, default=10.0, help="seconds between samples")
    p.add_argument("--json", help="write the final report here")
    p.add_argument("--src", default=SRC, help="the subring source tree to soak (its src/)")
    args = p.parse_args()
    report = Soak(args).run()
    print(json.dumps(report, indent=1))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(report, f, indent=1)
    return 0 if report["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
