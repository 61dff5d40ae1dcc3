"""bench/aio.py runs and writes well-formed JSON (``--smoke``: tiny sizes).

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

SCRIPT = Path(__file__).resolve().parents[2] / "bench" / "aio.py"

RATIO_KEYS = {
    "aread32_vs_executor",
    "aread32_vs_aiofiles",
    "aread256_vs_executor",
    "acall32_vs_pipe",
    "lines_vs_builtin",
    "lines_vs_aiofiles",
}


def _reject_constant(name: str) -> None:
    raise ValueError(f"not JSON: {name}")


def _run(tmp_path: Path, *extra: str) -> dict:
    out = tmp_path / "x.json"
    proc = subprocess.run(
        [sys.executable, str(SCRIPT), "--smoke", "--json", str(out), *extra],
        check=False, capture_output=True, text=True, timeout=60,
    )
    assert proc.returncode == 0, f"stdout:\n{proc.stdout}\nstderr:\n{proc.stderr}"
    assert "ratio" in proc.stdout       # the table was printed
    for key in RATIO_KEYS:
        assert key in proc.stdout
    # strict JSON: no NaN / Infinity
    return json.loads(out.read_text(), parse_constant=_reject_constant)


def _check(doc: dict) -> None:
    assert doc["benchmark"] == "aio"
    assert set(doc["ratios"]) == RATIO_KEYS
    for key in ("kernel_release", "python_version", "cpu_count", "event_loop"):
        assert doc["env"][key]
    assert set(doc["bars"]) == RATIO_KEYS
    aiofiles_ok = importlib.util.find_spec("aiofiles") is not None
    for key, bar in doc["bars"].items():
        assert isinstance(bar["bar"], (int, float)) and bar["bar"] > 0
        ratio = doc["ratios"][key]
        if ratio is None:
            assert key in ("aread32_vs_aiofiles", "lines_vs_aiofiles") and not aiofiles_ok
            assert bar["met"] is None
        else:
            assert isinstance(ratio, float) and math.isfinite(ratio) and ratio > 0
            assert bar["met"] is (ratio >= bar["bar"])
            assert len(doc["ratio_samples"][key]) == doc["config"]["reps"]
    reps = doc["config"]["reps"]
    stall = doc["max_stall_ms"]                  # beside the ratios: lower is better
    assert isinstance(stall, float) and math.isfinite(stall) and stall >= 0
    assert doc["max_stall"]["met"] is (stall <= doc["max_stall"]["bar"])
    assert len(doc["max_stall"]["samples"]) == reps
    files = doc["extra"]["files"]
    assert len(files["subring_lines_per_s"]) == reps and min(files["subring_lines_per_s"]) > 0
    assert set(doc["results"]) == {"aread32", "aread256", "acall1", "acall32"}
    for workload, contenders in doc["results"].items():
        for name, r in contenders.items():
            assert len(r["ops_per_s"]) == reps, (workload, name)
            assert all(x > 0 for x in r["ops_per_s"])
    for w in ("aread32", "aread256"):
        assert {"subring", "executor"} <= set(doc["results"][w])
    for w in ("acall1", "acall32"):
        assert set(doc["results"][w]) == {"subring", "pipe"}
    extra = doc["extra"]
    assert extra["acall1_subring_calls_per_s"] > 0
    assert extra["acall1_pipe_calls_per_s"] > 0
    if aiofiles_ok:
        assert extra["aread256_aiofiles_reads_per_s"] > 0


def test_smoke_json(tmp_path: Path) -> None:
    doc = _run(tmp_path)
    _check(doc)
    assert doc["config"]["uvloop"] is False


def test_smoke_json_uvloop(tmp_path: Path) -> None:
    if importlib.util.find_spec("uvloop") is None:
        pytest.skip("uvloop is not installed")
    doc = _run(tmp_path, "--uvloop")
    _check(doc)
    assert doc["config"]["uvloop"] is True
    assert doc["env"]["event_loop"].startswith("uvloop")


if __name__ == "__main__":
    sys.exit(pytest.main([__file__, "-v"]))
