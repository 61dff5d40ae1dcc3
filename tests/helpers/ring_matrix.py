"""The KernelRing configuration matrix of the test suite.

Used by tests/kernel/conftest.py (the ``ring`` / ``make_ring`` fixtures run
each kernel test once per configuration) and by tests/contract/.  A
configuration the running kernel refuses is *skipped* with the reason, never
faked.
"""

from __future__ import annotations

import os

import pytest

from subring import KernelRing, UnsupportedError

# name -> KernelRing keyword arguments
CONFIGS: dict[str, dict] = {
    "default": {},
    "sqarray": {"no_sqarray": False},
    "big-entries": {"sqe128": True, "cqe32": True},
    "defer-taskrun": {"defer_taskrun": True},
    "coop-taskrun": {"coop_taskrun": True, "taskrun_flag": True},
    "sqpoll": {"sqpoll": True, "sq_thread_idle_ms": 50},
}


def make_configured(config: str, entries: int = 64, **kw) -> KernelRing:
    """A KernelRing in configuration ``config`` (overridden by ``kw``); skips
    the calling test when the kernel or the privileges refuse it."""
    args = dict(CONFIGS[config])
    args.update(kw)
    if args.get("sqpoll") and os.geteuid() != 0:
        pytest.skip("SQPOLL needs root here")
    try:
        return KernelRing(entries, **args)
    except UnsupportedError as e:
        pytest.skip(f"kernel refuses config {config}: {e}")
