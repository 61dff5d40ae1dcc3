"""bench/ipc.py runs and writes well-formed JSON (``--smoke``: tiny sizes).

These tests check the script's output contract only -- never any speed.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[2] / "bench" / "ipc.py"

RATIO_KEYS = {
    "msg64_vs_pipe",
    "msg64_batch_vs_best",
    "msg4k_vs_best",
    "msg1m_vs_iceoryx2",
    "rtt64_vs_best",
    "rtt64_interrupt_vs_pipe",
}
SUBRING_ROWS = {f"subring-{m}{b}" for m in ("hybrid", "interrupt", "poll")
                for b in ("", "-batch")}
# the C floor (bench/c_pingpong.c): informational, never in "ratios"
C_ROWS = {"c-pipe", "c-eventfd", "c-futex", "c-futex-same-cpu", "c-futex-cross-cpu"}
C_UNPINNED = {"c-pipe", "c-eventfd", "c-futex"}
FLOOR_KEYS = {
    "rtt64_interrupt_over_floor",
    "pipe_over_floor",
    "rtt64_interrupt_over_cross_cpu",
    "cross_cpu_over_same_cpu",
}
HAVE_GCC = shutil.which("gcc") is not None

pytest.importorskip("numpy")     # the 1 MiB workloads fill buffers with numpy


def _run(tmp_path: Path, *extra: str,
         env: dict[str, str] | None = None) -> tuple[dict, str]:
    out = tmp_path / "x.json"
    proc = subprocess.run(
        [sys.executable, str(SCRIPT), "--smoke", "--json", str(out), *extra],
        check=False, capture_output=True, text=True, timeout=90, env=env,
    )
    assert proc.returncode == 0, f"stdout:\n{proc.stdout}\nstderr:\n{proc.stderr}"
    return json.loads(out.read_text()), proc.stdout


def _check(doc: dict, stdout: str) -> None:
    assert "ratio" in stdout and "idle CPU" in stdout        # the table was printed
    assert doc["benchmark"] == "ipc"
    assert set(doc["ratios"]) == RATIO_KEYS
    assert set(doc["bars"]) == RATIO_KEYS
    for key in ("kernel_release", "python_version", "cpu_count"):
        assert doc["env"][key]
    for key, bar in doc["bars"].items():
        assert isinstance(bar["bar"], (int, float)) and bar["bar"] > 0
        ratio = doc["ratios"][key]
        if ratio is None:
            assert bar["met"] is None and bar["skipped"]
        else:
            assert isinstance(ratio, float) and math.isfinite(ratio) and ratio > 0
            assert bar["met"] is (ratio >= bar["bar"])
    # a subring failure makes the script exit 1; a baseline may fail on a
    # strange machine (recorded in "failed", its ratios null) without that
    assert not [e for e in doc["errors"] if e["contender"].startswith("subring")]
    # every subring row ran every workload, with positive figures
    for wl in ("msg64", "msg4k", "msg1m"):
        assert SUBRING_ROWS <= set(doc["results"][wl])
        for name, r in doc["results"][wl].items():
            done = [x for x in r["msg_per_s"] if x is not None]
            assert done and all(x > 0 for x in done), (wl, name)
    assert SUBRING_ROWS <= set(doc["results"]["rtt64"])
    for r in doc["results"]["rtt64"].values():
        assert all(x > 0 for x in r["p50_us"] if x is not None)
    assert set(doc["idle_cpu"]) == {"hybrid", "interrupt", "poll"}
    # stdlib baselines always run, so the Pipe ratios always exist
    for key in ("msg64_vs_pipe", "rtt64_interrupt_vs_pipe", "msg64_batch_vs_best",
                "msg4k_vs_best", "rtt64_vs_best"):
        assert doc["ratios"][key] is not None, key
    # the C floor: its entries always exist, each a positive median or null
    # with the reason
    assert set(doc["floor"]) == FLOOR_KEYS
    for key, e in doc["floor"].items():
        assert e["description"] and e["numerator"] and e["denominator"], key
        if e["median"] is None:
            assert e["skipped"] and e["samples"] == [], key
        else:
            assert isinstance(e["median"], float) and math.isfinite(e["median"]), key
            assert e["median"] > 0 and all(x > 0 for x in e["samples"]), key
    assert "c_pingpong" in doc["config"]
    assert "p50 / floor" in stdout                      # the floor table was printed


def _check_floor_ran(doc: dict) -> None:
    """With a C compiler: the C rows are in the round-trip results (or say why
    not), and the unpinned ones, with their floor entries, ran."""
    assert "c-pingpong" not in doc["skipped"], doc["skipped"].get("c-pingpong")
    assert "error" not in doc["config"]["c_pingpong"]
    assert doc["config"]["c_pingpong"]["command"]
    rtt = doc["results"]["rtt64"]
    for row in C_ROWS:
        if row not in rtt:
            assert row in doc["skipped"] or row in doc["failed"], row
            continue
        r = rtt[row]
        for fld in ("n", "p50_us", "p99_us", "mean_us", "max_us", "same_cpu_frac"):
            assert any(x is not None for x in r[fld]), (row, fld)
        for n, p50, frac in zip(r["n"], r["p50_us"], r["same_cpu_frac"], strict=True):
            if n is not None:
                assert n > 0 and p50 > 0 and 0.0 <= frac <= 1.0, row
    assert C_UNPINNED <= set(rtt), doc["errors"]
    for key in ("rtt64_interrupt_over_floor", "pipe_over_floor"):
        assert doc["floor"][key]["median"] is not None, key
    # the C rows are never "the best baseline" of a ratio
    assert not set(doc["bars"]["rtt64_vs_best"]["baseline_per_rep"]) & C_ROWS


def test_smoke_json(tmp_path: Path) -> None:
    doc, stdout = _run(tmp_path)
    _check(doc, stdout)
    if "iceoryx2" not in doc["skipped"] and "iceoryx2" not in doc["failed"]:
        assert doc["ratios"]["msg1m_vs_iceoryx2"] is not None
    if HAVE_GCC:
        _check_floor_ran(doc)


def test_smoke_json_without_optional_baselines(tmp_path: Path) -> None:
    # ... and without a C compiler: the C floor is skipped with the reason
    doc, stdout = _run(tmp_path, "--skip", "iceoryx2", "--skip", "pyzmq",
                       "--skip", "faster-fifo", "--cc", str(tmp_path / "no-such-cc"))
    _check(doc, stdout)
    assert "no-such-cc" in doc["skipped"]["c-pingpong"]
    assert doc["config"]["c_pingpong"]["error"]
    assert not C_ROWS & set(doc["results"]["rtt64"])
    for e in doc["floor"].values():
        assert e["median"] is None and e["skipped"]
    assert set(doc["ratios"]) == RATIO_KEYS            # the ratios do not depend on it
    assert doc["ratios"]["msg1m_vs_iceoryx2"] is None
    assert doc["bars"]["msg1m_vs_iceoryx2"]["skipped"]
    assert {"iceoryx2", "pyzmq", "faster-fifo"} <= set(doc["skipped"])
    for contenders in doc["results"].values():
        assert not any(n.startswith(("iceoryx2", "pyzmq", "faster-fifo")) for n in contenders)


def test_baseline_that_segfaults_is_reported_not_fatal(tmp_path: Path) -> None:
    """A pyzmq whose native code kills the process on import (SIGSEGV): the
    script exits 0, the pyzmq rows are skipped with the reason, and the
    subring rows, the stdlib baselines and their ratios all run."""
    fake = tmp_path / "fake" / "zmq"
    fake.mkdir(parents=True)
    (fake / "__init__.py").write_text(
        "import os, signal\n"
        "signal.signal(signal.SIGSEGV, signal.SIG_DFL)\n"
        "os.kill(os.getpid(), signal.SIGSEGV)\n")
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(
        [str(fake.parent), *filter(None, env.get("PYTHONPATH", "").split(os.pathsep))])
    env["SUBRING_BENCH_PROBE_TIMEOUT"] = "20"
    doc, stdout = _run(tmp_path, "--skip", "iceoryx2", "--skip", "faster-fifo",
                       "--cc", str(tmp_path / "no-such-cc"), env=env)
    _check(doc, stdout)
    assert "killed by SIGSEGV" in doc["skipped"]["pyzmq"], doc["skipped"]["pyzmq"]
    assert "pyzmq" in stdout and "SIGSEGV" in stdout
    for contenders in doc["results"].values():
        assert not any(n.startswith("pyzmq") for n in contenders)


if __name__ == "__main__":
    sys.exit(pytest.main([__file__, "-v"]))
