"""Shared fixtures: the ring configuration matrix.

Every test that takes the ``ring`` fixture (or calls ``make_ring``) runs once
per configuration below.  A configuration the running kernel refuses is
*skipped* with the reason, never faked.
"""

from __future__ import annotations

import gc
import os
import warnings

import pytest

import subring
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


def _make(config: str, entries: int = 64, **kw):
    args = dict(CONFIGS[config])
    args.update(kw)
    if args.get("sqpoll") and os.geteuid() != 0:
        pytest.skip("SQPOLL needs root here")
    try:
        return KernelRing(entries, **args)
    except UnsupportedError as e:
        pytest.skip(f"kernel refuses config {config}: {e}")


@pytest.fixture(params=list(CONFIGS))
def ring_config(request) -> str:
    return request.param


@pytest.fixture
def make_ring(ring_config):
    """Factory: make_ring(entries=64, **overrides) in the current config;
    every ring made is closed at teardown."""
    made: list[KernelRing] = []

    def factory(entries: int = 64, **kw) -> KernelRing:
        r = _make(ring_config, entries, **kw)
        made.append(r)
        return r

    yield factory
    for r in made:
        if not r.closed:
            r.close()


@pytest.fixture
def ring(make_ring) -> KernelRing:
    return make_ring()


@pytest.fixture
def plain_ring():
    """A default ring, for tests whose subject is not the configuration."""
    r = KernelRing(64)
    yield r
    if not r.closed:
        r.close()


@pytest.fixture
def kprobe():
    return subring.probe()


@pytest.fixture
def datafile(tmp_path):
    """A 1 MiB file with known contents (byte i is i*7 mod 251)."""
    p = tmp_path / "data.bin"
    data = bytes((i * 7) % 251 for i in range(1 << 20))
    p.write_bytes(data)
    return p, data


@pytest.fixture(autouse=True)
def _no_leaked_fds():
    """Fail a test that leaks file descriptors (rings, eventfds, sockets)."""
    gc.collect()
    before = set(os.listdir("/proc/self/fd"))
    yield
    gc.collect()
    after = set(os.listdir("/proc/self/fd"))
    leaked = []
    for fd in after - before:
        try:
            leaked.append(f"{fd}->{os.readlink(f'/proc/self/fd/{fd}')}")
        except OSError:
            pass
    if leaked:
        warnings.warn(f"leaked fds: {leaked}")
        pytest.fail(f"test leaked file descriptors: {leaked}")
