"""Shared machinery of the reliability suite: child-process runs with a hard
timeout, resource snapshots (fds, mappings, threads, processes, /dev/shm) and
the exactly-once ledger.  No pytest import at module level: child processes
import this too."""

from __future__ import annotations

import collections
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
TESTS = HERE.parent
ROOT = TESTS.parent


def scale() -> float:
    """SUBRING_RELIAB_SCALE (default 1): multiplies iterations and durations."""
    try:
        return max(0.1, float(os.environ.get("SUBRING_RELIAB_SCALE", "1")))
    except ValueError:
        return 1.0


def child_env(extra: dict[str, str] | None = None) -> dict[str, str]:
    env = dict(os.environ)
    paths = [str(HERE), str(TESTS / "helpers")]
    if env.get("PYTHONPATH"):
        paths.append(env["PYTHONPATH"])
    env["PYTHONPATH"] = os.pathsep.join(paths)
    env.setdefault("PYTHONUNBUFFERED", "1")
    env["PYTHONFAULTHANDLER"] = "1"
    if extra:
        env.update(extra)
    return env


class ChildFailed(AssertionError):
    pass


def run_child(module: str, *args: Any, timeout: float, env: dict[str, str] | None = None,
              cpus: set[int] | None = None) -> dict[str, Any]:
    """Run ``python -m module args`` and return the JSON object of its last
    stdout line.  A crash (signal), a non-zero exit, or running past
    ``timeout`` (then the child gets SIGABRT first, so faulthandler dumps
    every thread's stack, and SIGKILL after) raises ChildFailed with the
    child's output."""
    cmd = [sys.executable, "-X", "faulthandler", "-m", module, *map(str, args)]
    proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, env=child_env(env), cwd=str(HERE),
                            start_new_session=True)
    if cpus:
        try:
            os.sched_setaffinity(proc.pid, cpus)
        except OSError:
            pass
    hung = False
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        hung = True
        proc.send_signal(signal.SIGABRT)
        try:
            out, err = proc.communicate(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            out, err = proc.communicate(timeout=10)
    finally:
        if proc.poll() is None:       # pragma: no cover - belt and braces
            proc.kill()
            proc.wait(10)
        _kill_group(proc.pid)
    text_out = out.decode(errors="replace")
    text_err = err.decode(errors="replace")
    rc = proc.returncode
    lines = [ln for ln in text_out.splitlines() if ln.startswith("{")]
    if hung or rc != 0 or not lines:
        why = (f"hung (no exit within {timeout:.0f} s)" if hung else
               f"killed by signal {signal.Signals(-rc).name}" if rc < 0 else
               f"exit status {rc}" if rc else "no result line")
        raise ChildFailed(f"child {module} {args}: {why}\n--- stdout ---\n{text_out[-4000:]}"
                          f"\n--- stderr ---\n{text_err[-6000:]}")
    result = json.loads(lines[-1])
    result["_stderr"] = text_err
    return result


def _kill_group(pgid: int) -> None:
    """Kill whatever the child left in its session (grandchildren)."""
    try:
        os.killpg(pgid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass


# ---------------------------------------------------------------------------
# resources
# ---------------------------------------------------------------------------

def fds(pid: int | str = "self") -> dict[int, str]:
    out = {}
    base = f"/proc/{pid}/fd"
    for name in os.listdir(base):
        try:
            out[int(name)] = os.readlink(f"{base}/{name}")
        except OSError:
            pass
    return out


def subring_mappings(pid: int | str = "self") -> list[str]:
    """Shared mappings of subring's memfds (queues, pools) and io_uring rings."""
    out = []
    with open(f"/proc/{pid}/maps") as f:
        for line in f:
            if "subring" in line or "io_uring" in line or "anon_inode:[io_uring]" in line:
                out.append(line.strip())
    return out


def threads(pid: int | str = "self") -> int:
    return len(os.listdir(f"/proc/{pid}/task"))


def children(pid: int | None = None) -> list[int]:
    """Live (non-zombie) direct children of ``pid``."""
    pid = os.getpid() if pid is None else pid
    out = []
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            with open(f"/proc/{name}/stat") as f:
                data = f.read()
        except OSError:
            continue
        rest = data[data.rindex(")") + 2:].split()
        if int(rest[1]) == pid and rest[0] != "Z":
            out.append(int(name))
    return out


def dev_shm() -> set[str]:
    try:
        return set(os.listdir("/dev/shm"))
    except FileNotFoundError:
        return set()


class Snapshot:
    """What this process holds now; ``leaks(later)`` lists what grew."""

    def __init__(self) -> None:
        import gc
        gc.collect()
        self.fds = fds()
        self.maps = subring_mappings()
        self.threads = threads()
        self.children = set(children())
        self.shm = dev_shm()

    def leaks(self, settle: float = 5.0) -> list[str]:
        """Compare a fresh snapshot with this one (retrying for ``settle``
        seconds: threads and processes take a moment to go away)."""
        deadline = time.monotonic() + settle
        while True:
            now = Snapshot()
            problems = []
            extra_fds = {k: v for k, v in now.fds.items() if k not in self.fds}
            if extra_fds:
                problems.append(f"fds: {extra_fds}")
            if len(now.maps) > len(self.maps):
                problems.append(f"mappings: {sorted(set(now.maps) - set(self.maps))[:8]}")
            if now.threads > self.threads:
                problems.append(f"threads: {self.threads} -> {now.threads}")
            extra_children = now.children - self.children
            if extra_children:
                problems.append(f"processes: {sorted(extra_children)}")
            extra_shm = now.shm - self.shm
            if extra_shm:
                problems.append(f"/dev/shm: {sorted(extra_shm)}")
            if not problems or time.monotonic() >= deadline:
                return problems
            time.sleep(0.05)


# ---------------------------------------------------------------------------
# the exactly-once ledger
# ---------------------------------------------------------------------------

class Ledger:
    """Records every op that was certainly prepared (``sure``), that may have
    been prepared (a batch call that raised midway: ``maybe``), and every
    final completion delivered.  ``check()`` returns the violations of
    "exactly one final completion per op"."""

    def __init__(self) -> None:
        self.sure: list[Any] = []
        self.maybe: list[Any] = []
        self.done: list[Any] = []

    def check(self, require_all: bool = True) -> list[str]:
        got = collections.Counter(self.done)
        problems = []
        dup = {k: n for k, n in got.items() if n > 1}
        if dup:
            problems.append(f"{len(dup)} ops completed more than once, e.g. "
                            f"{list(dup.items())[:5]}")
        known = set(self.sure) | set(self.maybe)
        foreign = [k for k in got if k not in known]
        if foreign:
            problems.append(f"{len(foreign)} completions of ops never prepared, e.g. "
                            f"{foreign[:5]}")
        if require_all:
            lost = [k for k in self.sure if k not in got]
            if lost:
                problems.append(f"{len(lost)} prepared ops never completed, e.g. {lost[:5]}")
        return problems

    def summary(self) -> dict[str, int]:
        return {"prepared": len(self.sure), "maybe": len(self.maybe),
                "completions": len(self.done)}


def emit(obj: dict[str, Any]) -> None:
    """The child's result line (the last JSON line of stdout)."""
    sys.stdout.write(json.dumps(obj) + "\n")
    sys.stdout.flush()


class ForkServer:
    """Drives ``fault_forkserver``: ``serve(path)`` / ``client(path)`` fork a
    fresh server / client process in a few milliseconds and return its pid.
    ``close()`` kills whatever is still running and reaps the fork server."""

    def __init__(self) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "fault_forkserver"], stdin=subprocess.PIPE,
            stdout=subprocess.PIPE, env=child_env(), cwd=str(HERE))

    def _ask(self, req: dict[str, Any]) -> int:
        import select
        self.proc.stdin.write((json.dumps(req) + "\n").encode())
        self.proc.stdin.flush()
        r, _, _ = select.select([self.proc.stdout], [], [], 30)
        line = self.proc.stdout.readline() if r else b""
        if not line:
            raise RuntimeError("fork server did not answer")
        return json.loads(line)["pid"]

    def serve(self, path: str, target: str = "subsys_examples:EchoTest",
              mode: str = "hybrid") -> int:
        return self._ask({"serve": str(path), "target": target, "mode": mode})

    def client(self, path: str, seed: int) -> int:
        return self._ask({"client": str(path), "seed": seed})

    def close(self) -> None:
        try:
            self.proc.stdin.close()
            self.proc.wait(20)
        except subprocess.TimeoutExpired:   # pragma: no cover
            self.proc.kill()
            self.proc.wait(10)
        finally:
            self.proc.stdout.close()


def kill9(pid: int) -> None:
    try:
        os.kill(pid, signal.SIGKILL)
    except ProcessLookupError:
        pass


def wait_gone(pid: int, timeout: float = 10.0) -> None:
    """Until ``pid`` is dead (a zombie counts: its fds are closed)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with open(f"/proc/{pid}/stat") as f:
                data = f.read()
        except (FileNotFoundError, ProcessLookupError):    # (reaped while reading)
            return
        if data[data.rindex(")") + 2] in "ZX":
            return
        time.sleep(0.002)
    raise AssertionError(f"process {pid} still alive {timeout} s after SIGKILL")


def connect_when_up(path: str, timeout: float = 10.0, **kw: Any):
    """``subring.connect`` to a server that may still be starting: retried
    while the socket is missing or refuses (whether or not this version of
    connect() retries by itself)."""
    import subring
    deadline = time.monotonic() + timeout
    while True:
        try:
            return subring.connect(path, timeout=max(0.05, deadline - time.monotonic()), **kw)
        except (FileNotFoundError, ConnectionRefusedError):
            if time.monotonic() >= deadline:
                raise
            time.sleep(0.005)
