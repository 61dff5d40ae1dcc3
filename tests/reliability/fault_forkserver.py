"""A fork server for fault injection: one ``python -m fault_forkserver``
process imports subring once, then forks a fresh subsystem server per
request, so a test can kill and restart servers hundreds of times without
paying an interpreter start each time.  The forked servers inherit nothing
but this small process's state (no test fds, no threads).

Protocol (one JSON object per line): ``{"serve": PATH, "target": "mod:Class",
"mode": "hybrid"}`` (a server) or ``{"client": PATH, "seed": N}`` (a client
keeping a random mix of ops in flight until killed) on stdin -> ``{"pid": N}``
on stdout.  EOF on stdin: kill
every server still running and exit.  Dead servers are reaped here."""

from __future__ import annotations

import importlib
import json
import os
import select
import signal
import sys


def _serve(path: str, target: str, mode: str, log: str) -> None:
    fd = os.open(log, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    os.dup2(fd, 1)
    os.dup2(fd, 2)
    os.close(fd)
    devnull = os.open(os.devnull, os.O_RDONLY)
    os.dup2(devnull, 0)
    os.close(devnull)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    mod, cls = target.split(":")
    server = getattr(importlib.import_module(mod), cls)()
    signal.signal(signal.SIGTERM, lambda *a: server.stop())
    try:
        server.serve(path, mode=mode)
    finally:
        os._exit(0)


def _client(path: str, seed: int, log: str) -> None:
    """A client that keeps a random mix of ops in flight until it is killed."""
    import random
    import time

    import subring
    fd = os.open(log, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    os.dup2(fd, 1)
    os.dup2(fd, 2)
    os.close(fd)
    rng = random.Random(seed)
    from reliab_util import connect_when_up
    c = connect_when_up(path, timeout=5, entries=32, slot_size=512)
    if rng.random() < 0.3:
        c.register_pool(subring.BufferPool(4, 4096))
    ops = [c.op_index(n) for n in ("echo", "add", "slow", "defer", "flush")]
    while True:
        while c.inflight < 24:
            op = rng.choice(ops)
            if op == ops[2]:
                c.prep_call(op, None, rng.randrange(0, 3), 1)
            else:
                c.prep_call(op, b"x" * rng.choice((0, 8, 100, 400)), 1, 2)
        c.submit_and_wait(1, timeout=1)
        c.reap()
        if rng.random() < 0.01:
            time.sleep(0.001)


def main() -> None:
    import subsys_examples  # noqa: F401  (imported once, before any fork)

    import subring  # noqa: F401

    kids: set[int] = set()
    buf = b""
    while True:
        r, _, _ = select.select([0], [], [], 0.05)
        while kids:
            try:
                pid, _ = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                break
            if not pid:
                break
            kids.discard(pid)
        if not r:
            continue
        chunk = os.read(0, 65536)
        if not chunk:
            break
        buf += chunk
        while b"\n" in buf:
            line, buf = buf.split(b"\n", 1)
            req = json.loads(line)
            pid = os.fork()
            if pid == 0:
                try:
                    if "serve" in req:
                        _serve(req["serve"], req.get("target", "subsys_examples:EchoTest"),
                               req.get("mode", "hybrid"), req["serve"] + ".log")
                    else:
                        _client(req["client"], req.get("seed", 0), req["client"] + ".clog")
                finally:
                    os._exit(1)
            kids.add(pid)
            sys.stdout.write(json.dumps({"pid": pid}) + "\n")
            sys.stdout.flush()
    for pid in kids:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    for pid in kids:
        try:
            os.waitpid(pid, 0)
        except ChildProcessError:
            pass


if __name__ == "__main__":
    main()
