"""bench/kernel.py runs and writes well-formed JSON (``--smoke``: tiny sizes).

These tests check the script's output contract only -- never any speed.
"""

from __future__ import annotations

import importlib.util
import json
import math
import os
import shlex
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[2] / "bench" / "kernel.py"

RATIO_KEYS = {
    "nop256_vs_liburing",
    "nop1_vs_liburing",
    "read_qd32_vs_liburing",
    "read_qd32_batch_vs_pread",
    "read_qd32_vs_threadpool",
    "nop256_vs_c",
    "nop1_vs_c",
    "read_qd32_vs_c",
    "read_qd32_batch_vs_c",
}
LIBURING_KEYS = {"nop256_vs_liburing", "nop1_vs_liburing", "read_qd32_vs_liburing"}
# subring / the C loop on subring's ring core (bench/c_ceiling.c), same run
C_KEYS = {"nop256_vs_c", "nop1_vs_c", "read_qd32_vs_c", "read_qd32_batch_vs_c"}
# informational ratios against the C program: no bar, not in "ratios"
CEILING_KEYS = {
    "nop32_batch_vs_c", "liburing_nop1_vs_c", "liburing_nop256_vs_c",
    "liburing_read_qd32_vs_c", "pread_vs_c_pread", "c_read_qd32_vs_c_pread",
}
LIBURING_CEILING_KEYS = {k for k in CEILING_KEYS if k.startswith("liburing_")}
_CC = (shlex.split(sysconfig.get_config_var("CC") or "") or ["gcc"])[0]
HAVE_CC = shutil.which(_CC) is not None or shutil.which("gcc") is not None


def _run(tmp_path: Path, *extra: str, env: dict[str, str] | None = None) -> dict:
    out = tmp_path / "kernel.json"
    proc = subprocess.run(
        [sys.executable, str(SCRIPT), "--smoke", "--json", str(out), *extra],
        check=False, capture_output=True, text=True, timeout=90, env=env,
    )
    assert proc.returncode == 0, f"stdout:\n{proc.stdout}\nstderr:\n{proc.stderr}"
    assert "ratio" in proc.stdout       # the table was printed
    return json.loads(out.read_text())


def _check_common(doc: dict) -> None:
    assert set(doc["ratios"]) == RATIO_KEYS
    for key in ("kernel_release", "python_version", "cpu_count"):
        assert doc["env"][key]
    assert set(doc["bars"]) == RATIO_KEYS
    for key, bar in doc["bars"].items():
        assert isinstance(bar["bar"], (int, float)) and bar["bar"] > 0
        ratio = doc["ratios"][key]
        if ratio is None:
            assert bar["met"] is None
        else:
            assert isinstance(ratio, float) and math.isfinite(ratio) and ratio > 0
            assert bar["met"] is (ratio >= bar["bar"])
    # raw figures: every contender that ran has one positive rate per repetition
    reps = doc["config"]["reps"]
    for workload, contenders in doc["results"].items():
        for name, r in contenders.items():
            assert len(r["ops_per_s"]) == reps, (workload, name)
            assert all(x > 0 for x in r["ops_per_s"])
    assert {"nop1", "nop32", "nop256", "read_qd32"} <= set(doc["results"])
    assert {"subring", "subring-batch", "pread", "threadpool"} <= set(
        doc["results"]["read_qd32"])
    assert set(doc["ceiling"]) == CEILING_KEYS
    for key, e in doc["ceiling"].items():
        assert e["description"]
        if e["median"] is None:
            assert e["skipped"] and e["samples"] == []
        else:
            assert len(e["samples"]) == reps, key
            assert math.isfinite(e["median"]) and e["median"] > 0
            assert all(x > 0 for x in e["samples"])


def _check_c_ceiling(doc: dict, with_liburing: bool) -> None:
    """The C program was built and ran: its rows and ceiling entries are there."""
    info = doc["config"]["c_ceiling"]
    assert "error" not in info and "c_ceiling.c" in info["command"]
    assert "c-loop" not in doc["skipped"] and "c-pread" not in doc["skipped"]
    # same setup flags as KernelRing's default (the comparison is like for like)
    assert info["setup_flags"] == info["subring_setup_flags"]
    for workload in ("nop1", "nop32", "nop256", "read_qd32"):
        assert "c-loop" in doc["results"][workload], workload
    assert "c-pread" in doc["results"]["read_qd32"]
    assert all("c-pread" not in doc["results"][w] for w in ("nop1", "nop32", "nop256"))
    for key in CEILING_KEYS - LIBURING_CEILING_KEYS:
        assert doc["ceiling"][key]["median"] is not None, key
    for key in C_KEYS:                      # the vs-C ratios hold with or without liburing
        assert doc["ratios"][key] is not None, key
    for key in LIBURING_CEILING_KEYS:
        assert (doc["ceiling"][key]["median"] is not None) is with_liburing, key
    # informational only: the bars' keys are unchanged
    assert not set(doc["ceiling"]) & set(doc["ratios"])


def test_smoke_json(tmp_path: Path) -> None:
    doc = _run(tmp_path)
    _check_common(doc)
    have_liburing = importlib.util.find_spec("liburing") is not None
    if have_liburing:
        assert all(doc["ratios"][k] is not None for k in RATIO_KEYS)
        assert "liburing" in doc["results"]["nop32"]
    else:
        assert all(doc["ratios"][k] is None for k in LIBURING_KEYS)
    if HAVE_CC:
        _check_c_ceiling(doc, with_liburing=have_liburing)


def test_smoke_json_without_liburing(tmp_path: Path) -> None:
    doc = _run(tmp_path, "--skip-liburing")
    _check_common(doc)
    for k in LIBURING_KEYS:
        assert doc["ratios"][k] is None
        assert doc["bars"][k]["skipped"]
    for k in RATIO_KEYS - LIBURING_KEYS:
        assert doc["ratios"][k] is not None
    assert "liburing" in doc["skipped"]
    assert all("liburing" not in c for c in doc["results"].values())
    if HAVE_CC:
        _check_c_ceiling(doc, with_liburing=False)
        for k in LIBURING_CEILING_KEYS:
            assert doc["ceiling"][k]["skipped"]


def test_smoke_json_c_ceiling_unavailable(tmp_path: Path) -> None:
    """A compiler that fails: the reason is recorded, the C rows are left out
    (never faked) and everything else still runs."""
    doc = _run(tmp_path, "--skip-liburing", "--cc", "false")
    _check_common(doc)
    assert "failed" in doc["config"]["c_ceiling"]["error"]
    assert doc["skipped"]["c-loop"] == doc["skipped"]["c-pread"]
    assert all("c-loop" not in c and "c-pread" not in c for c in doc["results"].values())
    for key, e in doc["ceiling"].items():
        assert e["median"] is None and e["skipped"], key
    for k in C_KEYS:
        assert doc["ratios"][k] is None and "failed" in doc["bars"][k]["skipped"], k
    for k in RATIO_KEYS - LIBURING_KEYS - C_KEYS:
        assert doc["ratios"][k] is not None


# A fake ``liburing`` package that dies the way a binary wheel built for
# another CPU does: the whole interpreter is killed by a signal on import.
_FAKE_LIBURING = """
import os, signal, time
how = os.environ.get("FAKE_LIBURING_DEATH", "SIGILL")
if how == "hang":
    time.sleep(3600)
elif how == "hang-with-child":          # a child that holds the probe's output pipes
    import subprocess, sys
    subprocess.Popen([sys.executable, "-c", "import time; time.sleep(3600)"])
    time.sleep(3600)
elif how == "import-error":
    raise ImportError("fake liburing: undefined symbol io_uring_queue_init")
else:
    signal.signal(getattr(signal, how), signal.SIG_DFL)
    os.kill(os.getpid(), getattr(signal, how))
    time.sleep(60)
"""


@pytest.mark.parametrize("death, reason", [
    ("SIGILL", "killed by SIGILL (illegal instruction"),
    ("SIGSEGV", "killed by SIGSEGV"),
    ("hang", "the probe hung"),
    ("hang-with-child", "the probe hung"),
    ("import-error", "undefined symbol"),
])
def test_baseline_that_crashes_is_reported_not_fatal(tmp_path: Path, death: str,
                                                     reason: str) -> None:
    """A liburing that kills its process on import (SIGILL on a CPU without
    AVX-512, a segfault), hangs or fails to import: the script still exits 0,
    its rows and ratios are skipped with the reason, and the subring rows and
    the C ceiling run."""
    fake = tmp_path / "fake"
    (fake / "liburing").mkdir(parents=True)
    (fake / "liburing" / "__init__.py").write_text(_FAKE_LIBURING)
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(
        [str(fake), *filter(None, env.get("PYTHONPATH", "").split(os.pathsep))])
    env["FAKE_LIBURING_DEATH"] = death
    env["SUBRING_BENCH_PROBE_TIMEOUT"] = "3"
    doc = _run(tmp_path, env=env)
    _check_common(doc)
    assert reason in doc["skipped"]["liburing"], doc["skipped"]["liburing"]
    for k in LIBURING_KEYS:
        assert doc["ratios"][k] is None
        assert reason in doc["bars"][k]["skipped"]
    assert all("liburing" not in c for c in doc["results"].values())
    for k in RATIO_KEYS - LIBURING_KEYS - (C_KEYS if not HAVE_CC else set()):
        assert doc["ratios"][k] is not None, k
    if HAVE_CC:
        _check_c_ceiling(doc, with_liburing=False)


if __name__ == "__main__":
    sys.exit(pytest.main([__file__, "-v"]))
