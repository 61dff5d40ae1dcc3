"""``subring bench``: run the benchmark scripts (``bench/NAME.py``) with a
progress display, then print one comparison table and draw a chart per suite.

The scripts are the benchmarks (each also runs alone: ``python
bench/kernel.py --quick``); this command only runs them in child processes,
reads the JSON each writes, and presents it.  A suite whose script is absent
or fails is reported; the others still run.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import signal
import subprocess
import sys
import textwrap
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

from .errors import EXIT_FAILED, EXIT_OK, EXIT_USAGE, CommandError
from .output import Output

SUITES = ("kernel", "ipc", "aio", "executor", "fuse")
_REP = re.compile(r"repetition (\d+)/(\d+)")

LEGEND = """\
legend: ratio = subring's figure / the baseline's, taken within each repetition (same run,
  interleaved); "median" is the median of those per-repetition ratios and "range" their min-max.
  Higher is better.  "goal" is the bar the project set; "met" says whether the median reaches it.
  *_vs_c rows compare with a C program doing the same work on subring's own ring core (the
  ceiling this machine allows).  "n/a" = the baseline did not run here (the reason follows)."""


def find_bench_dir(given: str | None) -> Path:
    """``--bench-dir``, else ``bench/`` of the source tree this subring was
    imported from, else ``./bench``."""
    if given:
        d = Path(given)
        if not (d / "_common.py").is_file():
            raise CommandError(f"--bench-dir {given}: no benchmark scripts there "
                               "(expected _common.py)", EXIT_USAGE)
        return d
    here = Path(__file__).resolve()
    for d in (here.parents[3] / "bench", Path.cwd() / "bench"):
        if (d / "_common.py").is_file():
            return d
    raise CommandError("cannot find the benchmark scripts (bench/*.py): run from a subring "
                       "checkout or pass --bench-dir DIR", EXIT_USAGE)


def add_parser(sub: Any) -> None:
    """Add ``bench``."""
    b = sub.add_parser(
        "bench", help="run benchmarks: table, JSON and a PNG chart per suite",
        description=textwrap.fill(
            "Run the benchmark suites (bench/SUITE.py) one after the other with a progress "
            "display, print a comparison table (each ratio against its goal) with a legend, "
            "and write SUITE.json, SUITE.log and SUITE.png into --out.  A baseline that is "
            "missing or crashes is reported and skipped, not fatal.", 79),
        epilog=LEGEND, formatter_class=argparse.RawDescriptionHelpFormatter)
    b.add_argument("suites", nargs="*", metavar="SUITE",
                   help=f"which suites: {', '.join(SUITES)} or all (default: kernel)")
    g = b.add_mutually_exclusive_group()
    g.add_argument("--quick", action="store_true",
                   help="fewer, shorter repetitions: about a minute per suite")
    g.add_argument("--smoke", action="store_true",
                   help="tiny sizes, seconds per suite: only checks that everything runs")
    b.add_argument("--out", default=".", metavar="DIR",
                   help="directory for the JSON, logs and charts (default: current directory)")
    b.add_argument("--bench-dir", metavar="DIR",
                   help="where the bench/*.py scripts are (default: found from the install)")
    b.add_argument("--no-chart", action="store_true", help="do not draw PNG charts")
    b.add_argument("--timeout", type=float, default=1800.0, metavar="SECONDS",
                   help="stop a suite that runs longer than this (default 1800)")
    b.add_argument("--verbose", "-v", action="store_true",
                   help="echo each script's own output as it runs")
    b.set_defaults(func=run_bench)


def selected(names: list[str]) -> list[str]:
    """The suites to run, in canonical order, ``all`` expanded."""
    unknown = [n for n in names if n not in (*SUITES, "all")]
    if unknown:
        raise CommandError(f"unknown suite {unknown[0]!r}: choose from "
                           f"{', '.join(SUITES)}, all", EXIT_USAGE)
    if not names:
        return ["kernel"]
    if "all" in names:
        return list(SUITES)
    return [s for s in SUITES if s in names]


def run_script(script: Path, argv: list[str], log_path: Path, timeout: float,
               on_line: Callable[[str], None]) -> tuple[int, bool]:
    """Run ``python SCRIPT ARGV`` with the same subring as this process on the
    path, feeding each output line to ``on_line`` and into ``log_path``.
    Returns (exit status, negative if killed by a signal; whether it was
    killed for running past ``timeout`` seconds, output or not)."""
    import subring

    env = dict(os.environ)
    pkg_root = str(Path(subring.__file__).resolve().parents[1])
    env["PYTHONPATH"] = os.pathsep.join([pkg_root, *filter(None, [env.get("PYTHONPATH")])])
    env["PYTHONUNBUFFERED"] = "1"
    timed_out = threading.Event()
    with open(log_path, "w") as log, subprocess.Popen(
            [sys.executable, str(script), *argv], stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT, text=True, env=env, stdin=subprocess.DEVNULL,
            start_new_session=True) as proc:
        assert proc.stdout is not None

        def kill_group() -> None:
            # the script's own children (servers, workers) hold its stdout too
            try:
                os.killpg(proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass

        def expire() -> None:
            timed_out.set()
            kill_group()                 # ends the read loop below: EOF on the pipe

        watchdog = threading.Timer(timeout, expire)
        watchdog.daemon = True
        watchdog.start()
        try:
            for line in proc.stdout:
                log.write(line)
                on_line(line.rstrip("\n"))
            rc = proc.wait(timeout=30)   # its stdout is closed: it is exiting
        except BaseException:
            kill_group()
            proc.wait(10)
            raise
        finally:
            watchdog.cancel()
        if timed_out.is_set():
            log.write(f"\n[subring bench: stopped after {timeout:g} s]\n")
        return rc, timed_out.is_set()


class Progress:
    """A progress bar per suite with ``rich``; plain lines otherwise."""

    def __init__(self, out: Output, verbose: bool) -> None:
        self.out, self.verbose = out, verbose
        self.bar: Any = None
        if out.rich is not None:
            import rich.progress

            self.bar = rich.progress.Progress(
                rich.progress.TextColumn("{task.description:<10}"), rich.progress.BarColumn(),
                rich.progress.MofNCompleteColumn(), rich.progress.TimeElapsedColumn(),
                rich.progress.TextColumn("{task.fields[note]}"), console=out.console)
        self.task: Any = None
        self.suite = ""

    def __enter__(self) -> Progress:
        if self.bar is not None:
            self.bar.start()
        return self

    def __exit__(self, *exc: object) -> None:
        if self.bar is not None:
            self.bar.stop()

    def start(self, suite: str) -> None:
        """A suite starts: a new bar (or a line)."""
        self.suite = suite
        if self.bar is not None:
            self.task = self.bar.add_task(suite, total=None, note="starting")
        else:
            self.out.line(f"[{suite}] running bench/{suite}.py ...")

    def feed(self, line: str) -> None:
        """One line of the script's output: advance on ``repetition k/n``."""
        m = _REP.search(line)
        if self.bar is not None:
            if self.verbose:
                self.bar.console.print(line, markup=False, highlight=False)
            if m:
                self.bar.update(self.task, completed=int(m[1]), total=int(m[2]),
                                note="repetitions")
            elif "skipped" in line and ":" in line and len(line) < 200:
                self.bar.update(self.task, note=line.strip()[:60])
            return
        if self.verbose:
            self.out.line(f"[{self.suite}] {line}")
        elif m:
            self.out.line(f"[{self.suite}] repetition {m[1]}/{m[2]}")

    def done(self, note: str) -> None:
        """The suite ended: fill its bar and say how (``note``)."""
        if self.bar is not None:
            t = self.bar.tasks[self.task]
            self.bar.update(self.task, total=t.total or 1, completed=t.total or 1, note=note)
        else:
            self.out.line(f"[{self.suite}] {note}")


def ratio_rows(suite: str, doc: dict[str, Any]) -> list[list[str]]:
    """Comparison table rows for one suite's JSON."""
    rows = []
    samples = doc.get("ratio_samples") or {}
    for key, ratio in (doc.get("ratios") or {}).items():
        bar = (doc.get("bars") or {}).get(key, {})
        goal = bar.get("bar")
        s = [x for x in samples.get(key) or [] if isinstance(x, (int, float))]
        if ratio is None:
            rows.append([suite, key, "n/a", "", _num(goal), "skipped",
                         str(bar.get("skipped") or "baseline unavailable")])
            continue
        met = bar.get("met")
        rows.append([suite, key, f"{ratio:.2f}", f"{min(s):.2f}-{max(s):.2f}" if s else "",
                     _num(goal), "" if met is None else "yes" if met else "NO",
                     str(bar.get("description", ""))])
    return rows


def _num(x: Any) -> str:
    return "" if x is None else f"{x:g}" if isinstance(x, (int, float)) else str(x)


def run_bench(args: argparse.Namespace, out: Output) -> int:
    """``subring bench``."""
    suites = selected(args.suites)
    bench_dir = find_bench_dir(args.bench_dir)
    out_dir = Path(args.out)
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise CommandError(f"cannot create --out {args.out}: {e.strerror or e}", EXIT_USAGE) from e
    mode = ["--quick"] if args.quick else ["--smoke"] if args.smoke else []
    docs: dict[str, dict[str, Any]] = {}
    problems: dict[str, str] = {}
    with Progress(out, args.verbose) as progress:
        for suite in suites:
            script = bench_dir / f"{suite}.py"
            progress.start(suite)
            if not script.is_file():
                problems[suite] = f"bench/{suite}.py is not in {bench_dir}"
                progress.done("not available")
                continue
            json_path = out_dir / f"{suite}.json"
            log_path = out_dir / f"{suite}.log"
            if json_path.exists():
                json_path.unlink()
            rc, timed_out = run_script(script, [*mode, "--json", str(json_path)], log_path,
                                       args.timeout, progress.feed)
            if rc != 0 or timed_out or not json_path.is_file():
                why = (f"ran past --timeout {args.timeout:g} s and was stopped" if timed_out
                       else f"was killed by signal {-rc}" if rc < 0 else f"exited {rc}")
                problems[suite] = f"bench/{suite}.py {why}; its output is in {log_path}"
                progress.done("failed")
                continue
            docs[suite] = json.loads(json_path.read_text())
            progress.done(f"done, {json_path}")
    rows = [r for suite, doc in docs.items() for r in ratio_rows(suite, doc)]
    if rows:
        out.table("comparison (subring / baseline)",
                  ["suite", "ratio", "median", "range", "goal", "met", "what / why n/a"],
                  rows, right=[2, 3, 4])
        out.line(LEGEND)
    for suite, doc in docs.items():
        for name, why in (doc.get("skipped") or {}).items():
            out.line(f"{suite}: {name} skipped: {why}")
    if not args.no_chart:
        from .charts import draw_suite, matplotlib_error

        missing = matplotlib_error()
        if missing and docs:
            out.line(f"no charts: {missing} (pip install 'subring[cli]')")
        elif docs:
            for suite, doc in docs.items():
                png = out_dir / f"{suite}.png"
                try:
                    draw_suite(suite, doc, png)
                except Exception as e:  # noqa: BLE001 -- a chart must not lose the figures
                    out.line(f"{suite}: no chart: {type(e).__name__}: {e}")
                else:
                    out.line(f"wrote {png}")
    for suite in docs:
        out.line(f"wrote {out_dir / (suite + '.json')}")
    for suite, why in problems.items():
        print(f"subring bench: {suite}: {why}", file=sys.stderr)
    return EXIT_FAILED if problems else EXIT_OK
