"""subring.Ring: the protocol both ring kinds satisfy, at run time and for mypy.

The shared verbs themselves are exercised over every ring configuration by
tests/contract/; here: the protocol object, that both kinds are instances,
that what is not a ring is not, and that ``mypy --strict`` accepts code
written against Ring for both kinds (and rejects a class that lacks a verb).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import typing
from pathlib import Path

import pytest

import subring
from subring import ring as ring_mod
from subring.aio import _caps

ROOT = Path(__file__).resolve().parents[2]
SRC = Path(subring.__file__).resolve().parents[1]
TYPING = Path(__file__).resolve().parent / "typing"
sys.path.insert(0, str(TYPING))
import ring_protocol  # noqa: E402


def test_ring_is_exported_and_runtime_checkable() -> None:
    assert subring.Ring is ring_mod.Ring
    assert "Ring" in subring.__all__
    assert getattr(subring.Ring, "_is_runtime_protocol", False)
    assert typing.Protocol in subring.Ring.__mro__


def test_kernel_ring_is_a_ring() -> None:
    with subring.KernelRing(8) as r:
        assert isinstance(r, subring.Ring)
        assert isinstance(r.statistics(), ring_mod.RingCounters)
    assert isinstance(r, subring.Ring)               # closed: still one, no exception


def test_connected_client_is_a_ring(tmp_path: Path) -> None:
    from subsys_helpers import start_server

    with start_server(tmp_path / "ring.sock") as srv, srv.connect() as c:
        assert isinstance(c, subring.Ring)
        assert isinstance(c.statistics(), ring_mod.RingCounters)
        assert ring_protocol.with_client(srv.path) == "subsystem-client"
        caps = _caps.RingCaps.of(c)
        assert (caps.cancellable, caps.data_results, caps.has_peer) == (False, True, True)
        assert caps.default_spin_us > 0                 # hybrid mode: worth a spin
        c.mode = "interrupt"
        assert _caps.RingCaps.of(c).default_spin_us == 0


def test_async_ring_asks_the_ring_what_it_can_do_not_its_class() -> None:
    """aio/_caps.py: a kernel ring can cancel and has no peer; something
    that is not a Ring is refused with the verbs it lacks."""
    with subring.KernelRing(8) as r:
        caps = _caps.RingCaps.of(r)
    assert (caps.cancellable, caps.data_results, caps.has_peer) == (True, False, False)
    with pytest.raises(TypeError, match=r"needs a subring.Ring; object lacks .*reap"):
        _caps.RingCaps.of(object())


def test_code_written_against_ring_runs_on_a_kernel_ring() -> None:
    assert ring_protocol.with_kernel() == "kernel"


@pytest.mark.parametrize("thing", [object(), 3, subring.BufferPool, "ring"])
def test_what_is_not_a_ring_is_not(thing: object) -> None:
    assert not isinstance(thing, subring.Ring)


def test_a_ring_without_one_shared_verb_is_not_a_ring() -> None:
    class AlmostRing:
        pass

    for name in ring_mod.Ring.__dict__:
        if not name.startswith("_"):
            setattr(AlmostRing, name, property(lambda self: 0))
    AlmostRing.__enter__ = lambda self: self           # type: ignore[attr-defined]
    AlmostRing.__exit__ = lambda self, *e: None        # type: ignore[attr-defined]
    assert isinstance(AlmostRing(), subring.Ring)
    del AlmostRing.reap                                # type: ignore[attr-defined]
    assert not isinstance(AlmostRing(), subring.Ring)


def _mypy(target: Path) -> subprocess.CompletedProcess[str]:
    if shutil.which("mypy") is None:
        pytest.skip("mypy is not installed (pip install -e '.[dev]')")
    env = dict(os.environ, MYPYPATH=str(SRC))
    return subprocess.run(["mypy", "--strict", "--no-incremental", "--follow-imports=silent",
                           str(target)], cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=600, check=False)


def test_mypy_accepts_both_kinds_as_a_ring() -> None:
    proc = _mypy(TYPING / "ring_protocol.py")
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_mypy_rejects_a_class_without_a_shared_verb(tmp_path: Path) -> None:
    """The static check can fail: a BufferPool is not a ring (the
    KernelRing line next to it is accepted)."""
    bad = tmp_path / "not_a_ring.py"
    bad.write_text("from subring import BufferPool, KernelRing, Ring\n"
                   "def use(r: Ring) -> None: ...\n"
                   "use(KernelRing(8))\n"
                   "use(BufferPool(1, 64))\n")
    proc = _mypy(bad)
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert ('not_a_ring.py:4: error: Argument 1 to "use" has incompatible type "BufferPool"; '
            'expected "Ring"') in proc.stdout, proc.stdout
    assert proc.stdout.count("error:") == 1, proc.stdout
