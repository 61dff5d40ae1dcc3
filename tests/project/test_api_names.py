"""One name per idea across the public faces (issue 9, "the public faces disagree").

* The notification mode -- how a side waits for the other: spin, sleep or
  both -- is ``mode`` everywhere: ``connect(mode=)``, ``SubsystemClient.mode``,
  ``Subsystem.mode``, ``Subsystem.serve(mode=)``, the statistics' ``mode``
  fields and ``subring serve --mode``, with the same three values.  The old
  ``client.wait_mode`` warns (tests/subsystem/test_subsystem_modes.py).
* Probing: ``subring.probe()`` is the kernel-wide probe (a KernelProbe);
  ``KernelRing.supported_ops()`` the opcode set of one ring.  The old
  ``KernelRing.probe()`` warns and returns the same set.
"""

from __future__ import annotations

import dataclasses
import inspect
import typing

import pytest

import subring
from subring import _core
from subring import Op
from subring.cli import build_parser

MODES = {"hybrid", "interrupt", "poll"}


# -- mode ------------------------------------------------------------------------------

def _public_callables() -> list[tuple[str, typing.Callable[..., typing.Any]]]:
    out = []
    for name in subring.__all__:
        obj = getattr(subring, name)
        if inspect.isfunction(obj):
            out.append((name, obj))
        elif isinstance(obj, type):
            for attr, member in vars(obj).items():
                if not attr.startswith("_") and callable(member):
                    out.append((f"{name}.{attr}", member))
    return out


def test_no_public_parameter_spells_the_mode_otherwise() -> None:
    offenders = []
    for where, fn in _public_callables():
        try:
            params = inspect.signature(fn).parameters
        except (TypeError, ValueError):
            continue
        offenders += [f"{where}({p})" for p in params if "mode" in p and p != "mode"
                      and p not in ("socket_mode", "open_mode")]
    assert offenders == []


def test_mode_is_the_parameter_of_connect_and_serve() -> None:
    assert "mode" in inspect.signature(subring.connect).parameters
    assert "mode" in inspect.signature(subring.Subsystem.serve).parameters


def test_mode_is_the_attribute_of_every_side_and_of_their_statistics() -> None:
    assert isinstance(inspect.getattr_static(subring.Subsystem, "mode"), property)
    # the client's is the C ring's own attribute (a getset descriptor), so the
    # private core says `mode` too
    assert inspect.isdatadescriptor(inspect.getattr_static(subring.SubsystemClient, "mode"))
    assert "mode" in vars(_core.UserRing) and "wait_mode" not in vars(_core.UserRing)
    for cls in (subring.ClientStatistics, subring.ClientRow, subring.SubsystemStatistics):
        names = {f.name for f in dataclasses.fields(cls)}
        assert "mode" in names and not {n for n in names if "mode" in n} - {"mode"}, cls


def test_subsystem_mode_takes_the_three_values_and_nothing_else() -> None:
    s = subring.Subsystem()
    for m in sorted(MODES):
        s.mode = m
        assert s.mode == m
    with pytest.raises(ValueError, match="mode"):
        s.mode = "sideways"
    with pytest.raises(ValueError, match="mode"):
        subring.connect("/nonexistent/never", mode="sideways")


def test_cli_serve_says_mode_with_the_same_values() -> None:
    import argparse

    ap = build_parser()
    sub = next(a for a in ap._actions if isinstance(a, argparse._SubParsersAction))
    serve = sub.choices["serve"]
    opts = {o: a for a in serve._actions for o in a.option_strings}
    assert set(opts["--mode"].choices) == MODES
    assert not [o for o in opts if "mode" in o and o not in ("--mode", "--socket-mode")]


# -- probe -----------------------------------------------------------------------------

def test_supported_ops_is_the_ring_level_probe() -> None:
    with subring.KernelRing(4) as r:
        ops = r.supported_ops()
    assert isinstance(ops, frozenset) and all(isinstance(o, Op) for o in ops)
    assert Op.NOP in ops
    kp = subring.probe()
    assert isinstance(kp, subring.KernelProbe)
    assert kp.opcodes == ops


def test_kernel_ring_probe_is_deprecated_and_returns_the_same() -> None:
    with subring.KernelRing(4) as r:
        with pytest.warns(DeprecationWarning, match=r"supported_ops\(\)") as rec:
            old = r.probe()
        assert old == r.supported_ops()
    assert rec[0].filename == __file__          # points at the caller
