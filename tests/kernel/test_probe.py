"""subring.probe() and KernelRing.probe(): what the running kernel supports,
and refusal of invalid setup-flag combinations."""

from __future__ import annotations

import pytest

import subring
from subring import Feature, KernelProbe, KernelRing, Op, Setup, UnsupportedError


def test_probe_reports_basic_opcodes(kprobe):
    assert isinstance(kprobe, KernelProbe)
    assert Op.NOP in kprobe.opcodes
    assert Op.READ in kprobe.opcodes
    assert Op.WRITE in kprobe.opcodes
    assert all(isinstance(o, Op) for o in kprobe.opcodes)


def test_probe_supports_accepts_names_and_numbers(kprobe):
    assert kprobe.supports("nop")
    assert kprobe.supports("NOP")
    assert kprobe.supports(Op.READ)
    assert kprobe.supports(int(Op.READ))
    with pytest.raises(KeyError):
        kprobe.supports("no_such_op")
    with pytest.raises(ValueError):
        kprobe.supports(250)  # not an opcode at all


def test_probe_features(kprobe):
    assert isinstance(kprobe.features, Feature)
    assert kprobe.features & Feature.NODROP
    assert kprobe.features & Feature.EXT_ARG
    # every ring reports the same features
    with KernelRing(4) as r:
        assert Feature(r.features) == kprobe.features


def test_probe_setup_flags(kprobe):
    flags = kprobe.setup_flags
    assert isinstance(flags, Setup)
    # each flag reported was tried for real: a ring with it can be created
    for f in (Setup.SQE128, Setup.CQE32, Setup.COOP_TASKRUN, Setup.SINGLE_ISSUER,
              Setup.SUBMIT_ALL, Setup.NO_SQARRAY):
        if flags & f:
            with KernelRing(4, flags=int(f), no_sqarray=False) as r:
                assert r.setup_flags & f
    if flags & Setup.DEFER_TASKRUN:
        assert flags & Setup.SINGLE_ISSUER  # only ever valid together
        with KernelRing(4, defer_taskrun=True) as r:
            assert r.setup_flags & Setup.DEFER_TASKRUN
            assert r.setup_flags & Setup.SINGLE_ISSUER


def test_probe_is_cached():
    assert subring.probe() is subring.probe()


def test_ring_supported_ops_match_module_probe(plain_ring, kprobe):
    ops = plain_ring.supported_ops()
    assert isinstance(ops, frozenset)
    assert ops == kprobe.opcodes
    assert Op.NOP in ops and Op.READ in ops


def test_ring_supported_ops_after_close_raises():
    r = KernelRing(4)
    r.close()
    with pytest.raises(subring.RingClosedError):
        r.supported_ops()


def test_probe_agrees_with_reality(plain_ring, kprobe):
    """An opcode reported as supported is accepted by the kernel (NOP), and an
    opcode number past the kernel's last is refused with -EINVAL."""
    import errno

    plain_ring.prep_nop(user_data="nop")
    plain_ring.prep_sqe(250, user_data="bogus")
    plain_ring.submit_and_wait(2, 2.0)
    got = {c.user_data: c.res for c in plain_ring.reap()}
    if "nop" not in got:  # the kernel stopped at the bad SQE; resubmit
        plain_ring.submit_and_wait(1, 2.0)
        got.update({c.user_data: c.res for c in plain_ring.reap()})
    assert got["bogus"] == -errno.EINVAL
    assert got["nop"] == 0


def test_defer_taskrun_without_single_issuer_is_unsupported():
    with pytest.raises(UnsupportedError) as ei:
        KernelRing(4, flags=int(Setup.DEFER_TASKRUN))
    assert isinstance(ei.value, NotImplementedError)
    assert "DEFER_TASKRUN" in str(ei.value)
    assert isinstance(ei.value.__cause__, OSError)


def test_taskrun_flag_without_coop_taskrun_is_unsupported():
    with pytest.raises(UnsupportedError):
        KernelRing(4, taskrun_flag=True)


def test_sqpoll_with_defer_taskrun_is_unsupported():
    with pytest.raises(UnsupportedError):
        KernelRing(4, flags=int(Setup.SQPOLL | Setup.SINGLE_ISSUER | Setup.DEFER_TASKRUN))


def test_invalid_flag_leaks_no_fd():
    import os

    before = set(os.listdir("/proc/self/fd"))
    for _ in range(5):
        with pytest.raises(UnsupportedError):
            KernelRing(4, flags=int(Setup.DEFER_TASKRUN))
    assert set(os.listdir("/proc/self/fd")) <= before


def test_entries_validation():
    with pytest.raises(ValueError):
        KernelRing(0)
    with pytest.raises(ValueError):
        KernelRing(1 << 20)
    with pytest.raises(TypeError):
        KernelRing(4.0)  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        KernelRing(True)  # type: ignore[arg-type]
