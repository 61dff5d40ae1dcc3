"""Completion notification through an eventfd: enable_eventfd() and
register_eventfd / unregister_eventfd, against the real kernel."""

from __future__ import annotations

import errno
import os
import select
import time

import pytest

from ringhelpers import collect as _collect, need as _need



def _readable(fd: int, timeout: float) -> bool:
    p = select.poll()
    p.register(fd, select.POLLIN)
    return bool(p.poll(int(timeout * 1000)))


def _drain_eventfd(fd: int) -> int:
    """Read (and reset) the counter; 0 if it was not signalled."""
    try:
        return int.from_bytes(os.read(fd, 8), "little")
    except BlockingIOError:
        return 0



def test_enable_eventfd_signals_completion(ring):
    _need("nop")
    efd = ring.enable_eventfd()
    assert isinstance(efd, int) and efd >= 0
    assert ring.eventfd == efd
    assert ring.enable_eventfd() == efd  # idempotent
    assert not os.get_blocking(efd)
    assert not os.get_inheritable(efd)
    assert not _readable(efd, 0.02)  # nothing happened yet
    ring.prep_nop(user_data="n")
    ring.submit()
    # no io_uring_enter(GETEVENTS) from us: the eventfd alone must tell
    assert _readable(efd, 5.0), "eventfd not readable after a completion"
    assert _drain_eventfd(efd) >= 1
    (c,) = _collect(ring, 1)
    assert c.user_data == "n"


def test_eventfd_signals_async_completion(ring):
    """A completion that happens later (a pipe read satisfied after submit)."""
    _need("read")
    efd = ring.enable_eventfd()
    r, w = os.pipe()
    try:
        buf = bytearray(5)
        ring.prep_read(r, buf, user_data="read")
        ring.submit()
        time.sleep(0.02)
        _drain_eventfd(efd)  # whatever submission may have signalled
        assert not _readable(efd, 0.03)
        os.write(w, b"hello")
        assert _readable(efd, 5.0), "eventfd not readable after the read completed"
        (c,) = _collect(ring, 1)
        assert c.res == 5 and buf == b"hello"
    finally:
        os.close(r)
        os.close(w)


def test_ring_closes_its_eventfd(make_ring):
    ring = make_ring()
    efd = ring.enable_eventfd()
    os.fstat(efd)  # open
    ring.close()
    assert ring.eventfd is None
    with pytest.raises(OSError) as ei:
        os.fstat(efd)
    assert ei.value.errno == errno.EBADF


def test_register_and_unregister_own_eventfd(ring):
    _need("nop")
    efd = os.eventfd(0, os.EFD_CLOEXEC | os.EFD_NONBLOCK)
    try:
        ring.register_eventfd(efd)
        assert ring.eventfd is None  # not the ring's own
        ring.prep_nop()
        ring.submit()
        assert _readable(efd, 5.0)
        assert _drain_eventfd(efd) >= 1
        _collect(ring, 1)
        # registering a second one is refused
        other = os.eventfd(0, os.EFD_CLOEXEC | os.EFD_NONBLOCK)
        try:
            with pytest.raises(OSError) as ei:
                ring.register_eventfd(other)
            assert ei.value.errno == errno.EBUSY
        finally:
            os.close(other)
        ring.unregister_eventfd()
        _drain_eventfd(efd)
        ring.prep_nop()
        _collect(ring, 1)
        assert not _readable(efd, 0.05), "eventfd signalled after unregister"
        with pytest.raises(OSError) as ei:
            ring.unregister_eventfd()  # nothing registered
        assert ei.value.errno == errno.ENXIO
    finally:
        os.close(efd)


def test_ring_does_not_close_a_user_eventfd(make_ring):
    ring = make_ring()
    efd = os.eventfd(0, os.EFD_CLOEXEC | os.EFD_NONBLOCK)
    try:
        ring.register_eventfd(efd)
        ring.close()
        os.fstat(efd)  # still ours, still open
        os.eventfd_write(efd, 1)
        assert os.eventfd_read(efd) == 1
    finally:
        os.close(efd)


def test_register_eventfd_bad_fd(plain_ring):
    fd = os.eventfd(0)
    os.close(fd)
    with pytest.raises(OSError) as ei:
        plain_ring.register_eventfd(fd)
    assert ei.value.errno == errno.EBADF
    # a non-eventfd is refused too
    r, w = os.pipe()
    try:
        with pytest.raises(OSError):
            plain_ring.register_eventfd(r)
    finally:
        os.close(r)
        os.close(w)


def test_eventfd_counts_several_completions(plain_ring):
    _need("nop")
    efd = plain_ring.enable_eventfd()
    plain_ring.prep_nops(5)
    _collect(plain_ring, 5)
    n = _drain_eventfd(efd)
    assert 1 <= n <= 5  # one signal per posting batch, at most one per CQE


def test_enable_eventfd_after_register_fails_cleanly(plain_ring):
    efd = os.eventfd(0, os.EFD_CLOEXEC | os.EFD_NONBLOCK)
    try:
        plain_ring.register_eventfd(efd)
        before = set(os.listdir("/proc/self/fd"))
        with pytest.raises(OSError):
            plain_ring.enable_eventfd()  # EBUSY: one is registered
        assert set(os.listdir("/proc/self/fd")) <= before  # its own fd was closed
        assert plain_ring.eventfd is None
        plain_ring.unregister_eventfd()
    finally:
        os.close(efd)
