"""Every ```python block in README.md and docs/**/*.md runs as written: each
alone, in a fresh interpreter, in a temporary working directory, within 60 s.
A block that cannot run alone (it needs a second terminal) is written as
```text instead.  Test ids are FILE:LINE of the block's opening fence."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

import subring

ROOT = Path(__file__).resolve().parents[2]
SRC = str(Path(subring.__file__).resolve().parents[1])
FENCE = re.compile(r"^(\s*)```(\S*)\s*$")


def python_blocks() -> list[tuple[str, str]]:
    """(FILE:LINE, source) for each ```python block."""
    files = [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md"))]
    out = []
    for path in files:
        lines = path.read_text().splitlines()
        k = 0
        while k < len(lines):
            m = FENCE.match(lines[k])
            if m and m[2] == "python":
                indent, start, body = len(m[1]), k + 1, []
                k += 1
                while k < len(lines) and not FENCE.match(lines[k]):
                    body.append(lines[k][indent:])
                    k += 1
                out.append((f"{path.relative_to(ROOT)}:{start}", "\n".join(body) + "\n"))
            elif m:                         # skip other fenced blocks whole
                k += 1
                while k < len(lines) and not FENCE.match(lines[k]):
                    k += 1
            k += 1
    return out


BLOCKS = python_blocks()

def test_there_are_examples() -> None:
    assert len(BLOCKS) >= 10


@pytest.mark.parametrize("where, source", BLOCKS, ids=[w for w, _ in BLOCKS])
def test_example_runs(where: str, source: str, tmp_path: Path) -> None:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (SRC, env.get("PYTHONPATH")) if p)
    try:
        proc = subprocess.run([sys.executable, "-c", source], cwd=tmp_path, env=env,
                              capture_output=True, text=True, timeout=60,
                              stdin=subprocess.DEVNULL, check=False)
    except subprocess.TimeoutExpired as e:     # the child is killed by run()
        proc = subprocess.CompletedProcess(e.cmd, -9, str(e.stdout or ""),
                                           f"did not finish within {e.timeout:g} s "
                                           "(a server that is never stopped?)")
    assert proc.returncode == 0, (
        f"{where} failed (exit {proc.returncode})\n--- stdout\n{proc.stdout}"
        f"\n--- stderr\n{proc.stderr}")
