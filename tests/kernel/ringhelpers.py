"""Completion-collecting and probe helpers shared by the KernelRing test files.

Every wait here is bounded by its timeout.
"""

from __future__ import annotations

import time

import pytest

import subring
from subring import Completion, KernelRing


def reap_n(ring: KernelRing, n: int, timeout: float = 5.0) -> list[Completion]:
    out: list[Completion] = []
    deadline = time.monotonic() + timeout
    while len(out) < n:
        left = deadline - time.monotonic()
        if left <= 0:
            raise AssertionError(f"only {len(out)} of {n} completions within {timeout} s")
        ring.submit_and_wait(n - len(out), timeout=left)
        out += ring.reap()
    assert len(out) == n, f"expected {n} completions, got {len(out)}"
    return out


def wait_ready(ring: KernelRing, n: int, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while ring.cq_ready < n:
        left = deadline - time.monotonic()
        assert left > 0, f"only {ring.cq_ready} of {n} completions ready within {timeout} s"
        ring.submit_and_wait(n, timeout=left)


def need(*ops: str) -> None:
    p = subring.probe()
    for op in ops:
        if not p.supports(op):
            pytest.skip(f"kernel lacks IORING_OP_{op.upper()}")


def collect(ring, n: int, timeout: float = 5.0) -> list:
    got: list = []
    deadline = time.monotonic() + timeout
    while len(got) < n:
        left = deadline - time.monotonic()
        if left <= 0:
            break
        ring.submit_and_wait(n - len(got), min(left, 0.5))
        got.extend(ring.reap())
    assert len(got) == n, f"expected {n} completions within {timeout}s, got {got!r}"
    return got


def one(ring, timeout: float = 5.0):
    (c,) = collect(ring, 1, timeout)
    return c


def run_child(code: str, timeout: float = 60.0, args: list[str] | None = None) -> str:
    """Run `code` in a fresh interpreter (this tree's subring) and return its
    stdout.  For regressions whose old behaviour was a crash or a wait that
    never returns: the child dies or times out, the test fails, the test
    process lives on."""
    import subprocess
    import sys
    import textwrap
    try:
        p = subprocess.run([sys.executable, "-c", textwrap.dedent(code), *(args or [])],
                           capture_output=True,
                           text=True, timeout=timeout)
    except subprocess.TimeoutExpired as e:
        raise AssertionError(f"child did not finish within {timeout} s (hang); "
                             f"stdout so far: {e.stdout!r}") from None
    assert p.returncode == 0, f"child exited with {p.returncode}: {p.stderr[-2000:]}"
    return p.stdout


def pattern_bytes(n: int) -> bytes:
    """n bytes where byte i is i*7 mod 251 (a pattern with no short period
    that lines up with buffer sizes), without numpy."""
    period = bytes((i * 7) % 251 for i in range(251))
    return (period * (n // 251 + 1))[:n]


def resizable(buf: bytearray) -> bool:
    """Whether ``buf`` can change size now (False while the ring pins it)."""
    try:
        buf.append(0)
    except BufferError:
        return False
    del buf[-1]
    return True
