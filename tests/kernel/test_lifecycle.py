"""Ring lifecycle: context manager, close(), use after close, fork, GC."""

from __future__ import annotations

import array
import errno
import gc
import json
import os
import signal
import socket
import time
import warnings
import weakref

import pytest

from subring import (
    ForkedRingError,
    KernelRing,
    RingClosedError,
    Statx,
    SubringError,
)
from ringhelpers import reap_n, run_child as run_python, resizable


def fd_is_open(fd: int) -> bool:
    try:
        os.fstat(fd)
    except OSError as e:
        assert e.errno == errno.EBADF
        return False
    return True


class Buf(bytearray):
    """A bytearray that can be weakly referenced."""


class Token:
    """A weakly referenceable user_data object."""


# -- context manager and close() ---------------------------------------------

def test_context_manager():
    with KernelRing(8) as ring:
        assert isinstance(ring, KernelRing)
        assert not ring.closed
        fd = ring.fd
        assert fd_is_open(fd)
        ring.prep_nop("cm")
        assert reap_n(ring, 1)[0].user_data == "cm"
    assert ring.closed
    assert not fd_is_open(fd)


def test_context_manager_closes_on_exception(pipe):
    buf = bytearray(8)
    with pytest.raises(KeyError), KernelRing(8) as ring:
        ring.prep_read(pipe[0], buf, -1)
        ring.submit()
        raise KeyError("boom")
    assert ring.closed
    assert resizable(buf)


def test_close_with_read_in_flight_is_prompt_and_quiet(ring, pipe):
    buf = Buf(16)
    ud = Token()
    wbuf, wud = weakref.ref(buf), weakref.ref(ud)
    ring.prep_read(pipe[0], buf, -1, ud)
    ring.submit()
    ring.submit_and_wait(1, timeout=0.02)          # make sure the kernel has it
    assert ring.inflight == 1
    del buf, ud
    fd = ring.fd
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        t0 = time.monotonic()
        ring.close()
        elapsed = time.monotonic() - t0
    assert not [w for w in caught if issubclass(w.category, ResourceWarning)], \
        [str(w.message) for w in caught]
    assert elapsed < 1.0, f"close() took {elapsed:.2f} s"
    assert ring.closed
    assert not fd_is_open(fd)
    gc.collect()
    assert wbuf() is None, "close() kept the buffer of a cancelled read alive"
    assert wud() is None, "close() kept the user_data of a cancelled read alive"
    # The pipe is still fine: nobody is reading it any more.
    os.write(pipe[1], b"x")
    assert os.read(pipe[0], 1) == b"x"


def test_close_with_unsubmitted_ops(ring, pipe):
    bufs = [bytearray(4) for _ in range(3)]
    for b in bufs:
        ring.prep_read(pipe[0], b, -1)
    ring.prep_nops(5)
    assert ring.sq_pending == 8
    t0 = time.monotonic()
    ring.close()
    assert time.monotonic() - t0 < 1.0
    assert all(resizable(b) for b in bufs)


def test_close_with_unsubmitted_link_chain(ring, pipe):
    from subring import SQE
    buf = bytearray(4)
    ring.prep_read(pipe[0], buf, -1, flags=SQE.LINK)   # chain still open at close()
    t0 = time.monotonic()
    ring.close()
    assert time.monotonic() - t0 < 1.0
    assert resizable(buf)


def test_close_twice_and_closed_properties(plain_ring):
    ring = plain_ring
    ring.close()
    ring.close()
    ring.close(timeout=0)
    assert ring.closed
    assert repr(ring) == "<KernelRing closed>"
    assert ring.inflight == 0


def test_close_timeout_validation(plain_ring):
    with pytest.raises(TypeError):
        plain_ring.close(timeout="soon")
    assert not plain_ring.closed
    plain_ring.prep_nop("still works")
    assert reap_n(plain_ring, 1)[0].user_data == "still works"


def test_init_twice_is_refused(plain_ring):
    with pytest.raises(RuntimeError):
        plain_ring.__init__(8)
    plain_ring.prep_nop(1)
    assert reap_n(plain_ring, 1)[0].user_data == 1


# -- every method refuses after close / in a forked child ----------------------

def _without_deprecation(fn):
    """Call a deprecated verb (it must still refuse like the others)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        return fn()


def _method_table(ring: KernelRing, fd: int):
    """name -> call; covers every public method of KernelRing that touches the
    ring (test_method_table_is_complete keeps this honest)."""
    return {
        "prep_nop": lambda: ring.prep_nop(),
        "prep_nops": lambda: ring.prep_nops(1),
        "prep_read": lambda: ring.prep_read(fd, bytearray(4)),
        "prep_write": lambda: ring.prep_write(fd, b"x"),
        "prep_reads": lambda: ring.prep_reads(fd, bytearray(4), 4, [0]),
        "prep_writes": lambda: ring.prep_writes(fd, b"xxxx", 4, [0]),
        "prep_read_fixed": lambda: ring.prep_read_fixed(fd, 0, 0, 4),
        "prep_write_fixed": lambda: ring.prep_write_fixed(fd, 0, 0, 4),
        "prep_sqe": lambda: ring.prep_sqe(0),
        "prep_readv": lambda: ring.prep_readv(fd, [bytearray(4)]),
        "prep_writev": lambda: ring.prep_writev(fd, [b"x"]),
        "prep_fsync": lambda: ring.prep_fsync(fd),
        "prep_fdatasync": lambda: ring.prep_fdatasync(fd),
        "prep_openat": lambda: ring.prep_openat("nonexistent"),
        "prep_close": lambda: ring.prep_close(fd),
        "prep_statx": lambda: ring.prep_statx("nonexistent", Statx()),
        "prep_fallocate": lambda: ring.prep_fallocate(fd, 0, 0, 10),
        "prep_unlinkat": lambda: ring.prep_unlinkat("nonexistent"),
        "prep_renameat": lambda: ring.prep_renameat("a", "b"),
        "prep_mkdirat": lambda: ring.prep_mkdirat("d"),
        "prep_linkat": lambda: ring.prep_linkat("a", "b"),
        "prep_symlinkat": lambda: ring.prep_symlinkat("a", "b"),
        "prep_timeout": lambda: ring.prep_timeout(1.0),
        "prep_timeout_remove": lambda: ring.prep_timeout_remove(1),
        "prep_link_timeout": lambda: ring.prep_link_timeout(1.0),
        "prep_poll_add": lambda: ring.prep_poll_add(fd),
        "prep_poll_remove": lambda: ring.prep_poll_remove(1),
        "prep_cancel": lambda: ring.prep_cancel(1),
        "prep_socket": lambda: ring.prep_socket(socket.AF_INET, socket.SOCK_STREAM),
        "prep_accept": lambda: ring.prep_accept(fd),
        "prep_connect": lambda: ring.prep_connect(fd, ("127.0.0.1", 9)),
        "prep_send": lambda: ring.prep_send(fd, b"x"),
        "prep_recv": lambda: ring.prep_recv(fd, bytearray(4)),
        "prep_sendmsg": lambda: ring.prep_sendmsg(fd, [b"x"]),
        "prep_recvmsg": lambda: ring.prep_recvmsg(fd, [bytearray(4)]),
        "prep_shutdown": lambda: ring.prep_shutdown(fd),
        "prep_splice": lambda: ring.prep_splice(fd, -1, fd, -1, 4),
        "prep_tee": lambda: ring.prep_tee(fd, fd, 4),
        "prep_msg_ring": lambda: ring.prep_msg_ring(fd, 0, 0),
        "prep_uring_cmd": lambda: ring.prep_uring_cmd(fd, 0),
        "submit": lambda: ring.submit(),
        "submit_and_wait": lambda: ring.submit_and_wait(1, timeout=0),
        "reap": lambda: ring.reap(),
        "reap_into": lambda: ring.reap_into(array.array("Q", [0]), array.array("i", [0])),
        "wait": lambda: ring.wait(1, timeout=0),
        "completions": lambda: list(ring.completions(timeout=0)),
        "cancel": lambda: ring.cancel(1),
        "supported_ops": lambda: ring.supported_ops(),
        "probe": lambda: _without_deprecation(ring.probe),   # old name of supported_ops
        "_probe": lambda: ring._probe(),
        "enable_eventfd": lambda: ring.enable_eventfd(),
        "register_eventfd": lambda: ring.register_eventfd(fd),
        "unregister_eventfd": lambda: ring.unregister_eventfd(),
        "register_buffers": lambda: ring.register_buffers([bytearray(4096)]),
        "register_buffers_sparse": lambda: ring.register_buffers_sparse(4),
        "update_buffers": lambda: ring.update_buffers(0, [bytearray(4096)]),
        "unregister_buffers": lambda: ring.unregister_buffers(),
        "register_files": lambda: ring.register_files([fd]),
        "register_files_sparse": lambda: ring.register_files_sparse(4),
        "update_files": lambda: ring.update_files(0, [fd]),
        "unregister_files": lambda: ring.unregister_files(),
        "register_buffer_ring": lambda: ring.register_buffer_ring(1, 4, 64),
        "register_raw": lambda: ring.register_raw(0, None, 0),
        "cq_ready": lambda: ring.cq_ready,
        "sq_space": lambda: ring.sq_space,
        "sq_pending": lambda: ring.sq_pending,
    }


# Keep working after close (a final snapshot / state, not ring use).
EXEMPT = {"close", "statistics", "_stats", "_msghdr", "closed", "fd", "inflight",
          "max_inflight", "sq_entries", "cq_entries", "sqe_size", "cqe_size", "setup_flags",
          "features", "eventfd", "registered_buffers",
          "_live_user_data", "live_user_data"}  # read-only introspection: [] after close


def test_method_table_is_complete(plain_ring):
    names = {n for n in dir(KernelRing) if not n.startswith("__")}
    table = _method_table(plain_ring, 0)
    missing = names - set(table) - EXEMPT
    assert not missing, f"methods not covered by the use-after-close/fork tests: {missing}"


def test_every_method_refuses_after_close(plain_ring):
    ring = plain_ring
    fd = os.open(os.devnull, os.O_RDWR)
    try:
        ring.close()
        before = set(os.listdir("/proc/self/fd"))
        failures = {}
        for name, call in _method_table(ring, fd).items():
            try:
                call()
            except RingClosedError as e:
                assert isinstance(e, ValueError) and isinstance(e, SubringError)
            except BaseException as e:          # noqa: BLE001 - report them all
                failures[name] = f"{type(e).__name__}: {e}"
            else:
                failures[name] = "no exception"
        assert not failures, failures
        assert set(os.listdir("/proc/self/fd")) == before   # e.g. enable_eventfd cleaned up
        st = ring.statistics()                   # still a snapshot, never a crash
        assert st.inflight == 0
    finally:
        os.close(fd)


# -- fork ---------------------------------------------------------------------

def run_child(fn, timeout: float = 10.0) -> int:
    """Run fn() in a forked child; its return value is the exit code."""
    pid = os.fork()
    if pid == 0:                                  # pragma: no cover - child
        code = 97
        try:
            code = int(fn())
        except BaseException:                     # noqa: BLE001
            code = 98
        finally:
            os._exit(code)
    deadline = time.monotonic() + timeout
    while True:
        wpid, status = os.waitpid(pid, os.WNOHANG)
        if wpid:
            return os.waitstatus_to_exitcode(status)
        if time.monotonic() > deadline:
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
            pytest.fail("forked child did not finish in time")
        time.sleep(0.002)


def test_fork_child_refuses_parent_ring_parent_unaffected(ring, pipe, tmp_path):
    r, w = pipe
    buf = bytearray(8)
    ring.prep_read(r, buf, -1, "parent-read")
    ring.submit()
    ring.submit_and_wait(1, timeout=0.02)
    report = tmp_path / "child.json"

    def child():
        out = {"closed_before": ring.closed, "failures": {}}
        fd = os.open(os.devnull, os.O_RDWR)
        for name, call in _method_table(ring, fd).items():
            try:
                call()
            except ForkedRingError as e:
                if not isinstance(e, RuntimeError):
                    out["failures"][name] = "not a RuntimeError"
            except BaseException as e:            # noqa: BLE001
                out["failures"][name] = f"{type(e).__name__}: {e}"
            else:
                out["failures"][name] = "no exception"
        ring.close()                             # allowed: drops the child's copy
        ring.close()
        out["closed_after"] = ring.closed
        with KernelRing(4) as own:               # the child's own ring works
            own.prep_nop("child")
            own.submit_and_wait(1, timeout=5)
            out["own"] = [c.user_data for c in own.reap()]
        os.close(fd)
        report.write_text(json.dumps(out))
        return 0

    assert run_child(child) == 0
    out = json.loads(report.read_text())
    assert out["closed_before"] is True
    assert out["failures"] == {}
    assert out["closed_after"] is True
    assert out["own"] == ["child"]
    # The parent's ring and its in-flight read were not disturbed by the
    # child's close(): the read completes with data, not -ECANCELED.
    assert not ring.closed
    assert ring.inflight == 1
    os.write(w, b"hello")
    (c,) = reap_n(ring, 1)
    assert c.user_data == "parent-read" and c.res == 5 and buf[:5] == b"hello"
    ring.prep_nops(3)
    assert sorted(c.user_data for c in reap_n(ring, 3)) == [0, 1, 2]


def test_fork_child_exit_without_close_leaves_parent_working(plain_ring):
    assert run_child(lambda: 0) == 0
    plain_ring.prep_nop("after-fork")
    assert reap_n(plain_ring, 1)[0].user_data == "after-fork"


# -- garbage collection -------------------------------------------------------------

@pytest.mark.parametrize("config", [{}, {"defer_taskrun": True}, {"sqpoll": True}],
                         ids=["default", "defer-taskrun", "sqpoll"])
def test_gc_unclosed_ring_with_ops_in_flight_warns(pipe, config):
    ring = KernelRing(8, **config)
    buf = Buf(8)
    ud = Token()
    wbuf, wud = weakref.ref(buf), weakref.ref(ud)
    ring.prep_read(pipe[0], buf, -1, ud)
    ring.prep_nop("done")
    ring.submit()
    fd = ring.fd
    del buf, ud
    with pytest.warns(ResourceWarning, match="unclosed KernelRing"):  # noqa: PT031
        del ring
        gc.collect()
    assert not fd_is_open(fd)
    assert wbuf() is None and wud() is None
    os.write(pipe[1], b"x")                      # nobody reads: no crash, data stays
    assert os.read(pipe[0], 1) == b"x"


def test_gc_unclosed_idle_ring_releases_fd():
    ring = KernelRing(8)
    ring.prep_nop()
    reap_n(ring, 1)
    fd = ring.fd
    del ring
    gc.collect()
    assert not fd_is_open(fd)


def test_regression_gc_unclosed_ring_leaks_its_eventfd():
    """The eventfd made by enable_eventfd() belongs to the ring ("the ring
    closes it at close()"), but a ring that is garbage-collected without
    close() leaves it open forever: only the C-level ring fd is released."""
    ring = KernelRing(8)
    efd = ring.enable_eventfd()
    del ring
    gc.collect()
    leaked = fd_is_open(efd)
    if leaked:
        os.close(efd)
    assert not leaked, "the ring's eventfd stayed open after the ring was collected"


def test_regression_failed_close_still_closes_eventfd(plain_ring):
    """close() that raises and leaves the ring open (bad timeout here; also
    RingBusyError when another thread waits in the ring) must not tear down
    the ring's eventfd: kernel.py closes it in a ``finally``."""
    efd = plain_ring.enable_eventfd()
    with pytest.raises(ValueError):
        plain_ring.close(timeout=-1)
    assert not plain_ring.closed
    assert plain_ring.eventfd == efd and fd_is_open(efd), \
        "close() failed, the ring is still open, but its eventfd was closed"


def test_regression_ring_in_cycle_through_inflight_user_data_is_never_collected(pipe):
    """An unclosed ring whose in-flight op's user_data refers back to the ring
    (e.g. a bound method of the object owning the ring) is never collected:
    the op table's references are invisible to the cycle GC (no tp_traverse),
    so the ring fd, the buffers and the user_data leak silently, without the
    promised ResourceWarning."""

    class Owner:
        def on_read(self, c):  # pragma: no cover - never called
            pass

    owner = Owner()
    owner.ring = KernelRing(8)
    owner.buf = bytearray(8)
    owner.ring.prep_read(pipe[0], owner.buf, -1, user_data=owner.on_read)
    owner.ring.submit()
    wring = weakref.ref(owner.ring)
    del owner
    with warnings.catch_warnings(record=True):
        warnings.simplefilter("always")
        gc.collect()
        gc.collect()
    alive = wring()
    survived = alive is not None
    if survived:
        alive.close()                            # clean up for the fd-leak check
    del alive
    assert not survived, "ring kept alive forever by a reference cycle through user_data"


@pytest.mark.skipif(os.uname().machine != "x86_64", reason="the seccomp filter is x86-64 BPF")
def test_setup_refused_by_policy_raises_permission_error_with_errno():
    """Under a seccomp filter answering io_uring_setup with EPERM (as container
    runtimes do), KernelRing() raised a PermissionError built from a message
    only: .errno was None, so callers could not branch on it."""
    out = run_python(r"""
        import ctypes, errno, struct
        libc = ctypes.CDLL(None, use_errno=True)
        def ins(code, k, jt=0, jf=0):
            return struct.pack("HBBI", code, jt, jf, k)
        LD_W_ABS, JEQ_K, RET_K = 0x20, 0x15, 0x06
        ALLOW, ERRNO = 0x7FFF0000, 0x00050000
        prog = b"".join([
            ins(LD_W_ABS, 4), ins(JEQ_K, 0xC000003E, 1, 0), ins(RET_K, ALLOW),  # x86-64 only
            ins(LD_W_ABS, 0), ins(JEQ_K, 425, 0, 1),                            # io_uring_setup
            ins(RET_K, ERRNO | errno.EPERM), ins(RET_K, ALLOW)])
        class SockFprog(ctypes.Structure):
            _fields_ = [("len", ctypes.c_ushort), ("filter", ctypes.c_char_p)]
        fprog = SockFprog(len(prog) // 8, prog)
        assert libc.prctl(38, 1, 0, 0, 0) == 0                       # PR_SET_NO_NEW_PRIVS
        assert libc.prctl(22, 2, ctypes.byref(fprog), 0, 0) == 0     # SECCOMP_MODE_FILTER
        from subring import KernelRing
        try:
            KernelRing(8)
        except PermissionError as e:
            print(e.errno == errno.EPERM, "disabled here" in str(e),
                  "Operation not permitted" in str(e))
    """, timeout=60)
    assert out.split() == ["True", "True", "True"]


def test_close_with_a_drain_op_behind_a_blocked_op_is_prompt(ring):
    """(reliab, fuzz) close() cancelled with an SQE, which a DRAIN op holds
    back until everything before it finished -- including the blocked read
    the cancel was meant to stop: close() took its whole timeout, warned and
    kept the buffers forever.  It cancels with IORING_REGISTER_SYNC_CANCEL
    now (no SQE, nothing can hold it back)."""
    from subring import SQE
    rd, wr = os.pipe()
    try:
        buf = bytearray(4)
        ring.prep_read(rd, buf, -1, "blocked")
        ring.prep_nop("drain", flags=SQE.DRAIN)
        ring.prep_timeout(1e6, user_data="long timeout")
        ring.submit()
        t0 = time.monotonic()
        with warnings.catch_warnings():
            warnings.simplefilter("error", ResourceWarning)
            ring.close(timeout=3)
        assert time.monotonic() - t0 < 1.5
        buf.extend(b"x")                 # released, not kept forever
    finally:
        os.close(rd)
        os.close(wr)
