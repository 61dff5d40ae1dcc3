"""The contract every ring kind keeps: the verbs a KernelRing and a
SubsystemClient share, run over every KernelRing configuration of the test
matrix (tests/helpers/ring_matrix.py CONFIGS) and a SubsystemClient in each wait mode
(hybrid, interrupt, poll) attached to a real server process.

Where the two kinds legitimately differ, the test says so and asserts each
kind's documented behaviour (docs/kernel-ring.md, docs/subsystems.md).
"""

from __future__ import annotations

import array
import dataclasses
import math
import os
import time

import pytest

import subring
from subring import ForkedRingError, RingClosedError, RingFullError
from ring_matrix import CONFIGS, make_configured
from subsys_helpers import start_server

CLIENT_MODES = ["hybrid", "interrupt", "poll"]
KINDS = [f"kernel:{c}" for c in CONFIGS] + [f"client:{m}" for m in CLIENT_MODES]


@pytest.fixture(scope="module")
def contract_server(tmp_path_factory):
    """One real subsystem server (subsys_examples:EchoTest) for the module."""
    path = tmp_path_factory.mktemp("contract") / "echo.sock"
    with start_server(path) as srv:
        yield srv


class Kind:
    """What differs between the two ring kinds, in one place."""

    def __init__(self, name: str, request) -> None:
        self.kind, self.variant = name.split(":")
        self.is_kernel = self.kind == "kernel"
        self._request = request
        self._pipes: list[int] = []

    def server(self):
        """The module's subsystem server (started on first use)."""
        return self._request.getfixturevalue("contract_server")

    def make(self):
        if self.is_kernel:
            return make_configured(self.variant, 64)
        return self.server().connect(entries=64, mode=self.variant)

    def prep_slow(self, ring, user_data, seconds: float = 0.3):
        """Prepare an op that completes only after `seconds` (or when released)."""
        if self.is_kernel:
            r, w = os.pipe()
            self._pipes += [r, w]
            return ring.prep_read(r, bytearray(8), -1, user_data)
        return ring.prep_call(ring.op_index("slow"), None, int(seconds * 1000), 7,
                              user_data=user_data)

    def release_slow(self) -> None:
        """Let the kernel's slow ops (pipe reads) complete."""
        for fd in self._pipes[1::2]:
            os.write(fd, b"x")

    def slow_result(self) -> int:
        return 1 if self.is_kernel else 7

    def close(self) -> None:
        for fd in self._pipes:
            os.close(fd)
        self._pipes.clear()


@pytest.fixture(params=KINDS)
def kind(request):
    k = Kind(request.param, request)
    yield k
    k.close()


@pytest.fixture
def ring(kind):
    r = kind.make()
    yield r
    if not r.closed:
        r.close()


def _collect(ring, n: int, timeout: float = 5.0) -> list:
    got: list = []
    deadline = time.monotonic() + timeout
    while len(got) < n:
        left = deadline - time.monotonic()
        assert left > 0, f"only {len(got)} of {n} completions within {timeout} s: {got!r}"
        ring.submit_and_wait(n - len(got), min(left, 0.5))
        got += ring.reap()
    return got


# -- prepare, submit, reap ------------------------------------------------------------

def test_nop_completes_once_with_its_user_data(ring):
    tok = ring.prep_nop(user_data="n")
    assert isinstance(tok, int)
    assert ring.inflight == 1
    (c,) = _collect(ring, 1)
    assert (c.user_data, c.res) == ("n", 0)
    assert ring.inflight == 0
    ring.submit_and_wait(1, 0.05)
    assert ring.reap() == []               # exactly one completion


def test_batch_of_nops_completes_each_once(ring):
    assert ring.prep_nops(20, user_data=1000) == 20
    got = _collect(ring, 20)
    assert sorted(c.user_data for c in got) == list(range(1000, 1020))
    assert all(c.res == 0 for c in got)
    assert ring.inflight == 0


def test_submit_publishes_and_reap_never_blocks(ring, kind):
    assert ring.reap() == []
    t0 = time.monotonic()
    for _ in range(100):
        assert ring.reap() == []
    assert time.monotonic() - t0 < 1.0
    ring.prep_nop(user_data=1)
    ring.prep_nop(user_data=2)
    n = ring.submit()
    if kind.variant == "sqpoll":
        # differs: with SQPOLL the kernel's thread consumes the SQ on its own;
        # submit() reports the SQEs it has not taken yet
        assert 0 <= n <= 2
    else:
        assert n == 2
    assert sorted(c.user_data for c in _collect(ring, 2)) == [1, 2]


def test_reap_into_fills_caller_arrays(ring):
    ring.prep_nops(5, user_data=40)
    ud, res, fl = array.array("Q", [0] * 8), array.array("i", [0] * 8), array.array("I", [0] * 8)
    got: list[int] = []
    deadline = time.monotonic() + 5
    while len(got) < 5 and time.monotonic() < deadline:
        ring.submit_and_wait(5 - len(got), 0.5)
        n = ring.reap_into(ud, res, fl)
        assert all(r == 0 for r in res[:n])
        got += ud[:n]
    assert sorted(got) == list(range(40, 45))
    assert ring.reap_into(ud, res) == 0
    with pytest.raises(TypeError):
        ring.reap_into(array.array("i", [0]), res)      # user_data needs 8-byte items


def test_max_inflight_is_refused_without_losing_anything(ring):
    n = ring.max_inflight
    ring.prep_nops(n, user_data=0)
    with pytest.raises(RingFullError):
        ring.prep_nop(user_data="one too many")
    assert ring.inflight == n
    got = _collect(ring, n)
    assert sorted(c.user_data for c in got) == list(range(n))


# -- waits and timeouts ----------------------------------------------------------------

def test_wait_times_out_without_error_and_the_op_completes_later(ring, kind):
    kind.prep_slow(ring, "slow", 0.3)
    t0 = time.monotonic()
    assert ring.submit_and_wait(1, timeout=0.05) == 0
    assert time.monotonic() - t0 < 1.0
    assert ring.reap() == []
    kind.release_slow()
    (c,) = _collect(ring, 1)
    assert (c.user_data, c.res) == ("slow", kind.slow_result())


@pytest.mark.parametrize("timeout", [None, math.inf])
def test_wait_that_could_never_return_is_refused_at_once(ring, timeout):
    t0 = time.monotonic()
    with pytest.raises(ValueError, match="never return"):
        ring.submit_and_wait(1, timeout=timeout)
    assert time.monotonic() - t0 < 1.0
    with pytest.raises(ValueError):
        ring.submit_and_wait(1, timeout=-1)


# -- cancellation ------------------------------------------------------------------------

def test_cancel(ring, kind):
    """Kernel rings cancel an op in flight (the op still posts its own final
    completion, -ECANCELED; the cancel posts one too).  Subsystem ops cannot
    be cancelled (docs/subsystems.md): a client has no cancel verb, and an op
    in flight always gets its handler's result (or ECONNRESET if the server
    dies) -- here, the result."""
    tok = kind.prep_slow(ring, "target", 0.2)
    ring.submit()
    if kind.is_kernel:
        cancel_tok = ring.cancel(tok)
        got = {c.user_data: c.res for c in _collect(ring, 2)}
        assert got == {"target": -125, cancel_tok: 0}       # ECANCELED, found
    else:
        assert not hasattr(ring, "cancel") and not hasattr(ring, "prep_cancel")
        (c,) = _collect(ring, 1)
        assert (c.user_data, c.res) == ("target", kind.slow_result())
    assert ring.inflight == 0


# -- close --------------------------------------------------------------------------------

def test_close_with_ops_in_flight(ring, kind):
    """Both kinds: close() returns promptly, the ring is closed for every verb,
    nothing stays in flight.  Kernel rings cancel the op and wait for its
    final completion before releasing its buffer (docs/kernel-ring.md);
    clients abandon ops in flight (the server finishes them into nothing)."""
    buf = bytearray(8)
    if kind.is_kernel:
        r, w = os.pipe()
        try:
            ring.prep_read(r, buf, -1, "in flight")
            ring.submit()
            with pytest.raises(BufferError):
                buf.extend(b"x")                         # pinned for the kernel
            t0 = time.monotonic()
            ring.close(timeout=3)
            elapsed = time.monotonic() - t0
            # drained: the read was cancelled, not left pending -- data written
            # now is still in the pipe for the next reader
            os.write(w, b"after")
            assert os.read(r, 16) == b"after"
        finally:
            os.close(r)
            os.close(w)
        buf.extend(b"x")                                 # released after close
    else:
        kind.prep_slow(ring, "in flight", 0.2)
        ring.submit()
        t0 = time.monotonic()
        ring.close()
        elapsed = time.monotonic() - t0
    assert elapsed < 2.0
    assert ring.closed and ring.inflight == 0
    for verb in (lambda: ring.prep_nop(), lambda: ring.reap(), lambda: ring.submit(),
                 lambda: ring.submit_and_wait(1, 0)):
        with pytest.raises(RingClosedError):
            verb()
    ring.close()                                         # idempotent


def test_close_timeout_bounds_a_kernel_drain_and_is_unused_by_a_client(ring, kind):
    """``close(timeout)`` on every Ring: a kernel ring waits at most that long
    for its cancelled ops; a client does not wait at all, even for an op its
    subsystem is still working on (1.5 s here), and the subsystem goes on
    serving other connections."""
    if kind.is_kernel:
        kind.prep_slow(ring, "in flight")
    else:
        ring.prep_call(ring.op_index("slow_threaded"), None, 1500, 1, user_data="in flight")
    ring.submit()
    t0 = time.monotonic()
    ring.close(timeout=5)
    assert time.monotonic() - t0 < (2.0 if kind.is_kernel else 0.5)
    assert ring.closed and ring.inflight == 0
    if not kind.is_kernel:
        with kind.server().connect(entries=8) as other:
            assert other.call("echo", b"still serving", timeout=5) == b"still serving"


def test_close_discards_unreaped_completions(ring):
    ring.prep_nops(3, user_data=0)
    assert ring.submit_and_wait(3, 5) >= 1
    ring.close()
    assert ring.closed and ring.inflight == 0
    with pytest.raises(RingClosedError):
        ring.reap()


def test_every_ring_is_a_Ring(ring):
    """KernelRing and SubsystemClient both satisfy the subring.Ring protocol,
    open and closed (isinstance never raises on a closed ring)."""
    assert isinstance(ring, subring.Ring)
    ring.close()
    assert isinstance(ring, subring.Ring)


# -- statistics ---------------------------------------------------------------------------

EXPECTED_BACKEND = {"kernel": "kernel", "client": "subsystem-client"}


def test_statistics_is_a_frozen_dataclass_naming_its_backend(ring, kind):
    ring.prep_nops(3, user_data=0)
    _collect(ring, 3)
    st = ring.statistics()
    assert dataclasses.is_dataclass(st)
    with pytest.raises(dataclasses.FrozenInstanceError):
        st.submitted = 0
    assert st.submitted >= 3 and st.completed >= 3 and st.inflight == 0
    assert st.max_inflight == ring.max_inflight
    assert st.backend == EXPECTED_BACKEND[kind.kind]


# -- fork ---------------------------------------------------------------------------------

def test_fork_child_refuses_and_parent_is_unaffected(ring):
    ring.prep_nop(user_data="before")
    ring.submit()
    rfd, wfd = os.pipe()
    pid = os.fork()
    if pid == 0:                     # child: report through the pipe, never return
        code = 0
        for verb in (lambda: ring.prep_nop(), lambda: ring.reap(), lambda: ring.submit(),
                     lambda: ring.submit_and_wait(1, 0)):
            try:
                verb()
                code |= 1
            except ForkedRingError:
                pass
            except BaseException:
                code |= 2
        if not ring.closed:          # the child's copy reads as closed
            code |= 4
        os.write(wfd, bytes([code]))
        os._exit(0)
    os.close(wfd)
    try:
        status = os.read(rfd, 1)
    finally:
        os.close(rfd)
        os.waitpid(pid, 0)
    assert status == b"\x00", f"child saw {status!r} (1: a verb worked, 2: wrong error)"
    got = _collect(ring, 1)
    assert got[0].user_data == "before"
    ring.prep_nop(user_data="after")
    assert _collect(ring, 1)[0].user_data == "after"


def test_kinds_are_both_covered():
    """The matrix above really has both kinds, every client mode and every
    kernel configuration of tests/helpers/ring_matrix.py."""
    assert {k.split(":")[0] for k in KINDS} == {"kernel", "client"}
    assert [k for k in KINDS if k.startswith("client:")] == [f"client:{m}" for m in
                                                            CLIENT_MODES]
    assert len([k for k in KINDS if k.startswith("kernel:")]) == len(CONFIGS)
    assert hasattr(subring, "KernelRing") and hasattr(subring, "SubsystemClient")
