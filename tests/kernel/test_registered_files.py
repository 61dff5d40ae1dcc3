"""Registered files: register_files (ints, file objects, None), FIXED_FILE ops
by index, update_files, register_files_sparse, unregister_files."""

from __future__ import annotations

import errno
import os
import socket

import pytest

from subring import SQE
from ringhelpers import need as _need, one as _one

FIXED = SQE.FIXED_FILE



def _read_fixed_file(ring, index: int, n: int, offset: int = 0):
    buf = bytearray(n)
    ring.prep_read(index, buf, offset, flags=FIXED)
    c = _one(ring)
    return c.res, bytes(buf[:max(c.res, 0)])


@pytest.fixture
def files(tmp_path):
    """Three small files with distinct contents, opened read-only."""
    fds = []
    for k in range(3):
        p = tmp_path / f"f{k}"
        p.write_bytes(f"file number {k}".encode())
        fds.append(os.open(p, os.O_RDONLY))
    yield fds
    for fd in fds:
        os.close(fd)


def test_register_int_fds_and_read_by_index(ring, files):
    _need("read")
    ring.register_files(files)
    for k in range(3):
        res, data = _read_fixed_file(ring, k, 64)
        assert res == len(b"file number 0")
        assert data == f"file number {k}".encode()
    # an index beyond the table
    res, _ = _read_fixed_file(ring, 3, 8)
    assert res == -errno.EBADF
    ring.unregister_files()


def test_register_file_objects_and_none(ring, tmp_path):
    _need("read")
    (tmp_path / "a").write_bytes(b"AAAA")
    (tmp_path / "b").write_bytes(b"BBBB")
    with open(tmp_path / "a", "rb") as fa, open(tmp_path / "b", "rb") as fb:
        ring.register_files([fa, None, fb])
        assert _read_fixed_file(ring, 0, 4) == (4, b"AAAA")
        assert _read_fixed_file(ring, 2, 4) == (4, b"BBBB")
        res, _ = _read_fixed_file(ring, 1, 4)  # the empty slot
        assert res == -errno.EBADF
        ring.unregister_files()


def test_registered_file_survives_close_of_original_fd(plain_ring, tmp_path):
    """The table holds its own reference to the file."""
    _need("read")
    (tmp_path / "x").write_bytes(b"still readable")
    fd = os.open(tmp_path / "x", os.O_RDONLY)
    plain_ring.register_files([fd])
    os.close(fd)
    assert _read_fixed_file(plain_ring, 0, 14) == (14, b"still readable")
    plain_ring.unregister_files()


def test_fixed_file_write_and_socket_ops(ring, tmp_path):
    _need("write", "send", "recv")
    fd = os.open(tmp_path / "w", os.O_CREAT | os.O_RDWR, 0o600)
    a, b = socket.socketpair()
    try:
        ring.register_files([fd, a, b])
        ring.prep_write(0, b"via slot 0", 0, flags=FIXED)
        assert _one(ring).res == 10
        assert os.pread(fd, 10, 0) == b"via slot 0"
        ring.prep_send(1, b"ping", flags=FIXED)
        assert _one(ring).res == 4
        buf = bytearray(4)
        ring.prep_recv(2, buf, flags=FIXED)
        assert _one(ring).res == 4
        assert buf == b"ping"
        ring.unregister_files()
    finally:
        os.close(fd)
        a.close()
        b.close()


def test_update_files(ring, files):
    _need("read")
    f0, f1, f2 = files
    ring.register_files([f0, f1])
    assert ring.update_files(0, [f2]) == 1  # replace slot 0
    assert _read_fixed_file(ring, 0, 64)[1] == b"file number 2"
    assert ring.update_files(1, [None]) == 1  # clear slot 1
    assert _read_fixed_file(ring, 1, 4)[0] == -errno.EBADF
    assert ring.update_files(1, [-1]) == 1  # -1 clears too
    assert ring.update_files(0, [f1, f0]) == 2
    assert _read_fixed_file(ring, 0, 64)[1] == b"file number 1"
    assert _read_fixed_file(ring, 1, 64)[1] == b"file number 0"
    with pytest.raises(OSError):
        ring.update_files(2, [f0])  # past the end of the table
    ring.unregister_files()


def test_register_files_sparse_then_update(ring, files):
    _need("read")
    ring.register_files_sparse(8)
    for k in range(8):
        assert _read_fixed_file(ring, k, 1)[0] == -errno.EBADF
    assert ring.update_files(5, [files[1]]) == 1
    assert _read_fixed_file(ring, 5, 64)[1] == b"file number 1"
    assert ring.update_files(6, [files[2], files[0]]) == 2
    assert _read_fixed_file(ring, 7, 64)[1] == b"file number 0"
    ring.unregister_files()


def test_unregister_files(plain_ring, files):
    _need("read")
    plain_ring.register_files(files)
    plain_ring.unregister_files()
    res, _ = _read_fixed_file(plain_ring, 0, 4)
    assert res == -errno.EBADF
    with pytest.raises(OSError) as ei:
        plain_ring.unregister_files()  # nothing registered
    assert ei.value.errno == errno.ENXIO
    # a table can be registered again
    plain_ring.register_files([files[2]])
    assert _read_fixed_file(plain_ring, 0, 64)[1] == b"file number 2"
    plain_ring.unregister_files()


def test_register_files_errors(plain_ring, files):
    with pytest.raises(ValueError):
        plain_ring.register_files([])
    with pytest.raises(TypeError):
        plain_ring.register_files([1.5])
    with pytest.raises(TypeError):
        plain_ring.register_files(42)
    closed = os.dup(files[0])
    os.close(closed)
    with pytest.raises(OSError) as ei:
        plain_ring.register_files([closed])
    assert ei.value.errno == errno.EBADF
    plain_ring.register_files([files[0]])
    with pytest.raises(OSError) as ei:
        plain_ring.register_files([files[1]])  # already registered
    assert ei.value.errno == errno.EBUSY
    plain_ring.unregister_files()


def test_update_files_errors(plain_ring, files):
    with pytest.raises(OSError) as ei:
        plain_ring.update_files(0, [files[0]])  # no table
    assert ei.value.errno == errno.ENXIO
    plain_ring.register_files_sparse(2)
    with pytest.raises(TypeError):
        plain_ring.update_files(0, ["not an fd"])
    closed = os.dup(files[0])
    os.close(closed)
    with pytest.raises(OSError):
        plain_ring.update_files(0, [closed])
    plain_ring.unregister_files()


def test_registered_ring_fd_not_allowed(plain_ring):
    """io_uring refuses to register a ring's own fd as a fixed file."""
    with pytest.raises(OSError) as ei:
        plain_ring.register_files([plain_ring.fd])
    assert ei.value.errno in (errno.EBADF, errno.EINVAL)


def test_unregister_files_with_op_in_flight(ring):
    """A fixed-file op in flight keeps its file: unregistering the table does
    not break it (the kernel holds a reference per op)."""
    _need("read", "async_cancel")
    r, w = os.pipe()
    try:
        ring.register_files([r])
        buf = bytearray(3)
        tok = ring.prep_read(0, buf, flags=FIXED, user_data="read")
        ring.submit()
        ring.submit_and_wait(1, 0.02)
        assert ring.reap() == []
        ring.unregister_files()
        os.write(w, b"abc")
        c = _one(ring)
        assert c.user_data == "read"
        assert c.res == 3 and buf == b"abc"
        del tok
    finally:
        os.close(r)
        os.close(w)
