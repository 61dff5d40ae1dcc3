#!/usr/bin/env python3
"""Benchmark: a Python FUSE file system on subring.fuse (FUSE over io_uring and
the classic /dev/fuse transport) against mfusepy and pyfuse3 over Debian's
libfuse3, with a C server of our own as the ceiling.

The file system
---------------
One tree for every contender (bench/fuse_fs.py for the Python libraries,
bench/c_fuse.c for C): a root directory holding one read-only file
``data.bin`` (16 MiB; block b holds the u64 b repeated).  Kernel caching is
off -- direct I/O on open, zero entry and attribute timeouts -- so every
operation reaches the server: a ``stat()`` costs a LOOKUP and a GETATTR, a
4 KiB ``pread()`` one READ.

Workloads
---------
``stat_1r`` / ``read4k_1r``
    ``os.stat(file)`` / ``os.pread(fd, 4096, random block)`` in a loop, from
    one reader process, reader and server unpinned (the scheduler places
    them).
``..._same_cpu`` / ``..._cross_cpu``
    the same with the reader pinned to the last usable CPU and the server's
    threads pinned to the same CPU or to the first one.  A server that pins a
    thread per queue itself (``threads=per-queue``) is not re-pinned: its
    ``_same_cpu`` row has only the reader pinned (its request is served on the
    reader's CPU anyway) and it has no ``_cross_cpu`` row.
``stat_2r`` / ``read4k_2r``
    two unpinned reader processes at once; the rate is the sum of both.

The readers are two long-lived Python processes (bench/fuse_reader.py; the
same for every contender, ~0.4 us of their own per op) that check every
answer (file size; length of every read and the contents of the last read
of each chunk).  The servers that count their requests (subring's and the C
one) report the count at exit, and the run checks that it covers every
timed op (``every_op_reached_server`` in ``servers``): proof that the
kernel's caches really were bypassed, and for io_uring that the measured
requests came through the ring (``ring_requests``).

Contenders
----------
``subring-uring``      subring.fuse, FUSE over io_uring, the library's
                       default threads (see ``servers`` in the JSON)
``subring-uring-X``    the same with the other threads mode (X = single or
                       per-queue): per-queue threads vs one thread for all
``subring-nogilspin``  ``subring-uring`` with ``mount(gil_spin_us=0)``: serving
                       threads block in CPython's GIL wait at once instead of
                       spinning for a GIL another serving thread holds
``subring-nopoll``     ``subring-uring`` with ``mount(poll_us=0)``: a serving
                       thread sleeps at once after answering instead of
                       polling for the next request (docs/fuse.md, "Polling
                       keeps the caller on its CPU")
``subring-classic``    subring.fuse, /dev/fuse read/write
``mfusepy``            mfusepy (ctypes, libfuse3 high-level API), single-
                       threaded loop (faster here than libfuse's
                       multi-threaded one; ``--mfusepy-mt`` adds that too)
``pyfuse3``            pyfuse3 (Cython, libfuse3 low-level API, trio)
``c-uring``            bench/c_fuse.c, io_uring, one thread for all queues
``c-uring-pq``         bench/c_fuse.c, io_uring, a thread per queue pinned
                       (both io_uring C servers poll like subring's default:
                       the same ``poll_us``, the same technique)
``c-uring-pq-nopoll``  ``c-uring-pq`` sleeping at once (POLL_US 0)
``c-classic``          bench/c_fuse.c, /dev/fuse read/write, one thread
``c-classic-pq``       bench/c_fuse.c, /dev/fuse, a reader thread per CPU

Each server runs in its own process, mounted in a temporary directory for
the whole run.  Before it is trusted it must print its READY line and pass a
probe (a reader lists the directory, stats the file, reads and checks
blocks); a server that is missing, crashes, hangs or answers wrongly is
skipped with the reason, never fatal.  The io_uring servers are mounted with
``/sys/module/fuse/parameters/enable_uring`` switched on just for their
FUSE_INIT; the previous value is restored right after (and in a ``finally``,
also on SIGINT/SIGTERM).  Every mount is unmounted at the end (``umount2``,
``MNT_DETACH`` as the fallback) and every server stopped, with timeouts.

Setup: mfusepy needs Debian's ``libfuse3-3`` (+ ``fuse3``) and ``pip install
mfusepy``; pyfuse3 also ``libfuse3-dev`` and ``pkg-config`` to build.  As
root the benchmark installs what is missing (``--no-install``: it does not,
and skips those rows with the reason).

Method
------
Each repetition measures every contender on every workload for a fixed
time slice, back to back, rotating the order from one repetition to the
next.  A ratio is subring's ops/s divided by the baseline's in the same
repetition; the reported ratio is the median of the per-repetition ratios
(higher is better for subring).  The ratios use unpinned readers.  On a
2-vCPU VM the unpinned rate of a single-threaded server swings several-fold
with where the scheduler puts reader and server (same CPU or not), so on a
busy machine the unpinned ratios are noisy; the pinned rows are steady.

Reproduce
---------
::

    python bench/fuse.py --quick                 # about a minute
    python bench/fuse.py --quick --json /tmp/fuse.json
    python bench/fuse.py --smoke --no-install --json /tmp/f.json   # seconds
    python bench/fuse.py                          # full run, about 4 minutes

The C server alone::

    gcc -O2 -Wall -Wextra -pthread bench/c_fuse.c -o /tmp/c_fuse
    /tmp/c_fuse /mnt/x uring single 16777216 &    # (enable_uring must be Y)

``--json PATH`` writes ``"results"`` (workload -> contender -> ops, seconds,
ops_per_s and server_cpu_us_per_op -- the server process's user+system CPU
time per op, all threads, a steadier measure of its per-request cost on a
busy machine -- per repetition), ``"ratios"`` (key -> median or null),
``"ratio_samples"``, ``"bars"``, ``"ceiling"`` (informational ratios against
the C server and between transports/placements, no bar), ``"skipped"``
(contender -> why), ``"not_measured"`` (workload -> contender -> why),
``"servers"`` (what each server reported: transport, threads, requests
answered, ...), the configuration and the environment (with the load average
at the start and the end).
"""

from __future__ import annotations

import contextlib
import ctypes
import dataclasses
import errno
import json
import os
import select
import shlex
import shutil
import signal
import statistics
import subprocess
import sys
import sysconfig
import tempfile
import time
from collections.abc import Callable
from typing import Any

import _common

HERE = os.path.dirname(os.path.abspath(__file__))
FS_SCRIPT = os.path.join(HERE, "fuse_fs.py")
READER_SCRIPT = os.path.join(HERE, "fuse_reader.py")
C_SOURCE = os.path.join(HERE, "c_fuse.c")
FILE_NAME = "data.bin"
ENABLE_URING = "/sys/module/fuse/parameters/enable_uring"
MNT_DETACH = 2


@dataclasses.dataclass(frozen=True)
class Mode:
    reps: int
    slice_s: float        # seconds per contender per workload per repetition
    file_size: int
    chunk: int            # ops between two clock reads in a reader


MODES = {
    # Many short slices rather than a few long ones: with unpinned readers the
    # scheduler's placement (same CPU or not) changes the rate several-fold
    # and sticks for a while, so more samples make the medians steadier.
    "full": Mode(reps=11, slice_s=0.3, file_size=16 << 20, chunk=50),
    "quick": Mode(reps=7, slice_s=0.1, file_size=16 << 20, chunk=50),
    "smoke": Mode(reps=2, slice_s=0.02, file_size=1 << 20, chunk=20),
}

# workload -> (reader op, reader processes, placement)
WORKLOADS: dict[str, tuple[str, int, str]] = {
    "stat_1r": ("stat", 1, "unpinned"),
    "stat_1r_same_cpu": ("stat", 1, "same"),
    "stat_1r_cross_cpu": ("stat", 1, "cross"),
    "read4k_1r": ("read", 1, "unpinned"),
    "read4k_1r_same_cpu": ("read", 1, "same"),
    "read4k_1r_cross_cpu": ("read", 1, "cross"),
    "stat_2r": ("stat", 2, "unpinned"),
    "read4k_2r": ("read", 2, "unpinned"),
}

SUBRING = "subring-uring"      # the subring contender of the bars (library default threads)
NO_GIL_SPIN = "subring-nogilspin"   # the same with mount(gil_spin_us=0)
NO_POLL = "subring-nopoll"          # the same with mount(poll_us=0)
C_FOR = {"single": "c-uring", "per-queue": "c-uring-pq"}
C_NO_POLL = "c-uring-pq-nopoll"     # c-uring-pq with POLL_US 0


def library_poll_us() -> float:
    """subring.fuse.mount()'s default ``poll_us``: the C servers poll as long
    (same technique, so the C ceiling stays a ceiling)."""
    from subring.fuse import DEFAULT_POLL_US
    return DEFAULT_POLL_US


def ratio_defs(c_match: str) -> dict[str, tuple[str, float, tuple[str, str], tuple[str, str]]]:
    """key -> (description, bar, (workload, contender), (workload, baseline))."""
    return {
        "stat_vs_mfusepy": (
            "stat()/s, one reader: subring io_uring vs mfusepy", 1.5,
            ("stat_1r", SUBRING), ("stat_1r", "mfusepy")),
        "read4k_vs_mfusepy": (
            "4 KiB reads/s, one reader: subring io_uring vs mfusepy", 1.3,
            ("read4k_1r", SUBRING), ("read4k_1r", "mfusepy")),
        "read4k_2r_uring_vs_classic": (
            "4 KiB reads/s, two readers: subring io_uring vs subring classic", 1.2,
            ("read4k_2r", SUBRING), ("read4k_2r", "subring-classic")),
        "read4k_vs_c": (
            (f"4 KiB reads/s, one reader: subring io_uring (Python handler) / {c_match} "
             "(same transport and threads)"), 0.8,
            ("read4k_1r", SUBRING), ("read4k_1r", c_match)),
    }


def ceiling_defs(c_match: str, alt: str | None) -> dict[str, tuple[str, tuple[str, str],
                                                                   tuple[str, str]]]:
    """Informational ratios (no bar): key -> (description, a, b)."""
    d = {
        "stat_vs_c": (f"stat()/s, one reader: subring io_uring / {c_match}",
                      ("stat_1r", SUBRING), ("stat_1r", c_match)),
        "read4k_2r_vs_c": (f"4 KiB reads/s, two readers: subring io_uring / {c_match}",
                           ("read4k_2r", SUBRING), ("read4k_2r", c_match)),
        "read4k_same_cpu_vs_c": (
            f"4 KiB reads/s, reader and server on one CPU: subring io_uring / {c_match}",
            ("read4k_1r_same_cpu", SUBRING), ("read4k_1r_same_cpu", c_match)),
        # pinned placements: steadier than the unpinned bars on a busy machine
        "stat_same_cpu_vs_mfusepy": (
            "stat()/s, reader and server on one CPU: subring io_uring / mfusepy",
            ("stat_1r_same_cpu", SUBRING), ("stat_1r_same_cpu", "mfusepy")),
        "read4k_same_cpu_vs_mfusepy": (
            "4 KiB reads/s, reader and server on one CPU: subring io_uring / mfusepy",
            ("read4k_1r_same_cpu", SUBRING), ("read4k_1r_same_cpu", "mfusepy")),
        "classic_read4k_vs_c": ("4 KiB reads/s, one reader: subring classic / c-classic",
                                ("read4k_1r", "subring-classic"), ("read4k_1r", "c-classic")),
        "mfusepy_read4k_vs_c": ("4 KiB reads/s, one reader: mfusepy / c-classic",
                                ("read4k_1r", "mfusepy"), ("read4k_1r", "c-classic")),
        "pyfuse3_read4k_vs_mfusepy": ("4 KiB reads/s, one reader: pyfuse3 / mfusepy",
                                      ("read4k_1r", "pyfuse3"), ("read4k_1r", "mfusepy")),
        "c_read4k_uring_vs_classic": ("4 KiB reads/s, one reader: c-uring / c-classic",
                                      ("read4k_1r", "c-uring"), ("read4k_1r", "c-classic")),
        "c_read4k_2r_uring_vs_classic": ("4 KiB reads/s, two readers: c-uring / c-classic",
                                         ("read4k_2r", "c-uring"), ("read4k_2r", "c-classic")),
        "c_read4k_2r_pq_vs_single": ("4 KiB reads/s, two readers: c-uring-pq / c-uring",
                                     ("read4k_2r", "c-uring-pq"), ("read4k_2r", "c-uring")),
        "c_read4k_same_vs_cross_cpu": (
            "4 KiB reads/s, c-uring: reader and server on one CPU / on two CPUs",
            ("read4k_1r_same_cpu", "c-uring"), ("read4k_1r_cross_cpu", "c-uring")),
        "c_stat_same_vs_cross_cpu": (
            "stat()/s, c-uring: reader and server on one CPU / on two CPUs",
            ("stat_1r_same_cpu", "c-uring"), ("stat_1r_cross_cpu", "c-uring")),
    }
    d["subring_read4k_2r_gil_spin_vs_off"] = (
        f"4 KiB reads/s, two readers: {SUBRING} / the same with gil_spin_us=0",
        ("read4k_2r", SUBRING), ("read4k_2r", NO_GIL_SPIN))
    d["subring_stat_2r_gil_spin_vs_off"] = (
        f"stat()/s, two readers: {SUBRING} / the same with gil_spin_us=0",
        ("stat_2r", SUBRING), ("stat_2r", NO_GIL_SPIN))
    if alt:
        d["subring_read4k_threads_alt_vs_default"] = (
            f"4 KiB reads/s, one reader: {alt} / {SUBRING}",
            ("read4k_1r", alt), ("read4k_1r", SUBRING))
        d["subring_read4k_2r_threads_alt_vs_default"] = (
            f"4 KiB reads/s, two readers: {alt} / {SUBRING}",
            ("read4k_2r", alt), ("read4k_2r", SUBRING))
    d["subring_read4k_poll_vs_off"] = (
        f"4 KiB reads/s, one reader: {SUBRING} / the same with poll_us=0",
        ("read4k_1r", SUBRING), ("read4k_1r", NO_POLL))
    d["subring_stat_poll_vs_off"] = (
        f"stat()/s, one reader: {SUBRING} / the same with poll_us=0",
        ("stat_1r", SUBRING), ("stat_1r", NO_POLL))
    d["subring_read4k_2r_poll_vs_off"] = (
        f"4 KiB reads/s, two readers: {SUBRING} / the same with poll_us=0",
        ("read4k_2r", SUBRING), ("read4k_2r", NO_POLL))
    d["c_read4k_poll_vs_off"] = (
        f"4 KiB reads/s, one reader: c-uring-pq / {C_NO_POLL}",
        ("read4k_1r", "c-uring-pq"), ("read4k_1r", C_NO_POLL))
    d["read4k_nopoll_vs_c_nopoll"] = (
        f"4 KiB reads/s, one reader, neither polling: {NO_POLL} / {C_NO_POLL}",
        ("read4k_1r", NO_POLL), ("read4k_1r", C_NO_POLL))
    return d


class BenchError(RuntimeError):
    """A contender failed (wrong answer, crash, hang): it is dropped from the run."""


# --------------------------------------------------------------------------
# enable_uring
# --------------------------------------------------------------------------

class UringSwitch:
    """Switches ``enable_uring`` on for one mount's FUSE_INIT and restores
    the value it found (the fuse module reads it only at INIT)."""

    def __init__(self) -> None:
        self.prev: str | None = None
        self.changed = False

    @staticmethod
    def read() -> str | None:
        try:
            with open(ENABLE_URING) as f:
                return f.read().strip()
        except OSError:
            return None

    def on(self) -> None:
        cur = self.read()
        if cur is None:
            raise BenchError(f"{ENABLE_URING} is absent: this kernel has no FUSE over io_uring")
        if cur in ("Y", "1"):
            return          # already on (by someone else): nothing of ours to undo
        if not self.changed:
            self.prev = cur
        try:
            with open(ENABLE_URING, "w") as f:
                f.write("Y")
        except OSError as e:
            raise BenchError(f"cannot switch {ENABLE_URING} on: {e}") from e
        self.changed = True

    def restore(self) -> None:
        """Write back the value on() found, if on() changed it (never
        raises: it runs in clean-up paths; a failure is reported on stderr)."""
        if self.changed and self.prev is not None:
            try:
                with open(ENABLE_URING, "w") as f:
                    f.write(self.prev)
            except OSError as e:
                print(f"bench/fuse.py: could not restore {ENABLE_URING} to {self.prev}: {e}",
                      file=sys.stderr)
            finally:
                self.changed = False


# --------------------------------------------------------------------------
# mounts and servers
# --------------------------------------------------------------------------

_libc = ctypes.CDLL(None, use_errno=True)


def is_mounted(path: str) -> bool:
    with open("/proc/self/mountinfo") as f:
        return any(line.split()[4] == path for line in f)


def unmount(path: str, timeout: float = 2.0) -> str | None:
    """umount2(path, 0), retrying EBUSY until ``timeout``; then MNT_DETACH.
    Returns None, or what went wrong."""
    deadline = time.monotonic() + timeout
    while is_mounted(path):
        if _libc.umount2(path.encode(), 0) == 0:
            return None
        err = ctypes.get_errno()
        if err in (errno.EINVAL, errno.ENOENT):
            return None
        if err != errno.EBUSY or time.monotonic() >= deadline:
            if _libc.umount2(path.encode(), MNT_DETACH) == 0:
                return f"busy: detached lazily ({os.strerror(err)})"
            return f"umount2 failed: {os.strerror(ctypes.get_errno())}"
        time.sleep(0.02)
    return None


@dataclasses.dataclass
class Spec:
    name: str
    argv: Callable[[str], list[str]]     # mountpoint -> command line
    uring: bool                          # needs enable_uring at mount


class Server:
    def __init__(self, spec: Spec, tmpdir: str, attempt: int = 0) -> None:
        self.spec = spec
        tag = spec.name + (f".{attempt}" if attempt else "")
        self.mountpoint = os.path.join(tmpdir, "mnt-" + tag)
        os.mkdir(self.mountpoint)
        self.out_path = os.path.join(tmpdir, tag + ".out")
        self.err_path = os.path.join(tmpdir, tag + ".err")
        self.proc: subprocess.Popen | None = None
        self.info: dict[str, Any] = {}
        self.path = os.path.join(self.mountpoint, FILE_NAME)
        self.stopped = False

    @property
    def repinnable(self) -> bool:
        """Single-threaded servers are re-pinned for the placement rows;
        servers with a pinned thread per queue are left as they are."""
        return self.info.get("threads") != "per-queue"

    def stderr_tail(self, lines: int = 3) -> str:
        try:
            with open(self.err_path, errors="replace") as f:
                text = f.read().strip().splitlines()
        except OSError:
            return ""
        return " | ".join(text[-lines:])

    def start(self, timeout: float = 30.0) -> None:
        argv = self.spec.argv(self.mountpoint)
        with open(self.out_path, "w") as out, open(self.err_path, "w") as err:
            # own session: a Ctrl-C reaches only the benchmark, which cleans up
            self.proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=out, stderr=err,
                                         start_new_session=True)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with open(self.out_path) as f:
                for line in f:
                    if line.startswith("READY"):
                        rest = line[5:].strip()
                        if rest.startswith("{"):
                            self.info = json.loads(rest)
                        else:   # c_fuse: key=value pairs
                            self.info = dict(kv.split("=", 1) for kv in rest.split())
                        self.info["command"] = shlex.join(argv)
                        return
            if self.proc.poll() is not None:
                raise BenchError(f"server exited {self.proc.returncode} before serving: "
                                 f"{self.stderr_tail() or 'no output'}")
            time.sleep(0.02)
        raise BenchError(f"server not ready within {timeout:.0f} s: {self.stderr_tail()}")

    def cpu_seconds(self) -> float | None:
        """User + system CPU time of the server process (all its threads)."""
        if self.proc is None:
            return None
        try:
            return _common.cpu_seconds(f"/proc/{self.proc.pid}/stat")
        except (OSError, ValueError, IndexError):
            return None

    def pin(self, cpus: set[int]) -> None:
        if self.proc is None:
            return
        try:
            tids = os.listdir(f"/proc/{self.proc.pid}/task")
        except FileNotFoundError:
            raise BenchError("server process is gone") from None
        for tid in tids:
            with contextlib.suppress(ProcessLookupError, FileNotFoundError):
                os.sched_setaffinity(int(tid), cpus)

    def stop(self) -> str | None:
        """Unmount, let the server end, terminate/kill it if it does not
        (idempotent).  Returns a note when something needed force."""
        if self.stopped:
            return None
        self.stopped = True
        notes = []
        problem = unmount(self.mountpoint)
        if problem:
            notes.append(problem)
        p = self.proc
        if p is not None and p.poll() is None:
            try:
                p.wait(5)
            except subprocess.TimeoutExpired:
                p.terminate()
                try:
                    p.wait(3)
                except subprocess.TimeoutExpired:
                    p.kill()
                    p.wait(5)
                notes.append("server did not exit after the unmount: terminated")
        problem = unmount(self.mountpoint)      # a server that died mounted
        if problem:
            notes.append(problem)
        with contextlib.suppress(OSError):
            os.rmdir(self.mountpoint)
        self.info["stderr_tail"] = self.stderr_tail(2)
        self.info.update(self.served())
        return "; ".join(notes) or None

    def served(self) -> dict[str, int]:
        """What the server said at exit about the requests it answered:
        ``STATS {json}`` (subring) or ``c_fuse: served N requests (M on the
        ring)`` (bench/c_fuse.c).  Empty when it said nothing."""
        with contextlib.suppress(OSError, ValueError):
            with open(self.out_path) as f:
                for line in f:
                    if line.startswith("STATS "):
                        st = json.loads(line[6:])
                        out = {"requests_served": st["requests"],
                               "ring_requests": st["ring_requests"]}
                        counters = ("gil_spins", "gil_spin_timeouts", "poll_hits",
                                    "poll_timeouts")
                        out.update({k: st[k] for k in counters if k in st})
                        return out
            with open(self.err_path) as f:
                for line in f:
                    if line.startswith("c_fuse: served "):
                        words = line.split()
                        return {"requests_served": int(words[2]),
                                "ring_requests": int(words[4].lstrip("("))}
        return {}


# --------------------------------------------------------------------------
# readers
# --------------------------------------------------------------------------

class Readers:
    """Two long-lived reader processes (bench/fuse_reader.py)."""

    def __init__(self, n: int = 2) -> None:
        self.n = n
        self.procs: list[subprocess.Popen] = []
        self.spawn()

    def spawn(self) -> None:
        self.procs = [subprocess.Popen([sys.executable, READER_SCRIPT], stdin=subprocess.PIPE,
                                       stdout=subprocess.PIPE, text=True, bufsize=1,
                                       start_new_session=True)
                      for _ in range(self.n)]

    def kill(self) -> None:
        for p in self.procs:
            if p.poll() is None:
                p.kill()
            try:
                p.wait(10)
            except subprocess.TimeoutExpired:
                pass     # stuck in an uninterruptible wait: nothing more to do
            for s in (p.stdin, p.stdout):
                with contextlib.suppress(OSError):
                    s.close()   # type: ignore[union-attr]
        self.procs = []

    def close(self) -> None:
        for p in self.procs:
            with contextlib.suppress(OSError):
                p.stdin.close()    # type: ignore[union-attr]
        deadline = time.monotonic() + 5
        for p in self.procs:
            try:
                p.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                pass
        self.kill()

    def run(self, cmds: list[dict[str, Any]], timeout: float) -> list[dict[str, Any]]:
        """Send cmds[i] to reader i (all at once); their replies, in order.
        A reader that does not answer in time is killed (with the other:
        both are replaced) and BenchError raised."""
        for p, c in zip(self.procs, cmds):
            p.stdin.write(json.dumps(c) + "\n")     # type: ignore[union-attr]
            p.stdin.flush()                          # type: ignore[union-attr]
        replies: list[dict[str, Any] | None] = [None] * len(cmds)
        deadline = time.monotonic() + timeout
        while any(r is None for r in replies):
            waiting = {self.procs[i].stdout.fileno(): i      # type: ignore[union-attr]
                       for i, r in enumerate(replies) if r is None}
            left = deadline - time.monotonic()
            ready = select.select(list(waiting), [], [], max(0.0, left))[0] if left > 0 else []
            if not ready:
                self.kill()
                self.spawn()
                raise BenchError(f"a reader got no answer within {timeout:.0f} s (server hung?)")
            for fd in ready:
                i = waiting[fd]
                line = self.procs[i].stdout.readline()   # type: ignore[union-attr]
                if not line:
                    self.kill()
                    self.spawn()
                    raise BenchError("a reader process died")
                replies[i] = json.loads(line)
        return replies   # type: ignore[return-value]


# --------------------------------------------------------------------------
# setup of the baselines
# --------------------------------------------------------------------------

def _child_check(code: str) -> str | None:
    """Run ``code`` in a fresh interpreter; None if it succeeds, else why not."""
    try:
        p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                           timeout=60, check=False)
    except subprocess.TimeoutExpired:
        return "timed out"
    if p.returncode == 0:
        return None
    return (p.stderr.strip().splitlines() or [f"exit {p.returncode}"])[-1]


def _run_setup(cmd: list[str], log: Callable[[str], None], timeout: float = 600) -> str | None:
    log(f"setup: {shlex.join(cmd)}")
    try:
        p = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, check=False,
                           env={**os.environ, "DEBIAN_FRONTEND": "noninteractive"})
    except (OSError, subprocess.TimeoutExpired) as e:
        return f"{shlex.join(cmd)}: {type(e).__name__}: {e}"
    if p.returncode != 0:
        tail = " | ".join((p.stderr or p.stdout).strip().splitlines()[-2:])
        return f"{shlex.join(cmd)} exited {p.returncode}: {tail}"
    return None


def setup_baselines(install: bool, log: Callable[[str], None]) -> dict[str, str]:
    """Make mfusepy and pyfuse3 importable (installing them when allowed);
    returns library -> why it is unavailable."""
    checks = {"mfusepy": "import mfusepy", "pyfuse3": "import pyfuse3, trio"}
    missing = {lib: why for lib, code in checks.items() if (why := _child_check(code))}
    if missing and install and os.geteuid() == 0:
        debs = ["libfuse3-3", "fuse3"] + (["libfuse3-dev", "pkg-config"]
                                          if "pyfuse3" in missing else [])
        apt = shutil.which("apt-get")
        if apt and (_run_setup([apt, "update", "-q"], log)
                    or _run_setup([apt, "install", "-y", "-q", *debs], log)):
            log("setup: apt-get failed; installing the Python packages anyway")
        for lib in missing:
            err = _run_setup([sys.executable, "-m", "pip", "install", "-q", lib], log)
            if err:
                missing[lib] = f"not installed and pip install failed: {err}"
        for lib, code in checks.items():
            if lib in missing and not (why := _child_check(code)):
                del missing[lib]
            elif lib in missing and why and "pip install failed" not in missing[lib]:
                missing[lib] = f"not importable after installing: {why}"
    elif missing:
        hint = ("run as root without --no-install to install it" if install
                else "--no-install")
        for lib, why in missing.items():
            missing[lib] = f"not importable ({why}); {hint}"
    return missing


def compile_c_fuse(tmpdir: str, cc_arg: str | None) -> tuple[str | None, dict[str, Any]]:
    cc = cc_arg or sysconfig.get_config_var("CC") or "gcc"
    argv = shlex.split(cc)
    if not cc_arg and (not argv or shutil.which(argv[0]) is None):
        argv = ["gcc"]
    return _common.compile_c(argv, [C_SOURCE], os.path.join(tmpdir, "c_fuse"),
                             flags=["-Wall", "-Wextra", "-pthread"])


def make_specs(mode: Mode, c_exe: str | None, unavailable: dict[str, str],
               mfusepy_mt: bool, only: set[str] | None) -> list[Spec]:
    size = str(mode.file_size)
    py = sys.executable

    def fs(*args: str) -> Callable[[str], list[str]]:
        return lambda mnt: [py, FS_SCRIPT, args[0], mnt, "--size", size, *args[1:]]

    def c(*args: str, poll_us: float = 0.0) -> Callable[[str], list[str]]:
        return lambda mnt: [c_exe or "c_fuse", mnt, *args, size, "2", f"{poll_us:g}"]

    poll = library_poll_us()

    specs = [
        Spec(SUBRING, fs("subring", "--transport", "uring"), True),
        Spec(NO_GIL_SPIN, fs("subring", "--transport", "uring", "--gil-spin-us", "0"), True),
        Spec(NO_POLL, fs("subring", "--transport", "uring", "--poll-us", "0"), True),
        Spec("subring-classic", fs("subring", "--transport", "classic"), False),
        Spec("mfusepy", fs("mfusepy"), False),
        Spec("pyfuse3", fs("pyfuse3"), False),
        Spec("c-uring", c("uring", "single", poll_us=poll), True),
        Spec("c-uring-pq", c("uring", "per-queue", poll_us=poll), True),
        Spec(C_NO_POLL, c("uring", "per-queue"), True),
        Spec("c-classic", c("classic", "single"), False),
        Spec("c-classic-pq", c("classic", "per-queue"), False),
    ]
    if mfusepy_mt:
        specs.insert(3, Spec("mfusepy-mt", fs("mfusepy", "--mt"), False))
    out = []
    for s in specs:
        if only is not None and s.name not in only and not s.name.startswith("subring"):
            unavailable[s.name] = "not selected (--only)"
        elif s.name.startswith("c-") and c_exe is None:
            continue      # reason recorded by the caller
        else:
            out.append(s)
    return out


def start_server(spec: Spec, tmpdir: str, switch: UringSwitch, readers: Readers,
                 mode: Mode, log: Callable[[str], None], started: list[Server]) -> Server:
    """Start, wait for READY, probe.  Raises BenchError (server stopped).
    Every server is appended to ``started`` first, so that an interrupt at
    any point still finds it to stop."""
    last: BenchError | None = None
    for attempt in range(2):
        srv = Server(spec, tmpdir, attempt)
        started.append(srv)
        try:
            if spec.uring:
                switch.on()
            try:
                srv.start()
            finally:
                switch.restore()          # INIT is answered: the mount keeps io_uring
            if spec.uring and srv.info.get("transport") != "uring":
                raise BenchError(f"asked for io_uring, got {srv.info.get('transport')!r}")
            reply = readers.run([{"op": "probe", "path": srv.path, "size": mode.file_size,
                                  "cpu": None}], timeout=20)[0]
            if "error" in reply:
                raise BenchError(f"probe failed: {reply['error']}")
            return srv
        except BenchError as e:
            note = srv.stop()
            last = BenchError(f"{e}" + (f" ({note})" if note else ""))
            # enable_uring may have been switched back by someone else between
            # our write and the mount's INIT: try once more
            if not (spec.uring and ("io_uring" in str(e) or "exited 3" in str(e))):
                break
            log(f"  {spec.name}: {e}; retrying once")
    assert last is not None
    raise last


# --------------------------------------------------------------------------
# measuring
# --------------------------------------------------------------------------

def placement_cpus() -> tuple[int, int | None]:
    """(reader CPU, other CPU or None): the reader is pinned to the last usable
    CPU, a "cross" server to the first."""
    cpus = sorted(os.sched_getaffinity(0))
    return cpus[-1], (cpus[0] if len(cpus) > 1 else None)


def measure_one(srv: Server, workload: str, mode: Mode, readers: Readers, rep: int,
                all_cpus: set[int]) -> tuple[int, float, float, float | None]:
    """(timed ops, seconds, ops/s summed over the readers, server CPU
    microseconds per op or None)."""
    op, nreaders, placement = WORKLOADS[workload]
    reader_cpu, other_cpu = placement_cpus()
    cpu = None
    if placement == "unpinned":
        if srv.repinnable:
            srv.pin(all_cpus)
    else:
        cpu = reader_cpu
        if srv.repinnable:
            srv.pin({reader_cpu} if placement == "same" else {other_cpu})  # type: ignore[arg-type]
    cmds = [{"op": op, "path": srv.path, "size": mode.file_size, "seconds": mode.slice_s,
             "chunk": mode.chunk, "cpu": cpu, "seed": rep * 16 + i} for i in range(nreaders)]
    cpu0 = srv.cpu_seconds()
    replies = readers.run(cmds, timeout=20 + 20 * mode.slice_s)
    cpu1 = srv.cpu_seconds()
    for r in replies:
        if "error" in r:
            raise BenchError(f"{workload}: {r['error']}")
    ops = sum(r["ops"] for r in replies)
    secs = max(r["seconds"] for r in replies)
    rate = sum(r["ops"] / r["seconds"] for r in replies)
    # the server also answered each reader's untimed warm-up chunk
    cpu_us = (None if cpu0 is None or cpu1 is None
              else (cpu1 - cpu0) * 1e6 / (ops + mode.chunk * nreaders))
    return ops, secs, rate, cpu_us


def not_measured_reason(srv: Server, workload: str) -> str | None:
    placement = WORKLOADS[workload][2]
    if placement == "cross" and placement_cpus()[1] is None:
        return "only one usable CPU"
    if placement == "cross" and not srv.repinnable:
        return ("the server pins a thread per queue: a request is served on the "
                "reader's own CPU")
    return None


def measure(servers: dict[str, Server], mode: Mode, readers: Readers,
            unavailable: dict[str, str], not_measured: dict[str, dict[str, str]],
            log: Callable[[str], None]) -> dict[str, dict[str, dict[str, list]]]:
    all_cpus = os.sched_getaffinity(0)
    raw: dict[str, dict[str, dict[str, list]]] = {w: {} for w in WORKLOADS}
    plan: dict[str, list[str]] = {w: [] for w in WORKLOADS}
    for w in WORKLOADS:
        for name, srv in servers.items():
            why = not_measured_reason(srv, w)
            if why:
                not_measured.setdefault(w, {})[name] = why
            else:
                plan[w].append(name)
                raw[w][name] = {"ops": [], "seconds": [], "ops_per_s": [],
                                "server_cpu_us_per_op": []}
    for rep in range(mode.reps):
        t_rep = time.perf_counter()
        for w, names in plan.items():
            live = [n for n in names if n not in unavailable]
            k = rep % len(live) if live else 0
            for name in live[k:] + live[:k]:
                if name in unavailable:
                    continue
                try:
                    ops, secs, rate, cpu_us = measure_one(servers[name], w, mode, readers, rep,
                                                          all_cpus)
                except BenchError as e:
                    unavailable[name] = f"failed during the run: {e} {servers[name].stderr_tail()}"
                    log(f"  {name}: {unavailable[name]}")
                    continue
                r = raw[w][name]
                r["ops"].append(ops)
                r["seconds"].append(secs)
                r["ops_per_s"].append(rate)
                r["server_cpu_us_per_op"].append(cpu_us)
        log(f"  repetition {rep + 1}/{mode.reps} done ({time.perf_counter() - t_rep:.1f} s)")
    # a contender that failed midway is left out entirely (ratios are same-run)
    for contenders in raw.values():
        for name in list(contenders):
            if name in unavailable:
                del contenders[name]
    return raw


def check_served(raw: dict, server_info: dict[str, dict[str, Any]],
                 log: Callable[[str], None]) -> None:
    """Kernel caching must be off: a server that reports its request count
    must have answered at least every timed op (a stat() is LOOKUP + GETATTR,
    a read one READ).  Records ``timed_requests`` and
    ``every_op_reached_server`` in its entry."""
    for name, info in server_info.items():
        if "requests_served" not in info:
            continue
        timed = sum(r["ops"][i] * (2 if WORKLOADS[w][0] == "stat" else 1)
                    for w, cs in raw.items() if name in cs
                    for r in (cs[name],) for i in range(len(r["ops"])))
        info["timed_requests"] = timed
        info["every_op_reached_server"] = info["requests_served"] >= timed
        if not info["every_op_reached_server"]:
            log(f"WARNING: {name} answered {info['requests_served']} requests for {timed} "
                "timed ones: is kernel caching really off?")


def _pair(raw: dict, a: tuple[str, str], b: tuple[str, str]) -> list[float] | None:
    ra = raw.get(a[0], {}).get(a[1])
    rb = raw.get(b[0], {}).get(b[1])
    if ra is None or rb is None:
        return None
    return [x / y for x, y in zip(ra["ops_per_s"], rb["ops_per_s"], strict=True)]


def _why_missing(raw: dict, sides: tuple[tuple[str, str], ...], unavailable: dict[str, str],
                 not_measured: dict[str, dict[str, str]]) -> str:
    for w, c in sides:
        if c in raw.get(w, {}):
            continue
        why = unavailable.get(c) or not_measured.get(w, {}).get(c) or "did not run"
        return f"{c}: {why}"
    return "did not run"


def compute_ratios(raw: dict, defs: dict, unavailable: dict[str, str],
                   not_measured: dict[str, dict[str, str]]) -> tuple[dict, dict, dict]:
    ratios: dict[str, float | None] = {}
    samples: dict[str, list[float]] = {}
    bars: dict[str, dict[str, Any]] = {}
    for key, (desc, bar, a, b) in defs.items():
        s = _pair(raw, a, b)
        bars[key] = {"bar": bar, "description": desc}
        if s is None:
            ratios[key], samples[key] = None, []
            bars[key]["met"] = None
            bars[key]["skipped"] = _why_missing(raw, (b, a), unavailable, not_measured)
        else:
            ratios[key], samples[key] = statistics.median(s), s
            bars[key]["met"] = ratios[key] >= bar
    return ratios, samples, bars


def compute_ceiling(raw: dict, defs: dict, unavailable: dict[str, str],
                    not_measured: dict[str, dict[str, str]]) -> dict[str, dict[str, Any]]:
    out: dict[str, dict[str, Any]] = {}
    for key, (desc, a, b) in defs.items():
        s = _pair(raw, a, b)
        if s is None:
            out[key] = {"description": desc, "median": None, "samples": [],
                        "skipped": _why_missing(raw, (b, a), unavailable, not_measured)}
        else:
            out[key] = {"description": desc, "median": statistics.median(s), "samples": s}
    return out


# --------------------------------------------------------------------------
# reporting
# --------------------------------------------------------------------------

def fmt_rate(x: float) -> str:
    return f"{x / 1e3:8.1f} k/s"


def print_report(raw: dict, ratios: dict, samples: dict, bars: dict, ceiling: dict,
                 unavailable: dict[str, str], servers: dict[str, dict[str, Any]]) -> None:
    print()
    print(f"{'workload':<20} {'contender':<22} {'median':>12} {'us/op':>7} "
          f"{'min':>12} {'max':>12} {'srv cpu us/op':>14}")
    print("-" * 105)
    for w, cs in raw.items():
        for name, r in cs.items():
            v = r["ops_per_s"]
            med = statistics.median(v)
            cpu = [x for x in r["server_cpu_us_per_op"] if x is not None]
            cpu_s = f"{statistics.median(cpu):14.1f}" if cpu else f"{'?':>14}"
            print(f"{w:<20} {name:<22} {fmt_rate(med):>12} {1e6 / med:7.1f} "
                  f"{fmt_rate(min(v)):>12} {fmt_rate(max(v)):>12} {cpu_s}")
    for name, why in unavailable.items():
        print(f"{'(all)':<20} {name:<22} {'skipped':>12}  ({why})")
    print()
    for name, info in servers.items():
        shown = ("transport", "threads", "queues", "depth", "ring_flags", "poll_us")
        desc = ", ".join(f"{k}={v}" for k, v in info.items() if k in shown)
        print(f"server {name:<22} {desc}")
    print()
    _common.print_ratio_table(ratios, samples, bars, width=28)
    print()
    _common.print_info_table(ceiling, title="informational", width=42, rule=66)
    print()


# --------------------------------------------------------------------------

def main(argv: list[str] | None = None) -> int:
    t_start = time.perf_counter()
    p = _common.make_parser(__doc__)
    _common.add_reps_slice(p, "override the seconds per contender per workload per repetition")
    p.add_argument("--no-install", action="store_true",
                   help="do not apt-get/pip install missing baselines; skip their rows")
    p.add_argument("--cc", metavar="CC", help="C compiler for bench/c_fuse.c")
    p.add_argument("--mfusepy-mt", action="store_true",
                   help="also measure mfusepy with libfuse's multi-threaded loop")
    p.add_argument("--only", metavar="NAMES",
                   help="comma-separated contenders to run besides subring's")
    args = p.parse_args(argv)
    mode_name, mode = _common.select_mode(args, MODES)
    log = _common.log
    env = _common.environment({
        "enable_uring": UringSwitch.read(),
        "mfusepy_version": _common.package_version("mfusepy"),
        "pyfuse3_version": _common.package_version("pyfuse3"),
        "loadavg_start": os.getloadavg(),
    })
    log(f"bench/fuse.py mode={mode_name} reps={mode.reps} slice={mode.slice_s}s  "
        f"Linux {env['kernel_release']}, Python {env['python_version']}, "
        f"{env['cpu_count']} CPUs")
    unavailable: dict[str, str] = {}
    not_measured: dict[str, dict[str, str]] = {}
    servers: dict[str, Server] = {}
    started: list[Server] = []          # every server ever started (to stop them all)
    server_info: dict[str, dict[str, Any]] = {}
    raw: dict[str, dict[str, dict[str, list]]] = {w: {} for w in WORKLOADS}
    c_info: dict[str, Any] = {}

    fatal: list[str] = []
    if os.geteuid() != 0:
        fatal.append("not root: mounting FUSE needs root here")
    if not os.path.exists("/dev/fuse"):
        fatal.append("/dev/fuse is absent")

    switch = UringSwitch()
    readers: Readers | None = None

    def on_sigterm(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt(f"signal {signum}")

    old_term = signal.signal(signal.SIGTERM, on_sigterm)
    tmpdir = tempfile.mkdtemp(prefix="subring-fusebench-")
    try:
        if fatal:
            for name in (SUBRING, "subring-classic", "mfusepy", "pyfuse3", "c-uring",
                         "c-uring-pq", "c-classic", "c-classic-pq"):
                unavailable[name] = "; ".join(fatal)
            log(f"every row skipped: {'; '.join(fatal)}")
        else:
            t0 = time.perf_counter()
            lib_missing = setup_baselines(not args.no_install, log)
            for lib, why in lib_missing.items():
                log(f"{lib} rows skipped: {why}")
            sub_err = _child_check("import subring.fuse")
            if sub_err:
                sub_err = f"subring.fuse is not importable: {sub_err}"
                log(f"subring rows skipped: {sub_err}")
            c_exe, c_info = compile_c_fuse(tmpdir, args.cc)
            if c_exe is None:
                log(f"C server rows skipped: {c_info['error']}")
                for name in ("c-uring", "c-uring-pq", "c-classic", "c-classic-pq"):
                    unavailable[name] = c_info["error"]
            log(f"setup done in {time.perf_counter() - t0:.1f} s")
            only = set(args.only.split(",")) if args.only else None
            specs = make_specs(mode, c_exe, unavailable, args.mfusepy_mt, only)
            readers = Readers(2)
            for spec in specs:
                lib = spec.name.split("-")[0] if not spec.name.startswith("c-") else "c"
                if lib == "subring" and sub_err:
                    unavailable[spec.name] = sub_err
                    continue
                if lib in lib_missing:
                    unavailable[spec.name] = lib_missing[lib]
                    continue
                log(f"  {spec.name}: starting")
                try:
                    srv = start_server(spec, tmpdir, switch, readers, mode, log, started)
                except BenchError as e:
                    unavailable[spec.name] = str(e)
                    log(f"  {spec.name}: skipped: {e}")
                    continue
                servers[spec.name] = srv
                server_info[spec.name] = srv.info
                log(f"  {spec.name}: serving ({srv.info.get('transport')}, "
                    f"threads={srv.info.get('threads')})")
                if spec.name == SUBRING and srv.info.get("threads") in C_FOR:
                    # the other threads mode, for the per-queue vs single question
                    other = "single" if srv.info["threads"] == "per-queue" else "per-queue"
                    alt = Spec(f"{SUBRING}-{other}", lambda mnt, o=other: [
                        sys.executable, FS_SCRIPT, "subring", mnt, "--size",
                        str(mode.file_size), "--transport", "uring", "--threads", o], True)
                    # measured right after this one (the loop reaches the new item)
                    specs.insert(specs.index(spec) + 1, alt)
            log(f"measuring {len(servers)} servers x {len(WORKLOADS)} workloads")
            raw = measure(servers, mode, readers, unavailable, not_measured, log)
    except KeyboardInterrupt:
        log("interrupted: cleaning up")
        raise
    finally:
        # a second Ctrl-C must not interrupt the clean-up
        old_int = signal.signal(signal.SIGINT, signal.SIG_IGN)
        switch.restore()
        if readers is not None:
            readers.close()
        for srv in started:
            note = srv.stop()
            if note:
                log(f"  {srv.spec.name}: {note}")
                srv.info["stop_note"] = note
        shutil.rmtree(tmpdir, ignore_errors=True)
        signal.signal(signal.SIGTERM, old_term)
        signal.signal(signal.SIGINT, old_int)

    check_served(raw, server_info, log)
    threads = server_info.get(SUBRING, {}).get("threads", "per-queue")
    c_match = C_FOR.get(threads, "c-uring-pq")
    alt = next((n for n in server_info if n.startswith(SUBRING + "-")), None)
    rdefs = ratio_defs(c_match)
    ratios, samples, bars = compute_ratios(raw, rdefs, unavailable, not_measured)
    ceiling = compute_ceiling(raw, ceiling_defs(c_match, alt), unavailable, not_measured)
    print_report(raw, ratios, samples, bars, ceiling, unavailable, server_info)
    wall = time.perf_counter() - t_start
    env["loadavg_end"] = os.getloadavg()
    print(f"total wall time {wall:.1f} s; load average {env['loadavg_start'][0]:.1f} at the "
          f"start, {env['loadavg_end'][0]:.1f} at the end (on a busy machine judge same-run "
          "ratios, and prefer the pinned rows)")

    if args.json:
        for w in raw.values():
            for r in w.values():
                r["median_ops_per_s"] = statistics.median(r["ops_per_s"])
        reader_cpu, other_cpu = placement_cpus()
        doc = {
            "benchmark": "fuse",
            "mode": mode_name,
            "env": env,
            "config": {
                "reps": mode.reps, "slice_s": mode.slice_s, "file_size": mode.file_size,
                "chunk_ops": mode.chunk, "workloads": {k: dict(zip(("op", "readers",
                                                                     "placement"), v))
                                                       for k, v in WORKLOADS.items()},
                "reader_cpu": reader_cpu, "cross_server_cpu": other_cpu,
                "c_fuse": c_info, "read4k_vs_c_baseline": c_match,
                "caching": "direct_io, entry_timeout=0, attr_timeout=0",
            },
            "servers": server_info,
            "results": raw,
            "skipped": unavailable,
            "not_measured": not_measured,
            "ratios": ratios,
            "ratio_samples": samples,
            "bars": bars,
            "ceiling": ceiling,
            "wall_time_s": wall,
        }
        _common.write_json(args.json, doc)
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except KeyboardInterrupt:
        sys.exit(130)
