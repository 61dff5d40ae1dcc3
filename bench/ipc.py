#!/usr/bin/env python3
"""Benchmark: subring user-space subsystems against the usual ways of moving
messages between two Python processes.

Every contender runs between two processes: this script (the *producer* /
*client*) and one child started with ``multiprocessing`` (spawn context) that
is the *consumer* / *server*.  Nothing is shared between contenders; each child
is started for its contender in each repetition and stopped (joined with a
timeout, terminated if it does not leave) before the next contender runs.

Workloads
---------
``msg64`` / ``msg4k`` / ``msg1m``  one-way messages of 64 B, 4 KiB and 1 MiB.
    The producer sends as fast as it can for about one time slice (see
    Method), then a stop marker; the slice ends when the consumer has *consumed* every message (for
    the baselines: the consumer's acknowledgement arrived; for subring: every
    op's completion was reaped, and a completion is posted only after the
    handler ran).  Figures: messages/s and GB/s (10^9 bytes of payload/s).

    *Consuming* a message is the same everywhere: count it and add its first
    and last byte to a sum (``acc += m[0] + m[-1]``), on the library's own view
    of the message (bytes, memoryview, ctypes array).  After each slice the
    producer checks the consumer's count and sum against what it sent, so a
    contender that drops, duplicates or tears messages fails instead of
    looking fast.

    ``msg1m`` is produced *in place*: for every message the producer fills the
    whole 1 MiB buffer with a new byte value (``numpy.ndarray.fill``), then
    hands it over.  subring fills a buffer of a registered ``BufferPool`` and
    passes it zero-copy with ``prep_call_pool`` (16 buffers, at most 4 in
    flight; the buffer released last is refilled first, so the few buffers in
    use stay in the CPU cache -- filling all 16 in turn streams 16 MiB through
    the cache and costs ~20 %); iceoryx2 loans a 1 MiB sample,
    fills it through a numpy view of the sample's memory, and sends it
    (zero-copy, subscriber buffer of 16).  So both zero-copy contenders do
    exactly the same work per message: one 1 MiB fill in the producer, two
    byte reads in the consumer.  The copying baselines fill one ``bytearray``
    and send it (``mp.Queue`` and ``faster-fifo`` get ``bytes(buf)``: the
    first pickles in a feeder thread later, the second accepts only
    ``bytes``).  Consumers read the first and last byte, as above (the sum
    proves they saw this message's fill value).

``rtt64``  64 B request, 64 B reply, one in flight; p50 / p99 / mean of
    per-round-trip ``perf_counter_ns`` times after a warm-up (up to N round
    trips, fewer -- but at least 200 -- if they take longer than a time cap:
    spinning modes on an oversubscribed machine can take milliseconds each).

Contenders
----------
``subring-MODE``        ``connect(..., mode=MODE)`` against ``serve(...,
                        mode=MODE)`` (server and client ``mode`` the
                        same; ``spin_us`` 50 in hybrid), MODE = hybrid
                        (default), interrupt, poll.  Per-op client API:
                        ``prep_call`` (``prep_call_pool`` for 1 MiB) per
                        message, up to ``entries`` (1024) in flight,
                        ``submit_and_wait(1)``, ``reap()``; a per-op Python
                        handler (``@op``).  Round trip: ``prep_call``,
                        ``submit_and_wait(1)``, ``reap()[0].data``; the
                        handler returns ``req.data`` (copied into the
                        result slot).
``subring-MODE-batch``  batch client API: ``prep_records(op, data, size,
                        count)`` packs the messages back to back into each
                        op's 4 KiB send slot (64 per op at 64 B, 1 at 4 KiB)
                        and fills every free ring entry; ``reap_into``
                        preallocated arrays (an op completes once, res = its
                        number of messages).  The handler is a vector handler
                        (``@op(vector=True)``: one call per batch of up to 256
                        ops, every message one call of it, payloads back to
                        back).  For 1 MiB pool payloads: ``prep_call_pool``
                        per buffer and a zero-copy ``@op(batch=True)``
                        handler.  Round trip: the same client
                        calls as the per-op row, the batch echo handler.
``pipe``                ``multiprocessing.Pipe``: ``send_bytes`` /
                        ``recv_bytes`` (``recv_bytes_into`` a preallocated
                        buffer for 1 MiB); one-way over ``Pipe(duplex=False)``,
                        round trip over a duplex one.
``mp-queue``            ``multiprocessing.Queue``: ``put`` / ``get`` of bytes
                        (unbounded; ``maxsize=16`` for 1 MiB so the backlog
                        stays bounded).
``faster-fifo``         ``faster_fifo.Queue(max_size_bytes=32 MiB,
                        dumps=identity, loads=bytes)``: ``put`` / ``get`` of
                        bytes without pickling (3x faster than its default
                        pickle mode for small messages).
``faster-fifo-many``    the same queue with its batch calls: ``put_many`` of 256
                        messages / ``get_many``; for 1 MiB, 4 buffers are
                        filled, then ``put_many`` of their ``bytes`` copies.
``pyzmq``               PUSH/PULL over ``ipc://`` (libzmq batches on its own);
                        ``recv(copy=False)`` for 1 MiB; round trip REQ/REP.
``iceoryx2``            iceoryx2 Python bindings, publish-subscribe of
                        ``Slice[c_uint8]`` (one service per size, no safe
                        overflow, ``RetryUntilDelivered`` back-pressure, so no
                        message is lost): loan a sample, write it, send; the
                        subscriber busy-polls ``receive()``, calling
                        ``sched_yield`` every 16 empty polls (a pure spin on an
                        idle machine, and far faster than one on a busy one).
                        Round trip: request-response, both sides busy-poll
                        the same way.  Before measuring, a
                        handshake makes sure every subscriber and the server
                        are connected (a publisher's first samples can be
                        lost while a subscriber attaches).
``c-pipe``              (round trip only; informational) the C floor,
``c-eventfd``           ``bench/c_pingpong.c``: a parent and a forked child, no
``c-futex``             Python, doing round trips with blocking waits -- 1
                        byte over a pipe each way, an 8-byte eventfd counter
                        each way (what subring's interrupt mode sleeps on), or
                        FUTEX_WAIT / FUTEX_WAKE on a shared sequence number.
                        Unpinned like every other contender; the same warm-up,
                        count and time cap as the Python round trips, each
                        timed with ``CLOCK_MONOTONIC``.
``c-futex-same-cpu``    the futex ping-pong with both processes pinned to CPU
                        0: what co-location gives.
``c-futex-cross-cpu``   ... parent pinned to CPU 0, child to CPU 1: every
                        wake-up crosses CPUs.

The "best baseline" of a workload is the fastest baseline row of that
workload *in the same repetition* (so ``faster-fifo-many`` competes, not only
``faster-fifo``; the C rows are no baselines).

Ratios (``"ratios"`` in the JSON; higher is better for subring)
---------------------------------------------------------------
=========================== ===================================================== ====
key                         definition (per repetition, then median)              bar
=========================== ===================================================== ====
``msg64_vs_pipe``           subring-hybrid msg64 msg/s / pipe msg64 msg/s          4.0
``msg64_batch_vs_best``     subring-hybrid-batch msg64 / best baseline msg64      20.0
``msg4k_vs_best``           subring-hybrid-batch msg4k GB/s / best baseline        3.0
``msg1m_vs_iceoryx2``       subring-hybrid-batch msg1m GB/s / iceoryx2 msg1m       1.0
``rtt64_vs_best``           best baseline rtt64 p50 / subring-hybrid p50           4.0
``rtt64_interrupt_vs_pipe`` pipe rtt64 p50 / subring-interrupt p50                 1.2
=========================== ===================================================== ====

A baseline that cannot run here (not installed, fails to set up) is skipped
with its reason (``"skipped"`` in the JSON) and ratios that need it are null;
nothing is ever faked.

The C floor (``"floor"`` in the JSON; informational, no bar)
------------------------------------------------------------
A round trip in which neither side spins costs two wake-ups of a process
blocked in the kernel, and on a small VM the wake-up is most of it: a C
ping-pong costs ~42 us p50 with any of the three mechanisms when the two
processes are on different CPUs (waking a process on an idle vCPU is the cost)
and ~4.5 us on one CPU.  The C rows measure that floor in the same run, so the
table shows how close each blocking contender gets to what the machine allows.
An unpinned pair ends up on one CPU or on two as the scheduler decides, and
the C pairs (little work per wake-up) end up together more often than the
Python pairs, so unpinned rows -- C and Python -- can be bimodal and differ
from one repetition to the next.  The C rows report ``same_cpu_frac``, the
share of round trips after which the parent ran on the CPU the child replied
from (the table's "same CPU" column); the two pinned rows bracket the range.

================================== =============================================
key                                definition (per repetition, then median)
================================== =============================================
``rtt64_interrupt_over_floor``     subring-interrupt p50 / c-eventfd p50
``pipe_over_floor``                pipe p50 / c-pipe p50
``rtt64_interrupt_over_cross_cpu`` subring-interrupt p50 / c-futex-cross-cpu p50
``cross_cpu_over_same_cpu``        c-futex-cross-cpu p50 / c-futex-same-cpu p50
================================== =============================================

1.0 means at the floor (lower is closer); below 1.0 the two sides of a ratio
ran in different placements.  The program is built once per run with ``gcc
-O2`` (``--cc``) into the run's temporary directory; if that fails, the reason
is in ``"skipped"`` (key ``c-pingpong``), the C rows are left out and the
floor entries are null with ``"skipped"``.  The program bounds itself (it
gives up after 10 s + 3 x the time cap, its child dies with it), and a C row
that fails is recorded like a failed baseline.

Idle CPU
--------
After its runs (first repetition), each subring mode is left idle for ~1 s
with the client blocked in ``submit_and_wait`` on an op the server holds
(``PENDING``) and the server waiting for work; the CPU time of both processes
(``/proc/PID/stat`` utime+stime; the client's waiting thread) over that second
is reported.  Hybrid and interrupt should be ~0 %, poll ~100 % each.

Method
------
Each repetition runs every contender once (the order rotates from one
repetition to the next), each workload after a short warm-up.  subring
one-way runs are time-bounded (its ring bounds what is in flight); baseline
runs are count-bounded -- their queues may be unbounded (``mp.Queue``) or
deep, so a time-bounded producer would leave a long backlog to drain -- with
the count calibrated by a warm-up run to last about one slice.  A ratio is
computed within one repetition, and the reported ratio is the median of the
per-repetition ratios.  The machine is small (2 vCPUs) and may be shared, so
expect noise: the load average at start and end is recorded, and nothing is
pinned to a CPU but the two pinned C rows (a process that spins -- poll mode,
iceoryx2 -- suffers most when the CPUs are oversubscribed).  Expect bimodal subring-hybrid
round trips:
when the scheduler puts client and server on the same CPU, each side spins
``spin_us`` while the other cannot run, and a round trip costs about
2 x ``spin_us`` (~115 us) instead of ~1.5 us.  ``--quick`` starts no
repetition that would end past 50 s.

Reproduce
---------
::

    pip install -e '.[dev,bench]'
    python bench/ipc.py                        # full run, a few minutes
    python bench/ipc.py --quick                # < 60 s
    python bench/ipc.py --quick --json /tmp/ipc.json
    python bench/ipc.py --smoke --json /tmp/x.json   # seconds; only checks it runs

The C program alone (``ipc.py`` passes its ``rtt_n``, ``rtt_warm``,
``rtt_max_s`` and 200 round trips at least)::

    gcc -O2 -Wall -Wextra bench/c_pingpong.c -o /tmp/c_pingpong -lm
    /tmp/c_pingpong eventfd 20000 2000 2.0 200 -1    # MECH N WARM MAX_S MIN_N CPUS
    /tmp/c_pingpong futex 20000 2000 2.0 200 0,1     # parent on CPU 0, child on 1

JSON (``--json PATH``)
----------------------
``"results"``: workload -> contender -> per-repetition lists (msgs, seconds,
msg_per_s, gb_per_s; for ``rtt64`` n, p50_us, p99_us, mean_us, and for the C
rows also max_us and same_cpu_frac) plus ``median_*`` of each figure;
``"ratios"`` (key -> median or null), ``"ratio_samples"`` (the per-repetition
values), ``"bars"`` (bar, met, which rows, or why skipped); ``"floor"`` (key ->
description, numerator, denominator, median, samples, or null and
``"skipped"``); ``"idle_cpu"``; ``"skipped"``, ``"failed"``, ``"errors"``;
``"env"``; ``"config"`` (``"c_pingpong"``: the compile command, the compiler,
the CPUs of the pinned rows, or ``"error"``).
"""

from __future__ import annotations

import array
import contextlib
import ctypes
import dataclasses
import gc
import json
import multiprocessing as mp
import os
import shutil
import statistics
import struct
import subprocess
import sys
import tempfile
import threading
import time
import traceback
from collections.abc import Callable
from typing import Any

import _common
import subring
from _common import BenchError, cpu_seconds

# --------------------------------------------------------------------------
# constants
# --------------------------------------------------------------------------

SIZES = {"msg64": 64, "msg4k": 4096, "msg1m": 1 << 20}
ONEWAY = tuple(SIZES)
MODES_SR = ("hybrid", "interrupt", "poll")
ENTRIES = 1024                  # subring ring entries (= max ops in flight)
SLOT_SIZE = 4096                # 4 KiB payloads travel in the op's slot
POOL_BUFFERS = 16               # 1 MiB: BufferPool buffers
POOL_WINDOW = 4                 # 1 MiB: at most this many buffers in flight (cache-hot reuse)
IOX_BUFFER = {"msg64": 256, "msg4k": 256, "msg1m": POOL_BUFFERS}
SPIN_US = 50.0
WAIT_S = 10.0                   # any single wait longer than this is a stall
CHILD_TIMEOUT = 30.0            # child start-up / ack timeout
FF_BYTES = 32 << 20
MANY = 256                      # faster-fifo put_many batch (small messages)
MANY_1M = 4
# iceoryx2 has no blocking receive: its contenders busy-poll, and give the CPU
# away (sched_yield) every this many empty polls.  On an idle machine that is a
# pure spin; on an oversubscribed one (2 vCPUs shared with other work) a pure
# spin can make a round trip take a whole scheduler slice (~16 ms seen).
IOX_YIELD_EVERY = 16
CHUNK = 64                      # baseline producers: messages per inner loop
RTT_MIN = 200                   # round trips measured even when they are slow
WARM_COUNT = {"msg64": 4096, "msg4k": 2048, "msg1m": 32}   # first calibration run
FIRST, LAST, FILL = 0x11, 0x22, 0x5A
ACC_SMALL = FIRST + LAST        # what consuming one msg64/msg4k adds to the sum

SUBRING_ROWS = [f"subring-{m}{b}" for m in MODES_SR for b in ("", "-batch")]
BASELINES = ["pipe", "mp-queue", "faster-fifo", "pyzmq", "iceoryx2"]
BASELINE_ROWS = {           # result rows each baseline child produces
    "pipe": ["pipe"], "mp-queue": ["mp-queue"],
    "faster-fifo": ["faster-fifo", "faster-fifo-many"],
    "pyzmq": ["pyzmq"], "iceoryx2": ["iceoryx2"],
}
RTT_BASELINES = ("pipe", "pyzmq", "iceoryx2")
BASELINE_MODULE = {"faster-fifo": "faster_fifo", "pyzmq": "zmq", "iceoryx2": "iceoryx2"}
# what a child process runs before this script imports an optional baseline
# (_common.probe_baseline): a wheel that crashes (SIGILL, SIGSEGV), hangs or
# fails to import has its rows skipped with the reason, nothing else
BASELINE_PROBE = {
    "faster-fifo": """
        import faster_fifo
        q = faster_fifo.Queue(1 << 16)
        q.put(b"x", timeout=5)
        assert q.get(timeout=5) == b"x"
    """,
    "pyzmq": """
        import zmq
        ctx = zmq.Context()
        a, b = ctx.socket(zmq.PAIR), ctx.socket(zmq.PAIR)
        a.bind("inproc://probe"); b.connect("inproc://probe")
        a.send(b"x")
        assert b.recv() == b"x"
        a.close(0); b.close(0); ctx.term()
    """,
    "iceoryx2": """
        import iceoryx2 as iox2
        iox2.set_log_level(iox2.LogLevel.Error)
    """,
}

# The C floor (bench/c_pingpong.c): row -> (mechanism, placement); placement
# None: left to the scheduler like every other contender; "same": both
# processes pinned to CPU 0; "cross": parent on CPU 0, child on another (c_cpus)
C_ROWS: dict[str, tuple[str, str | None]] = {
    "c-pipe": ("pipe", None), "c-eventfd": ("eventfd", None), "c-futex": ("futex", None),
    "c-futex-same-cpu": ("futex", "same"), "c-futex-cross-cpu": ("futex", "cross")}
C_SOURCE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "c_pingpong.c")
C_SKIP_KEY = "c-pingpong"       # "skipped" key when the C program cannot be built
# informational, no bar, not in "ratios": how far a contender's round trip is
# from the C floor (1.0 = at the floor; lower is better).
# key -> (description, numerator row, denominator row); p50 / p50
FLOOR: dict[str, tuple[str, str, str]] = {
    "rtt64_interrupt_over_floor": (
        ("round trip p50: subring interrupt (per-op) / C eventfd ping-pong "
         "(what interrupt mode sleeps on)"), "subring-interrupt", "c-eventfd"),
    "pipe_over_floor": (
        "round trip p50: multiprocessing Pipe / C pipe ping-pong", "pipe", "c-pipe"),
    "rtt64_interrupt_over_cross_cpu": (
        ("round trip p50: subring interrupt (per-op) / C futex ping-pong across two "
         "pinned CPUs"), "subring-interrupt", "c-futex-cross-cpu"),
    "cross_cpu_over_same_cpu": (
        ("C futex ping-pong p50: across two CPUs / both on one CPU (the price of "
         "waking a process on another, idle CPU)"), "c-futex-cross-cpu", "c-futex-same-cpu"),
}

# key -> (description, bar, workload, subring row, baseline row (None: the best
# baseline of that workload in the same repetition), figure compared)
RATIOS: dict[str, tuple[str, float, str, str, str | None, str]] = {
    "msg64_vs_pipe": (
        "64 B one-way msg/s: subring hybrid, per-op API + per-op handler, vs Pipe",
        4.0, "msg64", "subring-hybrid", "pipe", "msg_per_s"),
    "msg64_batch_vs_best": (
        "64 B one-way msg/s: subring hybrid, batch API + batch handler, vs best baseline",
        20.0, "msg64", "subring-hybrid-batch", None, "msg_per_s"),
    "msg4k_vs_best": (
        "4 KiB one-way GB/s: subring hybrid, batch API + batch handler, vs best baseline",
        3.0, "msg4k", "subring-hybrid-batch", None, "gb_per_s"),
    "msg1m_vs_iceoryx2": (
        "1 MiB zero-copy GB/s: subring hybrid BufferPool + batch handler, vs iceoryx2 loan",
        1.0, "msg1m", "subring-hybrid-batch", "iceoryx2", "gb_per_s"),
    "rtt64_vs_best": (
        "64 B round trip: best baseline p50 / subring hybrid p50 (per-op handler)",
        4.0, "rtt64", "subring-hybrid", None, "p50_us"),
    "rtt64_interrupt_vs_pipe": (
        "64 B round trip: Pipe p50 / subring interrupt-mode p50 (per-op handler)",
        1.2, "rtt64", "subring-interrupt", "pipe", "p50_us"),
}


@dataclasses.dataclass(frozen=True)
class Level:
    reps: int
    slice_s: float          # timed seconds per one-way workload
    warm_s: float           # warm-up seconds before it
    rtt_n: int              # timed round trips (at most) ...
    rtt_warm: int
    rtt_max_s: float        # ... or fewer if they take longer than this
    idle_s: float           # idle-CPU window
    warm_scale: float = 1.0  # scales WARM_COUNT (baseline calibration runs)
    budget_s: float | None = None   # start no repetition that would end past this


LEVELS = {
    "smoke": Level(reps=1, slice_s=0.02, warm_s=0.005, rtt_n=50, rtt_warm=10, rtt_max_s=0.05,
                   idle_s=0.1, warm_scale=0.1),
    "quick": Level(reps=3, slice_s=0.12, warm_s=0.03, rtt_n=2000, rtt_warm=200, rtt_max_s=0.2,
                   idle_s=1.0, budget_s=50.0),
    "full": Level(reps=5, slice_s=0.5, warm_s=0.1, rtt_n=20000, rtt_warm=2000, rtt_max_s=2.0,
                  idle_s=1.0),
}

perf = time.perf_counter
perf_ns = time.perf_counter_ns


def payload(size: int) -> bytes:
    b = bytearray([FILL]) * size
    b[0], b[-1] = FIRST, LAST
    return bytes(b)


# --------------------------------------------------------------------------
# /proc CPU accounting
# --------------------------------------------------------------------------

# --------------------------------------------------------------------------
# the subring side: the server (child process) ...
# --------------------------------------------------------------------------

class BenchSubsystem(subring.Subsystem):
    """The consumer / echo server of the subring contenders."""

    name = "ipc-bench"
    max_entries = 4096

    def __init__(self) -> None:
        super().__init__()
        self.count = 0
        self.acc = 0
        self.held: list[Any] = []

    @subring.op
    def sink(self, req):
        d = req.data
        self.count += 1
        self.acc += d[0] + d[-1]

    @subring.op(batch=True)
    def sink_zc(self, reqs):
        """Zero-copy batch handler (pool payloads: each req.data is a view)."""
        acc = 0
        for r in reqs:
            d = r.data
            acc += d[0] + d[-1]
        self.count += len(reqs)
        self.acc += acc

    @subring.op(vector=True)
    def sink_batch(self, batch):
        # One call per batch: every payload back to back in batch.data.  The
        # same work per message as `sink` (first + last byte), vectorised.
        import numpy as np

        n = batch.count
        data = batch.data
        if n and len(data) == n * (len(data) // n):
            a = np.frombuffer(data, np.uint8).reshape(n, -1)
            self.acc += int(a[:, 0].sum(dtype=np.int64)) + int(a[:, -1].sum(dtype=np.int64))
        else:
            off = batch.offsets
            self.acc += sum(data[off[k]] + data[off[k + 1] - 1] for k in range(n))
        self.count += n

    @subring.op
    def echo(self, req):
        return req.data

    @subring.op(batch=True)
    def echo_batch(self, reqs):
        return [r.data for r in reqs]

    @subring.op
    def take_stats(self, req):
        """(count, acc) consumed since the last call, and reset them."""
        out = struct.pack("<qq", self.count, self.acc)
        self.count = self.acc = 0
        return out

    @subring.op
    def hold(self, req):
        """Completed only by the next ``release`` (idle-CPU measurement)."""
        self.held.append(req)
        return subring.PENDING

    @subring.op
    def release(self, req):
        held, self.held = self.held, []
        for r in held:
            r.complete(None)

    @subring.op
    def quit(self, req):
        self.stop()


def _subring_child(address: str, mode: str, spin_us: float) -> None:
    BenchSubsystem().serve(address, mode=mode, spin_us=spin_us)


# --------------------------------------------------------------------------
# ... and the client (this process)
# --------------------------------------------------------------------------

class SubringClient:
    def __init__(self, ctx: Any, tmpdir: str, mode: str) -> None:
        self.mode = mode
        self.address = os.path.join(tmpdir, f"subring-{mode}.sock")
        self.proc = ctx.Process(target=_subring_child, args=(self.address, mode, SPIN_US),
                                name=f"subring-{mode}", daemon=True)
        self.proc.start()
        self.c: Any = None
        self.pool: Any = None
        self.arrays: list[Any] = []
        try:
            self.c = _common.connect_when_served(
                self.address, CHILD_TIMEOUT, is_alive=self.proc.is_alive, entries=ENTRIES,
                slot_size=SLOT_SIZE, mode=mode, spin_us=SPIN_US)
            self.pool = subring.BufferPool(POOL_BUFFERS, SIZES["msg1m"])
            self.c.register_pool(self.pool)
            self.arrays = [self.pool.array(i) for i in range(POOL_BUFFERS)]
            self.ops = self.c.ops
            self.M = self.c.max_inflight
            self.ud = array.array("Q", bytes(8 * self.M))
            self.res = array.array("i", bytes(4 * self.M))
        except BaseException:
            self.close()
            raise

    # -- helpers --------------------------------------------------------------

    def _wait(self) -> None:
        if not self.c.submit_and_wait(1, WAIT_S):
            raise BenchError(f"subring-{self.mode}: no completion within {WAIT_S} s "
                             f"(inflight={self.c.inflight})")

    def take_stats(self) -> tuple[int, int]:
        data = self.c.call("take_stats", timeout=WAIT_S)
        return struct.unpack("<qq", data)

    def verify(self, what: str, sent: int, expected_acc: int) -> None:
        count, acc = self.take_stats()
        if count != sent or acc != expected_acc:
            raise BenchError(f"subring-{self.mode} {what}: server consumed {count} msgs "
                             f"(sum {acc}), client sent {sent} (sum {expected_acc})")

    # -- one-way --------------------------------------------------------------

    def oneway(self, wl: str, batch: bool, dur: float) -> tuple[int, float]:
        """Stream messages for ``dur`` s; return (messages, seconds) once all
        completions are reaped (= all handlers ran)."""
        if wl == "msg1m":
            return self._oneway_pool(batch, dur)
        size = SIZES[wl]
        c = self.c
        wait = self._wait
        sent = done = 0
        if not batch:
            op = self.ops["sink"]
            msg = payload(size)
            prep, reap = c.prep_call, c.reap
            t0 = perf()
            deadline = t0 + dur
            while perf() < deadline:
                room = self.M - (sent - done)
                for _ in range(room):
                    prep(op, msg)
                sent += room
                wait()
                done += len(reap())
            while done < sent:
                wait()
                done += len(reap())
        else:
            # packed records: each op carries as many messages as its slot holds
            op = self.ops["sink_batch"]
            per = SLOT_SIZE // size
            data = payload(size) * (self.M * per)
            preps, reap_into, ud, res = c.prep_records, c.reap_into, self.ud, self.res
            ops_sent = ops_done = 0
            t0 = perf()
            deadline = t0 + dur
            while perf() < deadline:
                room = self.M - (ops_sent - ops_done)
                if room:
                    ops_sent += preps(op, data, size, room * per)
                    sent += room * per
                wait()
                n = reap_into(ud, res)
                if n and min(res[:n]) < 0:
                    raise BenchError(f"subring-{self.mode}-batch: op failed ({min(res[:n])})")
                ops_done += n
            while ops_done < ops_sent:
                wait()
                ops_done += reap_into(ud, res)
        t1 = perf()
        self.verify(wl, sent, sent * ACC_SMALL)
        return sent, t1 - t0

    def _oneway_pool(self, batch: bool, dur: float) -> tuple[int, float]:
        size = SIZES["msg1m"]
        c = self.c
        wait = self._wait
        arrays = self.arrays
        prep = c.prep_call_pool
        free = list(range(POOL_BUFFERS))
        sent = 0
        acc = 0
        if not batch:
            op = self.ops["sink"]
            reap = c.reap
            t0 = perf()
            deadline = t0 + dur
            while perf() < deadline:
                while len(free) > POOL_BUFFERS - POOL_WINDOW:
                    i = free.pop()
                    v = 1 + sent % 251
                    arrays[i].fill(v)
                    prep(op, i, 0, size, 0, 0, i)
                    sent += 1
                    acc += 2 * v
                wait()
                for comp in reap():
                    free.append(comp.user_data)
            while len(free) < POOL_BUFFERS:
                wait()
                free.extend(comp.user_data for comp in reap())
        else:
            op = self.ops["sink_zc"]   # zero-copy: a vector batch would copy 1 MiB
            reap_into, ud, res = c.reap_into, self.ud, self.res
            t0 = perf()
            deadline = t0 + dur
            while perf() < deadline:
                while len(free) > POOL_BUFFERS - POOL_WINDOW:
                    i = free.pop()
                    v = 1 + sent % 251
                    arrays[i].fill(v)
                    prep(op, i, 0, size, 0, 0, i)
                    sent += 1
                    acc += 2 * v
                wait()
                n = reap_into(ud, res)
                free.extend(ud[:n])
            while len(free) < POOL_BUFFERS:
                wait()
                n = reap_into(ud, res)
                free.extend(ud[:n])
        t1 = perf()
        self.verify("msg1m", sent, acc)
        return sent, t1 - t0

    # -- round trip -------------------------------------------------------------

    def rtt(self, batch: bool, n: int, max_s: float) -> list[int]:
        """Up to ``n`` round trips (fewer if they take more than ``max_s``)."""
        c = self.c
        op = self.ops["echo_batch" if batch else "echo"]
        msg = payload(64)
        prep, saw, reap = c.prep_call, c.submit_and_wait, c.reap
        lat: list[int] = []
        add = lat.append
        reply = b""
        t_end = perf_ns() + int(max_s * 1e9)
        for _ in range(n):
            t = perf_ns()
            prep(op, msg)
            saw(1, WAIT_S)
            reply = reap()[0].data
            t2 = perf_ns()
            add(t2 - t)
            if t2 > t_end and len(lat) >= RTT_MIN:
                break
        if reply != msg:
            raise BenchError(f"subring-{self.mode} rtt64: bad reply {reply[:16]!r}...")
        return lat

    # -- idle -----------------------------------------------------------------

    def idle_cpu(self, seconds: float) -> dict[str, float]:
        """Client blocked in submit_and_wait on an op the server holds; the
        server idle.  CPU % of each over the window."""
        c = self.c
        tid = threading.get_native_id()
        me = f"/proc/self/task/{tid}/stat"
        child = f"/proc/{self.proc.pid}/stat"
        c.prep_call(self.ops["hold"])
        c.submit()
        time.sleep(0.05)                          # let the server take it
        a_me, a_child, t0 = cpu_seconds(me), cpu_seconds(child), perf()
        got = c.submit_and_wait(1, seconds)       # nothing comes: idle
        b_me, b_child, t1 = cpu_seconds(me), cpu_seconds(child), perf()
        if got:
            raise BenchError(f"subring-{self.mode}: held op completed early")
        c.prep_call(self.ops["release"])
        while c.inflight:
            self._wait()
            c.reap()
        wall = t1 - t0
        return {"seconds": wall, "client_cpu_pct": 100.0 * (b_me - a_me) / wall,
                "server_cpu_pct": 100.0 * (b_child - a_child) / wall}

    def close(self) -> None:
        c, self.c = self.c, None
        if c is not None:
            # best effort: the child is joined (or terminated) below anyway
            with contextlib.suppress(Exception):
                if not c.closed and not c.peer_dead:
                    while c.inflight:
                        if not c.submit_and_wait(1, 1.0):
                            break
                        c.reap()
                    c.prep_call(c.ops["quit"])
                    c.submit_and_wait(1, 2.0)
            c.close()
        self.arrays = []
        if self.pool is not None:
            gc.collect()
            self.pool.close()
            self.pool = None
        _join(self.proc)


def _join(proc: Any, timeout: float = 5.0) -> None:
    proc.join(timeout)
    _common.terminate_or_kill(proc, timeout)


# --------------------------------------------------------------------------
# baselines: the consumer / echo child
# --------------------------------------------------------------------------

def _raw(b: Any) -> Any:
    """faster-fifo serializer for bytes payloads: no pickling (``loads=bytes``)."""
    return b


def _consume(get: Callable[[], Any]) -> tuple[int, int]:
    """Messages until an empty one: (count, sum of first+last bytes)."""
    count = acc = 0
    while True:
        m = get()
        if not m:
            return count, acc
        count += 1
        acc += m[0] + m[-1]


def _iox_config(root: str, prefix: str) -> Any:
    import iceoryx2 as iox2

    cfg = iox2.config.default()
    cfg.global_cfg.root_path = iox2.Path.new(root.rstrip("/") + "/")
    cfg.global_cfg.prefix = iox2.FileName.new(prefix)
    return cfg


def _iox_pubsub(node: Any, wl: str) -> Any:
    import iceoryx2 as iox2

    return (node.service_builder(iox2.ServiceName.new(f"ipc-bench/{wl}"))
            .publish_subscribe(iox2.Slice[ctypes.c_uint8])
            .enable_safe_overflow(False)
            .subscriber_max_buffer_size(IOX_BUFFER[wl])
            .open_or_create())


def _iox_reqres(node: Any) -> Any:
    import iceoryx2 as iox2

    return (node.service_builder(iox2.ServiceName.new("ipc-bench/rtt64"))
            .request_response(iox2.Slice[ctypes.c_uint8], iox2.Slice[ctypes.c_uint8])
            .enable_safe_overflow_for_requests(False)
            .enable_safe_overflow_for_responses(False)
            .open_or_create())


def _baseline_child(lib: str, ctrl: Any, spec: dict[str, Any]) -> None:
    """Consumer side of one baseline: obeys commands from ``ctrl``."""
    closers: list[Callable[[], None]] = []
    try:
        oneway: dict[tuple[str, str], Callable[[], tuple[int, int]]] = {}
        rtt: Callable[[], None] | None = None
        sync: Callable[[str], None] | None = None
        if lib == "pipe":
            r_one, rtt_conn = spec["oneway"], spec["rtt"]
            get = r_one.recv_bytes
            big = bytearray(SIZES["msg1m"])
            bigview = memoryview(big)

            def get_big() -> Any:
                n = r_one.recv_bytes_into(big)
                return bigview[:n]

            oneway[("msg64", "")] = oneway[("msg4k", "")] = lambda: _consume(get)
            oneway[("msg1m", "")] = lambda: _consume(get_big)

            def rtt() -> None:
                recv, send = rtt_conn.recv_bytes, rtt_conn.send_bytes
                while True:
                    m = recv()
                    send(m)
                    if len(m) != 64:                # the stop marker (echoed too)
                        return

        elif lib == "mp-queue":
            small, bigq = spec["small"], spec["big"]
            oneway[("msg64", "")] = oneway[("msg4k", "")] = lambda: _consume(small.get)
            oneway[("msg1m", "")] = lambda: _consume(bigq.get)

        elif lib == "faster-fifo":
            q = spec["q"]

            def get_one() -> Any:
                return q.get(timeout=CHILD_TIMEOUT)

            def consume_many() -> tuple[int, int]:
                count = acc = 0
                get_many = q.get_many
                while True:
                    for m in get_many(timeout=CHILD_TIMEOUT, max_messages_to_get=4096):
                        if not m:
                            return count, acc
                        count += 1
                        acc += m[0] + m[-1]

            for wl in ONEWAY:
                oneway[(wl, "")] = lambda: _consume(get_one)
                oneway[(wl, "-many")] = consume_many

        elif lib == "pyzmq":
            import zmq

            zctx = zmq.Context()
            closers.append(lambda: zctx.destroy(linger=0))
            pull = zctx.socket(zmq.PULL)
            pull.bind(spec["push_addr"])
            rep = zctx.socket(zmq.REP)
            rep.bind(spec["rep_addr"])

            def get_frame() -> Any:
                return pull.recv(copy=False).buffer

            oneway[("msg64", "")] = oneway[("msg4k", "")] = lambda: _consume(pull.recv)
            oneway[("msg1m", "")] = lambda: _consume(get_frame)

            def rtt() -> None:
                recv, send = rep.recv, rep.send
                while True:
                    m = recv()
                    send(m)
                    if len(m) != 64:
                        return

        elif lib == "iceoryx2":
            import iceoryx2 as iox2

            iox2.set_log_level(iox2.LogLevel.Error)
            node = iox2.NodeBuilder.new().config(
                _iox_config(spec["root"], spec["prefix"])).create(iox2.ServiceType.Ipc)
            subs = {wl: _iox_pubsub(node, wl).subscriber_builder().create() for wl in ONEWAY}
            server = _iox_reqres(node).server_builder().initial_max_slice_len(64).create()
            keep = [node, subs, server]

            def make(wl: str) -> Callable[[], tuple[int, int]]:
                size = SIZES[wl]
                at = ctypes.c_uint8 * size
                recv = subs[wl].receive
                yield_ = os.sched_yield

                def consume() -> tuple[int, int]:
                    count = acc = empty = 0
                    while True:
                        s = recv()
                        if s is None:           # busy poll; see IOX_YIELD_EVERY
                            empty += 1
                            if empty % IOX_YIELD_EVERY == 0:
                                yield_()
                            continue
                        if s.header.number_of_elements != size:
                            return count, acc   # the stop marker
                        a = at.from_address(s.payload_ptr)
                        count += 1
                        acc += a[0] + a[-1]
                return consume

            for wl in ONEWAY:
                oneway[(wl, "")] = make(wl)

            def rtt() -> None:
                recv = server.receive
                move = ctypes.memmove
                yield_ = os.sched_yield
                empty = 0
                while True:
                    while (req := recv()) is None:
                        empty += 1
                        if empty % IOX_YIELD_EVERY == 0:
                            yield_()
                    n = req.header.number_of_elements
                    resp = req.loan_slice_uninit(n)
                    move(resp.payload_ptr, req.payload_ptr, n)
                    resp.assume_init().send()
                    del req
                    if n != 64:
                        return

            def sync(what: str) -> None:
                """Connection handshake: a publisher's first samples can be lost
                while the subscriber attaches, so receive the producer's probe
                samples until it stops, then drain them."""
                if what == "rtt64":
                    recv = server.receive
                    while not ctrl.poll(0):
                        req = recv()
                        if req is not None:
                            resp = req.loan_slice_uninit(1)
                            resp.assume_init().send()
                            del req
                    ctrl.recv()                     # "stop"
                    while server.receive() is not None:
                        pass
                    return
                recv = subs[what].receive
                while recv() is None:
                    pass
                ctrl.send(("synced",))
                ctrl.recv()                         # "stop": it sends no more
                while recv() is not None:
                    pass

            def drop() -> None:
                keep.clear()
                subs.clear()
            closers.append(drop)
        else:
            raise ValueError(lib)

        ctrl.send(("ready", os.getpid()))
        while True:
            cmd = ctrl.recv()
            if cmd[0] == "quit":
                break
            if cmd[0] == "oneway":
                count, acc = oneway[(cmd[1], cmd[2])]()
                ctrl.send(("done", count, acc))
            elif cmd[0] == "rtt":
                assert rtt is not None
                rtt()
                ctrl.send(("done",))
            elif cmd[0] == "sync":
                assert sync is not None
                sync(cmd[1])
                ctrl.send(("done",))
    except BaseException as e:  # noqa: BLE001 -- report to the parent, then exit
        with contextlib.suppress(Exception):
            ctrl.send(("error", f"{type(e).__name__}: {e}", traceback.format_exc()))
    finally:
        for f in reversed(closers):
            with contextlib.suppress(Exception):
                f()


# --------------------------------------------------------------------------
# baselines: the producer side (this process)
# --------------------------------------------------------------------------

class Baseline:
    """One baseline library: its child (consumer) and our producer loops."""

    def __init__(self, lib: str, ctx: Any, tmpdir: str, run_tag: str) -> None:
        self.lib = lib
        self.closers: list[Callable[[], None]] = []
        spec: dict[str, Any] = {}
        self.ctrl, child_ctrl = ctx.Pipe()
        try:
            if lib == "pipe":
                r, w = ctx.Pipe(duplex=False)
                a, b = ctx.Pipe(duplex=True)
                spec = {"oneway": r, "rtt": b}
                self.w, self.rtt_conn = w, a
                self.closers += [w.close, a.close]
                child_ends = [r, b]
            elif lib == "mp-queue":
                self.small, self.bigq = ctx.Queue(), ctx.Queue(maxsize=POOL_BUFFERS)
                spec = {"small": self.small, "big": self.bigq}
                child_ends = []
            elif lib == "faster-fifo":
                import faster_fifo

                # bytes in, bytes out: no pickling (its fastest mode for bytes)
                self.q = faster_fifo.Queue(max_size_bytes=FF_BYTES, loads=bytes, dumps=_raw)
                spec = {"q": self.q}
                child_ends = []
            elif lib == "pyzmq":
                spec = {"push_addr": f"ipc://{tmpdir}/zmq-push.sock",
                        "rep_addr": f"ipc://{tmpdir}/zmq-rep.sock"}
                child_ends = []
            elif lib == "iceoryx2":
                import iceoryx2  # noqa: F401 -- fail here, not in the child

                spec = {"root": os.path.join(tmpdir, "iceoryx2"), "prefix": f"iox2{run_tag}_"}
                os.makedirs(spec["root"], exist_ok=True)
                child_ends = []
            else:
                raise ValueError(lib)
            self.proc = ctx.Process(target=_baseline_child, args=(lib, child_ctrl, spec),
                                    name=f"baseline-{lib}", daemon=True)
            self.proc.start()
            child_ctrl.close()
            for e in child_ends:
                e.close()
            self._reply()                         # ("ready", pid)
            if lib == "pyzmq":
                import zmq

                self.zctx = zmq.Context()
                self.closers.append(lambda: self.zctx.destroy(linger=0))
                self.push = self.zctx.socket(zmq.PUSH)
                self.push.connect(spec["push_addr"])
                self.req = self.zctx.socket(zmq.REQ)
                self.req.connect(spec["rep_addr"])
            elif lib == "iceoryx2":
                import iceoryx2 as iox2

                iox2.set_log_level(iox2.LogLevel.Error)
                self.node = iox2.NodeBuilder.new().config(
                    _iox_config(spec["root"], spec["prefix"])).create(iox2.ServiceType.Ipc)
                self.pubs = {wl: _iox_pubsub(self.node, wl).publisher_builder()
                             .initial_max_slice_len(SIZES[wl])
                             .backpressure_strategy(iox2.BackpressureStrategy.RetryUntilDelivered)
                             .create() for wl in ONEWAY}
                self.client = (_iox_reqres(self.node).client_builder()
                               .initial_max_slice_len(64).create())

                def drop() -> None:
                    self.pubs.clear()
                    self.client = None
                    self.node = None
                self.closers.append(drop)
                self._iox_sync()
        except BaseException:
            self.close()
            raise

    def _iox_sync(self) -> None:
        """See the child's ``sync``: probe every service until the consumer
        sees our samples (and the server answers a request)."""
        deadline = perf() + CHILD_TIMEOUT
        for wl, pub in self.pubs.items():
            self.ctrl.send(("sync", wl))
            while not self.ctrl.poll(0.001):
                if perf() > deadline:
                    raise BenchError(f"iceoryx2: subscriber of {wl} never saw a sample")
                pub.loan_slice_uninit(1).assume_init().send()
            self._reply()                               # ("synced",)
            self.ctrl.send(("stop",))
            self._reply()                               # ("done",)
        self.ctrl.send(("sync", "rtt64"))
        while True:
            if perf() > deadline:
                raise BenchError("iceoryx2: the server never answered a request")
            pend = self.client.loan_slice_uninit(1).assume_init().send()
            t = perf()
            while (resp := pend.receive()) is None and perf() - t < 0.005:
                pass
            if resp is not None:
                break
        del resp, pend
        self.ctrl.send(("stop",))
        self._reply()

    def _reply(self) -> tuple:
        if not self.ctrl.poll(CHILD_TIMEOUT):
            raise BenchError(f"{self.lib}: consumer did not answer within {CHILD_TIMEOUT} s")
        msg = self.ctrl.recv()
        if msg[0] == "error":
            raise BenchError(f"{self.lib} consumer: {msg[1]}\n{msg[2]}")
        return msg

    # -- one-way --------------------------------------------------------------

    def oneway(self, wl: str, variant: str, count: int) -> tuple[int, float]:
        """Send ``count`` messages (rounded up to whole chunks) and a stop
        marker; return (messages, seconds until the consumer acknowledged
        consuming them all)."""
        self.ctrl.send(("oneway", wl, variant))
        size = SIZES[wl]
        t0 = perf()
        if wl == "msg1m":
            sent, acc = self._produce_big(variant, size, count)
        else:
            sent = self._produce_small(variant, size, count)
            acc = sent * ACC_SMALL
        msg = self._reply()
        t1 = perf()
        if msg[1] != sent or msg[2] != acc:
            raise BenchError(f"{self.lib}{variant} {wl}: consumer got {msg[1]} msgs "
                             f"(sum {msg[2]}), producer sent {sent} (sum {acc})")
        return sent, t1 - t0

    def _sender(self, wl: str) -> Callable[[Any], Any]:
        lib = self.lib
        if lib == "pipe":
            return self.w.send_bytes
        if lib == "mp-queue":
            return self.bigq.put if wl == "msg1m" else self.small.put
        if lib == "faster-fifo":
            q = self.q

            def put(m: Any) -> None:
                q.put(m, timeout=CHILD_TIMEOUT)
            return put
        if lib == "pyzmq":
            return self.push.send
        raise ValueError(lib)

    def _produce_small(self, variant: str, size: int, count: int) -> int:
        msg = payload(size)
        if self.lib == "iceoryx2":
            pub = self.pubs["msg64" if size == 64 else "msg4k"]
            loan, move = pub.loan_slice_uninit, ctypes.memmove
            chunks = -(-count // CHUNK)
            for _ in range(chunks):
                for _ in range(CHUNK):
                    s = loan(size)
                    move(s.payload_ptr, msg, size)
                    s.assume_init().send()
            loan(1).assume_init().send()           # stop marker: a 1-element sample
            return chunks * CHUNK
        if variant == "-many":
            batch = [msg] * MANY
            put_many = self.q.put_many
            chunks = -(-count // MANY)
            for _ in range(chunks):
                put_many(batch, timeout=CHILD_TIMEOUT)
            self.q.put(b"", timeout=CHILD_TIMEOUT)
            return chunks * MANY
        send = self._sender("small")
        chunks = -(-count // CHUNK)
        for _ in range(chunks):
            for _ in range(CHUNK):
                send(msg)
        send(b"")                                   # stop marker
        return chunks * CHUNK

    def _produce_big(self, variant: str, size: int, count: int) -> tuple[int, int]:
        import numpy as np

        acc = 0
        if self.lib == "iceoryx2":
            loan = self.pubs["msg1m"].loan_slice_uninit
            at = ctypes.c_uint8 * size
            frombuffer, u8 = np.frombuffer, np.uint8
            for k in range(count):
                s = loan(size)
                v = 1 + k % 251
                sample_mem: Any = at.from_address(s.payload_ptr)
                frombuffer(sample_mem, u8).fill(v)
                s.assume_init().send()
                acc += 2 * v
            loan(1).assume_init().send()
            return count, acc
        if variant == "-many":
            bufs = [bytearray(size) for _ in range(MANY_1M)]
            views = [np.frombuffer(b, np.uint8) for b in bufs]
            put_many = self.q.put_many
            k = 0
            for _ in range(-(-count // MANY_1M)):
                for view in views:
                    v = 1 + k % 251
                    view.fill(v)
                    k += 1
                    acc += 2 * v
                put_many([bytes(b) for b in bufs], timeout=CHILD_TIMEOUT)
            self.q.put(b"", timeout=CHILD_TIMEOUT)
            return k, acc
        buf = bytearray(size)
        view = np.frombuffer(buf, np.uint8)
        send = self._sender("msg1m")
        # mp.Queue pickles later in a feeder thread and faster-fifo takes only
        # bytes: both need an immutable snapshot of the filled buffer.
        snapshot = self.lib in ("mp-queue", "faster-fifo")
        for k in range(count):
            v = 1 + k % 251
            view.fill(v)
            send(bytes(buf) if snapshot else buf)
            acc += 2 * v
        send(b"")
        return count, acc

    # -- round trip -------------------------------------------------------------

    def rtt(self, n: int, warm: int, max_s: float) -> list[int]:
        """``warm`` round trips, then up to ``n`` timed ones (fewer if they
        take more than ``max_s``), then the stop marker."""
        self.ctrl.send(("rtt",))
        msg = payload(64)
        lat: list[int] = []
        reply: Any = b""
        if self.lib == "pipe":
            send, recv = self.rtt_conn.send_bytes, self.rtt_conn.recv_bytes
        elif self.lib == "pyzmq":
            send, recv = self.req.send, self.req.recv
        elif self.lib == "iceoryx2":
            loan, move, client = self.client.loan_slice_uninit, ctypes.memmove, self.client
            pending: list[Any] = []

            def send(m: bytes) -> None:
                r = loan(len(m))
                move(r.payload_ptr, m, len(m))
                pending.append(r.assume_init().send())

            yield_ = os.sched_yield

            def recv() -> bytes:
                p = pending.pop()
                empty = 0
                while (resp := p.receive()) is None:
                    empty += 1
                    if empty % IOX_YIELD_EVERY == 0:
                        yield_()
                return ctypes.string_at(resp.payload_ptr, resp.header.number_of_elements)
            assert client is not None
        else:
            raise ValueError(self.lib)
        for _ in range(warm):
            send(msg)
            recv()
        add = lat.append
        t_end = perf_ns() + int(max_s * 1e9)
        for _ in range(n):
            t = perf_ns()
            send(msg)
            reply = recv()
            t2 = perf_ns()
            add(t2 - t)
            if t2 > t_end and len(lat) >= RTT_MIN:
                break
        send(b"\0")                                # stop marker
        recv()
        self._reply()
        if bytes(reply) != msg:
            raise BenchError(f"{self.lib} rtt64: bad reply")
        return lat

    def close(self) -> None:
        with contextlib.suppress(Exception):
            if getattr(self, "proc", None) is not None and self.proc.is_alive():
                self.ctrl.send(("quit",))
        if getattr(self, "proc", None) is not None:
            _join(self.proc)
        for f in reversed(self.closers):
            with contextlib.suppress(Exception):
                f()
        self.closers = []
        for q in ("small", "bigq"):
            qq = getattr(self, q, None)
            if qq is not None:
                qq.cancel_join_thread()         # never block on a dead consumer
                qq.close()
        self.ctrl.close()


# --------------------------------------------------------------------------
# measuring
# --------------------------------------------------------------------------

def pct(sorted_ns: list[int], p: float) -> float:
    k = min(len(sorted_ns) - 1, max(0, round(p * (len(sorted_ns) - 1))))
    return sorted_ns[k] / 1e3


class Results:
    def __init__(self, reps: int) -> None:
        self.reps = reps
        self.data: dict[str, dict[str, dict[str, Any]]] = {}
        self.errors: list[dict[str, Any]] = []

    def _row(self, wl: str, name: str, fields: tuple[str, ...]) -> dict[str, Any]:
        row = self.data.setdefault(wl, {}).setdefault(name, {})
        for f in fields:
            row.setdefault(f, [None] * self.reps)
        return row

    def put_oneway(self, rep: int, wl: str, name: str, msgs: int, secs: float,
                   extra: dict[str, Any] | None = None) -> None:
        row = self._row(wl, name, ("msgs", "seconds", "msg_per_s", "gb_per_s"))
        row["msgs"][rep] = msgs
        row["seconds"][rep] = secs
        row["msg_per_s"][rep] = msgs / secs
        row["gb_per_s"][rep] = msgs * SIZES[wl] / secs / 1e9
        for k, v in (extra or {}).items():
            row.setdefault(k, [None] * self.reps)[rep] = v

    def put_rtt(self, rep: int, name: str, lat: list[int]) -> None:
        row = self._row("rtt64", name, ("n", "p50_us", "p99_us", "mean_us"))
        s = sorted(lat)
        row["n"][rep] = len(s)
        row["p50_us"][rep] = pct(s, 0.50)
        row["p99_us"][rep] = pct(s, 0.99)
        row["mean_us"][rep] = sum(s) / len(s) / 1e3

    def put_rtt_summary(self, rep: int, name: str, doc: dict[str, Any]) -> None:
        """A round-trip row from figures computed elsewhere (the C program)."""
        fields = ("n", "p50_us", "p99_us", "mean_us", "max_us", "same_cpu_frac")
        row = self._row("rtt64", name, fields)
        for f in fields:
            row[f][rep] = doc[f]

    def get(self, wl: str, name: str, field: str, rep: int) -> float | None:
        try:
            return self.data[wl][name][field][rep]
        except (KeyError, IndexError):
            return None


def run_subring(rs: Results, rep: int, mode: str, ctx: Any, tmpdir: str, lv: Level,
                idle: dict[str, Any] | None, log: Callable[[str], None]) -> None:
    cl = SubringClient(ctx, tmpdir, mode)
    try:
        for batch in (False, True):
            name = f"subring-{mode}{'-batch' if batch else ''}"
            for wl in ONEWAY:
                cl.oneway(wl, batch, lv.warm_s)
                gc.collect()
                s0 = cl.c.statistics()
                msgs, secs = cl.oneway(wl, batch, lv.slice_s)
                s1 = cl.c.statistics()
                rs.put_oneway(rep, wl, name, msgs, secs, {
                    "client_sleeps": s1.sleeps - s0.sleeps,
                    "client_doorbells": s1.doorbells - s0.doorbells})
            cl.rtt(batch, lv.rtt_warm, lv.rtt_max_s)
            gc.collect()
            rs.put_rtt(rep, name, cl.rtt(batch, lv.rtt_n, lv.rtt_max_s))
        if idle is not None:
            idle[mode] = cl.idle_cpu(lv.idle_s)
            log(f"    idle {mode}: client {idle[mode]['client_cpu_pct']:.1f} % CPU, "
                f"server {idle[mode]['server_cpu_pct']:.1f} % CPU")
    finally:
        cl.close()


def run_baseline(rs: Results, rep: int, lib: str, ctx: Any, tmpdir: str, lv: Level,
                 run_tag: str) -> None:
    """Baselines are driven by message count, not time: their queues may be
    unbounded (mp.Queue) or deep, so a time-bounded producer would leave a
    long backlog to drain.  A warm-up run calibrates the count that lasts
    about one slice."""
    b = Baseline(lib, ctx, tmpdir, run_tag)
    try:
        for name in BASELINE_ROWS[lib]:
            variant = name[len(lib):]
            for wl in ONEWAY:
                n = max(1, round(WARM_COUNT[wl] * lv.warm_scale))
                msgs, secs = b.oneway(wl, variant, n)
                n = max(1, round(msgs / secs * lv.slice_s))
                gc.collect()
                msgs, secs = b.oneway(wl, variant, n)
                rs.put_oneway(rep, wl, name, msgs, secs)
        if lib in RTT_BASELINES:
            gc.collect()
            rs.put_rtt(rep, lib, b.rtt(lv.rtt_n, lv.rtt_warm, lv.rtt_max_s))
    finally:
        b.close()


# ---- the C floor ----------------------------------------------------------

def compile_c_pingpong(tmpdir: str, cc: str) -> tuple[str | None, dict[str, Any]]:
    """Build bench/c_pingpong.c into ``tmpdir``.  Returns (executable or None,
    info); info holds the command and compiler, or "error": why there is no
    C floor (then its rows and floor entries are left out)."""
    return _common.compile_c([cc], [C_SOURCE], os.path.join(tmpdir, "c_pingpong"),
                             flags=["-Wall", "-Wextra"], libs=["-lm"])


def c_cpus() -> tuple[int, int | None]:
    """(the CPU the pinned C rows use: 0 if we may use it, another CPU for
    the cross-CPU child or None)."""
    cpus = sorted(os.sched_getaffinity(0))
    first = 0 if 0 in cpus else cpus[0]
    return first, next((c for c in cpus if c != first), None)


def run_c(rs: Results, rep: int, row: str, exe: str, lv: Level) -> None:
    """One C ping-pong run (its own warm-up, round-trip count and time cap:
    the Python contenders' ``rtt_n``, ``rtt_warm``, ``rtt_max_s``, RTT_MIN)."""
    mech, placement = C_ROWS[row]
    first, other = c_cpus()
    cpus = {None: "-1", "same": f"{first}", "cross": f"{first},{other}"}[placement]
    cmd = [exe, mech, str(lv.rtt_n), str(lv.rtt_warm), repr(lv.rtt_max_s), str(RTT_MIN), cpus]
    try:
        # the program gives up on its own after 10 s + 3 x rtt_max_s
        proc = subprocess.run(cmd, check=False, capture_output=True, text=True,
                              timeout=20 + 4 * lv.rtt_max_s)
    except subprocess.TimeoutExpired as e:
        raise BenchError(f"{row}: {' '.join(cmd)} timed out") from e
    if proc.returncode != 0:
        raise BenchError(f"{row}: {' '.join(cmd)} exited {proc.returncode}: "
                         f"{proc.stderr.strip()}")
    rs.put_rtt_summary(rep, row, json.loads(proc.stdout))


def compute_floor(rs: Results, unavailable: dict[str, str]) -> dict[str, dict[str, Any]]:
    """The informational p50 ratios against the C floor: per repetition, then
    the median (like the ratios); null with "skipped" when a side did not run."""
    out: dict[str, dict[str, Any]] = {}
    for key, (desc, num, den) in FLOOR.items():
        per_rep = [a / b for rep in range(rs.reps)
                   for a in [rs.get("rtt64", num, "p50_us", rep)]
                   for b in [rs.get("rtt64", den, "p50_us", rep)]
                   if a is not None and b is not None and a > 0 and b > 0]
        e: dict[str, Any] = {"description": desc, "numerator": num, "denominator": den,
                             "median": statistics.median(per_rep) if per_rep else None,
                             "samples": per_rep}
        if not per_rep:
            # every entry has a C side: a failed build explains it too
            why = [unavailable[k] for k in (num, den, C_SKIP_KEY) if k in unavailable]
            e["skipped"] = why[0] if why else f"{num} or {den} did not run"
        out[key] = e
    return out


def compute_ratios(rs: Results, skipped: dict[str, str]
                   ) -> tuple[dict[str, float | None], dict[str, list], dict[str, dict]]:
    ratios: dict[str, float | None] = {}
    samples: dict[str, list] = {}
    bars: dict[str, dict[str, Any]] = {}
    for key, (desc, bar, wl, sr_row, base, field) in RATIOS.items():
        per_rep: list[float] = []
        best_names: list[str | None] = []
        lower_better = field == "p50_us"
        for rep in range(rs.reps):
            mine = rs.get(wl, sr_row, field, rep)
            theirs: float | None
            who: str | None
            if base is not None:
                theirs, who = rs.get(wl, base, field, rep), base
            else:
                # the C floor is no baseline: it is not a way to move messages
                # between Python processes
                cands = [(v, n) for n in rs.data.get(wl, {})
                         if not n.startswith("subring") and n not in C_ROWS
                         for v in [rs.get(wl, n, field, rep)] if v is not None]
                if cands:
                    theirs, who = (min(cands) if lower_better else max(cands))
                else:
                    theirs, who = None, None
            if mine is None or theirs is None or not (mine > 0 and theirs > 0):
                continue
            per_rep.append(theirs / mine if lower_better else mine / theirs)
            best_names.append(who)
        samples[key] = per_rep
        med = statistics.median(per_rep) if per_rep else None
        ratios[key] = med
        entry: dict[str, Any] = {"bar": bar, "met": None if med is None else bool(med >= bar),
                                 "description": desc,
                                 "subring": sr_row, "baseline": base or "best baseline",
                                 "baseline_per_rep": best_names}
        if ratios[key] is None:
            why = skipped.get(base or "", None) if base else None
            entry["skipped"] = why or ("no baseline ran" if base is None
                                       else f"{base} or {sr_row} did not run")
        bars[key] = entry
    return ratios, samples, bars


# --------------------------------------------------------------------------
# reporting
# --------------------------------------------------------------------------

def _med(xs: list | None) -> float | None:
    vals = [x for x in (xs or []) if x is not None]
    return statistics.median(vals) if vals else None


def _fmt(x: float | None, spec: str, scale: float = 1.0) -> str:
    return "-" if x is None else format(x / scale, spec)


def print_report(rs: Results, ratios: dict, samples: dict, bars: dict, idle: dict,
                 skipped: dict[str, str], floor: dict[str, dict[str, Any]]) -> None:
    rows = SUBRING_ROWS + [n for lib in BASELINES for n in BASELINE_ROWS[lib]]
    print()
    print("one-way throughput (median over repetitions)")
    print(f"{'contender':<25} {'64 B Mmsg/s':>11} {'4 KiB Mmsg/s':>12} {'4 KiB GB/s':>10} "
          f"{'1 MiB msg/s':>11} {'1 MiB GB/s':>10}")
    print("-" * 84)
    for name in rows:
        if not any(name in rs.data.get(wl, {}) for wl in ONEWAY):
            continue
        d = {wl: rs.data.get(wl, {}).get(name, {}) for wl in ONEWAY}
        print(f"{name:<25} {_fmt(_med(d['msg64'].get('msg_per_s')), '11.3f', 1e6)} "
              f"{_fmt(_med(d['msg4k'].get('msg_per_s')), '12.3f', 1e6)} "
              f"{_fmt(_med(d['msg4k'].get('gb_per_s')), '10.2f')} "
              f"{_fmt(_med(d['msg1m'].get('msg_per_s')), '11.0f')} "
              f"{_fmt(_med(d['msg1m'].get('gb_per_s')), '10.2f')}")
    print()
    print("64 B round trip (median over repetitions of each repetition's percentile)")
    print(f"{'contender':<25} {'p50 us':>8} {'p99 us':>8} {'mean us':>8}")
    print("-" * 52)
    for name in rows:
        rt = rs.data.get("rtt64", {}).get(name)
        if rt is None:
            continue
        print(f"{name:<25} {_fmt(_med(rt['p50_us']), '8.2f')} "
              f"{_fmt(_med(rt['p99_us']), '8.2f')} {_fmt(_med(rt['mean_us']), '8.2f')}")
    c_rows = [n for n in C_ROWS if n in rs.data.get("rtt64", {})]
    if c_rows:
        print(f"{'C floor (c_pingpong.c)':<25} {'':>8} {'':>8} {'':>8} {'same CPU':>8}")
        for name in c_rows:
            rt = rs.data["rtt64"][name]
            print(f"{name:<25} {_fmt(_med(rt['p50_us']), '8.2f')} "
                  f"{_fmt(_med(rt['p99_us']), '8.2f')} {_fmt(_med(rt['mean_us']), '8.2f')} "
                  f"{_fmt(_med(rt['same_cpu_frac']), '8.0%')}")
    print()
    if idle:
        print("idle CPU after the run (client blocked in submit_and_wait, server idle)")
        print(f"{'mode':<10} {'window s':>8} {'client %':>9} {'server %':>9}  expected")
        print("-" * 50)
        for mode, v in idle.items():
            exp = "~100 % each" if mode == "poll" else "~0 %"
            print(f"{mode:<10} {v['seconds']:8.2f} {v['client_cpu_pct']:9.1f} "
                  f"{v['server_cpu_pct']:9.1f}  {exp}")
        print()
    _common.print_ratio_table(ratios, samples, bars,
                              title="ratio (higher = subring better)", width=26)
    print()
    _common.print_info_table(floor, title="informational: p50 / floor", width=32, rule=54,
                             note="(1.0 = at the C floor)")
    print()
    for lib, why in skipped.items():
        print(f"skipped {lib}: {why}")
    for e in rs.errors:
        print(f"error in repetition {e['rep'] + 1}, {e['contender']}: {e['error']}")


def environment(skipped: dict[str, str]) -> dict[str, Any]:
    version = _common.package_version
    env = _common.environment(
        subring_version=getattr(subring, "__version__", None) or version("subring"),
        after_timestamp={
            "load_avg_start": os.getloadavg(),
            "packages": {p: version(p) for p in ("numpy", "pyzmq", "faster-fifo", "iceoryx2")},
        })
    try:
        with open("/proc/cpuinfo") as f:
            env["cpu_model"] = next((ln.split(":", 1)[1].strip() for ln in f
                                     if ln.startswith("model name")), None)
    except OSError:
        pass
    if "pyzmq" not in skipped:                 # probed: importing it is safe
        with contextlib.suppress(Exception):
            import zmq

            env["libzmq_version"] = zmq.zmq_version()
    try:
        env["git_commit"] = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=os.path.dirname(os.path.abspath(__file__)),
            capture_output=True, text=True, timeout=5, check=False).stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        pass
    return env


# --------------------------------------------------------------------------

def main(argv: list[str] | None = None) -> int:
    t_start = perf()
    p = _common.make_parser(__doc__)
    _common.add_reps_slice(p, slice_help="override the seconds per one-way workload")
    p.add_argument("-v", "--verbose", action="store_true", help="log each contender's time")
    p.add_argument("--skip", action="append", default=[], choices=BASELINES,
                   help="behave as if this baseline were not installed (repeatable)")
    p.add_argument("--cc", default="gcc", metavar="CC",
                   help="C compiler for the C floor, bench/c_pingpong.c (default: gcc)")
    args = p.parse_args(argv)

    level_name, lv = _common.select_mode(args, LEVELS)
    log = _common.log

    skipped: dict[str, str] = {}
    for lib in BASELINES:
        if lib in args.skip:
            skipped[lib] = "skipped (--skip)"
            continue
        mod = BASELINE_MODULE.get(lib)
        if mod is not None:
            why = _common.probe_baseline(lib, BASELINE_PROBE[lib], module=mod)
            if why is None:
                try:
                    __import__(mod)
                except Exception as e:  # noqa: BLE001 -- it imported in the child
                    why = f"{mod} is not importable: {type(e).__name__}: {e}"
            if why is not None:
                skipped[lib] = why
    try:
        import numpy  # noqa: F401
    except ImportError as e:
        print(f"numpy is required (BufferPool arrays, 1 MiB fills): {e}", file=sys.stderr)
        return 2
    for lib, why in skipped.items():
        log(f"{lib} rows and ratios skipped: {why}")

    env = environment(skipped)
    log(f"bench/ipc.py mode={level_name} reps={lv.reps} slice={lv.slice_s}s "
        f"rtt_n={lv.rtt_n}  Linux {env['kernel_release']}, Python {env['python_version']}, "
        f"{env['cpu_count']} CPUs, load {env['load_avg_start'][0]:.2f}")

    ctx = mp.get_context("spawn")
    rs = Results(lv.reps)
    idle: dict[str, Any] = {}
    run_tag = f"{os.getpid()}x{int(time.time()) % 100000}"
    subring_failed = False
    failed: dict[str, str] = {}
    tmpdir = tempfile.mkdtemp(prefix="subring-ipc-")
    try:
        t0 = perf()
        c_exe, c_info = compile_c_pingpong(tmpdir, args.cc)
        if c_exe is None:
            skipped[C_SKIP_KEY] = c_info["error"]
            log(f"C floor rows skipped: {c_info['error']}")
        else:
            c_info["same_cpu"], c_info["cross_cpu_child"] = c_cpus()
            log(f"C floor built in {perf() - t0:.1f} s: {c_info['command']}")
            if c_info["cross_cpu_child"] is None:
                skipped["c-futex-cross-cpu"] = "needs two usable CPUs"
        contenders = [("subring", m) for m in MODES_SR] + \
                     [("baseline", lib) for lib in BASELINES if lib not in skipped] + \
                     [("c", row) for row in (C_ROWS if c_exe else ()) if row not in skipped]
        rep_times: list[float] = []
        for rep in range(lv.reps):
            # the first repetition also measures idle CPU and warms caches:
            # estimate the next one from the latest
            if lv.budget_s is not None and rep_times and \
                    perf() - t_start + 1.2 * rep_times[-1] > lv.budget_s:
                log(f"  stopping after {rep} repetitions: another one would pass the "
                    f"{lv.budget_s:.0f} s budget of this mode (the machine is slow or busy)")
                break
            t_rep = perf()
            k = rep % len(contenders)
            for kind, what in contenders[k:] + contenders[:k]:
                name = f"subring-{what}" if kind == "subring" else what
                if what in failed:
                    continue
                t_c = perf()
                try:
                    if kind == "subring":
                        run_subring(rs, rep, what, ctx, tmpdir, lv,
                                    idle if rep == 0 else None, log)
                    elif kind == "c":
                        assert c_exe is not None
                        run_c(rs, rep, what, c_exe, lv)
                    else:
                        run_baseline(rs, rep, what, ctx, tmpdir, lv, run_tag)
                except Exception as e:  # noqa: BLE001 -- record, go on with the others
                    rs.errors.append({"rep": rep, "contender": name,
                                      "error": f"{type(e).__name__}: {e}",
                                      "traceback": traceback.format_exc()})
                    log(f"  ERROR {name}: {type(e).__name__}: {e}")
                    if kind == "subring":
                        subring_failed = True
                    else:                       # a broken baseline / C row is not retried
                        failed[what] = (f"failed in repetition {rep + 1}: "
                                        f"{type(e).__name__}: {e}")
                if args.verbose:
                    log(f"    {name}: {perf() - t_c:.2f} s")
            rep_times.append(perf() - t_rep)
            log(f"  repetition {rep + 1}/{lv.reps} done ({rep_times[-1]:.1f} s)")
    finally:
        shutil.rmtree(tmpdir, ignore_errors=True)
        try:
            for f in os.listdir("/dev/shm"):
                if f.startswith(f"iox2{run_tag}_"):
                    os.unlink(os.path.join("/dev/shm", f))
        except OSError:
            pass

    env["load_avg_end"] = os.getloadavg()
    ratios, samples, bars = compute_ratios(rs, {**skipped, **failed})
    floor = compute_floor(rs, {**skipped, **failed})
    print_report(rs, ratios, samples, bars, idle, {**skipped, **failed}, floor)
    wall = perf() - t_start
    print(f"total wall time {wall:.1f} s")

    if args.json:
        for w in rs.data.values():
            for r in w.values():
                for fld in ("msg_per_s", "gb_per_s", "p50_us", "p99_us", "mean_us"):
                    if fld in r:
                        r[f"median_{fld}"] = _med(r[fld])
        doc = {
            "benchmark": "ipc",
            "mode": level_name,
            "env": env,
            "config": {
                "reps": lv.reps, "reps_run": len(rep_times), "slice_s": lv.slice_s,
                "warm_s": lv.warm_s,
                "rtt_n": lv.rtt_n, "rtt_warm": lv.rtt_warm, "rtt_max_s": lv.rtt_max_s,
                "rtt_min": RTT_MIN, "idle_s": lv.idle_s,
                "sizes": SIZES, "subring_entries": ENTRIES, "subring_slot_size": SLOT_SIZE,
                "subring_spin_us": SPIN_US, "pool_buffers": POOL_BUFFERS,
                "iceoryx2_subscriber_buffer": IOX_BUFFER, "faster_fifo_max_size_bytes": FF_BYTES,
                "faster_fifo_put_many": MANY, "faster_fifo_put_many_1m": MANY_1M,
                "start_method": "spawn",
                "c_pingpong": c_info,
            },
            "results": rs.data,
            "idle_cpu": idle,
            "skipped": skipped,
            "failed": failed,
            "errors": rs.errors,
            "ratios": ratios,
            "ratio_samples": samples,
            "bars": bars,
            "floor": floor,
            "wall_time_s": wall,
        }
        _common.write_json(args.json, doc)
    return 1 if subring_failed else 0


if __name__ == "__main__":
    sys.exit(main())
