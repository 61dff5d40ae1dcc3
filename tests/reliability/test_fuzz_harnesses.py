"""The fuzz harnesses of fuzz/ in the default run: every kept input
(``fuzz/corpus/<harness>/``: seeds, and every input that ever found a bug,
named ``crash-<bug>``) is replayed, and each harness fuzzes for a few
seconds when atheris is installed (``SUBRING_FUZZ_SECONDS``, default 2;
``SUBRING_RELIAB_SCALE`` multiplies it).  Each run is a child process: a
crash is a failure with the input, not a dead pytest."""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys

import pytest
from reliab_util import ROOT, child_env, scale

pytestmark = [pytest.mark.fuzz, pytest.mark.timeout(300)]

FUZZ = ROOT / "fuzz"
HARNESSES = sorted(p.stem for p in FUZZ.glob("fuzz_*.py"))
# kept inputs of bugs still open, with the bug each one shows (xfail strict:
# the test fails once the bug is fixed, so the entry must then be removed)
OPEN_FINDINGS: dict[str, str] = {}
# harnesses whose inputs are decoded by atheris.FuzzedDataProvider
PROVIDER_HARNESSES = {"fuzz_attach", "fuzz_prep_args"}


def _run(args: list[str], timeout: float, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, *args], capture_output=True, timeout=timeout,
                          env=child_env(env), cwd=str(FUZZ), check=False)


def _kept(harness: str) -> list[str]:
    d = FUZZ / "corpus" / harness
    return sorted(str(p) for p in d.iterdir()) if d.is_dir() else []


def test_every_harness_has_a_corpus():
    assert HARNESSES
    for h in HARNESSES:
        assert _kept(h), f"fuzz/corpus/{h}/ is empty"


@pytest.mark.parametrize("harness", HARNESSES)
def test_replay_seeds(harness):
    seeds = [p for p in _kept(harness) if not os.path.basename(p).startswith("crash-")]
    r = _run([f"{harness}.py", "--replay", *seeds], timeout=120)
    assert r.returncode == 0, r.stderr.decode(errors="replace")[-4000:]


FINDINGS = [(h, os.path.basename(p)) for h in HARNESSES for p in _kept(h)
            if os.path.basename(p).startswith("crash-")]


@pytest.mark.parametrize("harness,name", FINDINGS, ids=[f"{h}/{n}" for h, n in FINDINGS])
def test_replay_finding(harness, name, request):
    if harness in PROVIDER_HARNESSES and importlib.util.find_spec("atheris") is None:
        pytest.skip(f"{harness} decodes inputs with atheris' FuzzedDataProvider: a kept "
                    "input means the same calls only with atheris installed")
    if name in OPEN_FINDINGS:
        request.applymarker(pytest.mark.xfail(strict=True, reason=OPEN_FINDINGS[name]))
    r = _run([f"{harness}.py", "--replay", str(FUZZ / "corpus" / harness / name)],
             timeout=120)
    assert r.returncode == 0, r.stderr.decode(errors="replace")[-4000:]


@pytest.mark.skipif(importlib.util.find_spec("atheris") is None,
                    reason="atheris is not installed (pip install atheris)")
@pytest.mark.skipif("libasan" in os.environ.get("LD_PRELOAD", ""),
                    reason="atheris' bundled libFuzzer aborts under an LD_PRELOADed ASan "
                    "runtime (CHECK failed: real___cxa_throw); the replays still run")
@pytest.mark.parametrize("harness", HARNESSES)
def test_fuzz_bounded(harness, tmp_path):
    seconds = max(1, int(float(os.environ.get("SUBRING_FUZZ_SECONDS", "2")) * scale()))
    work = tmp_path / "corpus"
    work.mkdir()
    args = [f"{harness}.py", f"-max_total_time={seconds}", "-rss_limit_mb=2048",
            f"-artifact_prefix={tmp_path}/", "-print_final_stats=1", str(work),
            str(FUZZ / "corpus" / harness)]
    # known, filed bugs have their own regression tests; the bounded run looks
    # for new ones
    r = _run(args, timeout=seconds + 120, env={"SUBRING_FUZZ_TOLERATE_KNOWN": "1"})
    crashes = sorted(tmp_path.glob("crash-*")) + sorted(tmp_path.glob("timeout-*"))
    err = r.stderr.decode(errors="replace")
    assert r.returncode == 0 and not crashes, (
        f"{harness} found something; keep the input in fuzz/corpus/{harness}/crash-<bug>:\n"
        + "\n".join(f"{c}: {c.read_bytes().hex()}" for c in crashes) + "\n" + err[-4000:])
    assert "stat::number_of_executed_units" in err
