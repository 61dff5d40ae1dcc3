"""bench/executor.py runs and writes well-formed JSON (``--smoke``: tiny sizes).

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

SCRIPT = Path(__file__).resolve().parents[2] / "bench" / "executor.py"

RATIO_KEYS = {
    "tiny_submit_vs_ppe",
    "tiny_submit_vs_pool",
    "tiny_map_vs_pool",
    "rtt_vs_pool",
    "mib_vs_ppe",
}
BARS = {"tiny_submit_vs_ppe": 10.0, "tiny_submit_vs_pool": 4.0, "tiny_map_vs_pool": 1.5,
        "rtt_vs_pool": 3.0, "mib_vs_ppe": 5.0}
WORKLOADS = {"tiny_submit", "tiny_map", "rtt", "mib"}


def _reject_constant(name: str) -> None:
    raise ValueError(f"not JSON: {name}")


def _run(tmp_path: Path, *extra: str) -> tuple[dict, str]:
    out = tmp_path / "x.json"
    proc = subprocess.run(
        [sys.executable, str(SCRIPT), "--smoke", "--json", str(out), *extra],
        check=False, capture_output=True, text=True, timeout=110,
    )
    assert proc.returncode == 0, f"stdout:\n{proc.stdout}\nstderr:\n{proc.stderr}"
    assert "ratio" in proc.stdout       # the table was printed
    for key in RATIO_KEYS:
        assert key in proc.stdout
    return json.loads(out.read_text(), parse_constant=_reject_constant), proc.stdout


def _check(doc: dict) -> None:
    assert doc["benchmark"] == "executor"
    assert doc["mode"] == "smoke"
    assert set(doc["ratios"]) == RATIO_KEYS
    for key in ("kernel_release", "python_version", "cpu_count", "start_method"):
        assert doc["env"][key]
    assert doc["config"]["workers"] == 2
    assert set(doc["bars"]) == RATIO_KEYS
    for key, bar in doc["bars"].items():
        assert bar["bar"] == BARS[key]
        ratio = doc["ratios"][key]
        # every bar's baseline (ppe, pool) is in the standard library: always measured
        assert isinstance(ratio, float) and math.isfinite(ratio) and ratio > 0
        assert bar["met"] is (ratio >= bar["bar"])
        assert len(doc["ratio_samples"][key]) == doc["config"]["reps"]
    reps = doc["config"]["reps"]
    assert set(doc["results"]) == WORKLOADS
    for workload, contenders in doc["results"].items():
        assert {"subring", "ppe", "pool"} <= set(contenders)
        for name, r in contenders.items():
            assert len(r["ops_per_s"]) == reps, (workload, name)
            assert all(x > 0 for x in r["ops_per_s"])
            if workload == "rtt":
                assert len(r["p50_us"]) == reps and len(r["p99_us"]) == reps
                assert all(0 < a <= b for a, b in zip(r["p50_us"], r["p99_us"]))


def _check_contract_and_dask(doc: dict, dask_skipped: bool) -> None:
    c = doc["cancel_before_start"]
    # a contract figure, not a speed: every task not started can be cancelled
    assert c["subring"] == 1.0 and c["met"] is True and c["bar"] == 1.0
    assert 0.0 <= c["ppe"] <= 1.0 and c["tasks"] > 0
    d = doc["dask"]
    if dask_skipped or importlib.util.find_spec("distributed") is None:
        assert d["skipped"]
    else:
        for key in ("tiny_threads", "tiny_ring", "mib_threads", "mib_ring"):
            assert d[key] > 0, key
        assert math.isclose(d["tiny_ring_vs_threads"], d["tiny_ring"] / d["tiny_threads"])


def test_smoke_json(tmp_path: Path) -> None:
    doc, _ = _run(tmp_path)
    _check(doc)
    _check_contract_and_dask(doc, dask_skipped=False)
    if importlib.util.find_spec("loky") is not None:
        assert "loky" in doc["results"]["mib"]
        assert doc["extra"]["mib_vs_loky"]["median"] is not None


def test_smoke_json_without_loky(tmp_path: Path) -> None:
    doc, stdout = _run(tmp_path, "--skip-loky", "--skip-dask")
    _check(doc)
    _check_contract_and_dask(doc, dask_skipped=True)
    assert "loky" in doc["skipped"]
    assert all("loky" not in c for c in doc["results"].values())
    for key, e in doc["extra"].items():
        if key.endswith("_vs_loky"):
            assert e["median"] is None and e["skipped"]
    assert "skipped" in stdout


if __name__ == "__main__":
    sys.exit(pytest.main([__file__, "-v"]))
