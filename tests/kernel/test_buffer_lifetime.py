"""Buffers and user_data referenced by an op live exactly until its final CQE
is reaped: never shorter (the kernel may still write), never longer (leaks)."""

from __future__ import annotations

import errno
import gc
import json
import os
import select
import subprocess
import sys
import textwrap
import time
import warnings
import weakref

import pytest

try:
    import numpy as np
except ImportError:      # optional (the dev extra has it): those tests skip
    np = None
needs_numpy = pytest.mark.skipif(np is None, reason="numpy is not installed")

from subring import SQE, KernelRing
from ringhelpers import reap_n, run_child, wait_ready, resizable


class Buf(bytearray):
    """A bytearray that can be weakly referenced."""


class Token:
    """A weakly referenceable user_data object."""


def test_buffer_pinned_until_final_cqe_reaped(ring, pipe):
    r, w = pipe
    buf = bytearray(16)
    ring.prep_read(r, buf, -1, "read")
    ring.submit()
    for attempt in (lambda: buf.append(1), lambda: buf.extend(b"xx"),
                    lambda: buf.__delitem__(0), lambda: buf.clear(),
                    lambda: buf.__iadd__(b"x")):
        with pytest.raises(BufferError):
            attempt()
    assert len(buf) == 16
    buf[0] = 0                                   # writing in place is fine
    os.write(w, b"hello")
    wait_ready(ring, 1)
    # The kernel is done, but the CQE is not reaped yet: still pinned.
    with pytest.raises(BufferError):
        buf.append(0)
    (c,) = ring.reap()
    assert c.res == 5 and buf[:5] == b"hello"
    assert resizable(buf)
    buf.extend(b"!" * 100)
    assert len(buf) == 116


def test_buffer_kept_alive_without_other_references(plain_ring, pipe):
    ring = plain_ring
    r, w = pipe
    buf = Buf(16)
    wbuf = weakref.ref(buf)
    ring.prep_read(r, buf, -1)
    ring.submit()
    del buf
    gc.collect()
    assert wbuf() is not None, "the in-flight read's buffer was freed"
    os.write(w, b"alive")
    wait_ready(ring, 1)
    assert bytes(wbuf()[:5]) == b"alive"
    comps = ring.reap()
    assert comps[0].res == 5
    del comps
    gc.collect()
    assert wbuf() is None, "the buffer leaked after its completion was reaped"


def test_buffer_pinned_across_successful_cancel(ring, pipe):
    r = pipe[0]
    buf = Buf(16)
    wbuf = weakref.ref(buf)
    tok = ring.prep_read(r, buf, -1, "victim")
    ring.submit()
    ring.submit_and_wait(1, timeout=0.02)
    ctok = ring.cancel(tok)
    with pytest.raises(BufferError):
        buf.append(0)
    wait_ready(ring, 2)
    # Both CQEs are posted; the read's is not reaped: still pinned.
    with pytest.raises(BufferError):
        buf.append(0)
    comps = {c.user_data: c for c in ring.reap()}
    assert comps["victim"].res == -errno.ECANCELED
    assert comps[ctok].res == 0                  # found and cancelled
    with pytest.raises(OSError) as ei:
        comps["victim"].result()
    assert ei.value.errno == errno.ECANCELED
    assert resizable(buf)
    del buf, comps
    gc.collect()
    assert wbuf() is None


def test_buffer_pinned_after_fd_closed(ring, pipe):
    r, w = pipe
    buf = bytearray(8)
    ring.prep_read(r, buf, -1, "orphan")
    ring.submit()
    ring.submit_and_wait(1, timeout=0.02)
    os.close(r)                                  # the op keeps its own file reference
    pipe[0] = -1
    with pytest.raises(BufferError):
        buf.append(0)
    os.write(w, b"late")
    (c,) = reap_n(ring, 1)
    assert c.user_data == "orphan" and c.res == 4 and buf[:4] == b"late"
    assert resizable(buf)


def test_buffers_pinned_across_failed_link(ring, datafile):
    path, _ = datafile
    fd = os.open(path, os.O_RDONLY)
    gone = os.open(path, os.O_RDONLY)
    os.close(gone)
    try:
        a, b = bytearray(8), bytearray(8)
        ring.prep_read(gone, a, 0, "fails", flags=SQE.LINK)
        ring.prep_read(fd, b, 0, "cancelled")
        wait_ready(ring, 2)
        with pytest.raises(BufferError):
            a.append(0)
        with pytest.raises(BufferError):
            b.append(0)
        comps = {c.user_data: c.res for c in ring.reap()}
        assert comps == {"fails": -errno.EBADF, "cancelled": -errno.ECANCELED}
        assert resizable(a) and resizable(b)
        assert b == bytes(8)                     # never written
    finally:
        os.close(fd)


def test_memoryview_export_held_until_reaped(plain_ring, pipe):
    ring = plain_ring
    r, w = pipe
    ba = bytearray(32)
    mv = memoryview(ba)[8:16]
    ring.prep_read(r, mv, -1)
    ring.submit()
    with pytest.raises(BufferError):
        mv.release()                             # the op holds an export of the view
    with pytest.raises(BufferError):
        ba.append(0)
    os.write(w, b"12345678")
    (c,) = reap_n(ring, 1)
    assert c.res == 8 and ba[8:16] == b"12345678"
    mv.release()
    assert resizable(ba)


def test_batch_buffer_pinned_until_last_op_reaped(plain_ring, datafile):
    ring = plain_ring
    path, data = datafile
    fd = os.open(path, os.O_RDONLY)
    try:
        buf = bytearray(4 * 64)
        ring.prep_reads(fd, buf, 64, [0, 64, 128, 192])
        wait_ready(ring, 4)
        assert len(ring.reap(max=1)) == 1
        assert not resizable(buf)
        assert len(ring.reap(max=2)) == 2
        assert not resizable(buf)
        assert len(ring.reap()) == 1
        assert buf == data[:256]
        assert resizable(buf)
    finally:
        os.close(fd)


def test_write_source_pinned_until_reaped(plain_ring, tmp_path):
    ring = plain_ring
    fd = os.open(tmp_path / "w", os.O_RDWR | os.O_CREAT, 0o644)
    try:
        src = bytearray(b"payload")
        ring.prep_write(fd, src, 0)
        wait_ready(ring, 1)
        assert not resizable(src)
        (c,) = ring.reap()
        assert c.res == 7
        assert resizable(src)
    finally:
        os.close(fd)


# -- user_data references ------------------------------------------------------

def test_user_data_released_after_reap(ring):
    objs = [Token() for _ in range(10)]
    refs = [weakref.ref(o) for o in objs]
    for o in objs:
        ring.prep_nop(o)
    del objs, o
    gc.collect()
    assert all(r() is not None for r in refs), "user_data freed while its op was in flight"
    comps = reap_n(ring, 10)
    assert {id(c.user_data) for c in comps} == {id(r()) for r in refs}
    del comps
    gc.collect()
    assert all(r() is None for r in refs), "user_data leaked after reap"


def test_user_data_refcount_round_trip(plain_ring):
    ring = plain_ring
    obj = Token()
    base = sys.getrefcount(obj)
    for _ in range(20):
        ring.prep_nop(obj)
    assert sys.getrefcount(obj) == base + 20
    comps = reap_n(ring, 20)
    assert sys.getrefcount(obj) == base + 20    # now held by the completions
    del comps
    assert sys.getrefcount(obj) == base


def test_user_data_released_by_reap_into(plain_ring):
    ring = plain_ring
    import array
    obj = Token()
    wr = weakref.ref(obj)
    tok = ring.prep_nop(obj)
    del obj
    wait_ready(ring, 1)
    ud, res = array.array("Q", [0]), array.array("i", [0])
    assert ring.reap_into(ud, res) == 1
    assert ud[0] == tok
    gc.collect()
    assert wr() is None


def test_user_data_of_failed_op_released(plain_ring, tmp_path):
    ring = plain_ring
    fd = os.open(tmp_path / "z", os.O_RDWR | os.O_CREAT, 0o644)
    os.close(fd)
    obj = Token()
    wr = weakref.ref(obj)
    ring.prep_read(fd, bytearray(4), 0, obj)
    del obj
    comps = reap_n(ring, 1)
    assert comps[0].res == -errno.EBADF
    del comps
    gc.collect()
    assert wr() is None


def test_multishot_user_data_refcount():
    """Each non-final CQE of a multishot op hands out a new reference; the final
    one moves the op's reference out.  Nothing may leak either way."""
    ring = KernelRing(8)
    efd = os.eventfd(0, os.EFD_NONBLOCK | os.EFD_CLOEXEC)
    try:
        obj = Token()
        base = sys.getrefcount(obj)
        tok = ring.prep_poll_add(efd, select.POLLIN, obj, multishot=True)
        ring.submit()
        comps = []
        for _ in range(3):
            os.eventfd_write(efd, 1)
            comps += reap_n(ring, 1)
            os.eventfd_read(efd)
        assert all(c.more and c.user_data is obj for c in comps)
        ring.cancel(tok)
        deadline = time.monotonic() + 5
        while ring.inflight:
            assert time.monotonic() < deadline
            ring.submit_and_wait(1, timeout=0.5)
            comps += ring.reap()
        final = [c for c in comps if c.user_data is obj and not c.more]
        assert len(final) == 1
        del comps, final
        assert sys.getrefcount(obj) == base
    finally:
        ring.close()
        os.close(efd)


# -- CQE_SKIP_SUCCESS chains ------------------------------------------------

def test_skip_success_chain_releases_after_successor(ring, pipe):
    r, w = pipe
    buf = bytearray(7)            # exactly the bytes written: a short read would
                                  # count as a failure and break the link
    ring.prep_read(r, buf, -1, "skipped", flags=SQE.LINK | SQE.SKIP_SUCCESS)
    ring.prep_nop("successor")
    ring.submit()
    ring.submit_and_wait(1, timeout=0.02)
    assert ring.inflight == 2
    assert not resizable(buf)
    os.write(w, b"chained")
    comps = reap_n(ring, 1)
    assert [c.user_data for c in comps] == ["successor"]      # no CQE for the read
    assert buf == b"chained"
    assert ring.inflight == 0
    assert resizable(buf)


def test_regression_failed_skip_success_head_strands_its_successor(tmp_path):
    """When a LINK|SKIP_SUCCESS op fails, the kernel posts the failed op's CQE
    and *suppresses* the -ECANCELED CQEs of the ops linked after it (the
    REQ_F_SKIP_LINK_CQES rule).  Invariant 4 (exactly one final completion per
    op) means subring must make up the successor's -ECANCELED completion and
    release it.  Originally the successor's slot was never released: inflight
    stayed 1 forever, its buffer stayed pinned, a wait for it could never end,
    and close() blocked for its whole timeout and then leaked the buffer with
    a ResourceWarning."""
    ring = KernelRing(8)
    gone = os.open(tmp_path / "f", os.O_RDWR | os.O_CREAT, 0o644)
    os.close(gone)                                   # a closed fd (after the ring's own)
    buf = bytearray(8)
    try:
        ring.prep_read(gone, bytearray(8), 0, "head", flags=SQE.LINK | SQE.SKIP_SUCCESS)
        ring.prep_read(gone, buf, 0, "successor")
        ring.prep_nop("unlinked")
        comps = []
        deadline = time.monotonic() + 1.0
        while ring.inflight and time.monotonic() < deadline:
            ring.submit_and_wait(1, timeout=0.05)
            comps += ring.reap()
        by = {}
        for c in comps:
            by.setdefault(c.user_data, []).append(c.res)
        assert by.get("head") == [-errno.EBADF]
        assert by.get("unlinked") == [0]
        assert by.get("successor") == [-errno.ECANCELED], \
            f"the cancelled successor got no final completion: {comps}"
        assert ring.inflight == 0, f"{ring.inflight} op(s) stranded in flight after the chain"
        assert resizable(buf), "the cancelled successor's buffer is still pinned"
    finally:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            t0 = time.monotonic()
            ring.close(timeout=0.3)
            took = time.monotonic() - t0
    assert not [w for w in caught if issubclass(w.category, ResourceWarning)], \
        [str(w.message) for w in caught]
    assert took < 0.25


SKIP_REPRO = textwrap.dedent("""
    import json, os, sys
    from subring import KernelRing, SQE
    batch = sys.argv[1]
    ring = KernelRing(8)
    r, w = os.pipe()
    buf = bytearray(16)
    ring.prep_read(r, buf, -1, "read", flags=SQE.LINK | SQE.SKIP_SUCCESS)
    if batch == "prep_nops":
        ring.prep_nops(1, user_data=100)     # the read's real successor in the chain
    else:
        ring.prep_writes(w, b"zz", 2, [-1], user_data=100)
    ring.prep_nop("unrelated")               # independent op
    ring.submit()
    ring.submit_and_wait(1, timeout=2)
    got = [c.user_data for c in ring.reap()]
    out = {"reaped": got, "inflight": ring.inflight}
    try:
        buf.append(0)
        out["pinned"] = False
    except BufferError:
        out["pinned"] = True
    print(json.dumps(out), flush=True)
    # Never write to the pipe: if the pin was dropped, the kernel would write
    # into freed memory.  Leave without running any more Python.
    os._exit(0)
""")


def test_regression_skip_success_pin_released_by_unrelated_op():
    """A LINK|SKIP_SUCCESS op followed by a *batch* prep: the batch does not
    consume the pending-skip bookkeeping, so the next single op prepared is
    recorded as the skipped op's successor.  When that unrelated op's CQE is
    reaped, the still-pending read is released: its buffer becomes resizable
    while the kernel can still write into it (a use-after-free; writing to the
    pipe afterwards crashed the interpreter in manual testing).  Runs in a
    subprocess so a failure cannot corrupt the test process."""
    outs = {}
    for batch in ("prep_nops", "prep_writes"):
        p = subprocess.run([sys.executable, "-c", SKIP_REPRO, batch], capture_output=True,
                           text=True, timeout=30, check=False)
        assert p.returncode == 0, p.stderr
        outs[batch] = json.loads(p.stdout)
    # With a SKIP_SUCCESS|LINK read at its head, the chain read -> batch op is
    # still pending; only the unrelated NOP may have completed, and the read's
    # buffer must still be pinned.
    expect = {"reaped": ["unrelated"], "inflight": 2, "pinned": True}
    assert outs == {"prep_nops": expect, "prep_writes": expect}


def test_finalizer_closing_the_ring_during_reap_does_not_crash():
    """Issue 13 (2): a `keep=` object's __del__ ran while its slot still read
    as live; close() there freed the op table under reap() (SIGSEGV).  The
    table now parks what it drops and releases it only when consistent: the
    finalizer finds a consistent ring (here: closes it), reap returns both
    completions."""
    out = run_child("""
        from subring import KernelRing, Op
        r = KernelRing(16)
        class K:
            def __del__(self):
                r.close()
        r.prep_sqe(Op.NOP, keep=K(), user_data=1)
        r.prep_sqe(Op.NOP, keep=K(), user_data=2)
        r.submit_and_wait(2, timeout=5)
        print(sorted(c.user_data for c in r.reap()), r.closed)
    """, timeout=30)
    assert out.split() == ["[1,", "2]", "True"]


def test_finalizer_reaping_during_reap_delivers_each_op_once():
    """Issue 13 (2): reap() from a finalizer during reap() on an overflowed
    CQ delivered op 0 41 times and wrapped `inflight` to 4294967256."""
    out = run_child("""
        import time
        from subring import KernelRing, Op
        r = KernelRing(4, cq_entries=4, max_inflight=64)
        got = []
        class K:
            def __del__(self):
                got.extend(c.user_data for c in r.reap())
        for i in range(40):
            r.prep_sqe(Op.NOP, keep=K(), user_data=i)
        r.submit()
        deadline = time.monotonic() + 10
        while r.inflight and time.monotonic() < deadline:
            r.submit_and_wait(1, 0.1)
            got.extend(c.user_data for c in r.reap())
        print(sorted(got) == list(range(40)), len(got), r.inflight)
        r.close()
    """, timeout=30)
    assert out.split() == ["True", "40", "0"]
