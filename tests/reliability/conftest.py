"""Fixtures and markers of the reliability suite (stress, fault injection,
lost wake-up hunt, fuzzing).  See docs/reliability.md.

Every test here is bounded: the default run keeps the whole directory under
~90 s on a loaded 2-core machine.  ``SUBRING_RELIAB_SCALE=N`` multiplies the
iteration counts and durations (e.g. 20 for a long hunt).  Anything that can
crash the interpreter runs in a child process, so a crash is a failed test
with the child's output, not a dead pytest.
"""

from __future__ import annotations

import pytest


def pytest_configure(config):
    config.addinivalue_line(
        "markers", "fault: fault injection (kill -9 of peers, close/fork with ops in flight); "
        "bounded by default, longer with SUBRING_RELIAB_SCALE")
    config.addinivalue_line(
        "markers", "stress: thread / re-entrancy / lost wake-up stress (bounded)")
    config.addinivalue_line(
        "markers", "fuzz: property tests, fuzz harness runs and corpus replay")


@pytest.fixture
def scale() -> float:
    from reliab_util import scale as _scale
    return _scale()
