#!/usr/bin/env python3
"""Benchmark: subring.RingExecutor against the usual Python process pools.

Workloads
---------
``tiny_submit``
    ``inc(x) = x + 1`` submitted one by one: submit a chunk of N tasks, then
    ``result()`` each future, in order.  Counted: tasks per second.
``tiny_map``
    The same tiny function over a chunk of N inputs through the pool's
    ``map`` with ``chunksize=64`` for every contender.  Counted: items/s.
``rtt``
    One task in flight: submit ``inc(x)``, wait for its result, next.  Each
    round trip is timed on its own; the figures are its p50 and p99 (and the
    rate).
``mib``
    ``double(a) = a * 2`` on a 1 MiB float64 NumPy array (131072 values),
    returning a 1 MiB array; 4 tasks in flight (a FIFO window: as the oldest
    completes, the next is submitted).  Counted: tasks per second (2 MiB
    moved per task).

``cancel_before_start`` (a contract figure, not a speed: must be 1.0)
    Both workers busy with a long task, then N more tasks submitted; none of
    them can have started.  The fraction whose ``cancel()`` succeeds (and
    that then never run).  Also measured for ProcessPoolExecutor, which marks
    the tasks it moved to its call queue RUNNING (informational).
``dask`` (informational; skipped with the reason if ``distributed`` is absent)
    A one-machine Dask cluster (a LocalCluster with one worker process,
    2 threads): tiny tasks (``abs``) and 1 MiB tasks (``numpy.negative``)
    through ``Client.map``/``gather``, with the worker's default thread pool
    and with :class:`RingExecutorPlugin` (a 2-worker RingExecutor under the
    Dask worker).  Tasks/s of each, and the ratio.

Contenders
----------
``subring``   ``subring.RingExecutor(2, start="eager")``: ``submit`` /
              ``result``, ``map(chunksize=64)``.
``ppe``       ``concurrent.futures.ProcessPoolExecutor(2)``: ``submit`` /
              ``result``, ``map(chunksize=64)``.
``pool``      ``multiprocessing.Pool(2)``: ``apply_async(...).get()`` for
              submit, ``map(chunksize=64)``, ``apply`` for the round trip.
``loky``      ``loky.ProcessPoolExecutor(2, context="fork")`` (informational;
              skipped with the reason, and null ratios, if loky does not import
              or with ``--skip-loky``).

Fairness
--------
* Every pool has 2 workers and the same start method (``fork``, the platform
  default; see ``--start-method``); each is created once per run, before any
  measuring, and warmed up (every workload runs once untimed) so that worker
  start-up and first-touch costs are not timed.
* All contenders run the same module-level functions on the same inputs.
* Results are verified in every loop: the tiny workloads check every result
  (sum and first/last of each chunk, and in full after each step, untimed);
  ``rtt`` checks each reply; ``mib`` checks sampled elements of every result
  inside the loop and the whole last array after each step (untimed).  A
  pool that returns the wrong thing cannot look fast.
* The machine is noisy, so each *repetition* runs every contender of every
  workload back to back (the order rotates each repetition), each for a fixed
  time slice made of fixed-size chunks.  A ratio is subring's rate divided by
  the baseline's rate *in the same repetition* (for ``rtt``: the baseline's
  p50 divided by subring's p50); the reported ratio is the median of the
  per-repetition ratios (higher is better for subring).  ``gc.collect()``
  runs before every slice.
* Two workers on a small machine means the parent, the pool's helper threads
  and the workers compete for CPUs; that is the same for every contender.

Reproduce
---------
::

    pip install -e '.[dev]' numpy loky
    python bench/executor.py                        # full run, about 2.5 minutes
    python bench/executor.py --quick                # < 60 s
    python bench/executor.py --quick --json /tmp/exec.json
    python bench/executor.py --smoke --json /tmp/x.json   # seconds; only checks it runs

``--json PATH`` writes the raw per-repetition figures, the environment, the
top-level ``"ratios"`` object (median ratio per key; null if its baseline was
unavailable), each ratio's bar and whether it was met, and informational
ratios against loky (``"extra"``).
"""

from __future__ import annotations

import collections
import concurrent.futures as cf
import dataclasses
import faulthandler
import gc
import multiprocessing as mp
import os
import statistics
import sys
import time
import warnings
from collections.abc import Callable
from typing import Any

import _common
import numpy as np
from _common import BenchError

from subring.executor import RingExecutor

try:
    import loky  # type: ignore[import-untyped]
    LOKY_ERROR: str | None = None
except Exception as _e:  # noqa: BLE001 -- ImportError, or a broken install
    loky = None  # type: ignore[assignment]
    LOKY_ERROR = f"loky is not importable: {type(_e).__name__}: {_e}"

WORKERS = 2
MAP_CHUNKSIZE = 64
MIB_WINDOW = 4
MIB_ELEMS = (1 << 20) // 8
CONTENDERS = ["subring", "ppe", "pool", "loky"]

# ratio key -> (description, bar, workload, baseline contender)
RATIOS: dict[str, tuple[str, float, str, str]] = {
    "tiny_submit_vs_ppe": ("tiny tasks/s via submit vs ProcessPoolExecutor", 10.0,
                           "tiny_submit", "ppe"),
    "tiny_submit_vs_pool": ("tiny tasks/s via submit vs Pool.apply_async", 4.0,
                            "tiny_submit", "pool"),
    "tiny_map_vs_pool": (f"tiny tasks/s via map vs Pool.map (chunksize {MAP_CHUNKSIZE})", 1.5,
                         "tiny_map", "pool"),
    "rtt_vs_pool": ("Pool.apply p50 / RingExecutor submit->result p50", 3.0, "rtt", "pool"),
    "mib_vs_ppe": ("1 MiB in + 1 MiB out tasks/s vs ProcessPoolExecutor", 5.0, "mib", "ppe"),
}
# informational, no bar
EXTRA: dict[str, tuple[str, str, str]] = {
    "tiny_submit_vs_loky": ("tiny tasks/s via submit vs loky", "tiny_submit", "loky"),
    "tiny_map_vs_loky": ("tiny tasks/s via map vs loky map", "tiny_map", "loky"),
    "rtt_vs_loky": ("loky p50 / RingExecutor p50", "rtt", "loky"),
    "mib_vs_loky": ("1 MiB tasks/s vs loky", "mib", "loky"),
    "mib_vs_pool": ("1 MiB tasks/s vs Pool.apply_async", "mib", "pool"),
    "tiny_map_vs_ppe": ("tiny tasks/s via map vs ProcessPoolExecutor.map", "tiny_map", "ppe"),
    "rtt_vs_ppe": ("ProcessPoolExecutor p50 / RingExecutor p50", "rtt", "ppe"),
}


@dataclasses.dataclass(frozen=True)
class Mode:
    reps: int
    slice_s: float
    chunk: dict[str, int]      # ops per timed step, per workload
    watchdog_s: float          # the whole run is killed (with tracebacks) after this


MODES = {
    "full": Mode(reps=9, slice_s=0.8, chunk={"tiny_submit": 512, "tiny_map": 2048, "rtt": 100,
                                              "mib": 16}, watchdog_s=900),
    "quick": Mode(reps=5, slice_s=0.4, chunk={"tiny_submit": 512, "tiny_map": 2048, "rtt": 100,
                                               "mib": 16}, watchdog_s=300),
    "smoke": Mode(reps=2, slice_s=0.005, chunk={"tiny_submit": 32, "tiny_map": 128, "rtt": 10,
                                                 "mib": 4}, watchdog_s=120),
}
WORKLOADS = ["tiny_submit", "tiny_map", "rtt", "mib"]


# --------------------------------------------------------------------------
# the functions the workers run (module level: sent by reference)
# --------------------------------------------------------------------------

def inc(x: int) -> int:
    return x + 1


def double(a: np.ndarray) -> np.ndarray:
    return a * 2


# --------------------------------------------------------------------------
# contenders: one adapter per pool, same four operations
# --------------------------------------------------------------------------

class Contender:
    def __init__(self, name: str, pool: Any, kind: str) -> None:
        self.name = name
        self.pool = pool
        self.kind = kind            # "futures" (Executor API) or "mp" (multiprocessing.Pool)
        self.base = 0               # next tiny input (changes every step)
        self.last: Any = None       # what verify() checks (untimed)
        self.latencies_ns: list[int] = []

    # every step(n) performs n ops and returns how many completed -------------

    def tiny_submit(self, n: int) -> int:
        b = self.base
        if self.kind == "mp":
            apply_async = self.pool.apply_async
            rs = [apply_async(inc, (x,)) for x in range(b, b + n)]
            out = [r.get() for r in rs]
        else:
            submit = self.pool.submit
            fs = [submit(inc, x) for x in range(b, b + n)]
            out = [f.result() for f in fs]
        if out[0] != b + 1 or out[-1] != b + n:
            raise BenchError(f"{self.name} tiny_submit: wrong results")
        self.last = (b, n, out)
        self.base = b + n
        return n

    def tiny_map(self, n: int) -> int:
        b = self.base
        if self.kind == "mp":
            out = self.pool.map(inc, range(b, b + n), chunksize=MAP_CHUNKSIZE)
        else:
            out = list(self.pool.map(inc, range(b, b + n), chunksize=MAP_CHUNKSIZE))
        if len(out) != n or out[0] != b + 1 or out[-1] != b + n:
            raise BenchError(f"{self.name} tiny_map: wrong results")
        self.last = (b, n, out)
        self.base = b + n
        return n

    def rtt(self, n: int) -> int:
        b = self.base
        lat = self.latencies_ns
        clock = time.perf_counter_ns
        if self.kind == "mp":
            apply = self.pool.apply
            for x in range(b, b + n):
                t0 = clock()
                r = apply(inc, (x,))
                lat.append(clock() - t0)
                if r != x + 1:
                    raise BenchError(f"{self.name} rtt: {r} != {x + 1}")
        else:
            submit = self.pool.submit
            for x in range(b, b + n):
                t0 = clock()
                r = submit(inc, x).result()
                lat.append(clock() - t0)
                if r != x + 1:
                    raise BenchError(f"{self.name} rtt: {r} != {x + 1}")
        self.last = None
        self.base = b + n
        return n

    def mib(self, n: int) -> int:
        a = MIB_INPUT
        if self.kind == "mp":
            apply_async = self.pool.apply_async

            def send() -> Any:
                return apply_async(double, (a,))

            def get(h: Any) -> Any:
                return h.get()
        else:
            submit = self.pool.submit

            def send() -> Any:
                return submit(double, a)

            def get(h: Any) -> Any:
                return h.result()
        window: collections.deque = collections.deque(send() for _ in range(min(MIB_WINDOW, n)))
        issued, done, r = len(window), 0, None
        while window:
            r = get(window.popleft())
            # sampled check of every result (full check of the last one in verify)
            if r.shape != a.shape or r[0] != MIB_EXPECT[0] or r[-1] != MIB_EXPECT[-1] \
                    or r[77_777] != MIB_EXPECT[77_777]:
                raise BenchError(f"{self.name} mib: wrong result")
            done += 1
            if issued < n:
                window.append(send())
                issued += 1
        self.last = r
        return done

    def verify(self, workload: str) -> None:
        if workload in ("tiny_submit", "tiny_map"):
            b, n, out = self.last
            if out != list(range(b + 1, b + n + 1)):
                raise BenchError(f"{self.name} {workload}: results differ from x + 1")
        elif workload == "mib":
            if not np.array_equal(self.last, MIB_EXPECT):
                raise BenchError(f"{self.name} mib: result differs from a * 2")
        self.last = None


MIB_INPUT = np.arange(MIB_ELEMS, dtype=np.float64) * 0.5 + 1.0
MIB_EXPECT = MIB_INPUT * 2


def make_pools(start_method: str, use_loky: bool) -> tuple[dict[str, Contender], dict[str, str]]:
    """Every pool once; the caller shuts them down (close_pools) whatever happens."""
    ctx = mp.get_context(start_method)
    made: dict[str, Contender] = {}
    failed: dict[str, str] = {}
    try:
        made["pool"] = Contender("pool", ctx.Pool(WORKERS), "mp")
        made["ppe"] = Contender("ppe", cf.ProcessPoolExecutor(WORKERS, mp_context=ctx), "futures")
        if use_loky:
            try:
                from loky.backend.context import get_context as loky_context

                with warnings.catch_warnings():
                    # loky warns that fork "does not respect POSIX"; we want the
                    # same start method for every pool (see Fairness)
                    warnings.filterwarnings("ignore", message=".*start method should not be used",
                                            category=UserWarning)
                    made["loky"] = Contender(
                        "loky",
                        loky.ProcessPoolExecutor(WORKERS, context=loky_context(start_method)),
                        "futures")
            except Exception as e:  # noqa: BLE001 -- reported, rows skipped
                failed["loky"] = f"loky pool setup failed: {type(e).__name__}: {e}"
        made["subring"] = Contender(
            "subring", RingExecutor(WORKERS, mp_context=ctx, start="eager"), "futures")
    except BaseException:
        close_pools(made)
        raise
    return made, failed


def close_pools(pools: dict[str, Contender]) -> None:
    for c in pools.values():
        try:
            if c.kind == "mp":
                c.pool.terminate()
                c.pool.join()
            else:
                try:
                    c.pool.shutdown(wait=True, cancel_futures=True)
                except TypeError:           # loky's shutdown() has no cancel_futures
                    c.pool.shutdown(wait=True)
        except Exception as e:  # noqa: BLE001 -- keep closing the others
            print(f"warning: closing {c.name} failed: {e!r}", file=sys.stderr)


# --------------------------------------------------------------------------
# measuring
# --------------------------------------------------------------------------

def run_slice(c: Contender, workload: str, chunk: int, slice_s: float) -> dict[str, Any]:
    step = getattr(c, workload)
    c.latencies_ns = []
    ops, elapsed = 0, 0.0
    while elapsed < slice_s:
        t0 = time.perf_counter()
        ops += step(chunk)
        elapsed += time.perf_counter() - t0
        c.verify(workload)
    out: dict[str, Any] = {"ops": ops, "seconds": elapsed, "ops_per_s": ops / elapsed}
    if workload == "rtt":
        lat = sorted(c.latencies_ns)
        out["p50_us"] = lat[len(lat) // 2] / 1e3
        out["p99_us"] = lat[min(len(lat) - 1, int(len(lat) * 0.99))] / 1e3
    return out


def measure(pools: dict[str, Contender], mode: Mode, log: Callable[[str], None]) -> dict:
    names = [n for n in CONTENDERS if n in pools]
    raw: dict[str, dict[str, dict[str, list]]] = {
        w: {n: collections.defaultdict(list) for n in names} for w in WORKLOADS}
    # warm-up: every workload once per contender (imports in the workers,
    # first-touch of buffers and arenas, helper threads), untimed
    for w in WORKLOADS:
        for n in names:
            c = pools[n]
            getattr(c, w)(mode.chunk[w])
            c.verify(w)
    for rep in range(mode.reps):
        t_rep = time.perf_counter()
        for wi, w in enumerate(WORKLOADS):
            k = (rep + wi) % len(names)
            for n in names[k:] + names[:k]:          # rotate the order every repetition
                gc.collect()
                r = run_slice(pools[n], w, mode.chunk[w], mode.slice_s)
                for key, v in r.items():
                    raw[w][n][key].append(v)
        log(f"  repetition {rep + 1}/{mode.reps} done ({time.perf_counter() - t_rep:.1f} s)")
    return {w: {n: dict(d) for n, d in cs.items()} for w, cs in raw.items()}


def _samples(raw: dict, workload: str, baseline: str) -> list[float] | None:
    a = raw.get(workload, {}).get("subring")
    b = raw.get(workload, {}).get(baseline)
    if a is None or b is None:
        return None
    if workload == "rtt":       # lower latency is better: baseline / subring
        return [y / x for x, y in zip(a["p50_us"], b["p50_us"], strict=True)]
    return [x / y for x, y in zip(a["ops_per_s"], b["ops_per_s"], strict=True)]


def compute_ratios(raw: dict, unavailable: dict[str, str]) -> tuple[dict, dict, dict, dict]:
    ratios: dict[str, float | None] = {}
    samples: dict[str, list[float]] = {}
    bars: dict[str, dict[str, Any]] = {}
    for key, (desc, bar, w, base) in RATIOS.items():
        s = _samples(raw, w, base)
        samples[key] = s or []
        ratios[key] = statistics.median(s) if s else None
        bars[key] = {"bar": bar, "met": None if not s else ratios[key] >= bar,
                     "description": desc}
        if not s:
            bars[key]["skipped"] = unavailable.get(base, f"{base} did not run")
    extra: dict[str, Any] = {}
    for key, (desc, w, base) in EXTRA.items():
        s = _samples(raw, w, base)
        extra[key] = {"description": desc, "median": statistics.median(s) if s else None,
                      "samples": s or []}
        if not s:
            extra[key]["skipped"] = unavailable.get(base, f"{base} did not run")
    return ratios, samples, bars, extra


# --------------------------------------------------------------------------
# cancel_before_start and the Dask rows
# --------------------------------------------------------------------------

CANCEL_TASKS = 64


def busy(t: float) -> float:
    time.sleep(t)
    return t


def cancel_before_start(start_method: str) -> dict[str, Any]:
    """Fraction of not-yet-started tasks whose cancel() succeeds, for
    RingExecutor (the bar: 1.0) and ProcessPoolExecutor (informational)."""
    ctx = mp.get_context(start_method)
    out: dict[str, Any] = {"tasks": CANCEL_TASKS, "bar": 1.0}
    for name, make in (("subring", lambda: RingExecutor(WORKERS, mp_context=ctx, start="eager")),
                       ("ppe", lambda: cf.ProcessPoolExecutor(WORKERS, mp_context=ctx))):
        ex = make()
        try:
            blockers = [ex.submit(busy, 1.0) for _ in range(WORKERS)]
            deadline = time.monotonic() + 30
            while sum(f.running() for f in blockers) < WORKERS and time.monotonic() < deadline:
                time.sleep(0.005)
            queued = [ex.submit(inc, i) for i in range(CANCEL_TASKS)]
            # all of these are behind the blockers: none can have started
            ok = sum(f.cancel() for f in queued)
            cf.wait(blockers + queued, 60)
            ran = sum(1 for f in queued if not f.cancelled())
            if ok + ran != CANCEL_TASKS:
                raise BenchError(f"{name}: {ok} cancelled + {ran} ran != {CANCEL_TASKS}")
            out[name] = ok / CANCEL_TASKS
        finally:
            ex.shutdown(wait=True, cancel_futures=True)
    out["met"] = out["subring"] >= out["bar"]
    return out


def dask_rows(mode_name: str, log: Callable[[str], None]) -> dict[str, Any]:
    """Informational: a one-machine Dask cluster with and without a
    RingExecutor under its worker (see the module doc)."""
    try:
        import dask
        import distributed

        from subring.executor.dask_plugin import RingExecutorPlugin
    except ImportError as e:
        return {"skipped": f"distributed is not importable: {e}"}
    n_tiny, n_mib, reps = {"smoke": (50, 4, 1), "quick": (2000, 48, 3)}.get(mode_name,
                                                                            (5000, 96, 5))
    arrays = [MIB_INPUT + i for i in range(n_mib)]
    rows: dict[str, Any] = {"tiny_tasks": n_tiny, "mib_tasks": n_mib, "reps": reps}
    with dask.config.set({"distributed.worker.daemon": False}):
        cluster = distributed.LocalCluster(n_workers=1, threads_per_worker=WORKERS,
                                           processes=True, dashboard_address=":0",
                                           silence_logs=40)
    client = distributed.Client(cluster, timeout=60)
    try:
        client.wait_for_workers(1, timeout=60)

        def rate(fn: Any, inputs: list[Any], check: Callable[[list[Any]], bool]) -> float:
            best = []
            for _ in range(reps):
                t0 = time.perf_counter()
                out = client.gather(client.map(fn, inputs, pure=False))
                best.append(len(inputs) / (time.perf_counter() - t0))
                if not check(out):
                    raise BenchError(f"dask {fn.__name__}: wrong results")
            return statistics.median(best)

        tiny_in = list(range(-n_tiny, 0))

        def run_all(tag: str) -> None:
            client.gather(client.map(abs, tiny_in[:20], pure=False))        # warm-up
            rows[f"tiny_{tag}"] = rate(abs, tiny_in, lambda o: o == [-x for x in tiny_in])
            rows[f"mib_{tag}"] = rate(np.negative, arrays,
                                      lambda o: all(o[i][7] == -arrays[i][7]
                                                    for i in range(len(o))))
            log(f"  dask ({tag}): tiny {rows[f'tiny_{tag}']:.0f}/s, "
                f"1 MiB {rows[f'mib_{tag}']:.0f}/s")

        run_all("threads")
        client.register_plugin(RingExecutorPlugin(max_workers=WORKERS))
        try:
            run_all("ring")
        finally:
            client.unregister_worker_plugin(RingExecutorPlugin.name)
    finally:
        client.close(timeout=60)
        cluster.close(timeout=60)
    rows["tiny_ring_vs_threads"] = rows["tiny_ring"] / rows["tiny_threads"]
    rows["mib_ring_vs_threads"] = rows["mib_ring"] / rows["mib_threads"]
    return rows


# --------------------------------------------------------------------------
# reporting
# --------------------------------------------------------------------------

def fmt_rate(x: float) -> str:
    return f"{x / 1e6:8.3f} M/s" if x >= 1e6 else f"{x / 1e3:8.2f} k/s"


def print_report(raw: dict, ratios: dict, samples: dict, bars: dict, extra: dict,
                 unavailable: dict[str, str]) -> None:
    print()
    print(f"{'workload':<12} {'contender':<9} {'median rate':>13} {'us/op':>9} "
          f"{'min':>13} {'max':>13} {'p50 us':>8} {'p99 us':>8}")
    print("-" * 92)
    for w, cs in raw.items():
        for name, r in cs.items():
            v = r["ops_per_s"]
            med = statistics.median(v)
            lat = ""
            if w == "rtt":
                lat = (f"{statistics.median(r['p50_us']):8.1f} "
                       f"{statistics.median(r['p99_us']):8.1f}")
            print(f"{w:<12} {name:<9} {fmt_rate(med):>13} {1e6 / med:9.1f} "
                  f"{fmt_rate(min(v)):>13} {fmt_rate(max(v)):>13} {lat}")
        for name, why in unavailable.items():
            print(f"{w:<12} {name:<9} {'skipped':>13}  ({why})")
    print()
    _common.print_ratio_table(ratios, samples, bars)
    print()
    _common.print_info_table(extra, title="informational")
    print()


def environment(start_method: str) -> dict[str, Any]:
    env = _common.environment({
        "numpy_version": np.__version__,
        "loky_version": getattr(loky, "__version__", None) if loky else None,
        "start_method": start_method,
        "workers": WORKERS,
    })
    try:
        env["loadavg_at_start"] = os.getloadavg()
    except OSError:
        pass
    return env


# --------------------------------------------------------------------------

def main(argv: list[str] | None = None) -> int:
    t_start = time.perf_counter()
    p = _common.make_parser(__doc__)
    _common.add_reps_slice(p)
    p.add_argument("--skip-loky", action="store_true", help="behave as if loky were not installed")
    p.add_argument("--skip-dask", action="store_true",
                   help="skip the (informational) Dask rows")
    p.add_argument("--start-method", default=mp.get_start_method(),
                   help="multiprocessing start method for every pool (default: the platform's)")
    args = p.parse_args(argv)

    mode_name, mode = _common.select_mode(args, MODES)
    # A hang anywhere (a pool that never answers) ends the run with tracebacks.
    faulthandler.dump_traceback_later(mode.watchdog_s, exit=True)
    log = _common.log

    unavailable: dict[str, str] = {}
    if args.skip_loky:
        unavailable["loky"] = "skipped (--skip-loky)"
    elif loky is None:
        unavailable["loky"] = LOKY_ERROR or "loky is not importable"
    if "loky" in unavailable:
        log(f"loky rows and ratios skipped: {unavailable['loky']}")

    env = environment(args.start_method)
    log(f"bench/executor.py mode={mode_name} reps={mode.reps} slice={mode.slice_s}s  "
        f"Linux {env['kernel_release']}, Python {env['python_version']}, "
        f"{env['cpu_count']} CPUs, {WORKERS} workers, start method {args.start_method}")

    t0 = time.perf_counter()
    pools, failed = make_pools(args.start_method, "loky" not in unavailable)
    try:
        unavailable.update(failed)
        measure_start = time.perf_counter()
        raw = measure(pools, mode, log)
    finally:
        close_pools(pools)
    setup_s = measure_start - t0 if "measure_start" in locals() else None

    ratios, samples, bars, extra = compute_ratios(raw, unavailable)
    print_report(raw, ratios, samples, bars, extra, unavailable)
    cancel = cancel_before_start(args.start_method)
    print(f"cancel_before_start: subring {cancel['subring']:.2f} (bar 1.0, "
          f"{'met' if cancel['met'] else 'NOT MET'}), ProcessPoolExecutor {cancel['ppe']:.2f} "
          f"(informational), {cancel['tasks']} tasks not started")
    if args.skip_dask:
        dask = {"skipped": "skipped (--skip-dask)"}
    else:
        log("dask rows (informational) ...")
        dask = dask_rows(mode_name, log)
    if "skipped" in dask:
        print(f"dask: skipped: {dask['skipped']}")
    else:
        print(f"dask (informational): tiny {dask['tiny_threads']:.0f}/s threads, "
              f"{dask['tiny_ring']:.0f}/s RingExecutor ({dask['tiny_ring_vs_threads']:.2f}x); "
              f"1 MiB {dask['mib_threads']:.0f}/s threads, {dask['mib_ring']:.0f}/s "
              f"RingExecutor ({dask['mib_ring_vs_threads']:.2f}x)")
    wall = time.perf_counter() - t_start
    print(f"total wall time {wall:.1f} s")
    faulthandler.cancel_dump_traceback_later()

    if args.json:
        for w in raw.values():
            for r in w.values():
                r["median_ops_per_s"] = statistics.median(r["ops_per_s"])
                if "p50_us" in r:
                    r["median_p50_us"] = statistics.median(r["p50_us"])
                    r["median_p99_us"] = statistics.median(r["p99_us"])
        doc = {
            "benchmark": "executor",
            "mode": mode_name,
            "env": env,
            "config": {
                "reps": mode.reps, "slice_s": mode.slice_s, "chunk_ops": mode.chunk,
                "workers": WORKERS, "map_chunksize": MAP_CHUNKSIZE, "mib_window": MIB_WINDOW,
                "mib_bytes": MIB_ELEMS * 8, "start_method": args.start_method,
                "pool_setup_s": setup_s,
            },
            "results": raw,
            "skipped": unavailable,
            "ratios": ratios,
            "ratio_samples": samples,
            "bars": bars,
            "extra": extra,
            "cancel_before_start": cancel,
            "dask": dask,
            "wall_time_s": wall,
        }
        _common.write_json(args.json, doc)
    return 0


if __name__ == "__main__":
    sys.exit(main())
