"""Registered (fixed) buffers: register_buffers / _sparse / update_buffers /
unregister_buffers and read_fixed / write_fixed, against the real kernel."""

from __future__ import annotations

import errno
import mmap
import os
import resource

import pytest

from subring import RingBusyError
from ringhelpers import collect as _collect, need as _need, one as _one


@pytest.fixture
def rfd(datafile):
    path, data = datafile
    fd = os.open(path, os.O_RDONLY)
    yield fd, data
    os.close(fd)


# --------------------------------------------------------------------------
# register + read_fixed / write_fixed
# --------------------------------------------------------------------------

def test_read_fixed_bytearrays(ring, rfd):
    _need("read_fixed")
    fd, data = rfd
    bufs = [bytearray(4096), bytearray(100), bytearray(65536)]
    ring.register_buffers(bufs)
    assert ring.registered_buffers == 3
    ring.prep_read_fixed(fd, 0, 0, 4096, user_data="a")
    ring.prep_read_fixed(fd, 1, 777, 100, user_data="b")
    ring.prep_read_fixed(fd, 2, 300000, 65536, user_data="c")
    by = {c.user_data: c for c in _collect(ring, 3)}
    assert by["a"].op == "read_fixed"
    assert [by[k].res for k in "abc"] == [4096, 100, 65536]
    assert bytes(bufs[0]) == os.pread(fd, 4096, 0) == data[:4096]
    assert bytes(bufs[1]) == os.pread(fd, 100, 777)
    assert bytes(bufs[2]) == os.pread(fd, 65536, 300000)
    ring.unregister_buffers()
    assert ring.registered_buffers == 0


def test_read_fixed_buf_offset_subrange(ring, rfd):
    _need("read_fixed")
    fd, data = rfd
    buf = bytearray(b"\xee" * 1000)
    ring.register_buffers([buf])
    ring.prep_read_fixed(fd, 0, 5000, 200, buf_offset=300)
    assert _one(ring).res == 200
    assert buf[:300] == b"\xee" * 300
    assert bytes(buf[300:500]) == os.pread(fd, 200, 5000)
    assert buf[500:] == b"\xee" * 500
    # exactly up to the end of the buffer is fine
    ring.prep_read_fixed(fd, 0, 0, 100, buf_offset=900)
    assert _one(ring).res == 100
    assert bytes(buf[900:]) == data[:100]


def test_read_fixed_short_read_at_eof(plain_ring, rfd):
    _need("read_fixed")
    fd, data = rfd
    buf = bytearray(4096)
    plain_ring.register_buffers([buf])
    plain_ring.prep_read_fixed(fd, 0, len(data) - 10, 4096)
    assert _one(plain_ring).res == 10
    assert bytes(buf[:10]) == data[-10:]
    plain_ring.prep_read_fixed(fd, 0, len(data), 4096)
    assert _one(plain_ring).res == 0


def test_write_fixed_then_pread(ring, tmp_path):
    _need("write_fixed", "read_fixed")
    fd = os.open(tmp_path / "out", os.O_CREAT | os.O_RDWR, 0o600)
    try:
        src = bytearray(os.urandom(8192))
        dst = bytearray(8192)
        ring.register_buffers([src, dst])
        ring.prep_write_fixed(fd, 0, 0, 8192, user_data="w")
        c = _one(ring)
        assert c.user_data == "w" and c.op == "write_fixed" and c.res == 8192
        assert os.pread(fd, 8192, 0) == bytes(src)
        # a middle slice, at a file offset
        ring.prep_write_fixed(fd, 0, 100000, 1000, buf_offset=5000)
        assert _one(ring).res == 1000
        assert os.pread(fd, 1000, 100000) == bytes(src[5000:6000])
        # and back in through the other registered buffer
        ring.prep_read_fixed(fd, 1, 0, 8192)
        assert _one(ring).res == 8192
        assert dst == src
    finally:
        os.close(fd)


def test_register_mmap_buffer(ring, rfd):
    _need("read_fixed")
    fd, _ = rfd
    m = mmap.mmap(-1, 1 << 16)
    try:
        ring.register_buffers([m])
        ring.prep_read_fixed(fd, 0, 4096, 1 << 16)
        assert _one(ring).res == 1 << 16
        assert m[:] == os.pread(fd, 1 << 16, 4096)
        with pytest.raises(BufferError):
            m.close()  # exported while registered
        ring.unregister_buffers()
    finally:
        m.close()
    assert m.closed


def test_register_numpy_arrays(ring, rfd, tmp_path):
    np = pytest.importorskip("numpy")
    _need("read_fixed", "write_fixed")
    fd, _ = rfd
    a = np.zeros(1024, dtype=np.uint8)
    b = np.zeros((16, 64), dtype=np.uint32)  # 4 KiB, 2-D, C-contiguous
    ring.register_buffers([a, b])
    ring.prep_read_fixed(fd, 0, 123, 1024)
    ring.prep_read_fixed(fd, 1, 0, b.nbytes)
    assert [c.res for c in _collect(ring, 2)] == [1024, b.nbytes]
    assert a.tobytes() == os.pread(fd, 1024, 123)
    assert b.tobytes() == os.pread(fd, b.nbytes, 0)
    out_fd = os.open(tmp_path / "np", os.O_CREAT | os.O_RDWR, 0o600)
    try:
        b[:] = np.arange(b.size, dtype=np.uint32).reshape(b.shape)
        ring.prep_write_fixed(out_fd, 1, 0, b.nbytes)
        assert _one(ring).res == b.nbytes
        back = np.frombuffer(os.pread(out_fd, b.nbytes, 0), dtype=np.uint32)
        assert (back == np.arange(b.size)).all()
    finally:
        os.close(out_fd)
    ring.unregister_buffers()


def test_register_rejects_unsuitable_buffers(plain_ring):
    np = pytest.importorskip("numpy")
    with pytest.raises((TypeError, BufferError)):
        plain_ring.register_buffers([b"read-only bytes"])
    with pytest.raises((TypeError, BufferError, ValueError)):
        plain_ring.register_buffers([np.zeros(64, dtype=np.uint8)[::2]])  # strided
    ro = np.zeros(64, dtype=np.uint8)
    ro.flags.writeable = False
    with pytest.raises((TypeError, BufferError, ValueError)):
        plain_ring.register_buffers([ro])
    with pytest.raises(ValueError):
        plain_ring.register_buffers([])
    with pytest.raises(TypeError):
        plain_ring.register_buffers(42)
    assert plain_ring.registered_buffers == 0
    # a failed registration left nothing exported: a mixed list that fails
    # on its second entry must release the first
    good = bytearray(16)
    with pytest.raises((TypeError, BufferError)):
        plain_ring.register_buffers([good, b"ro"])
    good.extend(b"x")
    assert plain_ring.registered_buffers == 0


def test_register_twice_is_busy(plain_ring):
    plain_ring.register_buffers([bytearray(64)])
    with pytest.raises(RingBusyError):
        plain_ring.register_buffers([bytearray(64)])
    with pytest.raises(RingBusyError):
        plain_ring.register_buffers_sparse(4)
    plain_ring.unregister_buffers()
    with pytest.raises(ValueError):
        plain_ring.unregister_buffers()  # nothing registered


# --------------------------------------------------------------------------
# bounds: nothing is submitted
# --------------------------------------------------------------------------

def test_fixed_bounds_errors_submit_nothing(ring, rfd):
    _need("read_fixed")
    fd, _ = rfd
    buf = bytearray(1024)
    with pytest.raises(IndexError):
        ring.prep_read_fixed(fd, 0, 0, 16)  # nothing registered yet
    ring.register_buffers([buf])
    before = ring.statistics()
    with pytest.raises(IndexError):
        ring.prep_read_fixed(fd, 1, 0, 16)
    with pytest.raises(IndexError):
        ring.prep_write_fixed(fd, 5, 0, 16)
    with pytest.raises(ValueError):
        ring.prep_read_fixed(fd, 0, 0, 1025)
    with pytest.raises(ValueError):
        ring.prep_read_fixed(fd, 0, 0, 100, buf_offset=1000)
    with pytest.raises(ValueError):
        ring.prep_read_fixed(fd, 0, 0, 1, buf_offset=-1)
    with pytest.raises(ValueError):
        ring.prep_write_fixed(fd, 0, 0, 16, buf_offset=1024)
    with pytest.raises(ValueError):
        ring.prep_read_fixed(fd, 0, -2, 16)
    with pytest.raises(ValueError):
        ring.prep_read_fixed(fd, -1, 0, 16)
    assert ring.inflight == 0
    assert ring.sq_pending == 0
    after = ring.statistics()
    assert after.submitted == before.submitted
    # and the ring still works: a valid op afterwards
    ring.prep_read_fixed(fd, 0, 0, 1024)
    assert _one(ring).res == 1024
    # the registration is not affected either
    ring.unregister_buffers()


# --------------------------------------------------------------------------
# sparse tables and updates
# --------------------------------------------------------------------------

def test_sparse_then_update(ring, rfd):
    _need("read_fixed")
    fd, data = rfd
    ring.register_buffers_sparse(4)
    assert ring.registered_buffers == 4
    with pytest.raises(IndexError):
        ring.prep_read_fixed(fd, 2, 0, 16)  # empty entry
    a, b = bytearray(256), bytearray(512)
    ring.update_buffers(2, [a, b])
    ring.prep_read_fixed(fd, 2, 0, 256, user_data="a")
    ring.prep_read_fixed(fd, 3, 1000, 512, user_data="b")
    by = {c.user_data: c.res for c in _collect(ring, 2)}
    assert by == {"a": 256, "b": 512}
    assert bytes(a) == data[:256] and bytes(b) == data[1000:1512]
    with pytest.raises(BufferError):
        a.extend(b"x")  # registered now
    # replace one, clear the other
    c = bytearray(128)
    ring.update_buffers(2, [c, None])
    a.extend(b"x")  # the replaced buffer is released
    b.extend(b"x")  # the cleared one too
    with pytest.raises(IndexError):
        ring.prep_read_fixed(fd, 3, 0, 16)
    with pytest.raises(ValueError):
        ring.prep_read_fixed(fd, 2, 0, 256)  # c is only 128 bytes
    ring.prep_read_fixed(fd, 2, 64, 128)
    assert _one(ring).res == 128
    assert bytes(c) == data[64:192]
    ring.unregister_buffers()
    c.extend(b"x")


def test_update_buffers_on_registered_table(ring, rfd):
    _need("read_fixed")
    fd, data = rfd
    old = bytearray(64)
    ring.register_buffers([old, bytearray(64)])
    new = bytearray(32)
    assert ring.update_buffers(0, [new]) == 1
    old.extend(b"x")  # released by the update
    ring.prep_read_fixed(fd, 0, 10, 32)
    assert _one(ring).res == 32
    assert bytes(new) == data[10:42]
    ring.unregister_buffers()


def test_update_buffers_errors(plain_ring):
    with pytest.raises(IndexError):
        plain_ring.update_buffers(0, [bytearray(8)])  # no table
    plain_ring.register_buffers_sparse(2)
    with pytest.raises(IndexError):
        plain_ring.update_buffers(1, [bytearray(8), bytearray(8)])  # past the end
    keep = bytearray(8)
    with pytest.raises((TypeError, BufferError)):
        plain_ring.update_buffers(0, [keep, b"read-only"])
    keep.extend(b"x")  # not left exported by the failed update
    plain_ring.unregister_buffers()
    with pytest.raises(ValueError):
        plain_ring.register_buffers_sparse(0)


# --------------------------------------------------------------------------
# lifetime
# --------------------------------------------------------------------------

def test_registered_buffer_cannot_be_resized(plain_ring):
    buf = bytearray(100)
    plain_ring.register_buffers([buf])
    with pytest.raises(BufferError):
        buf.extend(b"x")
    with pytest.raises(BufferError):
        del buf[:10]
    buf[:5] = b"hello"  # in-place writes are fine
    plain_ring.unregister_buffers()
    buf.extend(b"x")  # released after unregister
    assert len(buf) == 101 and buf[:5] == b"hello"


def test_registered_buffer_released_at_close(make_ring):
    ring = make_ring()
    buf = bytearray(100)
    ring.register_buffers([buf])
    with pytest.raises(BufferError):
        buf.extend(b"x")
    ring.close()
    buf.extend(b"x")


def test_unregister_while_fixed_op_in_flight_is_busy(ring, pipe):
    _need("read_fixed", "async_cancel")
    r, _ = pipe
    buf = bytearray(64)
    ring.register_buffers([buf])
    tok = ring.prep_read_fixed(r, 0, -1, 64, user_data="rf")
    # prepared, not even submitted: already busy
    with pytest.raises(RingBusyError):
        ring.unregister_buffers()
    ring.submit()
    ring.submit_and_wait(1, 0.02)
    assert ring.reap() == []  # the pipe is empty: still in flight
    with pytest.raises(RingBusyError):
        ring.unregister_buffers()
    with pytest.raises(RingBusyError):
        ring.update_buffers(0, [bytearray(8)])
    assert ring.registered_buffers == 1
    with pytest.raises(BufferError):
        buf.extend(b"x")
    ring.prep_cancel(tok, user_data="cancel")
    by = {c.user_data: c.res for c in _collect(ring, 2)}
    assert by["cancel"] == 0 and by["rf"] == -errno.ECANCELED
    ring.unregister_buffers()  # fine now
    buf.extend(b"x")


def test_fixed_op_completed_then_unregister(ring, pipe):
    _need("read_fixed")
    r, w = pipe
    buf = bytearray(8)
    ring.register_buffers([buf])
    ring.prep_read_fixed(r, 0, -1, 8)
    ring.submit()
    os.write(w, b"12345678")
    assert _one(ring).res == 8
    assert buf == b"12345678"
    ring.unregister_buffers()


def test_read_fixed_on_bad_fd(plain_ring):
    _need("read_fixed")
    plain_ring.register_buffers([bytearray(16)])
    plain_ring.prep_read_fixed(-1, 0, 0, 16)
    assert _one(plain_ring).res == -errno.EBADF
    plain_ring.unregister_buffers()  # the failed op was retired


def test_register_enomem_mentions_memlock(plain_ring):
    """Optional: only when RLIMIT_MEMLOCK can be lowered cheaply and the
    kernel actually enforces it for this process (not for root/CAP_IPC_LOCK)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_MEMLOCK)
    try:
        resource.setrlimit(resource.RLIMIT_MEMLOCK, (4096, hard))
    except (ValueError, OSError) as e:
        pytest.skip(f"cannot lower RLIMIT_MEMLOCK: {e}")
    try:
        big = mmap.mmap(-1, 1 << 20)
        try:
            try:
                plain_ring.register_buffers([big])
            except MemoryError as e:
                assert "RLIMIT_MEMLOCK" in str(e)
                return
            plain_ring.unregister_buffers()
            pytest.skip("RLIMIT_MEMLOCK not enforced here (CAP_IPC_LOCK)")
        finally:
            big.close()
    finally:
        resource.setrlimit(resource.RLIMIT_MEMLOCK, (soft, hard))
