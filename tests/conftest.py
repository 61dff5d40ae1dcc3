"""Suite-wide setup: where the shared helper modules live, and the fd-leak check.

The tests are grouped by layer (kernel/, subsystem/, aio/, executor/, fuse/,
bench/, cli/, contract/, reliability/, project/); fixtures one layer shares
live in that layer's conftest.py.  Helper modules used across layers
(subsys_helpers, subsys_examples, executor_funcs, ring_matrix) live in
tests/helpers/ and are imported by their plain module names.

pytest's default (prepend) import mode puts only a test file's own folder on
sys.path, so tests/helpers/ is added here -- to sys.path for this process and
to PYTHONPATH for every process a test starts (subprocesses, spawn and
forkserver workers, ``python -m subring.cli serve subsys_examples:EchoTest``),
which import helper modules by name too.
"""

from __future__ import annotations

import gc
import os
import sys
import warnings
from pathlib import Path

import pytest

HELPERS = str(Path(__file__).resolve().parent / "helpers")
if HELPERS not in sys.path:
    sys.path.insert(0, HELPERS)
if HELPERS not in os.environ.get("PYTHONPATH", "").split(os.pathsep):
    os.environ["PYTHONPATH"] = os.pathsep.join(
        p for p in (HELPERS, os.environ.get("PYTHONPATH")) if p)


def pytest_collection_finish(session):
    """Move everything that exists once the tests are collected (modules,
    test items, hypothesis, numpy, ...: ~100k objects) into the permanent
    generation, so the two ``gc.collect()`` of every test's fd-leak check
    below traverse only the objects made since -- the test's own.  Without
    it the check cost ~0.1-0.3 s per test, about half the default run.

    It changes nothing the check sees: the cyclic garbage a test leaves (and
    the fds and ResourceWarnings it carries) is made after this point, so it
    is still collected, and in that test's teardown.  Frozen objects are
    still freed by reference counting; only a cycle among them would stay
    (none holds a resource: no test has run yet).  ``gc.get_objects()``
    leaves frozen objects out, so a test scanning it still sees everything
    made by tests."""
    gc.collect()
    gc.freeze()


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
