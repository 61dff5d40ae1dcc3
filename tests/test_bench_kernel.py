"""bench/kernel.py runs and writes well-formed JSON (``--smoke``: tiny sizes).

These tests check the script's output contract only -- never any speed.
"""

from __future__ import annotations

import importlib.util
import json
import math
import subprocess
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parent.parent / "bench" / "kernel.py"

RATIO_KEYS = {
    "nop256_vs_liburing",
    "nop1_vs_liburing",
    "read_qd32_vs_liburing",
    "read_qd32_batch_vs_pread",
    "read_qd32_vs_threadpool",
}
LIBURING_KEYS = {"nop256_vs_liburing", "nop1_vs_liburing", "read_qd32_vs_liburing"}


def _run(tmp_path: Path, *extra: str) -> dict:
    out = tmp_path / "kernel.json"
    proc = subprocess.run(
        [sys.executable, str(SCRIPT), "--smoke", "--json", str(out), *extra],
        check=False, capture_output=True, text=True, timeout=60,
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


def test_smoke_json(tmp_path: Path) -> None:
    doc = _run(tmp_path)
    _check_common(doc)
    if importlib.util.find_spec("liburing") is not None:
        assert all(doc["ratios"][k] is not None for k in RATIO_KEYS)
        assert "liburing" in doc["results"]["nop32"]
    else:
        assert all(doc["ratios"][k] is None for k in LIBURING_KEYS)


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


if __name__ == "__main__":
    sys.exit(pytest.main([__file__, "-v"]))
