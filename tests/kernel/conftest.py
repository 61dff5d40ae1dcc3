"""Fixtures of the kernel-ring tests.

Every test that takes the ``ring`` fixture (or calls ``make_ring``) runs once
per KernelRing configuration of tests/helpers/ring_matrix.py.  A
configuration the running kernel refuses is *skipped* with the reason, never
faked.
"""

from __future__ import annotations

import os

import pytest

import subring
from ring_matrix import CONFIGS, make_configured
from ringhelpers import pattern_bytes
from subring import KernelRing


@pytest.fixture(params=list(CONFIGS))
def ring_config(request) -> str:
    return request.param


@pytest.fixture
def make_ring(ring_config):
    """Factory: make_ring(entries=64, **overrides) in the current config;
    every ring made is closed at teardown."""
    made: list[KernelRing] = []

    def factory(entries: int = 64, **kw) -> KernelRing:
        r = make_configured(ring_config, entries, **kw)
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
def new_ring():
    """Factory for plain (non-matrix) rings of a given shape; all are closed
    at teardown even if the test fails half-way."""
    made = []

    def factory(*args, **kw):
        r = KernelRing(*args, **kw)
        made.append(r)
        return r

    yield factory
    for r in made:
        if not r.closed:
            r.close()


@pytest.fixture
def kprobe():
    return subring.probe()


@pytest.fixture
def pipe():
    """A pipe as [read_fd, write_fd]; a test that closes one end itself sets
    its slot to -1 so teardown does not close a reused number."""
    fds = list(os.pipe())
    yield fds
    for f in fds:
        if f >= 0:
            os.close(f)


@pytest.fixture(scope="module")
def datafile(tmp_path_factory):
    """A 1 MiB file with known contents (byte i is i*7 mod 251), made once
    per module; tests only read it."""
    data = pattern_bytes(1 << 20)
    assert data[:4] == bytes([0, 7, 14, 21]) and data[37] == (37 * 7) % 251
    p = tmp_path_factory.mktemp("data") / "data.bin"
    p.write_bytes(data)
    return p, data
