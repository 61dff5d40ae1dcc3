#!/usr/bin/env python3
"""Benchmark: subring.aio (asyncio on rings) against the usual asyncio ways.

Workloads
---------
``aread32`` / ``aread256``
    4 KiB reads at random 4 KiB-aligned offsets of a page-cached file of
    256 MiB, by 32 (resp. 256) asyncio tasks gathered in one
    ``asyncio.gather``.  Each task loops: await one read, check it, next
    offset.  Counted: reads completed per second (all tasks together).

``acall1`` / ``acall32``
    Awaited round trips to another process carrying a 64-byte payload that
    comes back unchanged (echo), by 1 (resp. 32) tasks, each awaiting one
    call at a time.  Counted: round trips per second.

``lines``
    Line iteration over a text file of 50 MiB (about 690 k lines of 20-130
    ASCII characters; ``--smoke``: 2 MiB): ``async for line in f`` on
    ``subring.aio.open(path)`` against the built-in ``for line in
    open(path)``, synchronously, in the same repetition.  Counted: lines per
    second; every contender must see the same number of lines and the same
    total length.  aiofiles iterates through its thread pool at ~10 k
    lines/s, so it iterates for one time slice only (counted lines / time).

``max_stall_ms``
    The worst event-loop stall during ``await f.read(100 MiB)`` (``--smoke``:
    the whole 4 MiB data file) of the page-cached data file: a ticker task
    resumes on every loop iteration (``await asyncio.sleep(0)``) and records
    the longest gap between two resumptions in wall-clock time (what a
    user of the loop sees; on a busy machine it includes waiting for a CPU)
    and, beside it, in CPU time of the loop thread (``max_stall_cpu_ms``:
    what a callback holding the loop costs, free of scheduling delays).
    Reported beside the ratios: the median over repetitions of each
    repetition's worst wall-clock gap (lower is better, bar 5 ms); the MB/s of the same read timed alone (no ticker) and
    of the built-in ``f.read()`` of the same bytes are in ``"extra"``.

Contenders
----------
``subring``        reads: ``await subring.aio.get_ring().readinto(fd, buf, off)``
                   (the loop's default ring; each task reads into its own
                   preallocated 4 KiB bytearray).
                   calls: ``await AsyncRing(subring.connect(path)).call(echo,
                   payload)`` against a ``subring.Subsystem`` process whose
                   ``echo`` op returns its payload (server mode: default
                   ``hybrid``; see ``--server-mode``).
``subring-read``   (reads only, informational) ``await ring.read(fd, 4096,
                   off)``, which allocates and returns ``bytes`` like the
                   baselines do.
``executor``       ``await loop.run_in_executor(None, os.pread, fd, 4096, off)``
                   -- the loop's default ThreadPoolExecutor, untouched
                   (``min(32, cpus + 4)`` threads).
``aiofiles``       each task has its own ``aiofiles.open(path, "rb")`` file
                   object (opened before timing) and does ``await f.seek(off);
                   data = await f.read(4096)`` -- aiofiles' way of reading at
                   an offset (two trips through the default executor).
``pipe``           (calls) ``multiprocessing.Pipe()``; a server process loops
                   ``conn.send_bytes(conn.recv_bytes())``.  The client is
                   driven by ``loop.add_reader(conn.fileno(), ...)``: a call
                   prefixes the payload with an 8-byte request id,
                   ``send_bytes`` it, and awaits a future; the reader
                   callback ``recv_bytes`` every reply already buffered
                   (checked with a persistent ``select.poll`` object, which
                   is ~6x cheaper than ``conn.poll()``) and resolves the
                   future of its id.  So with 32 tasks, 32 requests are
                   outstanding on the pipe.

Fairness
--------
* Every contender reads the same precomputed offsets (task k of n starts at
  offset index k * len/n), on the same event loop, in the same process.
* Every read is checked inside the timed loop: length 4096 and the block's
  first 8 bytes (each 4 KiB block of the data file holds its own index), so
  a library that skips the read or leaves a stale buffer cannot look fast;
  after every slice each task's last block is compared in full with
  ``os.pread`` (untimed).  Every echo reply is compared with its payload.
* The machine is noisy, so each *repetition* runs every contender of every
  workload back to back (the order rotates every repetition), each for a
  fixed time slice.  A ratio is subring's rate divided by the baseline's rate
  *in the same repetition*; the reported ratio is the median of the
  per-repetition ratios (higher is better for subring).  A short untimed
  warm-up slice per contender precedes the first repetition (thread pool
  threads, subsystem attach, page cache); ``gc.collect()`` runs before
  every slice.
* Client CPU time (``time.process_time``, executor threads included) and,
  for the call workloads, the server process' CPU time (from
  ``/proc/PID/stat``, 10 ms ticks) are recorded per slice, and so is the
  rate per CPU-second (client + server).  On a busy machine the wall-clock
  rates favour the many-threaded baselines (the scheduler shares CPUs per
  thread, and the event loop is one thread), so the JSON's ``"extra"`` also
  holds every bar's ratio per CPU-second (``*_per_cpu``, informational).

The data file is ``$TMPDIR/subring-bench-256M.dat`` (shared with
``bench/kernel.py``: same name, same layout); it is reused if it exists with
the right size and layout, else created, and read through before measuring so
that it sits in the page cache.  ``--smoke`` uses a 4 MiB file in a temporary
directory instead (and removes it).  Server processes are started with the
``spawn`` method, stopped at the end (terminate, then kill), and also stop by
themselves if this process disappears.

Reproduce
---------
::

    pip install -e '.[dev,bench]'                # aiofiles, uvloop
    python bench/aio.py                          # full run, about 2 minutes
    python bench/aio.py --quick                  # < 60 s
    python bench/aio.py --quick --json /tmp/aio.json
    python bench/aio.py --quick --uvloop         # everything on uvloop
    python bench/aio.py --smoke --json /tmp/a.json   # seconds; only checks it runs

``--json PATH`` writes the raw per-repetition figures, the environment, the
top-level ``"ratios"`` object (median ratio per key), each ratio's bar and
whether it was met, and informational figures (``"extra"``: the 1-task call
rates, the 256-task aiofiles rate, ...).
"""

from __future__ import annotations

import asyncio
import dataclasses
import faulthandler
import gc
import multiprocessing as mp
import os
import select
import statistics
import struct
import sys
import tempfile
import threading
import time
from collections.abc import Awaitable, Callable
from typing import Any

import _common
from _common import BLOCK, BenchError

import subring
import subring.aio

try:
    import aiofiles  # type: ignore[import-untyped]
    AIOFILES_ERROR: str | None = None
except Exception as _e:  # noqa: BLE001
    aiofiles = None  # type: ignore[assignment]
    AIOFILES_ERROR = f"aiofiles is not importable: {type(_e).__name__}: {_e}"

PAYLOAD = 64
SLICE_TIMEOUT_S = 30.0          # a slice that overruns its length by this much fails

# ratio key -> (description, bar, (workload, subring contender), (workload, baseline))
RATIOS: dict[str, tuple[str, float, tuple[str, str], tuple[str, str]]] = {
    "aread32_vs_executor": (
        "reads/s, 32 tasks: subring readinto vs run_in_executor(os.pread)", 6.0,
        ("aread32", "subring"), ("aread32", "executor")),
    "aread32_vs_aiofiles": (
        "reads/s, 32 tasks: subring readinto vs aiofiles seek+read", 10.0,
        ("aread32", "subring"), ("aread32", "aiofiles")),
    "aread256_vs_executor": (
        "reads/s, 256 tasks: subring readinto vs run_in_executor(os.pread)", 6.0,
        ("aread256", "subring"), ("aread256", "executor")),
    "acall32_vs_pipe": (
        "calls/s, 32 tasks: subring subsystem call vs Pipe + add_reader", 3.0,
        ("acall32", "subring"), ("acall32", "pipe")),
}

# informational ratios (no bar; not in "ratios")
EXTRA_RATIOS: dict[str, tuple[str, tuple[str, str], tuple[str, str]]] = {
    "acall1_vs_pipe": ("calls/s, 1 task: subring vs Pipe + add_reader",
                       ("acall1", "subring"), ("acall1", "pipe")),
    "aread256_vs_aiofiles": ("reads/s, 256 tasks: subring readinto vs aiofiles",
                             ("aread256", "subring"), ("aread256", "aiofiles")),
    "aread32_read_vs_executor": ("reads/s, 32 tasks: subring read() (bytes) vs executor",
                                 ("aread32", "subring-read"), ("aread32", "executor")),
    "aread256_read_vs_executor": ("reads/s, 256 tasks: subring read() (bytes) vs executor",
                                  ("aread256", "subring-read"), ("aread256", "executor")),
}

WORKLOAD_TASKS = {"aread32": 32, "aread256": 256, "acall1": 1, "acall32": 32}

# line iteration and loop stalls: key -> (description, bar)
FILE_RATIOS: dict[str, tuple[str, float]] = {
    "lines_vs_builtin": ("lines/s: subring async for vs built-in open() for (sync)", 0.5),
    "lines_vs_aiofiles": ("lines/s: subring async for vs aiofiles async for", 20.0),
}
STALL_BAR_MS = 5.0


@dataclasses.dataclass(frozen=True)
class Mode:
    reps: int
    slice_s: float        # timed seconds per contender per repetition
    warmup_s: float
    file_size: int
    n_offsets: int        # power of two
    cached_file: bool     # use/keep $TMPDIR/subring-bench-256M.dat
    text_size: int = 50 << 20      # the line-iteration text file
    stall_read: int = 100 << 20    # bytes of the read() watched for loop stalls


MODES = {
    "full": Mode(reps=11, slice_s=0.8, warmup_s=0.2, file_size=256 << 20,
                 n_offsets=1 << 16, cached_file=True),
    "quick": Mode(reps=5, slice_s=0.5, warmup_s=0.1, file_size=256 << 20,
                  n_offsets=1 << 16, cached_file=True),
    "smoke": Mode(reps=2, slice_s=0.02, warmup_s=0.01, file_size=4 << 20,
                  n_offsets=1 << 10, cached_file=False, text_size=2 << 20,
                  stall_read=4 << 20),
}


# --------------------------------------------------------------------------
# server processes (spawned; they must be importable from this file)
# --------------------------------------------------------------------------

def _orphan_watch(stop: Callable[[], None]) -> None:
    """Call stop() when our parent (the benchmark) goes away."""
    parent = os.getppid()

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(0.25)
        stop()

    threading.Thread(target=watch, daemon=True).start()


class EchoSubsystem(subring.Subsystem):
    name = "bench-echo"

    @subring.op
    def echo(self, req: Any) -> Any:
        """Return the payload unchanged."""
        return req.data          # bytes-like: copied into the result slot


def serve_subsystem(path: str, mode: str) -> None:
    s = EchoSubsystem()
    _orphan_watch(s.stop)
    s.serve(path, mode=mode)


def serve_pipe(conn: Any) -> None:
    _orphan_watch(lambda: os._exit(0))
    recv, send = conn.recv_bytes, conn.send_bytes
    try:
        while True:
            send(recv())
    except (EOFError, OSError):
        pass


def proc_cpu_s(pid: int) -> float | None:
    """utime + stime of a process, in seconds (10 ms resolution)."""
    try:
        return _common.cpu_seconds(f"/proc/{pid}/stat")
    except (OSError, IndexError, ValueError):
        return None


# --------------------------------------------------------------------------
# the Pipe + add_reader client
# --------------------------------------------------------------------------

class PipeClient:
    """Multiplexes concurrent calls over one multiprocessing Connection:
    each request carries an 8-byte id; replies resolve futures by id."""

    def __init__(self, conn: Any, loop: asyncio.AbstractEventLoop) -> None:
        self.conn = conn
        self.loop = loop
        self.pending: dict[int, asyncio.Future[bytes]] = {}
        self.next_id = 0
        self.fd = conn.fileno()
        self.poller = select.poll()
        self.poller.register(self.fd, select.POLLIN)
        loop.add_reader(self.fd, self._on_readable)

    def _on_readable(self) -> None:
        # Drain every reply already buffered; a persistent select.poll object
        # checks for more (Connection.poll() builds a selector per call and
        # costs ~6 us -- more than the recv itself).
        recv, poll, pending = self.conn.recv_bytes, self.poller.poll, self.pending
        try:
            while True:
                msg = recv()
                fut = pending.pop(int.from_bytes(msg[:8], "little"), None)
                if fut is not None and not fut.done():
                    fut.set_result(msg)
                if not poll(0):
                    break
        except (EOFError, OSError) as e:
            self.loop.remove_reader(self.fd)
            for fut in pending.values():
                if not fut.done():
                    fut.set_exception(ConnectionResetError(f"pipe server gone: {e!r}"))
            pending.clear()

    async def call(self, payload: bytes) -> bytes:
        rid = self.next_id
        self.next_id = rid + 1
        fut = self.loop.create_future()
        self.pending[rid] = fut
        self.conn.send_bytes(rid.to_bytes(8, "little") + payload)
        try:
            reply = await fut
        finally:
            self.pending.pop(rid, None)
        if reply[:8] != rid.to_bytes(8, "little"):
            raise BenchError("pipe: reply for the wrong request")
        return reply

    def close(self) -> None:
        try:
            self.loop.remove_reader(self.fd)
        except (RuntimeError, ValueError, OSError):
            pass
        self.conn.close()


# --------------------------------------------------------------------------
# contenders
#
# worker(k, n, stop) is a coroutine for task k of n that loops until stop.set
# and returns how many ops it completed; check() runs after each slice,
# untimed.
# --------------------------------------------------------------------------

class Stop:
    __slots__ = ("set",)

    def __init__(self) -> None:
        self.set = False


class Ctx:
    def __init__(self, path: str, offsets: list[int]) -> None:
        self.path = path
        self.fd = os.open(path, os.O_RDONLY)
        self.offsets = offsets
        self.mask = len(offsets) - 1
        # expected first 8 bytes of the block at each offset
        self.heads = [struct.pack("<Q", o // BLOCK) for o in offsets]

    def close(self) -> None:
        os.close(self.fd)

    def check_block(self, data: Any, offset: int, who: str) -> None:
        if bytes(data) != os.pread(self.fd, BLOCK, offset):
            raise BenchError(f"{who}: data differs from the file's block at offset {offset}")


class Contender:
    name = "?"
    server: Any = None            # the server's multiprocessing.Process, if any

    def __init__(self, ctx: Ctx) -> None:
        self.ctx = ctx
        self.last: dict[int, tuple[Any, int]] = {}   # task -> (data, offset) of its last op

    async def setup(self, ntasks: int) -> None:
        pass

    def worker(self, k: int, n: int, stop: Stop) -> Awaitable[int]:
        raise NotImplementedError

    def check(self) -> None:
        for data, off in self.last.values():
            self.ctx.check_block(data, off, self.name)
        self.last.clear()

    async def aclose(self) -> None:
        pass


class SubringReadinto(Contender):
    name = "subring"

    async def worker(self, k: int, n: int, stop: Stop) -> int:
        ctx = self.ctx
        readinto = subring.aio.get_ring().readinto
        fd, offs, heads, mask = ctx.fd, ctx.offsets, ctx.heads, ctx.mask
        buf = bytearray(BLOCK)
        i = j = k * (len(offs) // n)
        done = 0
        while not stop.set:
            j = i & mask
            if await readinto(fd, buf, offs[j]) != BLOCK or not buf.startswith(heads[j]):
                raise BenchError(f"subring readinto: wrong result at offset {offs[j]}")
            i += 1
            done += 1
        if done:
            self.last[k] = (buf, offs[j])
        return done


class SubringRead(Contender):
    name = "subring-read"

    async def worker(self, k: int, n: int, stop: Stop) -> int:
        ctx = self.ctx
        read = subring.aio.get_ring().read
        fd, offs, heads, mask = ctx.fd, ctx.offsets, ctx.heads, ctx.mask
        i = j = k * (len(offs) // n)
        done = 0
        data = b""
        while not stop.set:
            j = i & mask
            data = await read(fd, BLOCK, offs[j])
            if len(data) != BLOCK or not data.startswith(heads[j]):
                raise BenchError(f"subring read: wrong result at offset {offs[j]}")
            i += 1
            done += 1
        if done:
            self.last[k] = (data, offs[j])
        return done


class ExecutorReads(Contender):
    name = "executor"

    async def worker(self, k: int, n: int, stop: Stop) -> int:
        ctx = self.ctx
        run, pread = asyncio.get_running_loop().run_in_executor, os.pread
        fd, offs, heads, mask = ctx.fd, ctx.offsets, ctx.heads, ctx.mask
        i = j = k * (len(offs) // n)
        done = 0
        data = b""
        while not stop.set:
            j = i & mask
            data = await run(None, pread, fd, BLOCK, offs[j])
            if len(data) != BLOCK or not data.startswith(heads[j]):
                raise BenchError(f"executor pread: wrong result at offset {offs[j]}")
            i += 1
            done += 1
        if done:
            self.last[k] = (data, offs[j])
        return done


class AiofilesReads(Contender):
    name = "aiofiles"

    def __init__(self, ctx: Ctx) -> None:
        super().__init__(ctx)
        self.files: list[Any] = []

    async def setup(self, ntasks: int) -> None:
        while len(self.files) < ntasks:
            self.files.append(await aiofiles.open(self.ctx.path, "rb"))

    async def worker(self, k: int, n: int, stop: Stop) -> int:
        ctx = self.ctx
        f = self.files[k]
        seek, read = f.seek, f.read
        offs, heads, mask = ctx.offsets, ctx.heads, ctx.mask
        i = j = k * (len(offs) // n)
        done = 0
        data = b""
        while not stop.set:
            j = i & mask
            await seek(offs[j])
            data = await read(BLOCK)
            if len(data) != BLOCK or not data.startswith(heads[j]):
                raise BenchError(f"aiofiles: wrong result at offset {offs[j]}")
            i += 1
            done += 1
        if done:
            self.last[k] = (data, offs[j])
        return done

    async def aclose(self) -> None:
        for f in self.files:
            await f.close()
        self.files.clear()


def payloads_for(k: int, count: int = 16) -> list[bytes]:
    """Distinct 64-byte payloads for task k."""
    return [struct.pack("<QQ", k, j) + bytes((k * 31 + j * 7 + b) & 0xFF for b in range(PAYLOAD - 16))
            for j in range(count)]


class _CallContender(Contender):
    def check(self) -> None:      # replies are checked in the loop
        self.last.clear()


class SubringCalls(_CallContender):
    name = "subring"

    def __init__(self, ctx: Ctx, sock_path: str, server: Any) -> None:
        super().__init__(ctx)
        self.sock_path = sock_path
        self.server = server
        self.aring: subring.aio.AsyncRing | None = None
        self.op = 0

    async def setup(self, ntasks: int) -> None:
        if self.aring is None:
            # wait=True: the echo server was just started and may not listen yet
            client = subring.connect(self.sock_path, timeout=20, wait=True)
            self.aring = subring.aio.AsyncRing(client, own=True)
            self.op = client.op_index("echo")

    async def worker(self, k: int, n: int, stop: Stop) -> int:
        assert self.aring is not None
        call, op = self.aring.call, self.op
        pls = payloads_for(k)
        done = 0
        while not stop.set:
            p = pls[done & 15]
            if await call(op, p) != p:
                raise BenchError("subring call: echo reply differs from the payload")
            done += 1
        return done

    async def aclose(self) -> None:
        if self.aring is not None:
            await self.aring.aclose()
            self.aring = None


class PipeCalls(_CallContender):
    name = "pipe"

    def __init__(self, ctx: Ctx, conn: Any, server: Any) -> None:
        super().__init__(ctx)
        self.conn = conn
        self.server = server
        self.client: PipeClient | None = None

    async def setup(self, ntasks: int) -> None:
        if self.client is None:
            self.client = PipeClient(self.conn, asyncio.get_running_loop())

    async def worker(self, k: int, n: int, stop: Stop) -> int:
        assert self.client is not None
        call = self.client.call
        pls = payloads_for(k)
        done = 0
        while not stop.set:
            p = pls[done & 15]
            if (await call(p))[8:] != p:
                raise BenchError("pipe call: echo reply differs from the payload")
            done += 1
        return done

    async def aclose(self) -> None:
        if self.client is not None:
            self.client.close()
            self.client = None


# --------------------------------------------------------------------------
# measuring
# --------------------------------------------------------------------------

async def run_slice(c: Contender, ntasks: int, seconds: float) -> dict[str, Any]:
    loop = asyncio.get_running_loop()
    stop = Stop()
    srv = c.server.pid if c.server is not None else None
    gc.collect()
    s0 = proc_cpu_s(srv) if srv else None
    c0 = time.process_time()
    t0 = time.perf_counter()
    tasks = [asyncio.ensure_future(c.worker(k, ntasks, stop)) for k in range(ntasks)]
    # Start the clock once every task has started its first op: on a busy
    # machine the loop may first run after a short slice has already
    # expired, and no task would ever have begun.
    await asyncio.sleep(0)
    timer = loop.call_later(seconds, setattr, stop, "set", True)
    try:
        counts = await asyncio.wait_for(asyncio.gather(*tasks), seconds + SLICE_TIMEOUT_S)
    except TimeoutError:
        raise BenchError(f"{c.name} with {ntasks} tasks: slice did not finish within "
                         f"{seconds + SLICE_TIMEOUT_S:.0f} s") from None
    finally:
        timer.cancel()
    secs = time.perf_counter() - t0
    cpu = time.process_time() - c0
    s1 = proc_cpu_s(srv) if srv else None
    c.check()
    ops = sum(counts)
    if ops <= 0:
        raise BenchError(f"{c.name} with {ntasks} tasks: no op completed")
    server_cpu = s1 - s0 if s0 is not None and s1 is not None else None
    total_cpu = cpu + (server_cpu or 0.0)
    return {"ops": ops, "seconds": secs, "ops_per_s": ops / secs, "cpu_s": cpu,
            "server_cpu_s": server_cpu,
            "ops_per_cpu_s": ops / total_cpu if total_cpu > 0 else None}


async def measure(workloads: dict[str, list[Contender]], mode: Mode,
                  log: Callable[[str], None]) -> dict[str, dict[str, dict[str, list]]]:
    raw: dict[str, dict[str, dict[str, list]]] = {
        w: {c.name: {"ops": [], "seconds": [], "ops_per_s": [], "cpu_s": [],
                     "ops_per_cpu_s": [], "server_cpu_s": []} for c in cs}
        for w, cs in workloads.items()}
    for w, cs in workloads.items():
        for c in cs:
            await c.setup(WORKLOAD_TASKS[w])
            await run_slice(c, WORKLOAD_TASKS[w], mode.warmup_s)      # untimed warm-up
    for rep in range(mode.reps):
        t_rep = time.perf_counter()
        for w, cs in workloads.items():
            k = rep % len(cs)
            for c in cs[k:] + cs[:k]:          # rotate the order every repetition
                r = await run_slice(c, WORKLOAD_TASKS[w], mode.slice_s)
                for key, v in r.items():
                    raw[w][c.name][key].append(v)
        log(f"  repetition {rep + 1}/{mode.reps} done ({time.perf_counter() - t_rep:.1f} s)")
    return raw


def _samples(raw: dict, a: tuple[str, str], b: tuple[str, str],
             figure: str = "ops_per_s") -> list[float] | None:
    ra = raw.get(a[0], {}).get(a[1])
    rb = raw.get(b[0], {}).get(b[1])
    if ra is None or rb is None:
        return None
    return [x / y for x, y in zip(ra[figure], rb[figure], strict=True)
            if x is not None and y]


def compute_ratios(raw: dict, unavailable: dict[str, str]) -> tuple[dict, dict, dict, dict]:
    ratios: dict[str, float | None] = {}
    samples: dict[str, list[float]] = {}
    bars: dict[str, dict[str, Any]] = {}
    for key, (desc, bar, a, b) in RATIOS.items():
        s = _samples(raw, a, b)
        bars[key] = {"bar": bar, "description": desc}
        if s is None:
            ratios[key], samples[key] = None, []
            bars[key]["met"] = None
            bars[key]["skipped"] = unavailable.get(b[1], f"{b[1]} did not run")
        else:
            median = statistics.median(s)
            ratios[key], samples[key] = median, s
            bars[key]["met"] = median >= bar
    extra: dict[str, Any] = {}
    # the same ratios per CPU-second (this process incl. its threads, plus the
    # server process for calls): less sensitive to other load on the machine,
    # which favours many-threaded baselines in wall-clock rates
    for key, (desc, _bar, a, b) in RATIOS.items():
        s = _samples(raw, a, b, "ops_per_cpu_s")
        extra[f"{key}_per_cpu"] = {"description": desc + ", per CPU-second",
                                   "median": statistics.median(s) if s else None,
                                   "samples": s or []}
    for key, (desc, a, b) in EXTRA_RATIOS.items():
        s = _samples(raw, a, b)
        extra[key] = {"description": desc, "median": statistics.median(s) if s else None,
                      "samples": s or []}
    return ratios, samples, bars, extra


# --------------------------------------------------------------------------
# line iteration and loop stalls
# --------------------------------------------------------------------------

def make_text_file(path: str, size: int) -> None:
    """ASCII lines of 20-130 characters (reproducible), about ``size`` bytes."""
    import random
    rnd = random.Random(20261203)
    words = [("".join(rnd.choice("abcdefghijklmnopqrstuvwxyz") for _ in range(n)))
             for n in rnd.choices(range(2, 11), k=512)]
    out, total = [], 0
    while total < size:
        line = " ".join(rnd.choices(words, k=rnd.randint(3, 18))) + "\n"
        out.append(line)
        total += len(line)
    with open(path, "w", encoding="ascii") as f:
        f.write("".join(out))


def builtin_lines(path: str) -> tuple[int, int, float, float]:
    """(lines, characters, wall seconds, CPU seconds)."""
    n = chars = 0
    t0, c0 = time.perf_counter(), time.process_time()
    with open(path, encoding="utf-8") as f:
        for line in f:
            n += 1
            chars += len(line)
    return n, chars, time.perf_counter() - t0, time.process_time() - c0


async def subring_lines(path: str) -> tuple[int, int, float, float]:
    """(lines, characters, wall seconds, CPU seconds)."""
    n = chars = 0
    t0, c0 = time.perf_counter(), time.process_time()
    async with subring.aio.open(path, encoding="utf-8") as f:
        async for line in f:
            n += 1
            chars += len(line)
    return n, chars, time.perf_counter() - t0, time.process_time() - c0


async def aiofiles_lines(path: str, seconds: float) -> tuple[int, float]:
    n = 0
    t0 = time.perf_counter()
    async with aiofiles.open(path, encoding="utf-8") as f:
        async for _line in f:
            n += 1
            if not n & 255 and time.perf_counter() - t0 >= seconds:
                break
    return n, time.perf_counter() - t0


async def stalls_during_read(path: str, nbytes: int) -> tuple[float, float, float]:
    """During one ``await f.read(nbytes)``: the longest the loop thread ran
    between two loop iterations (its CPU time, ms), the longest wall-clock
    gap between them (ms; includes waiting for a CPU on a busy machine), and
    the MB/s of the read."""
    done = False
    worst = worst_wall = 0.0

    async def ticker() -> None:
        nonlocal worst, worst_wall
        last, last_cpu = time.perf_counter(), time.thread_time()
        while not done:
            await asyncio.sleep(0)
            now, now_cpu = time.perf_counter(), time.thread_time()
            worst = max(worst, now_cpu - last_cpu)
            worst_wall = max(worst_wall, now - last)
            last, last_cpu = now, now_cpu

    async with subring.aio.open(path, "rb") as f:
        tick = asyncio.create_task(ticker())
        await asyncio.sleep(0)
        t0 = time.perf_counter()
        data = await f.read(nbytes)
        secs = time.perf_counter() - t0
        done = True
        await tick
    if len(data) != nbytes:
        raise BenchError(f"read({nbytes}) returned {len(data)} bytes")
    fd = os.open(path, os.O_RDONLY)
    try:
        if os.pread(fd, 1 << 16, 0) != data[:1 << 16]:
            raise BenchError("read(): data differs from the file")
    finally:
        os.close(fd)
    return worst * 1e3, worst_wall * 1e3, nbytes / secs / 1e6


async def subring_read_mb_per_s(path: str, nbytes: int) -> float:
    """MB/s of one ``await f.read(nbytes)`` with nothing else on the loop
    (the stall ticker competes for the GIL, so throughput is timed apart)."""
    async with subring.aio.open(path, "rb") as f:
        t0 = time.perf_counter()
        data = await f.read(nbytes)
        secs = time.perf_counter() - t0
    return len(data) / secs / 1e6


def builtin_read_mb_per_s(path: str, nbytes: int) -> float:
    with open(path, "rb") as f:
        t0 = time.perf_counter()
        data = f.read(nbytes)
        secs = time.perf_counter() - t0
    return len(data) / secs / 1e6


async def measure_files(text_path: str, data_path: str, mode: Mode, use_aiofiles: bool,
                        log: Callable[[str], None]) -> dict[str, list]:
    """Per repetition: lines/s of each contender, the read() stall and MB/s."""
    raw: dict[str, list] = {"builtin_lines_per_s": [], "subring_lines_per_s": [],
                            "aiofiles_lines_per_s": [], "max_stall_ms": [],
                            "max_stall_cpu_ms": [], "lines_vs_builtin_per_cpu": [],
                            "read_mb_per_s": [], "builtin_read_mb_per_s": []}
    stall_bytes = min(mode.stall_read, os.path.getsize(data_path))
    await subring_lines(text_path)                  # warm-up (page cache, ring)
    for rep in range(mode.reps):
        gc.collect()
        nb, cb, tb, cpu_b = builtin_lines(text_path)
        gc.collect()
        ns, cs, ts, cpu_s = await subring_lines(text_path)
        if (ns, cs) != (nb, cb):
            raise BenchError(f"subring saw {ns} lines / {cs} chars, built-in {nb} / {cb}")
        raw["builtin_lines_per_s"].append(nb / tb)
        raw["subring_lines_per_s"].append(ns / ts)
        # both single-threaded: lines per CPU-second is robust to a busy machine
        raw["lines_vs_builtin_per_cpu"].append((ns / cpu_s) / (nb / cpu_b)
                                               if cpu_s > 0 and cpu_b > 0 else None)
        if use_aiofiles:
            na, ta = await aiofiles_lines(text_path, mode.slice_s)
            raw["aiofiles_lines_per_s"].append(na / ta)
        gc.collect()
        stall_cpu, stall_wall, _ = await stalls_during_read(data_path, stall_bytes)
        raw["max_stall_ms"].append(stall_wall)
        raw["max_stall_cpu_ms"].append(stall_cpu)
        gc.collect()
        raw["read_mb_per_s"].append(await subring_read_mb_per_s(data_path, stall_bytes))
        raw["builtin_read_mb_per_s"].append(builtin_read_mb_per_s(data_path, stall_bytes))
    log(f"  files: {mode.reps} repetitions of lines + read stall done")
    return raw


def file_ratios(files: dict[str, list], bars: dict, ratios: dict, samples: dict,
                unavailable: dict[str, str]) -> dict[str, Any]:
    """Add lines_vs_* to ratios (with bars); return the max_stall_ms entry."""
    pairs = {"lines_vs_builtin": "builtin_lines_per_s", "lines_vs_aiofiles": "aiofiles_lines_per_s"}
    for key, (desc, bar) in FILE_RATIOS.items():
        base = files.get(pairs[key]) or []
        bars[key] = {"bar": bar, "description": desc}
        if not base:
            ratios[key], samples[key] = None, []
            bars[key]["met"] = None
            bars[key]["skipped"] = unavailable.get("aiofiles", "did not run")
            continue
        s = [a / b for a, b in zip(files["subring_lines_per_s"], base, strict=True)]
        ratios[key], samples[key] = statistics.median(s), s
        bars[key]["met"] = ratios[key] >= bar
    stalls = files["max_stall_ms"]
    med = statistics.median(stalls)
    return {"median": med, "samples": stalls, "worst": max(stalls), "bar": STALL_BAR_MS,
            "met": med <= STALL_BAR_MS,
            "cpu_median": statistics.median(files["max_stall_cpu_ms"]),
            "cpu_samples": files["max_stall_cpu_ms"],
            "description": "worst loop stall (wall-clock ms between two loop iterations) "
                           "during await f.read(100 MiB), median of repetitions; lower is "
                           "better (on a busy machine it includes waiting for a CPU).  "
                           "cpu_*: the same gaps in loop-thread CPU time"}


# --------------------------------------------------------------------------
# reporting
# --------------------------------------------------------------------------

def fmt_rate(x: float) -> str:
    return f"{x / 1e6:7.3f} M/s" if x >= 1e6 else f"{x / 1e3:7.1f} k/s"


def print_report(raw: dict, ratios: dict, samples: dict, bars: dict, extra: dict,
                 unavailable: dict[str, str]) -> None:
    print()
    print(f"{'workload':<9} {'contender':<13} {'median':>11} {'us/op':>7} {'min':>11} "
          f"{'max':>11} {'cli CPU':>7} {'srv CPU':>7} {'per CPU-s':>11}")
    print("-" * 95)
    for w, cs in raw.items():
        for name, r in cs.items():
            v = r["ops_per_s"]
            med = statistics.median(v)
            cpu = statistics.median(c / s for c, s in zip(r["cpu_s"], r["seconds"]))
            srv = [c / s for c, s in zip(r["server_cpu_s"], r["seconds"]) if c is not None]
            srv_s = f"{100 * statistics.median(srv):6.0f}%" if srv else f"{'':>7}"
            per_cpu = [x for x in r["ops_per_cpu_s"] if x is not None]
            per_cpu_s = fmt_rate(statistics.median(per_cpu)) if per_cpu else "n/a"
            print(f"{w:<9} {name:<13} {fmt_rate(med):>11} {1e6 / med:7.2f} "
                  f"{fmt_rate(min(v)):>11} {fmt_rate(max(v)):>11} {100 * cpu:6.0f}% {srv_s} "
                  f"{per_cpu_s:>11}")
        if w.startswith("aread") and "aiofiles" in unavailable:
            print(f"{w:<9} {'aiofiles':<13} {'skipped':>11}  ({unavailable['aiofiles']})")
    print("(cli CPU: this process incl. executor threads, % of one CPU; srv CPU: the server\n"
          " process; per CPU-s: ops per CPU-second of this process plus the server process)")
    print()
    _common.print_ratio_table(ratios, samples, bars, width=31, rule=66, bar_spec=".1f")
    for key, e in extra.items():
        if e["median"] is not None:
            s = e["samples"]
            print(f"{key:<31} {e['median']:7.2f} {min(s):6.2f} {max(s):6.2f} {'-':>6}  "
                  f"(informational)")
    print()


def environment(loop_name: str) -> dict[str, Any]:
    env = _common.environment({
        "aiofiles_version": _common.package_version("aiofiles"),
        "uvloop_version": _common.package_version("uvloop"),
        "event_loop": loop_name,
        "default_executor_threads": min(32, (os.cpu_count() or 1) + 4),
    })
    env["loadavg_start"] = list(os.getloadavg())
    return env


# --------------------------------------------------------------------------

async def run_all(ctx: Ctx, mode: Mode, sock_path: str, sub_server: Any,
                  pipe_conn: Any, pipe_server: Any, use_aiofiles: bool,
                  log: Callable[[str], None], text_path: str) -> dict:
    loop = asyncio.get_running_loop()
    log(f"event loop: {type(loop).__module__}.{type(loop).__name__}")

    def reads() -> list[Contender]:
        cs: list[Contender] = [SubringReadinto(ctx), SubringRead(ctx), ExecutorReads(ctx)]
        if use_aiofiles:
            cs.append(AiofilesReads(ctx))
        return cs

    sub_calls = SubringCalls(ctx, sock_path, sub_server)
    pipe_calls = PipeCalls(ctx, pipe_conn, pipe_server)
    workloads: dict[str, list[Contender]] = {
        "aread32": reads(),
        "aread256": reads(),
        "acall1": [sub_calls, pipe_calls],
        "acall32": [sub_calls, pipe_calls],
    }
    try:
        raw = await measure(workloads, mode, log)
        raw["_files"] = await measure_files(text_path, ctx.path, mode, use_aiofiles, log)
        return raw
    finally:
        seen: set[int] = set()
        for cs in workloads.values():
            for c in cs:
                if id(c) not in seen:
                    seen.add(id(c))
                    await c.aclose()
        await subring.aio.close_default_ring()


def main(argv: list[str] | None = None) -> int:
    t_start = time.perf_counter()
    p = _common.make_parser(__doc__)
    p.add_argument("--uvloop", action="store_true", help="run everything on uvloop")
    _common.add_reps_slice(p)
    p.add_argument("--server-mode", choices=("hybrid", "interrupt", "poll"), default="hybrid",
                   help="the echo subsystem's wait mode (default: hybrid, the library default)")
    args = p.parse_args(argv)

    mode_name, mode = _common.select_mode(args, MODES)
    log = _common.log

    loop_factory = None
    loop_name = "asyncio"
    if args.uvloop:
        import uvloop  # type: ignore[import-not-found]
        loop_factory = uvloop.new_event_loop
        loop_name = f"uvloop {getattr(uvloop, '__version__', '?')}"

    unavailable: dict[str, str] = {}
    if aiofiles is None:
        unavailable["aiofiles"] = AIOFILES_ERROR or "aiofiles is not importable"
        log(f"aiofiles rows and ratios skipped: {unavailable['aiofiles']}")

    env = environment(loop_name)
    log(f"bench/aio.py mode={mode_name} reps={mode.reps} slice={mode.slice_s}s "
        f"loop={loop_name}  Linux {env['kernel_release']}, Python {env['python_version']}, "
        f"{env['cpu_count']} CPUs")
    # Last resort against a hang anywhere (even outside the event loop): dump
    # the stacks and exit; the servers notice that we are gone and stop.
    faulthandler.dump_traceback_later(
        max(120.0, 60.0 + 40 * mode.reps * mode.slice_s), exit=True)

    spawn = mp.get_context("spawn")
    sub_server = pipe_server = None
    pipe_conn = None
    raw: dict = {}
    try:
        with tempfile.TemporaryDirectory(prefix="subring-bench-aio-") as tmpdir:
            sock_path = os.path.join(tmpdir, "echo.sock")
            # servers first: spawn them before this process has any ring
            sub_server = spawn.Process(target=serve_subsystem, args=(sock_path, args.server_mode),
                                       daemon=True, name="bench-echo-subsystem")
            sub_server.start()
            pipe_conn, child_conn = spawn.Pipe()
            pipe_server = spawn.Process(target=serve_pipe, args=(child_conn,), daemon=True,
                                        name="bench-echo-pipe")
            pipe_server.start()
            child_conn.close()

            path, created, file_s = _common.prepare_data_file(mode, tmpdir,
                                                              _common.layout_ok, log)
            ctx = Ctx(path, _common.make_offsets(mode.n_offsets, mode.file_size))
            text_path = os.path.join(tmpdir, "lines.txt")
            make_text_file(text_path, mode.text_size)
            try:
                with asyncio.Runner(loop_factory=loop_factory) as runner:
                    raw = runner.run(run_all(ctx, mode, sock_path, sub_server, pipe_conn,
                                             pipe_server, aiofiles is not None, log,
                                             text_path))
            finally:
                ctx.close()
    except BenchError as e:
        print(f"FAILED: {e}", file=sys.stderr)
        return 1
    finally:
        faulthandler.cancel_dump_traceback_later()
        if pipe_conn is not None and not pipe_conn.closed:
            pipe_conn.close()             # EOF: the pipe server returns
        _common.stop_process(pipe_server)
        _common.stop_process(sub_server)

    files = raw.pop("_files")
    ratios, samples, bars, extra = compute_ratios(raw, unavailable)
    stall = file_ratios(files, bars, ratios, samples, unavailable)
    print_report(raw, ratios, samples, bars, extra, unavailable)
    print(f"{'max_stall_ms':<31} {stall['median']:7.2f} {min(stall['samples']):6.2f} "
          f"{stall['worst']:6.2f} {STALL_BAR_MS:>6.1f}  {'yes' if stall['met'] else 'NO'}"
          f"  (lower is better; wall-clock gaps)")
    print(f"{'max_stall_cpu_ms':<31} {stall['cpu_median']:7.2f} {min(stall['cpu_samples']):6.2f} "
          f"{max(stall['cpu_samples']):6.2f} {'-':>6}  (the same gaps in loop-thread CPU time)")
    per_cpu = [x for x in files["lines_vs_builtin_per_cpu"] if x is not None]
    if per_cpu:
        print(f"{'lines_vs_builtin_per_cpu':<31} {statistics.median(per_cpu):7.2f} "
              f"{min(per_cpu):6.2f} {max(per_cpu):6.2f} {'-':>6}  (informational)")
    print(f"lines/s: subring {statistics.median(files['subring_lines_per_s']) / 1e6:.2f} M, "
          f"built-in {statistics.median(files['builtin_lines_per_s']) / 1e6:.2f} M; read(): "
          f"{statistics.median(files['read_mb_per_s']):.0f} MB/s "
          f"(built-in {statistics.median(files['builtin_read_mb_per_s']):.0f} MB/s)")

    def med(w: str, c: str) -> float | None:
        r = raw.get(w, {}).get(c)
        return statistics.median(r["ops_per_s"]) if r else None

    extra_figures = {
        "acall1_subring_calls_per_s": med("acall1", "subring"),
        "acall1_pipe_calls_per_s": med("acall1", "pipe"),
        "aread256_aiofiles_reads_per_s": med("aread256", "aiofiles"),
        "ratios": extra,
        "files": files,
    }
    env["loadavg_end"] = list(os.getloadavg())
    cpus = env.get("cpus_usable") or env["cpu_count"] or 1
    if max(env["loadavg_start"][0], env["loadavg_end"][0]) > cpus:
        print(f"note: the machine was busy (load average {env['loadavg_start'][0]:.1f} at start, "
              f"{env['loadavg_end'][0]:.1f} at end, {cpus} CPUs): wall-clock rates are\n"
              f"      noisy and favour the many-threaded baselines; see the *_per_cpu ratios")
    wall = time.perf_counter() - t_start
    print(f"total wall time {wall:.1f} s")

    if args.json:
        for w in raw.values():
            for r in w.values():
                r["median_ops_per_s"] = statistics.median(r["ops_per_s"])
        doc = {
            "benchmark": "aio",
            "mode": mode_name,
            "env": env,
            "config": {
                "reps": mode.reps, "slice_s": mode.slice_s, "warmup_s": mode.warmup_s,
                "block_size": BLOCK, "payload_size": PAYLOAD, "tasks": WORKLOAD_TASKS,
                "event_loop": loop_name, "uvloop": bool(args.uvloop),
                "server_mode": args.server_mode,
                "data_file": path, "data_file_size": mode.file_size,
                "data_file_created": created, "data_file_seconds": file_s,
                "n_offsets": mode.n_offsets,
            },
            "results": raw,
            "skipped": unavailable,
            "ratios": ratios,
            "max_stall_ms": stall["median"],
            "max_stall_cpu_ms": stall["cpu_median"],
            "max_stall": stall,
            "ratio_samples": samples,
            "bars": bars,
            "extra": extra_figures,
            "wall_time_s": wall,
        }
        _common.write_json(args.json, doc)
    return 0


if __name__ == "__main__":
    sys.exit(main())
