"""bench/fuse.py runs, writes well-formed JSON and cleans up (``--smoke``).

These tests check the script's output contract and its hygiene (no mount,
server process or enable_uring change left behind) -- never any speed.
They need root and /dev/fuse (the benchmark mounts file systems).
"""

from __future__ import annotations

import importlib.util
import json
import math
import os
import shlex
import shutil
import signal
import subprocess
import sys
import sysconfig
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "bench" / "fuse.py"
ENABLE_URING = Path("/sys/module/fuse/parameters/enable_uring")

RATIO_KEYS = {"stat_vs_mfusepy", "read4k_vs_mfusepy", "read4k_2r_uring_vs_classic",
              "read4k_vs_c"}
WORKLOADS = {"stat_1r", "stat_1r_same_cpu", "stat_1r_cross_cpu", "read4k_1r",
             "read4k_1r_same_cpu", "read4k_1r_cross_cpu", "stat_2r", "read4k_2r"}
C_ROWS = {"c-uring", "c-uring-pq", "c-classic", "c-classic-pq"}
_CC = (shlex.split(sysconfig.get_config_var("CC") or "") or ["gcc"])[0]
HAVE_CC = shutil.which(_CC) is not None or shutil.which("gcc") is not None

pytestmark = [
    pytest.mark.skipif(os.geteuid() != 0, reason="mounting FUSE needs root"),
    pytest.mark.skipif(not os.path.exists("/dev/fuse"), reason="/dev/fuse is absent"),
]


def _enable_uring() -> str | None:
    try:
        return ENABLE_URING.read_text().strip()
    except OSError:
        return None


def _bench_env(tmp_path: Path, base: dict | None = None) -> dict:
    """The benchmark's environment for one test: its temporary directory (so
    its mounts) under tmp_path, and a tag every process it starts inherits --
    so a benchmark run by someone else at the same time is never counted."""
    env = dict(os.environ if base is None else base)
    (tmp_path / "t").mkdir(exist_ok=True)
    env["TMPDIR"] = str(tmp_path / "t")
    env["FUSEBENCH_TEST_TAG"] = f"{os.getpid()}-{tmp_path.name}"
    return env


def _bench_mounts(tmp_path: Path) -> list[str]:
    top = str(tmp_path / "t") + "/"
    with open("/proc/self/mountinfo") as f:
        return [line.split()[4] for line in f if line.split()[4].startswith(top)]


def _bench_processes(env: dict) -> list[int]:
    """Processes (servers, readers, the benchmark) started for this test."""
    tag = f"FUSEBENCH_TEST_TAG={env['FUSEBENCH_TEST_TAG']}".encode()
    found = []
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        try:
            environ = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
        except OSError:
            continue
        if tag in environ:
            found.append(int(pid))
    return found


def _no_leftovers(tmp_path: Path, env: dict) -> None:
    assert _bench_mounts(tmp_path) == []
    deadline = time.monotonic() + 5      # a killed child may take a moment to be reaped
    while _bench_processes(env) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert _bench_processes(env) == []


def _run(tmp_path: Path, *extra: str, env: dict | None = None) -> dict:
    out = tmp_path / "fuse.json"
    before = _enable_uring()
    env = _bench_env(tmp_path, env)
    proc = subprocess.run(
        [sys.executable, str(SCRIPT), "--smoke", "--no-install", "--json", str(out), *extra],
        check=False, capture_output=True, text=True, timeout=90, env=env,
    )
    assert proc.returncode == 0, f"stdout:\n{proc.stdout}\nstderr:\n{proc.stderr}"
    assert "ratio" in proc.stdout       # the table was printed
    _no_leftovers(tmp_path, env)
    # restored (another test run may flip it concurrently: only a hint then)
    assert _enable_uring() == before
    return json.loads(out.read_text())


def _check_common(doc: dict) -> None:
    assert doc["benchmark"] == "fuse"
    for key in ("kernel_release", "python_version", "cpu_count"):
        assert doc["env"][key]
    assert set(doc["ratios"]) == RATIO_KEYS == set(doc["bars"])
    for key, bar in doc["bars"].items():
        assert bar["bar"] > 0 and bar["description"]
        ratio = doc["ratios"][key]
        if ratio is None:
            assert bar["met"] is None and bar["skipped"]      # the reason is given
        else:
            assert isinstance(ratio, float) and math.isfinite(ratio) and ratio > 0
            assert bar["met"] is (ratio >= bar["bar"])
            assert len(doc["ratio_samples"][key]) == doc["config"]["reps"]
    assert set(doc["results"]) == WORKLOADS
    reps = doc["config"]["reps"]
    ran = set()
    for workload, contenders in doc["results"].items():
        for name, r in contenders.items():
            assert len(r["ops_per_s"]) == reps, (workload, name)
            assert all(x > 0 for x in r["ops_per_s"])
            assert len(r["server_cpu_us_per_op"]) == reps
            assert all(x is None or x >= 0 for x in r["server_cpu_us_per_op"])
            assert name not in doc["skipped"]
            ran.add(name)
    # every contender either ran (and said which transport it used) or says why not
    for name in ran:
        info = doc["servers"][name]
        assert info["transport"] in ("uring", "classic")
        if "requests_served" in info:
            # caching is off: every timed stat/read reached the server, and on
            # io_uring every one of them came through the ring
            assert info["timed_requests"] > 0
            assert info["every_op_reached_server"] is True, (name, info)
            if info["transport"] == "uring":
                assert info["ring_requests"] >= info["timed_requests"], (name, info)
            else:
                assert info["ring_requests"] == 0, (name, info)
    for name, why in doc["skipped"].items():
        assert why and name not in ran
    for key, e in doc["ceiling"].items():
        assert e["description"]
        if e["median"] is None:
            assert e["skipped"] and e["samples"] == []
        else:
            assert len(e["samples"]) == reps and e["median"] > 0


def test_smoke_json(tmp_path: Path) -> None:
    doc = _run(tmp_path)
    _check_common(doc)
    ran = {n for cs in doc["results"].values() for n in cs}
    if importlib.util.find_spec("subring.fuse") is None:
        assert "subring.fuse" in doc["skipped"]["subring-uring"]
        assert "subring.fuse" in doc["skipped"]["subring-classic"]
    if HAVE_CC:
        assert "error" not in doc["config"]["c_fuse"], doc["config"]["c_fuse"]
        for name in C_ROWS & ran:        # the C server always reports its counts
            assert "requests_served" in doc["servers"][name], name
        # the C classic servers need nothing but /dev/fuse
        assert {"c-classic", "c-classic-pq"} <= ran, doc["skipped"]
        for name in ("c-uring", "c-uring-pq"):
            if name in ran:
                assert doc["servers"][name]["transport"] == "uring"
            else:
                assert doc["skipped"][name]
    # io_uring servers really got io_uring (else they are skipped, not faked)
    for name in ran:
        if name in ("subring-uring", "c-uring", "c-uring-pq"):
            assert doc["servers"][name]["transport"] == "uring"
    # per-queue servers are not re-pinned: no cross-CPU row, with the reason
    if "c-uring-pq" in ran and doc["config"]["cross_server_cpu"] is not None:
        assert "c-uring-pq" not in doc["results"]["read4k_1r_cross_cpu"]
        assert doc["not_measured"]["read4k_1r_cross_cpu"]["c-uring-pq"]
        assert "c-uring" in doc["results"]["read4k_1r_cross_cpu"] or "c-uring" not in ran


def test_smoke_c_server_unavailable(tmp_path: Path) -> None:
    """A compiler that fails: the reason is recorded, the C rows are left out
    (never faked) and the other contenders still run."""
    doc = _run(tmp_path, "--cc", "false")
    _check_common(doc)
    assert "failed" in doc["config"]["c_fuse"]["error"]
    for name in C_ROWS:
        assert doc["skipped"][name] == doc["config"]["c_fuse"]["error"]
        assert all(name not in cs for cs in doc["results"].values())
    assert doc["ratios"]["read4k_vs_c"] is None
    assert "c-uring" in doc["bars"]["read4k_vs_c"]["skipped"]


def test_smoke_baseline_that_crashes_is_skipped(tmp_path: Path) -> None:
    """An mfusepy that imports but whose server dies before serving: its rows
    are skipped with the exit status, the run goes on and leaves no mount."""
    fake = tmp_path / "fake"
    fake.mkdir()
    (fake / "mfusepy.py").write_text(
        "import os, sys\n"
        "class Operations: pass\n"
        "class FuseOSError(OSError): pass\n"
        "def FUSE(*a, **k):\n"
        "    sys.stderr.write('fake mfusepy: crashing on purpose\\n'); sys.stderr.flush()\n"
        "    os._exit(7)\n")
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(
        [str(fake)] + ([env["PYTHONPATH"]] if env.get("PYTHONPATH") else []))
    doc = _run(tmp_path, "--only", "mfusepy,c-classic", env=env)
    _check_common(doc)
    why = doc["skipped"]["mfusepy"]
    assert "exited 7" in why and "crashing on purpose" in why
    assert doc["ratios"]["stat_vs_mfusepy"] is None
    assert "mfusepy" in doc["bars"]["stat_vs_mfusepy"]["skipped"]
    if HAVE_CC:
        assert "c-classic" in doc["results"]["read4k_1r"]


def _ctrl_c_reaches_child() -> None:
    """preexec_fn: give the benchmark the SIGINT disposition an interactive
    run has.  A suite started in the background by a non-interactive shell
    (`cmd &`, as a CI script may) inherits SIGINT *ignored*; Python then
    installs no KeyboardInterrupt handler, and the Ctrl-C these tests send
    would never arrive (each waited out its 60 s and left mounts behind)."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def _sigint_cleans_up(tmp_path: Path, after: str) -> None:
    if not HAVE_CC:
        pytest.skip("no C compiler: the C servers this test interrupts cannot be built")
    before = _enable_uring()
    env = _bench_env(tmp_path)
    proc = subprocess.Popen(
        [sys.executable, str(SCRIPT), "--quick", "--no-install", "--only", "c-uring,c-classic",
         "--reps", "50"],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env,
        preexec_fn=_ctrl_c_reaches_child)
    try:
        deadline = time.monotonic() + 60
        seen = ""
        while time.monotonic() < deadline:
            line = proc.stdout.readline()  # type: ignore[union-attr]
            seen += line
            if not line or after in line:
                break
        assert after in seen, seen
        if after == "measuring":
            time.sleep(0.3)
        proc.send_signal(signal.SIGINT)
        rest, _ = proc.communicate(timeout=60)
        assert proc.returncode != 0
        assert "cleaning up" in rest
        _no_leftovers(tmp_path, env)      # checked before the safety net below
        assert _enable_uring() == before
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
        for path in _bench_mounts(tmp_path):   # never leave one behind, even on failure
            subprocess.run(["umount", "-l", path], check=False)


@pytest.mark.parametrize("after", ["setup done", "c-classic: serving", "measuring"])
def test_sigint_cleans_up(tmp_path: Path, after: str) -> None:
    """Ctrl-C while servers start, between mounts, or while measuring: every
    mount is gone, every server and reader stopped, enable_uring restored."""
    _sigint_cleans_up(tmp_path, after)


def test_regression_sigint_tests_hold_when_the_suite_ignores_sigint(tmp_path: Path) -> None:
    """The suite itself running with SIGINT ignored (started with `&` by a
    non-interactive shell): the Ctrl-C still reaches the benchmark, which
    cleans up (these tests timed out and left mounts behind in such a run)."""
    old = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        _sigint_cleans_up(tmp_path, "setup done")
    finally:
        signal.signal(signal.SIGINT, old)


def test_sigint_while_a_mounted_server_is_not_ready(tmp_path: Path) -> None:
    """A server that has mounted but not yet said READY when Ctrl-C arrives
    is still unmounted and stopped (here a fake mfusepy mounts a tmpfs on its
    mount point and then never answers)."""
    fake = tmp_path / "fake"
    fake.mkdir()
    (fake / "mfusepy.py").write_text(
        "import subprocess, time\n"
        "class Operations: pass\n"
        "class FuseOSError(OSError): pass\n"
        "def FUSE(ops, mountpoint, **k):\n"
        "    subprocess.run(['mount', '-t', 'tmpfs', 'fake', mountpoint], check=True)\n"
        "    print('FAKE MOUNTED', flush=True)\n"
        "    time.sleep(600)\n")
    env = _bench_env(tmp_path)
    env["PYTHONPATH"] = os.pathsep.join(
        [str(fake)] + ([env["PYTHONPATH"]] if env.get("PYTHONPATH") else []))
    proc = subprocess.Popen(
        [sys.executable, str(SCRIPT), "--smoke", "--no-install", "--only", "mfusepy"],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env,
        preexec_fn=_ctrl_c_reaches_child)
    try:
        seen = ""
        while "mfusepy: starting" not in seen:
            line = proc.stdout.readline()  # type: ignore[union-attr]
            if not line:
                break
            seen += line
        assert "mfusepy: starting" in seen, seen
        deadline = time.monotonic() + 30
        while not _bench_mounts(tmp_path) and time.monotonic() < deadline:
            time.sleep(0.02)
        assert _bench_mounts(tmp_path), "the fake server did not mount"
        proc.send_signal(signal.SIGINT)
        rest, _ = proc.communicate(timeout=60)
        assert proc.returncode != 0
        assert _bench_mounts(tmp_path) == [], rest
        _no_leftovers(tmp_path, env)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
        for path in _bench_mounts(tmp_path):   # never leave one behind, even on failure
            subprocess.run(["umount", "-l", path], check=False)


if __name__ == "__main__":
    sys.exit(pytest.main([__file__, "-v"]))
