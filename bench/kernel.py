#!/usr/bin/env python3
"""Benchmark: subring.KernelRing against the usual ways of doing I/O from Python.

Workloads
---------
``nop1`` / ``nop32`` / ``nop256``
    IORING_OP_NOP in batches of 1, 32 and 256: prepare the batch, one
    submit-and-wait for all of it, reap it.  This measures the per-op cost of
    the library itself (preparing SQEs, the syscall, reaping CQEs).

``read_qd32``
    4 KiB reads at random 4 KiB-aligned offsets of a page-cached file of
    256 MiB, 32 reads in flight.  Every contender reads the same precomputed
    offsets, in the same order.

Contenders
----------
``subring``        per-op API: ``prep_nop()`` / ``prep_read(fd, buf, off, ud)``,
                   ``submit_and_wait(1)``, ``reap()``; as soon as a read
                   completes its buffer is reused for the next offset.
``subring-batch``  batch API: ``prep_nops(n, base)`` / ``prep_reads(fd, big,
                   4096, offsets)``, ``submit_and_wait(n)``, ``reap_into()``
                   into preallocated arrays.
``liburing``       PyPI ``liburing`` (2026.3.30), written the way its docs
                   suggest: get_sqe + prep + set_data64 for the whole batch,
                   one ``io_uring_submit_and_wait``, iterate ``CqeIter``, one
                   ``io_uring_cq_advance`` per batch.  (Its ``cqe[i]`` batch
                   pattern is *not* used: it does not apply the CQ ring mask
                   and reads past the end of the CQ when the ring wraps.)
``pread``          a plain ``os.pread`` loop (queue depth 1, no io_uring).
``threadpool``     ``os.pread`` in ``concurrent.futures.ThreadPoolExecutor(8)``
                   with a window of 32 futures in flight.
``c-loop``         the C ceiling: ``bench/c_ceiling.c``, the
                   same workload with no Python at all, built on subring's own
                   ring core (``src/subring/_core/kernel.c`` + ``ring.h``, not
                   liburing) with KernelRing's default setup flags.  NOPs:
                   B SQEs, publish, one ``io_uring_enter(B, B, GETEVENTS)``,
                   reap B CQEs.  Reads: 32 in flight, each slot refilled as
                   soon as its read completes (like ``subring``).
``c-pread``        (reads only) the C ``pread(2)`` loop, queue depth 1.

Every ring (subring's, liburing's, the C program's) is created with its
library's default setup flags and 256 SQ entries.  Every loop checks its
results lightly (NOP completion counts, every
read's ``res == 4096``) and, outside the timed region, compares the buffers of
the io_uring contenders against ``os.pread`` of the same offset -- so a broken
library cannot look fast.  (The C program checks every NOP's ``res`` and the
batch's user_data, every read's ``res == 4096``, and after each chunk that each
buffer holds the block of its offset.)

The C ceiling says what this machine's kernel allows: there the remaining cost
is the syscall and the kernel's own work (a page-cached 4 KiB read is mostly
the kernel's copy), so ``subring / c-loop`` is the share of the achievable rate
that the Python layer keeps -- the ``*_vs_c`` ratios, which hold on any CPU
(PyPI liburing's wheel does not run everywhere).  It is compiled once per run (``$CC`` from
``sysconfig``, else ``gcc``, with ``-O2``) into the temporary directory; if that
fails (or the program cannot set up a ring) the reason goes into the JSON's
``"skipped"`` and the ``c-*`` rows, ``*_vs_c`` ratios and ceiling entries are
left out.

Baselines that may not run here
-------------------------------
liburing is first probed in a child process (import, one NOP, with a
timeout): a wheel that dies with SIGILL or SIGSEGV, hangs or fails to import
has its rows and ratios skipped with the reason in ``"skipped"``, and
everything else still runs.

Method
------
The machine this runs on is noisy, so each *repetition* runs every contender
of every workload back to back (the order rotates from one repetition to the
next), each for a fixed time slice made of fixed-size chunks of ops.  The C
contenders run as one child process per slice, reading the same offsets (from
a file of int64s) with the same chunk size and slice length; the program times
only its chunks (after one untimed warm-up chunk), not its start-up.  A ratio
is subring's ops/s divided by the baseline's ops/s *in the same repetition*;
the reported ratio is the median of those per-repetition ratios (higher is
better for subring).

The data file is ``$TMPDIR/subring-bench-256M.dat``; it is created once
(kept for later runs; reused when it exists with the right size) and read
through before measuring so that it sits in the page cache.  ``--smoke`` uses a
4 MiB file in a temporary directory instead and removes it.

Reproduce
---------
::

    pip install -e '.[dev,bench]'
    python bench/kernel.py                     # full run, about 3.5 minutes
    python bench/kernel.py --quick             # < 60 s
    python bench/kernel.py --quick --json /tmp/kernel.json
    python bench/kernel.py --smoke --json /tmp/k.json   # seconds; only checks it runs
    python bench/kernel.py --quick --cc clang  # build the C ceiling with another compiler

The C program alone (``kernel.py`` passes the same arguments)::

    gcc -O2 -Wall -Wextra -Isrc/subring/_core bench/c_ceiling.c \
        src/subring/_core/kernel.c -o /tmp/c_ceiling
    /tmp/c_ceiling nop 1.0 8192 256        # SECONDS CHUNK BATCH

``--json PATH`` writes the raw per-repetition figures (``"results"``: workload
-> contender -> ops, seconds, ops_per_s per repetition, including ``c-loop`` /
``c-pread``), the environment, the top-level ``"ratios"`` object (median ratio
per key, null if the baseline was unavailable), each ratio's bar and whether it
was met (``"bars"``), ``"skipped"`` (contender -> why it did not run) and the
remaining ratios against the C ceiling, which have no bar and are not in
``"ratios"``: ``"ceiling"``, key -> description, median, per-repetition samples
(or null and ``"skipped"``), e.g. ``nop32_batch_vs_c`` = subring batch API /
``c-loop`` and ``liburing_read_qd32_vs_c``.  ``config.c_ceiling`` records the
compile command, the compiler, and the setup flags of the C ring and of
KernelRing (or ``"error"``).
"""

from __future__ import annotations

import array
import collections
import concurrent.futures
import dataclasses
import gc
import json
import os
import shlex
import shutil
import statistics
import subprocess
import sys
import sysconfig
import tempfile
import time
from collections.abc import Callable
from typing import Any

import _common
import subring
from _common import BLOCK, BenchError

# PyPI liburing, imported by load_liburing() only after a child process has
# shown that it imports and runs a NOP here: its binary wheel may execute
# instructions this CPU lacks (SIGILL), and a crash on import would take this
# script down with it.
liburing: Any = None

LIBURING_PROBE = """
import liburing
ring, cqe = liburing.Ring(), liburing.Cqe()
liburing.io_uring_queue_init(8, ring)
try:
    liburing.io_uring_prep_nop(liburing.io_uring_get_sqe(ring))
    liburing.io_uring_submit_and_wait(ring, 1)
    n = sum(1 for _ in liburing.CqeIter(ring, cqe))
    liburing.io_uring_cq_advance(ring, n)
    assert n == 1, n
finally:
    liburing.io_uring_queue_exit(ring)
"""


def load_liburing() -> str | None:
    """Probe liburing in a child process, then import it here; return None,
    or why its rows are skipped."""
    global liburing
    why = _common.probe_baseline("liburing", LIBURING_PROBE)
    if why is not None:
        return why
    try:
        import liburing as mod  # type: ignore[import-untyped]
    except Exception as e:  # noqa: BLE001 -- it imported in the child, not here
        return f"liburing is not importable: {type(e).__name__}: {e}"
    liburing = mod
    return None

QD = 32
RING_ENTRIES = 256
THREADS = 8

# ratio key -> (description, bar, (workload, subring contender), (workload, baseline))
RATIOS: dict[str, tuple[str, float, tuple[str, str], tuple[str, str]]] = {
    "nop256_vs_liburing": (
        "NOPs, batch 256: subring batch API vs liburing batch 256", 3.0,
        ("nop256", "subring-batch"), ("nop256", "liburing")),
    "nop1_vs_liburing": (
        "NOPs, batch 1: subring per-op API vs liburing batch 1", 1.0,
        ("nop1", "subring"), ("nop1", "liburing")),
    "read_qd32_vs_liburing": (
        "4 KiB reads QD32: subring per-op API vs liburing", 1.25,
        ("read_qd32", "subring"), ("read_qd32", "liburing")),
    "read_qd32_batch_vs_pread": (
        "4 KiB reads QD32: subring batch API vs os.pread loop", 1.2,
        ("read_qd32", "subring-batch"), ("read_qd32", "pread")),
    "read_qd32_vs_threadpool": (
        "4 KiB reads QD32: subring per-op API vs ThreadPoolExecutor(8) pread", 5.0,
        ("read_qd32", "subring"), ("read_qd32", "threadpool")),
    # against the C loop on subring's own ring core, same run: the share of
    # what this kernel allows that the Python layer keeps -- the figures that
    # hold on any CPU (liburing's wheel does not run everywhere)
    "nop256_vs_c": (
        "NOPs, batch 256: subring batch API / C loop", 0.8,
        ("nop256", "subring-batch"), ("nop256", "c-loop")),
    "nop1_vs_c": (
        "NOPs, batch 1: subring per-op API / C loop", 0.5,
        ("nop1", "subring"), ("nop1", "c-loop")),
    "read_qd32_vs_c": (
        "4 KiB reads QD32: subring per-op API / C loop", 0.8,
        ("read_qd32", "subring"), ("read_qd32", "c-loop")),
    "read_qd32_batch_vs_c": (
        "4 KiB reads QD32: subring batch API / C loop", 0.9,
        ("read_qd32", "subring-batch"), ("read_qd32", "c-loop")),
}


# informational, no bar, not in "ratios": the rest of the comparisons with the
# C program doing the same work with the same ring core
# key -> (description, (workload, contender), (workload, baseline))
CEILING: dict[str, tuple[str, tuple[str, str], tuple[str, str]]] = {
    "nop32_batch_vs_c": ("NOPs, batch 32: subring batch API / C loop",
                         ("nop32", "subring-batch"), ("nop32", "c-loop")),
    "liburing_nop1_vs_c": ("NOPs, batch 1: liburing / C loop",
                           ("nop1", "liburing"), ("nop1", "c-loop")),
    "liburing_nop256_vs_c": ("NOPs, batch 256: liburing / C loop",
                             ("nop256", "liburing"), ("nop256", "c-loop")),
    "liburing_read_qd32_vs_c": ("4 KiB reads QD32: liburing / C loop",
                                ("read_qd32", "liburing"), ("read_qd32", "c-loop")),
    "pread_vs_c_pread": ("4 KiB reads: os.pread loop / C pread loop",
                         ("read_qd32", "pread"), ("read_qd32", "c-pread")),
    "c_read_qd32_vs_c_pread": ("4 KiB reads: C io_uring QD32 / C pread loop (in C)",
                               ("read_qd32", "c-loop"), ("read_qd32", "c-pread")),
}

C_SOURCE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "c_ceiling.c")
C_CORE = os.path.join(os.path.dirname(C_SOURCE), os.pardir, "src", "subring", "_core")
C_CONTENDERS = ("c-loop", "c-pread")
ONLY_IN = {"c-pread": "read_qd32"}     # skipped rows print only where they would be


@dataclasses.dataclass(frozen=True)
class Mode:
    reps: int
    slice_s: float        # time per contender per repetition
    file_size: int
    n_offsets: int        # power of two
    cached_file: bool     # use/keep $TMPDIR/subring-bench-256M.dat


MODES = {
    "full": Mode(reps=15, slice_s=0.8, file_size=256 << 20, n_offsets=1 << 16, cached_file=True),
    "quick": Mode(reps=5, slice_s=0.5, file_size=256 << 20, n_offsets=1 << 16, cached_file=True),
    "smoke": Mode(reps=2, slice_s=0.01, file_size=4 << 20, n_offsets=1 << 10, cached_file=False),
}

# ops per timed chunk (a multiple of the batch size / queue depth)
CHUNK = {"nop1": 2048, "nop32": 32 * 128, "nop256": 256 * 32, "read_qd32": QD * 64}


# --------------------------------------------------------------------------
# the data file
# --------------------------------------------------------------------------

def make_offsets(n: int, file_size: int) -> array.array:
    return array.array("q", _common.make_offsets(n, file_size))


# --------------------------------------------------------------------------
# contenders
#
# A contender has a step(n) that performs n ops (n a multiple of its batch
# size / queue depth) and returns how many completed; only step() is timed.
# verify() runs after each step, untimed.
# --------------------------------------------------------------------------

class Contender:
    name = "?"

    def step(self, n: int) -> int:
        raise NotImplementedError

    def verify(self) -> None:
        pass

    def warm_up(self, chunk: int) -> None:
        self.step(chunk)
        self.verify()

    def measure_slice(self, chunk: int, slice_s: float) -> tuple[int, float]:
        return run_slice(self, chunk, slice_s)


class Ctx:
    """Shared state: the rings, the file, the offsets."""

    def __init__(self, path: str, offsets: array.array, use_liburing: bool) -> None:
        self.fd = os.open(path, os.O_RDONLY)
        self.offsets = offsets                         # array('q') for the batch API
        self.offsets_list = offsets.tolist()           # Python ints for per-op APIs
        self.mask = len(offsets) - 1
        self.ring = subring.KernelRing(RING_ENTRIES)
        self.lring: Any = None
        self.lcqe: Any = None
        self.liburing_error: str | None = None
        if use_liburing:
            try:
                lring = liburing.Ring()
                liburing.io_uring_queue_init(RING_ENTRIES, lring)
            except Exception as e:  # noqa: BLE001 -- reported, rows skipped
                self.liburing_error = f"liburing ring setup failed: {type(e).__name__}: {e}"
            else:
                self.lring, self.lcqe = lring, liburing.Cqe()
        self.pool = concurrent.futures.ThreadPoolExecutor(THREADS)

    def close(self) -> None:
        self.pool.shutdown(wait=True)
        if self.lring is not None:
            liburing.io_uring_queue_exit(self.lring)
            self.lring = None
        self.ring.close()
        os.close(self.fd)

    def check_block(self, buf: Any, offset: int, who: str) -> None:
        if bytes(buf) != os.pread(self.fd, BLOCK, offset):
            raise BenchError(f"{who}: buffer does not hold the file's block at offset {offset}")


# ---- NOPs ----------------------------------------------------------------

class SubringNop1(Contender):
    """Per-op API, one NOP per submit_and_wait."""
    name = "subring"

    def __init__(self, ctx: Ctx) -> None:
        self.ring = ctx.ring

    def step(self, n: int) -> int:
        prep_nop, submit_and_wait, reap = (
            self.ring.prep_nop, self.ring.submit_and_wait, self.ring.reap)
        done = 0
        for _ in range(n):
            prep_nop()
            submit_and_wait(1)
            done += len(reap())
        if done != n or self.ring.inflight:
            raise BenchError(f"subring nop1: {done} of {n} NOPs completed")
        return done


class SubringNopBatch(Contender):
    """Batch API: prep_nops(b) + submit_and_wait(b) + reap_into()."""
    name = "subring-batch"

    def __init__(self, ctx: Ctx, batch: int) -> None:
        self.ring, self.batch = ctx.ring, batch
        self.ud = array.array("Q", bytes(8 * batch))
        self.res = array.array("i", bytes(4 * batch))

    def step(self, n: int) -> int:
        b, ud, res = self.batch, self.ud, self.res
        prep_nops, submit_and_wait, reap_into = (
            self.ring.prep_nops, self.ring.submit_and_wait, self.ring.reap_into)
        done = 0
        while done < n:
            prep_nops(b, done)
            submit_and_wait(b)
            if reap_into(ud, res) != b:
                raise BenchError(f"subring nop{b}: short batch")
            done += b
        # last batch: user_data are base .. base+b-1, every res is 0
        if sum(ud) != b * (n - b) + b * (b - 1) // 2 or res.count(0) != b:
            raise BenchError(f"subring nop{b}: wrong user_data/res")
        return done


class LiburingNop(Contender):
    name = "liburing"

    def __init__(self, ctx: Ctx, batch: int) -> None:
        self.ring, self.cqe, self.batch = ctx.lring, ctx.lcqe, batch

    def step(self, n: int) -> int:
        L, ring, cqe, b = liburing, self.ring, self.cqe, self.batch
        get_sqe, prep_nop = L.io_uring_get_sqe, L.io_uring_prep_nop
        set_data64, submit_and_wait = L.io_uring_sqe_set_data64, L.io_uring_submit_and_wait
        CqeIter, cq_advance = L.CqeIter, L.io_uring_cq_advance
        done = 0
        while done < n:
            for k in range(b):
                sqe = get_sqe(ring)
                prep_nop(sqe)
                set_data64(sqe, k)
            submit_and_wait(ring, b)
            got = 0
            for _ in CqeIter(ring, cqe):
                got += 1
            cq_advance(ring, got)
            if got != b:
                raise BenchError(f"liburing nop{b}: {got} of {b} completions")
            done += got
        return done


# ---- reads, QD32 --------------------------------------------------------

class _PerOpReads(Contender):
    """Shared bookkeeping: 32 buffers; which offset index each last read."""

    def __init__(self, ctx: Ctx) -> None:
        self.ctx = ctx
        self.bufs = [bytearray(BLOCK) for _ in range(QD)]
        self.slot_idx = [0] * QD
        self.pos = 0           # next index into the offsets (wraps via mask)

    def verify(self) -> None:
        offs, mask = self.ctx.offsets_list, self.ctx.mask
        for s, buf in enumerate(self.bufs):
            self.ctx.check_block(buf, offs[self.slot_idx[s] & mask], self.name)
            buf[:] = bytes(BLOCK)  # the next step must fill it again


class SubringReads(_PerOpReads):
    """Per-op API; user_data is the buffer's slot; a slot is refilled as soon
    as its read completes."""
    name = "subring"

    def step(self, n: int) -> int:
        ring, fd, bufs, slot_idx = self.ctx.ring, self.ctx.fd, self.bufs, self.slot_idx
        offs, mask, i = self.ctx.offsets_list, self.ctx.mask, self.pos
        prep_read, submit_and_wait, reap = ring.prep_read, ring.submit_and_wait, ring.reap
        for s in range(QD):
            prep_read(fd, bufs[s], offs[i & mask], s)
            slot_idx[s] = i
            i += 1
        issued, done = QD, 0
        while done < n:
            submit_and_wait(1)
            for c in reap():
                if c.res != BLOCK:
                    raise BenchError(f"subring read: res {c.res}")
                done += 1
                if issued < n:
                    s = c.user_data
                    prep_read(fd, bufs[s], offs[i & mask], s)
                    slot_idx[s] = i
                    i += 1
                    issued += 1
        self.pos = i
        return done


class LiburingReads(_PerOpReads):
    name = "liburing"

    def step(self, n: int) -> int:
        L = liburing
        ring, cqe = self.ctx.lring, self.ctx.lcqe
        fd, bufs, slot_idx = self.ctx.fd, self.bufs, self.slot_idx
        offs, mask, i = self.ctx.offsets_list, self.ctx.mask, self.pos
        get_sqe, prep_read = L.io_uring_get_sqe, L.io_uring_prep_read
        set_data64, submit_and_wait = L.io_uring_sqe_set_data64, L.io_uring_submit_and_wait
        CqeIter, cq_advance = L.CqeIter, L.io_uring_cq_advance
        for s in range(QD):
            sqe = get_sqe(ring)
            prep_read(sqe, fd, bufs[s], offs[i & mask])
            set_data64(sqe, s)
            slot_idx[s] = i
            i += 1
        issued, done = QD, 0
        while done < n:
            submit_and_wait(ring, 1)
            got = 0
            for _ in CqeIter(ring, cqe):
                e = cqe[0]
                if e.res != BLOCK:
                    raise BenchError(f"liburing read: res {e.res}")
                got += 1
                if issued < n:
                    s = e.user_data
                    sqe = get_sqe(ring)
                    prep_read(sqe, fd, bufs[s], offs[i & mask])
                    set_data64(sqe, s)
                    slot_idx[s] = i
                    i += 1
                    issued += 1
            cq_advance(ring, got)
            done += got
        self.pos = i
        return done


class SubringReadsBatch(Contender):
    """Batch API: 32 reads into one 128 KiB buffer per prep_reads call."""
    name = "subring-batch"

    def __init__(self, ctx: Ctx) -> None:
        self.ctx = ctx
        self.big = bytearray(QD * BLOCK)
        self.offs_view = memoryview(ctx.offsets)   # format 'q', sliced per batch
        self.ud = array.array("Q", bytes(8 * QD))
        self.res = array.array("i", bytes(4 * QD))
        self.pos = 0
        self.last = 0

    def step(self, n: int) -> int:
        ring, fd, big, ud, res = self.ctx.ring, self.ctx.fd, self.big, self.ud, self.res
        offs, noffs, i = self.offs_view, len(self.offs_view), self.pos
        prep_reads, submit_and_wait = ring.prep_reads, ring.submit_and_wait
        reap_into = ring.reap_into
        done = 0
        while done < n:
            prep_reads(fd, big, BLOCK, offs[i:i + QD])
            submit_and_wait(QD)
            got = reap_into(ud, res)
            if got != QD or res.count(BLOCK) != QD:
                raise BenchError(f"subring batch read: {got} completions, res {res.tolist()}")
            self.last = i
            i = (i + QD) % noffs      # len(offsets) is a multiple of QD
            done += got
        self.pos = i
        return done

    def verify(self) -> None:
        for k in range(QD):
            self.ctx.check_block(memoryview(self.big)[k * BLOCK:(k + 1) * BLOCK],
                                 self.ctx.offsets[self.last + k], self.name)
        self.big[:] = bytes(len(self.big))


class PreadLoop(Contender):
    name = "pread"

    def __init__(self, ctx: Ctx) -> None:
        self.ctx = ctx
        self.pos = 0

    def step(self, n: int) -> int:
        fd, offs, mask, i = self.ctx.fd, self.ctx.offsets_list, self.ctx.mask, self.pos
        pread = os.pread
        for _ in range(n):
            if len(pread(fd, BLOCK, offs[i & mask])) != BLOCK:
                raise BenchError("pread: short read")
            i += 1
        self.pos = i
        return n


class ThreadPoolReads(Contender):
    """os.pread in ThreadPoolExecutor(8), a FIFO window of 32 futures."""
    name = "threadpool"

    def __init__(self, ctx: Ctx) -> None:
        self.ctx = ctx
        self.pos = 0

    def step(self, n: int) -> int:
        fd, offs, mask, i = self.ctx.fd, self.ctx.offsets_list, self.ctx.mask, self.pos
        submit, pread = self.ctx.pool.submit, os.pread
        window: collections.deque = collections.deque()
        for _ in range(QD):
            window.append(submit(pread, fd, BLOCK, offs[i & mask]))
            i += 1
        issued, done = QD, 0
        while window:
            if len(window.popleft().result()) != BLOCK:
                raise BenchError("threadpool pread: short read")
            done += 1
            if issued < n:
                window.append(submit(pread, fd, BLOCK, offs[i & mask]))
                i += 1
                issued += 1
        self.pos = i
        return done


# ---- the C ceiling -----------------------------------------------------

def compile_c_ceiling(tmpdir: str, cc_arg: str | None) -> tuple[str | None, dict[str, Any]]:
    """Build bench/c_ceiling.c with subring's own src/subring/_core/kernel.c.

    Returns (executable or None, info); info holds the command and compiler,
    or "error": why there is no C ceiling (then its rows are left out)."""
    cc = cc_arg or sysconfig.get_config_var("CC") or "gcc"
    argv = shlex.split(cc)
    if not cc_arg and (not argv or shutil.which(argv[0]) is None):
        argv = ["gcc"]
    exe, info = _common.compile_c(
        argv, [C_SOURCE, os.path.normpath(os.path.join(C_CORE, "kernel.c"))],
        os.path.join(tmpdir, "c_ceiling"), flags=["-I", os.path.normpath(C_CORE)])
    if exe is None:
        return None, info
    # can it set up a ring here at all?  (a failure later is a BenchError)
    probe = subprocess.run([exe, "nop", "0", "256", "256"], check=False, capture_output=True,
                           text=True, timeout=60)
    if probe.returncode != 0:
        info["error"] = f"the C ceiling does not run here: {probe.stderr.strip()}"
        return None, info
    return exe, info


class CCeiling(Contender):
    """bench/c_ceiling.c in a child process, one per slice.  The program
    times its own chunks (same chunk size, same slice length, one untimed
    warm-up chunk) and checks its results; process start-up is not timed."""

    def __init__(self, name: str, exe: str, kind: str, *args: str) -> None:
        self.name, self.exe, self.kind, self.args = name, exe, kind, args
        self.setup_flags: int | None = None

    def warm_up(self, chunk: int) -> None:
        pass                      # each run warms up itself

    def measure_slice(self, chunk: int, slice_s: float) -> tuple[int, float]:
        cmd = [self.exe, self.kind, repr(slice_s), str(chunk), *self.args]
        try:
            proc = subprocess.run(cmd, check=False, capture_output=True, text=True,
                                  timeout=30 + 20 * slice_s)
        except subprocess.TimeoutExpired as e:
            raise BenchError(f"{self.name}: {shlex.join(cmd)} timed out") from e
        if proc.returncode != 0:
            raise BenchError(f"{self.name}: {shlex.join(cmd)} exited {proc.returncode}: "
                             f"{proc.stderr.strip()}")
        doc = json.loads(proc.stdout)
        self.setup_flags = doc["setup_flags"]
        return doc["ops"], doc["seconds"]


def build_workloads(ctx: Ctx, use_liburing: bool, c_exe: str | None = None,
                    path: str = "", offsets_path: str = "") -> dict[str, list[Contender]]:
    lib = use_liburing

    def c_nop(b: int) -> list[Contender]:
        return [CCeiling("c-loop", c_exe, "nop", str(b))] if c_exe else []

    c_reads: list[Contender] = [
        CCeiling("c-loop", c_exe, "read", path, offsets_path, str(BLOCK), str(QD)),
        CCeiling("c-pread", c_exe, "pread", path, offsets_path, str(BLOCK)),
    ] if c_exe else []
    return {
        "nop1": [SubringNop1(ctx)] + ([LiburingNop(ctx, 1)] if lib else []) + c_nop(1),
        "nop32": [SubringNopBatch(ctx, 32)] + ([LiburingNop(ctx, 32)] if lib else []) + c_nop(32),
        "nop256": ([SubringNopBatch(ctx, 256)] + ([LiburingNop(ctx, 256)] if lib else [])
                   + c_nop(256)),
        "read_qd32": ([SubringReads(ctx), SubringReadsBatch(ctx)]
                      + ([LiburingReads(ctx)] if lib else [])
                      + [PreadLoop(ctx), ThreadPoolReads(ctx)] + c_reads),
    }


# --------------------------------------------------------------------------
# measuring
# --------------------------------------------------------------------------

def run_slice(c: Contender, chunk: int, slice_s: float) -> tuple[int, float]:
    """Run chunks until slice_s of timed work; return (ops, timed seconds)."""
    ops, elapsed = 0, 0.0
    while elapsed < slice_s:
        t0 = time.perf_counter()
        ops += c.step(chunk)
        elapsed += time.perf_counter() - t0
        c.verify()
    return ops, elapsed


def measure(workloads: dict[str, list[Contender]], mode: Mode,
            log: Callable[[str], None]) -> dict[str, dict[str, dict[str, list]]]:
    raw: dict[str, dict[str, dict[str, list]]] = {
        w: {c.name: {"ops": [], "seconds": [], "ops_per_s": []} for c in cs}
        for w, cs in workloads.items()}
    # warm-up: one chunk each (thread pool threads, first-touch, caches)
    for w, cs in workloads.items():
        for c in cs:
            c.warm_up(CHUNK[w])
    for rep in range(mode.reps):
        t_rep = time.perf_counter()
        for w, cs in workloads.items():
            k = rep % len(cs)
            for c in cs[k:] + cs[:k]:          # rotate the order every repetition
                gc.collect()
                ops, secs = c.measure_slice(CHUNK[w], mode.slice_s)
                r = raw[w][c.name]
                r["ops"].append(ops)
                r["seconds"].append(secs)
                r["ops_per_s"].append(ops / secs)
        log(f"  repetition {rep + 1}/{mode.reps} done ({time.perf_counter() - t_rep:.1f} s)")
    return raw


def compute_ratios(raw: dict, unavailable: dict[str, str]) -> tuple[dict, dict, dict]:
    ratios: dict[str, float | None] = {}
    samples: dict[str, list[float]] = {}
    bars: dict[str, dict[str, Any]] = {}
    for key, (desc, bar, (wa, ca), (wb, cb)) in RATIOS.items():
        a = raw.get(wa, {}).get(ca)
        b = raw.get(wb, {}).get(cb)
        if a is None or b is None:
            ratios[key] = None
            samples[key] = []
            met = None
            reason = unavailable.get(cb, f"{cb} did not run")
        else:
            samples[key] = [x / y for x, y in zip(a["ops_per_s"], b["ops_per_s"], strict=True)]
            median = statistics.median(samples[key])
            ratios[key] = median
            met = median >= bar
            reason = None
        bars[key] = {"bar": bar, "met": met, "description": desc}
        if reason:
            bars[key]["skipped"] = reason
    return ratios, samples, bars


def compute_ceiling(raw: dict, unavailable: dict[str, str]) -> dict[str, dict[str, Any]]:
    """The informational ratios against the C program (median of per-repetition
    ratios, like the bars; null with "skipped" when a side did not run)."""
    out: dict[str, dict[str, Any]] = {}
    for key, (desc, (wa, ca), (wb, cb)) in CEILING.items():
        a = raw.get(wa, {}).get(ca)
        b = raw.get(wb, {}).get(cb)
        if a is None or b is None:
            missing = cb if b is None else ca
            out[key] = {"description": desc, "median": None, "samples": [],
                        "skipped": unavailable.get(missing, f"{missing} did not run")}
            continue
        s = [x / y for x, y in zip(a["ops_per_s"], b["ops_per_s"], strict=True)]
        out[key] = {"description": desc, "median": statistics.median(s), "samples": s}
    return out


# --------------------------------------------------------------------------
# reporting
# --------------------------------------------------------------------------

def fmt_rate(x: float) -> str:
    return f"{x / 1e6:8.3f} M/s" if x >= 1e6 else f"{x / 1e3:8.1f} k/s"


def print_report(raw: dict, ratios: dict, samples: dict, bars: dict, ceiling: dict,
                 unavailable: dict[str, str]) -> None:
    print()
    print(f"{'workload':<10} {'contender':<14} {'median':>12} {'ns/op':>9} "
          f"{'min':>12} {'max':>12}")
    print("-" * 74)
    for w, cs in raw.items():
        for name, r in cs.items():
            v = r["ops_per_s"]
            med = statistics.median(v)
            print(f"{w:<10} {name:<14} {fmt_rate(med):>12} {1e9 / med:9.0f} "
                  f"{fmt_rate(min(v)):>12} {fmt_rate(max(v)):>12}")
        for name, why in unavailable.items():
            if ONLY_IN.get(name, w) == w:
                print(f"{w:<10} {name:<14} {'skipped':>12}  ({why})")
    print()
    _common.print_ratio_table(ratios, samples, bars)
    print()
    _common.print_info_table(ceiling, title="informational (vs C)")
    print()


def environment() -> dict[str, Any]:
    return _common.environment({
        "liburing_version": _common.package_version("liburing"),
    })


# --------------------------------------------------------------------------

def main(argv: list[str] | None = None) -> int:
    t_start = time.perf_counter()
    p = _common.make_parser(__doc__)
    _common.add_reps_slice(p)
    p.add_argument("--skip-liburing", action="store_true",
                   help="behave as if liburing were not installed")
    p.add_argument("--cc", metavar="CC",
                   help="C compiler for the C ceiling (default: sysconfig's CC, else gcc)")
    args = p.parse_args(argv)

    mode_name, mode = _common.select_mode(args, MODES)
    log = _common.log

    unavailable: dict[str, str] = {}
    if args.skip_liburing:
        unavailable["liburing"] = "skipped (--skip-liburing)"
    else:
        why = load_liburing()
        if why is not None:
            unavailable["liburing"] = why
    use_liburing = "liburing" not in unavailable
    if not use_liburing:
        log(f"liburing rows and ratios skipped: {unavailable['liburing']}")

    env = environment()
    log(f"bench/kernel.py mode={mode_name} reps={mode.reps} slice={mode.slice_s}s  "
        f"Linux {env['kernel_release']}, Python {env['python_version']}, "
        f"{env['cpu_count']} CPUs")

    with tempfile.TemporaryDirectory(prefix="subring-bench-") as tmpdir:
        path, created, file_s = _common.prepare_data_file(mode, tmpdir, _common.size_ok, log)
        offsets = make_offsets(mode.n_offsets, mode.file_size)

        t0 = time.perf_counter()
        c_exe, c_info = compile_c_ceiling(tmpdir, args.cc)
        if c_exe is None:
            for name in C_CONTENDERS:
                unavailable[name] = c_info["error"]
            log(f"C ceiling rows skipped: {c_info['error']}")
        else:
            log(f"C ceiling built in {time.perf_counter() - t0:.1f} s: {c_info['command']}")
        offsets_path = os.path.join(tmpdir, "offsets.bin")
        with open(offsets_path, "wb") as f:
            offsets.tofile(f)                  # native int64, what c_ceiling.c reads

        ctx = Ctx(path, offsets, use_liburing)
        try:
            if ctx.liburing_error:
                unavailable["liburing"] = ctx.liburing_error
                use_liburing = False
                log(f"liburing rows and ratios skipped: {ctx.liburing_error}")
            c_info["subring_setup_flags"] = ctx.ring.setup_flags
            workloads = build_workloads(ctx, use_liburing, c_exe, path, offsets_path)
            raw = measure(workloads, mode, log)
        finally:
            ctx.close()
        c_flags = {c.setup_flags for cs in workloads.values() for c in cs
                   if isinstance(c, CCeiling) and c.kind != "pread"}
        if c_flags:
            c_info["setup_flags"] = c_flags.pop() if len(c_flags) == 1 else sorted(c_flags)
            if c_info["setup_flags"] != c_info["subring_setup_flags"]:
                log(f"note: the C ring got setup flags {c_info['setup_flags']!r}, "
                    f"KernelRing {c_info['subring_setup_flags']:#x}")

    ratios, samples, bars = compute_ratios(raw, unavailable)
    ceiling = compute_ceiling(raw, unavailable)
    print_report(raw, ratios, samples, bars, ceiling, unavailable)
    wall = time.perf_counter() - t_start
    print(f"total wall time {wall:.1f} s")

    if args.json:
        for w in raw.values():
            for r in w.values():
                r["median_ops_per_s"] = statistics.median(r["ops_per_s"])
        doc = {
            "benchmark": "kernel",
            "mode": mode_name,
            "env": env,
            "config": {
                "reps": mode.reps, "slice_s": mode.slice_s, "ring_entries": RING_ENTRIES,
                "block_size": BLOCK, "queue_depth": QD, "threads": THREADS,
                "data_file": path, "data_file_size": mode.file_size,
                "data_file_created": created, "data_file_seconds": file_s,
                "n_offsets": mode.n_offsets, "chunk_ops": CHUNK,
                "c_ceiling": c_info,
            },
            "results": raw,
            "skipped": unavailable,
            "ratios": ratios,
            "ratio_samples": samples,
            "bars": bars,
            "ceiling": ceiling,
            "wall_time_s": wall,
        }
        _common.write_json(args.json, doc)
    return 0


if __name__ == "__main__":
    sys.exit(main())
