"""Harness pieces shared by the benchmark scripts in this directory.

Only plumbing lives here (command line, environment record, data file,
child-process cleanup, C compile, ratio and informational tables, JSON
output); each script keeps its own
workloads, contenders, measuring loop and ratio definitions.  The scripts are
run as ``python bench/NAME.py``, so this directory is on ``sys.path`` and they
``import _common`` (spawned children inherit that ``sys.path``).
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import json
import os
import platform
import random
import shlex
import signal
import struct
import subprocess
import sys
import tempfile
import textwrap
import time
from collections.abc import Callable, Sequence
from typing import Any

import subring

BLOCK = 4096
CLK_TCK = os.sysconf("SC_CLK_TCK")
DATA_FILE_NAME = "subring-bench-256M.dat"   # shared by bench/kernel.py and bench/aio.py


class BenchError(RuntimeError):
    """A contender produced a wrong result: the figures would be meaningless."""


def log(msg: str) -> None:
    print(msg, flush=True)


# --------------------------------------------------------------------------
# command line
# --------------------------------------------------------------------------

def make_parser(doc: str | None) -> argparse.ArgumentParser:
    """The parser with ``--quick`` / ``--smoke`` (exclusive) and ``--json``;
    the script adds its own options after these."""
    p = argparse.ArgumentParser(description=(doc or "").split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    g = p.add_mutually_exclusive_group()
    g.add_argument("--quick", action="store_true", help="fewer/shorter repetitions (< 60 s)")
    g.add_argument("--smoke", action="store_true",
                   help="tiny sizes, a few seconds: only checks that the script works")
    p.add_argument("--json", metavar="PATH", help="write raw figures and ratios as JSON")
    return p


def add_reps_slice(p: argparse.ArgumentParser,
                   slice_help: str = "override the seconds per contender per repetition") -> None:
    p.add_argument("--reps", type=int, help="override the number of repetitions")
    p.add_argument("--slice", type=float, help=slice_help)


def select_mode(args: argparse.Namespace, modes: dict[str, Any]) -> tuple[str, Any]:
    """(name, mode) for ``--smoke`` / ``--quick`` / neither ("full"), with
    ``--reps`` / ``--slice`` applied to the mode's ``reps`` / ``slice_s``."""
    name = "smoke" if args.smoke else "quick" if args.quick else "full"
    mode = modes[name]
    if args.reps is not None:
        mode = dataclasses.replace(mode, reps=max(1, args.reps))
    if args.slice is not None:
        mode = dataclasses.replace(mode, slice_s=max(0.001, args.slice))
    return name, mode


# --------------------------------------------------------------------------
# environment
# --------------------------------------------------------------------------

def package_version(mod: str) -> str | None:
    try:
        from importlib.metadata import version

        return version(mod)
    except Exception:  # noqa: BLE001
        return None


_DEFAULT = object()


def environment(extra: dict[str, Any] | None = None,
                after_timestamp: dict[str, Any] | None = None,
                subring_version: Any = _DEFAULT) -> dict[str, Any]:
    """The common environment record: platform, Python, CPUs, subring version,
    then ``extra``, the UTC timestamp, ``after_timestamp`` and the usable CPUs."""
    env: dict[str, Any] = {
        "kernel_release": platform.release(),
        "python_version": platform.python_version(),
        "python_implementation": platform.python_implementation(),
        "cpu_count": os.cpu_count(),
        "machine": platform.machine(),
        "subring_version": (getattr(subring, "__version__", None)
                            if subring_version is _DEFAULT else subring_version),
    }
    env.update(extra or {})
    env["timestamp_utc"] = datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds")
    env.update(after_timestamp or {})
    try:
        env["cpus_usable"] = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        pass
    return env


# --------------------------------------------------------------------------
# the data file (bench/kernel.py, bench/aio.py)
# --------------------------------------------------------------------------

def create_data_file(path: str, size: int) -> None:
    """Write ``size`` bytes; each 4 KiB block is its own index (little-endian
    u64) repeated, so any two blocks differ.  Written to a temporary name and
    renamed, so a crash never leaves a short file under ``path``."""
    tmp = f"{path}.{os.getpid()}.tmp"
    chunk_blocks = 2048                           # 8 MiB per write
    try:
        with open(tmp, "wb") as f:
            for first in range(0, size // BLOCK, chunk_blocks):
                last = min(first + chunk_blocks, size // BLOCK)
                f.write(b"".join(struct.pack("<Q", b) * (BLOCK // 8) for b in range(first, last)))
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def size_ok(path: str, size: int) -> bool:
    """The file exists with the right size."""
    try:
        return os.stat(path).st_size == size
    except FileNotFoundError:
        return False


def layout_ok(path: str, size: int) -> bool:
    """Right size, and a few blocks hold their own index."""
    try:
        if os.stat(path).st_size != size:
            return False
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return False
    try:
        blocks = size // BLOCK
        for b in (0, 1, blocks // 2, blocks - 1, random.randrange(blocks)):
            if os.pread(fd, BLOCK, b * BLOCK) != struct.pack("<Q", b) * (BLOCK // 8):
                return False
        return True
    finally:
        os.close(fd)


def warm_page_cache(path: str) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_WILLNEED)
        while os.read(fd, 8 << 20):
            pass
    finally:
        os.close(fd)


def prepare_data_file(mode: Any, tmpdir: str, valid: Callable[[str, int], bool],
                      log: Callable[[str], None]) -> tuple[str, bool, float]:
    """Return (path, created, seconds): ``$TMPDIR/subring-bench-256M.dat`` if
    ``mode.cached_file`` (reused when ``valid``), else a file in ``tmpdir``;
    created if needed, read into the page cache, and logged."""
    t0 = time.perf_counter()
    if mode.cached_file:
        path = os.path.join(tempfile.gettempdir(), DATA_FILE_NAME)
    else:
        path = os.path.join(tmpdir, "data.dat")
    created = False
    if not valid(path, mode.file_size):
        create_data_file(path, mode.file_size)
        created = True
    warm_page_cache(path)
    file_s = time.perf_counter() - t0
    log(f"data file {path} ({mode.file_size >> 20} MiB, "
        f"{'created' if created else 'reused'}, page-cached) in {file_s:.1f} s")
    return path, created, file_s


def make_offsets(n: int, file_size: int, seed: int = 20260330) -> list[int]:
    """n random 4 KiB-aligned offsets into a file of file_size bytes."""
    rng = random.Random(seed)
    blocks = file_size // BLOCK
    return [rng.randrange(blocks) * BLOCK for _ in range(n)]


# --------------------------------------------------------------------------
# child processes
# --------------------------------------------------------------------------

def terminate_or_kill(p: Any, timeout: float = 5.0) -> None:
    """Terminate ``p`` if it is alive, then kill it if it is still alive."""
    if p.is_alive():
        p.terminate()
        p.join(timeout)
    if p.is_alive():
        p.kill()
        p.join(timeout)


def stop_process(p: Any) -> None:
    """Stop a process that may never have been created or started."""
    if p is None or p.pid is None:
        return
    terminate_or_kill(p, 5)


def connect_when_served(address: str, timeout: float,
                        is_alive: Callable[[], bool] | None = None, **kw: Any) -> Any:
    """``subring.connect(address, **kw)`` to a server that may still be
    starting: retried while nothing serves the path yet (``connect`` fails at
    once then), until ``timeout`` seconds pass or ``is_alive()`` says the
    server process is gone."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            return subring.connect(address, timeout=max(0.1, deadline - time.monotonic()), **kw)
        except (FileNotFoundError, ConnectionRefusedError):
            if time.monotonic() >= deadline or (is_alive is not None and not is_alive()):
                raise
            time.sleep(0.01)


def cpu_seconds(path: str) -> float:
    """utime + stime of /proc/PID/stat or /proc/PID/task/TID/stat, in seconds."""
    with open(path, "rb") as f:
        raw = f.read()
    fields = raw[raw.rindex(b")") + 2:].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


# --------------------------------------------------------------------------
# optional baselines: probed in a child process before the parent touches them
# --------------------------------------------------------------------------

PROBE_TIMEOUT_ENV = "SUBRING_BENCH_PROBE_TIMEOUT"
DEFAULT_PROBE_TIMEOUT = 60.0
_PROBE_OK = "subring-bench-probe-ok"


def _signal_name(num: int) -> str:
    try:
        return signal.Signals(num).name
    except ValueError:
        return f"signal {num}"


_SIGNAL_HINTS = {
    signal.SIGILL: "illegal instruction: a binary wheel built for CPU features this CPU lacks "
                   "(e.g. AVX-512)",
    signal.SIGSEGV: "segmentation fault in the baseline's native code",
    signal.SIGBUS: "bus error in the baseline's native code",
    signal.SIGABRT: "the baseline aborted",
}


def probe_baseline(name: str, code: str, timeout: float | None = None, *,
                   module: str | None = None) -> str | None:
    """Run ``code`` (Python source that imports the baseline and exercises it
    briefly) in a fresh interpreter; return None if it exited 0, else one line
    saying why the baseline cannot run here (exit status, the signal that
    killed it -- SIGILL from a wheel built for another CPU, SIGSEGV --, a
    hang past ``timeout`` seconds, or the last line of its traceback).

    Call it before the parent process imports the baseline: a module that
    dies on import takes its importer with it.  ``timeout`` defaults to
    ``$SUBRING_BENCH_PROBE_TIMEOUT`` or 60 s.  The child inherits ``sys.path``
    (through PYTHONPATH) so it sees what the caller would import.  With
    ``module``, a top-level module that is not installed is reported without
    starting a child.
    """
    if module is not None:
        import importlib.util

        try:
            found = importlib.util.find_spec(module) is not None
        except (ImportError, ValueError):
            found = False
        if not found:
            return f"{name} is not installed (no module {module!r}; pip install -e '.[bench]')"
    if timeout is None:
        timeout = float(os.environ.get(PROBE_TIMEOUT_ENV, DEFAULT_PROBE_TIMEOUT))
    src = textwrap.dedent(code) + f"\nprint({_PROBE_OK!r}, flush=True)\n"
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in sys.path if p)
    try:
        # its own session: a hung probe is killed with everything it started
        # (a child holding the output pipes would otherwise keep us waiting)
        child = subprocess.Popen([sys.executable, "-c", src], stdout=subprocess.PIPE,
                                 stderr=subprocess.PIPE, text=True, env=env,
                                 stdin=subprocess.DEVNULL, start_new_session=True)
    except OSError as e:
        return f"{name}: cannot start the probe: {e}"
    try:
        out, err = child.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        try:
            os.killpg(child.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        child.communicate()
        return f"{name}: the probe hung (no exit within {timeout:g} s)"
    proc = subprocess.CompletedProcess(child.args, child.returncode, out, err)
    if proc.returncode < 0:
        sig = -proc.returncode
        hint = _SIGNAL_HINTS.get(sig, "")
        why = f"{name}: the probe was killed by {_signal_name(sig)}"
        return f"{why} ({hint})" if hint else why
    if proc.returncode != 0 or _PROBE_OK not in proc.stdout:
        lines = (proc.stderr or proc.stdout).strip().splitlines()
        return f"{name}: the probe failed (exit {proc.returncode}): " + (
            lines[-1] if lines else "no output")
    return None


# --------------------------------------------------------------------------
# C programs (bench/kernel.py, bench/ipc.py)
# --------------------------------------------------------------------------

def compile_c(argv: Sequence[str], sources: Sequence[str], exe: str,
              flags: Sequence[str] = (), libs: Sequence[str] = ()
              ) -> tuple[str | None, dict[str, Any]]:
    """Run ``argv -O2 flags sources -o exe libs``.  Returns (exe or None, info);
    info holds "command" and "compiler" (the first line of ``--version``), or
    "error": why there is no executable (``sources[0]``, a file in bench/, names
    the program)."""
    cmd = [*argv, "-O2", *flags, *sources, "-o", exe, *libs]
    info: dict[str, Any] = {"command": shlex.join(cmd)}
    try:
        ver = subprocess.run([*argv, "--version"], check=False, capture_output=True,
                             text=True, timeout=30)
        info["compiler"] = (ver.stdout.splitlines() or ["?"])[0]
        proc = subprocess.run(cmd, check=False, capture_output=True, text=True, timeout=120)
    except (OSError, subprocess.SubprocessError) as e:
        info["error"] = f"cannot run the C compiler {argv[0]!r}: {type(e).__name__}: {e}"
        return None, info
    if proc.returncode != 0 or not os.path.exists(exe):
        tail = " | ".join((proc.stderr or proc.stdout).strip().splitlines()[-3:]) or "no output"
        info["error"] = (f"compiling bench/{os.path.basename(sources[0])} failed "
                         f"(exit {proc.returncode}): {tail}")
        return None, info
    return exe, info


# --------------------------------------------------------------------------
# reporting
# --------------------------------------------------------------------------

def print_ratio_table(ratios: dict[str, float | None], samples: dict[str, list[float]],
                      bars: dict[str, dict[str, Any]], *,
                      title: str = "ratio (subring / baseline)", width: int = 27,
                      rule: int = 62, bar_spec: str = ".2f") -> None:
    """Header and one row per ratio key (median, min, max, bar, met)."""
    print(f"{title:<{width}} {'median':>7} {'min':>6} {'max':>6} {'bar':>6}  met")
    print("-" * rule)
    for key, ratio in ratios.items():
        bar = bars[key]
        if ratio is None:
            print(f"{key:<{width}} {'n/a':>7} {'':>6} {'':>6} {bar['bar']:>6{bar_spec}}  "
                  f"skipped: {bar.get('skipped')}")
            continue
        s = samples[key]
        print(f"{key:<{width}} {ratio:7.2f} {min(s):6.2f} {max(s):6.2f} "
              f"{bar['bar']:>6{bar_spec}}  {'yes' if bar['met'] else 'NO'}")


def print_info_table(entries: dict[str, dict[str, Any]], *, title: str, width: int = 27,
                     rule: int = 50, note: str = "") -> None:
    """Header (then ``note``, if any) and one row per informational entry (no
    bar): median, min and max of its "samples", or n/a and why it was skipped."""
    print(f"{title:<{width}} {'median':>7} {'min':>6} {'max':>6}" + (f"  {note}" if note else ""))
    print("-" * rule)
    for key, e in entries.items():
        if e["median"] is None:
            print(f"{key:<{width}} {'n/a':>7}  skipped: {e.get('skipped')}")
            continue
        s = e["samples"]
        print(f"{key:<{width}} {e['median']:7.2f} {min(s):6.2f} {max(s):6.2f}")


def write_json(path: str, doc: dict[str, Any]) -> None:
    with open(path, "w") as f:
        json.dump(doc, f, indent=2)
        f.write("\n")
    print(f"wrote {path}")
