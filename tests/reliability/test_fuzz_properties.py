"""Property tests (hypothesis): ring index arithmetic across the 2^32 wrap,
the untrusted-index checks, op-table token reuse, BufferPool layout, and
the bookkeeping of CQE_SKIP_SUCCESS link chains (exactly one final
completion per op, or none for a skipped success).

The index arithmetic cannot be driven across 2^32 through the public API
(the kernel and the server start every ring at 0), so it is tested on
ring.h itself: fuzz/ring_model.c runs the four halves of a queue pair from
any start index against a 64-bit model (built here with the C compiler;
skipped without one)."""

from __future__ import annotations

import errno

import os

import pytest

hypothesis = pytest.importorskip("hypothesis", reason="hypothesis is not installed")
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from reliab_util import scale

from subring import SQE, BufferPool, KernelRing, RingFullError

pytestmark = pytest.mark.fuzz

EXAMPLES = int(200 * scale())
FAST = settings(max_examples=EXAMPLES, deadline=None, derandomize=True, database=None,
                suppress_health_check=[HealthCheck.too_slow,
                                       HealthCheck.function_scoped_fixture])

NEAR_WRAP = st.one_of(st.integers(2**32 - 4096, 2**32 - 1), st.integers(0, 2**32 - 1))


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    import ring_model
    so = ring_model.build(str(tmp_path_factory.mktemp("model")))
    if so is None:
        pytest.skip("no C compiler to build fuzz/ring_model.c")
    return so


@FAST
@given(start=NEAR_WRAP, log2=st.integers(0, 7), prog=st.binary(min_size=1, max_size=600))
def test_ring_indices_across_the_wrap(model, start, log2, prog):
    import ring_model
    rc, err = ring_model.run(model, start, log2, prog)
    assert rc == 0, err


@FAST
@given(start=NEAR_WRAP, log2=st.integers(0, 12), sq=st.integers(0, 2**32 - 1),
       cq=st.integers(0, 2**32 - 1))
def test_untrusted_indices_are_refused_exactly_when_impossible(model, start, log2, sq, cq):
    import ring_model
    entries = 1 << log2
    avail, space = ring_model.validate(model, start, log2, sq, cq)
    assert avail == (-1 if sq > entries else sq)
    assert space == (-1 if cq > entries else entries - cq)


@settings(max_examples=max(20, EXAMPLES // 4), deadline=None, derandomize=True, database=None)
@given(prog=st.lists(st.sampled_from(["prep", "prep", "prep", "submit", "wait", "reap"]),
                     min_size=1, max_size=300))
def test_tokens_are_unique_in_flight_and_reused_only_after_completion(prog):
    with KernelRing(4, cq_entries=8) as r:
        live: set[int] = set()
        slots_seen: dict[int, int] = {}
        for step in prog:
            if step == "prep":
                try:
                    tok = r.prep_nop()
                except RingFullError:
                    assert r.inflight == r.max_inflight
                    continue
                assert tok not in live, "token reused while its op is in flight"
                slot, gen = tok & 0xFFFFFFFF, tok >> 32
                assert slot < r.max_inflight
                if slot in slots_seen:
                    assert gen != slots_seen[slot], "slot reused with the same generation"
                slots_seen[slot] = gen
                live.add(tok)
            elif step == "submit":
                r.submit()
            elif step == "wait":
                if r.inflight:
                    r.submit_and_wait(1, timeout=5)
            else:
                for c in r.reap():
                    assert c.user_data in live, "completion of an op not in flight"
                    live.discard(c.user_data)
            assert r.inflight == len(live)
        while live:
            r.submit_and_wait(1, timeout=5)
            got = r.reap()
            assert got, f"{len(live)} ops never completed"
            for c in got:
                live.remove(c.user_data)
        assert r.inflight == 0


@FAST
@given(count=st.integers(1, 16), size=st.integers(1, 70000), picks=st.lists(
    st.integers(-20, 20), max_size=10))
def test_buffer_pool_buffers_are_disjoint_and_bounds_checked(count, size, picks):
    with BufferPool(count, size) as pool:
        bufs = [pool.buffer(i) for i in range(count)]
        try:
            assert [b.nbytes for b in bufs] == [size] * count
            for i, b in enumerate(bufs):          # a distinct pattern per buffer
                b[0] = i & 0xFF
                b[size - 1] = (i * 7 + 1) & 0xFF
            for i, b in enumerate(bufs):          # no buffer overlaps another
                assert b[size - 1] == (i * 7 + 1) & 0xFF
                assert b[0] == (i & 0xFF if size > 1 else (i * 7 + 1) & 0xFF)
            for i in picks:
                if 0 <= i < count:
                    with pool.buffer(i) as v:
                        assert v.nbytes == size
                else:
                    with pytest.raises((IndexError, ValueError)):
                        pool.buffer(i)
        finally:
            for b in bufs:
                b.release()


@pytest.mark.parametrize("sanitize", ["", "thread"], ids=["plain", "tsan"])
def test_ring_threads_across_the_wrap_without_lost_wakeups(tmp_path, sanitize):
    """ring.h's queue pair between two real threads, from just below 2^32,
    with the arm -> fence -> re-check -> sleep protocol in both directions,
    random delays between the steps, and sleeps without a timeout: a lost
    wake-up hangs (cut off here), a misordered entry is caught by the
    FIFO/payload check, and under ThreadSanitizer a missing acquire/release
    is a reported race (TSan does not model the standalone fences)."""
    import subprocess

    import ring_model
    exe = ring_model.build_threads(str(tmp_path), sanitize)
    if exe is None:
        pytest.skip(f"cannot build fuzz/ring_threads.c{' with -fsanitize=' + sanitize if sanitize else ''}")
    ops = int((10000 if sanitize else 30000) * scale())
    for seed, (start, log2) in enumerate([(0xFFFFF000, 3), (0xFFFFFFF0, 0), (0xFFFFC000, 6)]):
        try:
            # a standalone C program: never inherit an LD_PRELOADed sanitizer
            # runtime (scripts/sanitize.sh asan preloads libasan, which a TSan
            # binary cannot share its address space with)
            env = {k: v for k, v in os.environ.items() if k != "LD_PRELOAD"}
            r = subprocess.run([exe, str(ops), str(start), str(log2), str(seed + 1)],
                               capture_output=True, timeout=120, check=False, env=env)
        except subprocess.TimeoutExpired:
            pytest.fail(f"ring_threads hung (lost wake-up?) start={start:#x} log2={log2}")
        out = (r.stdout + r.stderr).decode(errors="replace")
        assert r.returncode == 0 and "WARNING: ThreadSanitizer" not in out, out[-3000:]
        assert out.startswith(f"ok {ops}"), out


# -- link chains with CQE_SKIP_SUCCESS ------------------------------------------------

CHAIN_OP = st.tuples(st.sampled_from(["nop", "fail"]), st.booleans())   # (kind, skip)


@settings(max_examples=max(30, EXAMPLES // 2), deadline=None, derandomize=True,
          database=None)
@given(chains=st.lists(st.lists(CHAIN_OP, min_size=1, max_size=5), min_size=1, max_size=4))
def test_skip_success_chains_complete_every_op_exactly_once(chains):
    """Model: in a LINK chain, the first failing op fails the rest
    (-ECANCELED); an op completes visibly unless it carried SKIP_SUCCESS and
    succeeded.  subring must deliver exactly that -- the kernel posts no CQE
    for ops cancelled behind a failed SKIP_SUCCESS op, so subring makes them
    up -- and inflight must return to 0 (never block)."""
    expected: dict[str, int | None] = {}
    with KernelRing(32) as r:
        for ci, chain in enumerate(chains):
            failed = False
            for oi, (kind, skip) in enumerate(chain):
                last = oi == len(chain) - 1
                skip = skip and not last            # SKIP_SUCCESS needs LINK
                flags = (0 if last else SQE.LINK) | (SQE.SKIP_SUCCESS if skip else 0)
                name = f"{ci}.{oi}"
                if kind == "nop":
                    r.prep_nop(user_data=name, flags=flags)
                    res = 0
                else:
                    r.prep_read(-1, bytearray(4), 0, user_data=name, flags=flags)
                    res = -errno.EBADF
                if failed:
                    res = -errno.ECANCELED
                failed = failed or res < 0
                expected[name] = None if (skip and res >= 0) else res
        got: dict[str, int] = {}
        r.submit()
        deadline = 50
        while r.inflight and deadline:
            r.submit_and_wait(1, timeout=0.1)
            for c in r.reap():
                assert c.user_data not in got, f"{c.user_data} completed twice"
                got[c.user_data] = c.res
            deadline -= 1
        assert r.inflight == 0, f"{r.inflight} ops never completed: got {got}"
    want = {k: v for k, v in expected.items() if v is not None}
    assert got == want
