"""prep_read / prep_write against real files, compared to os.pread / os.read."""

from __future__ import annotations

import array
import errno
import os

import pytest

try:
    import numpy as np
except ImportError:      # optional (the dev extra has it): those tests skip
    np = None
needs_numpy = pytest.mark.skipif(np is None, reason="numpy is not installed")

from ringhelpers import reap_n


@pytest.fixture
def rfd(datafile):
    path, _ = datafile
    fd = os.open(path, os.O_RDONLY)
    yield fd
    os.close(fd)


@pytest.fixture
def wfile(tmp_path):
    path = tmp_path / "out.bin"
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_TRUNC, 0o644)
    yield fd
    os.close(fd)


OFFSETS = [0, 1, 4095, 4096, 65537, 123457, (1 << 20) - 4096]


def test_read_at_offsets(ring, datafile, rfd):
    _, data = datafile
    bufs = {off: bytearray(4096) for off in OFFSETS}
    for off, b in bufs.items():
        ring.prep_read(rfd, b, off, user_data=off)
    comps = reap_n(ring, len(OFFSETS))
    assert sorted(c.user_data for c in comps) == sorted(OFFSETS)
    for c in comps:
        off = c.user_data
        assert c.op == "read"
        assert c.res == 4096 == c.result()
        assert bytes(bufs[off]) == data[off:off + 4096] == os.pread(rfd, 4096, off)


def test_read_whole_file(plain_ring, datafile, rfd):
    ring = plain_ring
    _, data = datafile
    buf = bytearray(len(data))
    ring.prep_read(rfd, buf, 0)
    (c,) = reap_n(ring, 1)
    assert c.res == len(data)
    assert buf == data


def test_read_uses_file_position_with_offset_minus_one(ring, datafile, rfd):
    _, data = datafile
    os.lseek(rfd, 1000, os.SEEK_SET)
    pos = 1000
    for size in (10, 4096, 333):
        buf = bytearray(size)
        ring.prep_read(rfd, buf, -1, user_data=size)
        (c,) = reap_n(ring, 1)
        assert c.res == size
        assert bytes(buf) == data[pos:pos + size]
        pos += size
        # The kernel advanced the file position (FEAT_RW_CUR_POS).
        assert os.lseek(rfd, 0, os.SEEK_CUR) == pos
    # offset omitted means -1 too
    buf = bytearray(7)
    ring.prep_read(rfd, buf)
    (c,) = reap_n(ring, 1)
    assert c.res == 7 and bytes(buf) == data[pos:pos + 7]
    # an explicit offset does not move the position
    ring.prep_read(rfd, bytearray(100), 0)
    reap_n(ring, 1)
    assert os.lseek(rfd, 0, os.SEEK_CUR) == pos + 7


def test_partial_read_at_eof(ring, datafile, rfd):
    _, data = datafile
    size = len(data)
    buf = bytearray(b"\xaa" * 4096)
    ring.prep_read(rfd, buf, size - 100, "tail")
    empty = bytearray(b"\xbb" * 64)
    ring.prep_read(rfd, empty, size, "at-eof")
    beyond = bytearray(b"\xcc" * 64)
    ring.prep_read(rfd, beyond, size + 12345, "beyond")
    comps = {c.user_data: c for c in reap_n(ring, 3)}
    assert comps["tail"].res == 100
    assert bytes(buf[:100]) == data[-100:] == os.pread(rfd, 4096, size - 100)
    assert buf[100:] == b"\xaa" * (4096 - 100)       # untouched past the short read
    assert comps["at-eof"].res == 0 and comps["at-eof"].result() == 0
    assert empty == b"\xbb" * 64
    assert comps["beyond"].res == 0
    assert beyond == b"\xcc" * 64


def test_read_into_memoryview_slice(plain_ring, datafile, rfd):
    ring = plain_ring
    _, data = datafile
    ba = bytearray(b"\xee" * 300)
    mv = memoryview(ba)[100:200]
    ring.prep_read(rfd, mv, 5000)
    (c,) = reap_n(ring, 1)
    assert c.res == 100
    assert ba[100:200] == data[5000:5100]
    assert ba[:100] == b"\xee" * 100 and ba[200:] == b"\xee" * 100
    mv.release()


def test_read_into_array(plain_ring, datafile, rfd):
    ring = plain_ring
    _, data = datafile
    for k, typecode in enumerate(["b", "B", "i", "I", "q", "Q", "d"]):
        arr = array.array(typecode, bytes(1024))
        off = 777 + 4099 * k
        ring.prep_read(rfd, arr, off)
        (c,) = reap_n(ring, 1)
        assert c.res == 1024, typecode
        assert arr.tobytes() == data[off:off + 1024], typecode


@needs_numpy
def test_read_into_numpy(plain_ring, datafile, rfd):
    ring = plain_ring
    _, data = datafile
    for k, dtype in enumerate([np.uint8, np.int16, np.int64, np.float32]):
        a = np.zeros(4096 // np.dtype(dtype).itemsize, dtype=dtype)
        off = 8192 + 5003 * k
        ring.prep_read(rfd, a, off)
        (c,) = reap_n(ring, 1)
        assert c.res == 4096, dtype
        assert a.tobytes() == data[off:off + 4096], dtype


@needs_numpy
def test_read_into_numpy_row_of_2d(plain_ring, datafile, rfd):
    ring = plain_ring
    _, data = datafile
    a = np.zeros((4, 256), dtype=np.uint8)
    ring.prep_read(rfd, a[2], 300)        # a contiguous row
    (c,) = reap_n(ring, 1)
    assert c.res == 256
    assert a[2].tobytes() == data[300:556]
    assert not a[[0, 1, 3]].any()


@needs_numpy
def test_write_from_bytes_and_friends(ring, wfile):
    chunks = {
        0: b"hello world",
        100: bytearray(b"BYTEARRAY"),
        200: memoryview(b"0123456789")[2:8],
        300: array.array("B", b"ARRAY"),
        400: np.frombuffer(b"NUMPY!", dtype=np.uint8),
    }
    for off, buf in chunks.items():
        ring.prep_write(wfile, buf, off, user_data=off)
    comps = reap_n(ring, len(chunks))
    for c in comps:
        assert c.op == "write"
        assert c.res == len(bytes(chunks[c.user_data]))
    for off, buf in chunks.items():
        raw = bytes(buf)
        assert os.pread(wfile, len(raw), off) == raw
    assert os.fstat(wfile).st_size == 406
    assert os.pread(wfile, 89, 11) == bytes(89)        # the hole reads as zeros


def test_write_at_file_position(plain_ring, wfile):
    ring = plain_ring
    os.lseek(wfile, 0, os.SEEK_SET)
    for part in (b"abc", b"defg", b"h"):
        ring.prep_write(wfile, part)              # offset -1: file position
        (c,) = reap_n(ring, 1)
        assert c.res == len(part)
    assert os.lseek(wfile, 0, os.SEEK_CUR) == 8
    assert os.pread(wfile, 100, 0) == b"abcdefgh"


def test_write_then_read_back(plain_ring, wfile):
    ring = plain_ring
    payload = bytes(range(256)) * 256            # 64 KiB
    ring.prep_write(wfile, payload, 12345)
    (c,) = reap_n(ring, 1)
    assert c.res == len(payload)
    back = bytearray(len(payload) + 10)
    ring.prep_read(wfile, back, 12345)
    (c,) = reap_n(ring, 1)
    assert c.res == len(payload)                 # short: EOF after the payload
    assert back[:len(payload)] == payload
    assert back[len(payload):] == bytes(10)
    assert os.pread(wfile, len(payload), 12345) == payload


def test_pipe_read_write(ring):
    r, w = os.pipe()
    try:
        buf = bytearray(64)
        ring.prep_read(r, buf, -1, "r")
        ring.prep_write(w, b"through the pipe", -1, "w")
        comps = {c.user_data: c for c in reap_n(ring, 2)}
        assert comps["w"].res == 16
        assert comps["r"].res == 16
        assert buf[:16] == b"through the pipe"
    finally:
        os.close(r)
        os.close(w)


# -- errors -----------------------------------------------------------------

def _closed_fd(tmp_path) -> int:
    fd = os.open(tmp_path / "gone", os.O_RDWR | os.O_CREAT, 0o644)
    os.close(fd)
    return fd


def test_read_closed_fd_is_ebadf(ring, tmp_path):
    fd = _closed_fd(tmp_path)
    buf = bytearray(16)
    ring.prep_read(fd, buf, 0, "r")
    (c,) = reap_n(ring, 1)
    assert c.res == -errno.EBADF
    assert c.op == "read"
    with pytest.raises(OSError) as ei:
        c.result()
    assert ei.value.errno == errno.EBADF
    assert "read" in str(ei.value)
    assert buf == bytes(16)
    assert ring.inflight == 0
    buf.extend(b"x")                             # pin released with the final CQE


def test_write_closed_fd_is_ebadf(plain_ring, tmp_path):
    ring = plain_ring
    fd = _closed_fd(tmp_path)
    ring.prep_write(fd, b"data", 0)
    (c,) = reap_n(ring, 1)
    assert c.res == -errno.EBADF
    with pytest.raises(OSError, match="write") as ei:
        c.result()
    assert ei.value.errno == errno.EBADF


def test_write_to_readonly_fd_is_ebadf(plain_ring, rfd):
    ring = plain_ring
    ring.prep_write(rfd, b"nope", 0)
    (c,) = reap_n(ring, 1)
    assert c.res == -errno.EBADF
    with pytest.raises(OSError, match="write") as ei:
        c.result()
    assert ei.value.errno == errno.EBADF


def test_read_directory_is_isadirectoryerror(plain_ring, tmp_path):
    ring = plain_ring
    dfd = os.open(tmp_path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        ring.prep_read(dfd, bytearray(16), 0)
        (c,) = reap_n(ring, 1)
    finally:
        os.close(dfd)
    assert c.res == -errno.EISDIR
    with pytest.raises(IsADirectoryError, match="read") as ei:
        c.result()
    assert ei.value.errno == errno.EISDIR


def test_write_broken_pipe_is_brokenpipeerror(plain_ring):
    ring = plain_ring
    r, w = os.pipe()
    os.close(r)
    try:
        ring.prep_write(w, b"x")
        (c,) = reap_n(ring, 1)
    finally:
        os.close(w)
    assert c.res == -errno.EPIPE
    with pytest.raises(BrokenPipeError, match="write"):
        c.result()


def test_errors_mixed_with_successes(ring, datafile, rfd, tmp_path):
    _, data = datafile
    bad = _closed_fd(tmp_path)
    good = bytearray(32)
    ring.prep_read(bad, bytearray(32), 0, "bad")
    ring.prep_read(rfd, good, 64, "good")
    comps = {c.user_data: c for c in reap_n(ring, 2)}
    assert comps["bad"].res == -errno.EBADF
    assert comps["good"].res == 32 and good == data[64:96]
