"""File-system operations of KernelRing against the real kernel.

openat/close/statx/fsync/fdatasync/fallocate/unlinkat/renameat/mkdirat,
readv/writev, error paths, and opening straight into the registered-file
table.  Every op the kernel lacks is skipped (probed, never faked).
"""

from __future__ import annotations

import errno
import fcntl
import os
import stat
import time

import pytest

from subring import SQE, Op, Statx
from subring.ops import FILE_INDEX_ALLOC
from ringhelpers import collect as _collect, need as _need, one as _one

AT_EMPTY_PATH = 0x1000
AT_SYMLINK_NOFOLLOW = 0x100
RENAME_NOREPLACE = 1
FALLOC_FL_KEEP_SIZE = 1



def _umask() -> int:
    u = os.umask(0)
    os.umask(u)
    return u


# --------------------------------------------------------------------------
# openat / close
# --------------------------------------------------------------------------

def test_openat_read_close(ring, datafile):
    _need("openat", "read", "close")
    path, data = datafile
    tok = ring.prep_openat(path, user_data="open")
    assert isinstance(tok, int)
    c = _one(ring)
    assert c.user_data == "open"
    assert c.op == "openat" and c.opcode == Op.OPENAT
    fd = c.result()
    assert fd >= 0
    try:
        # the library adds O_CLOEXEC
        assert fcntl.fcntl(fd, fcntl.F_GETFD) & fcntl.FD_CLOEXEC
        assert os.pread(fd, 64, 1000) == data[1000:1064]
        buf = bytearray(4096)
        ring.prep_read(fd, buf, 12345)
        assert _one(ring).result() == 4096
        assert bytes(buf) == data[12345:12345 + 4096]
    finally:
        ring.prep_close(fd, user_data="close")
        c = _one(ring)
    assert c.user_data == "close" and c.res == 0
    with pytest.raises(OSError) as ei:
        os.fstat(fd)
    assert ei.value.errno == errno.EBADF
    assert ring.inflight == 0


def test_openat_creat_mode_and_write(ring, tmp_path):
    _need("openat", "write", "close")
    path = tmp_path / "new.txt"
    ring.prep_openat(path, os.O_CREAT | os.O_WRONLY | os.O_EXCL, 0o640)
    fd = _one(ring).result()
    try:
        st = os.stat(path)
        assert stat.S_ISREG(st.st_mode)
        assert stat.S_IMODE(st.st_mode) == 0o640 & ~_umask()
        ring.prep_write(fd, b"written by io_uring", 0)
        assert _one(ring).result() == len(b"written by io_uring")
    finally:
        ring.prep_close(fd)
        assert _one(ring).res == 0
    assert path.read_bytes() == b"written by io_uring"


def test_openat_relative_to_dir_fd(plain_ring, tmp_path):
    _need("openat", "close")
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "f").write_bytes(b"xyz")
    dfd = os.open(tmp_path / "sub", os.O_RDONLY | os.O_DIRECTORY)
    try:
        plain_ring.prep_openat("f", dir_fd=dfd)
        fd = _one(plain_ring).result()
        try:
            assert os.pread(fd, 10, 0) == b"xyz"
        finally:
            os.close(fd)
        # not found relative to the dir fd (it would be relative to cwd)
        plain_ring.prep_openat("sub", dir_fd=dfd)
        assert _one(plain_ring).res == -errno.ENOENT
    finally:
        os.close(dfd)


def test_openat_enoent_raises_file_not_found(ring, tmp_path):
    _need("openat")
    ring.prep_openat(tmp_path / "missing", user_data=7)
    c = _one(ring)
    assert c.user_data == 7
    assert c.res == -errno.ENOENT
    with pytest.raises(FileNotFoundError) as ei:
        c.result()
    assert ei.value.errno == errno.ENOENT
    assert "openat" in str(ei.value)


def test_openat_excl_on_existing_raises_file_exists(plain_ring, tmp_path):
    _need("openat")
    path = tmp_path / "exists"
    path.write_bytes(b"")
    plain_ring.prep_openat(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
    c = _one(plain_ring)
    assert c.res == -errno.EEXIST
    with pytest.raises(FileExistsError):
        c.result()


def test_openat_directory_for_writing_is_eisdir(plain_ring, tmp_path):
    _need("openat")
    plain_ring.prep_openat(tmp_path, os.O_WRONLY)
    c = _one(plain_ring)
    with pytest.raises(IsADirectoryError):
        c.result()


def test_openat_rejects_embedded_nul_without_submitting(plain_ring):
    with pytest.raises(ValueError):
        plain_ring.prep_openat("bad\0path")
    assert plain_ring.inflight == 0
    assert plain_ring.sq_pending == 0


def test_close_bad_fd_is_ebadf(plain_ring, tmp_path):
    _need("close")
    # an fd number that is certainly not open
    fd = os.open(tmp_path, os.O_RDONLY)
    os.close(fd)
    plain_ring.prep_close(fd)
    c = _one(plain_ring)
    assert c.res == -errno.EBADF
    with pytest.raises(OSError) as ei:
        c.result()
    assert ei.value.errno == errno.EBADF


# --------------------------------------------------------------------------
# statx
# --------------------------------------------------------------------------

def _compare_statx(sx: Statx, st: os.stat_result) -> None:
    assert sx.mask & 0x7FF == 0x7FF  # STATX_BASIC_STATS filled in
    assert sx.mode == st.st_mode
    assert sx.ino == st.st_ino
    assert sx.size == st.st_size
    assert sx.nlink == st.st_nlink
    assert sx.uid == st.st_uid
    assert sx.gid == st.st_gid
    assert sx.blocks == st.st_blocks
    assert sx.blksize == st.st_blksize
    assert sx.dev == st.st_dev
    assert abs(sx.mtime - st.st_mtime_ns / 1e9) < 1e-6
    assert abs(sx.ctime - st.st_ctime_ns / 1e9) < 1e-6


def test_statx_matches_os_stat(ring, datafile):
    _need("statx")
    path, data = datafile
    sx = Statx()
    assert len(sx) == 256
    ring.prep_statx(path, sx, user_data="sx")
    c = _one(ring)
    assert c.user_data == "sx" and c.res == 0
    st = os.stat(path)
    _compare_statx(sx, st)
    assert sx.size == len(data)
    assert stat.S_ISREG(sx.mode)


def test_statx_directory_and_dir_fd(ring, tmp_path):
    _need("statx")
    (tmp_path / "d").mkdir()
    (tmp_path / "d" / "f").write_bytes(b"12345")
    dfd = os.open(tmp_path / "d", os.O_RDONLY | os.O_DIRECTORY)
    try:
        a, b, e = Statx(), Statx(), Statx()
        ring.prep_statx(tmp_path / "d", a)
        ring.prep_statx("f", b, dir_fd=dfd)
        ring.prep_statx("", e, dir_fd=dfd, at_flags=AT_EMPTY_PATH)
        cs = _collect(ring, 3)
        assert [c.res for c in cs] == [0, 0, 0]
        assert stat.S_ISDIR(a.mode)
        _compare_statx(a, os.stat(tmp_path / "d"))
        assert b.size == 5
        _compare_statx(b, os.stat(tmp_path / "d" / "f"))
        _compare_statx(e, os.fstat(dfd))
    finally:
        os.close(dfd)


def test_statx_symlink_nofollow(plain_ring, tmp_path):
    _need("statx")
    (tmp_path / "target").write_bytes(b"abc")
    os.symlink("target", tmp_path / "link")
    follow, nofollow = Statx(), Statx()
    plain_ring.prep_statx(tmp_path / "link", follow)
    plain_ring.prep_statx(tmp_path / "link", nofollow, at_flags=AT_SYMLINK_NOFOLLOW)
    assert [c.res for c in _collect(plain_ring, 2)] == [0, 0]
    assert stat.S_ISREG(follow.mode) and follow.size == 3
    assert stat.S_ISLNK(nofollow.mode)
    _compare_statx(nofollow, os.lstat(tmp_path / "link"))


def test_statx_enoent(plain_ring, tmp_path):
    _need("statx")
    sx = Statx()
    plain_ring.prep_statx(tmp_path / "nope", sx)
    c = _one(plain_ring)
    assert c.res == -errno.ENOENT
    with pytest.raises(FileNotFoundError):
        c.result()


def test_statx_needs_statx_buffer(plain_ring, tmp_path):
    with pytest.raises(TypeError):
        plain_ring.prep_statx(tmp_path, bytearray(256))
    assert plain_ring.inflight == 0


def test_statx_buffer_pinned_until_completion(plain_ring, tmp_path):
    """The Statx buffer is exported (cannot be resized) while in flight."""
    _need("statx")
    sx = Statx()
    plain_ring.prep_statx(tmp_path, sx)
    with pytest.raises(BufferError):
        sx.extend(b"x")
    assert _one(plain_ring).res == 0
    sx.extend(b"x")  # released after the final completion
    assert len(sx) == 257


# --------------------------------------------------------------------------
# fsync / fdatasync / fallocate
# --------------------------------------------------------------------------

def test_fsync_and_fdatasync(ring, tmp_path):
    _need("fsync", "write")
    fd = os.open(tmp_path / "f", os.O_CREAT | os.O_RDWR, 0o600)
    try:
        ring.prep_write(fd, b"data" * 1000, 0, flags=SQE.LINK)
        ring.prep_fsync(fd, user_data="fsync", flags=SQE.LINK)
        ring.prep_fdatasync(fd, user_data="fdatasync")
        cs = _collect(ring, 3)
        assert [c.res for c in cs] == [4000, 0, 0]
        assert [c.user_data for c in cs][1:] == ["fsync", "fdatasync"]
        assert all(c.op == "fsync" for c in cs[1:])
        ring.prep_fsync(fd, datasync=True)
        assert _one(ring).res == 0
    finally:
        os.close(fd)
    assert (tmp_path / "f").read_bytes() == b"data" * 1000


def test_fsync_bad_fd(plain_ring, tmp_path):
    _need("fsync")
    fd = os.open(tmp_path, os.O_RDONLY)
    os.close(fd)
    plain_ring.prep_fsync(fd)
    assert _one(plain_ring).res == -errno.EBADF


def test_fallocate_extends_file(ring, tmp_path):
    _need("fallocate")
    path = tmp_path / "falloc"
    fd = os.open(path, os.O_CREAT | os.O_RDWR, 0o600)
    try:
        ring.prep_fallocate(fd, 0, 0, 1 << 20)
        c = _one(ring)
        if c.res == -errno.EOPNOTSUPP:
            pytest.skip("file system does not support fallocate")
        assert c.res == 0
        st = os.fstat(fd)
        assert st.st_size == 1 << 20
        assert st.st_blocks * 512 >= 1 << 20
        # KEEP_SIZE: blocks past EOF, size unchanged
        ring.prep_fallocate(fd, FALLOC_FL_KEEP_SIZE, 1 << 20, 1 << 20)
        assert _one(ring).res == 0
        st2 = os.fstat(fd)
        assert st2.st_size == 1 << 20
        assert st2.st_blocks * 512 >= 2 << 20
        # the allocated range reads as zeros
        assert os.pread(fd, 4096, 4096) == bytes(4096)
    finally:
        os.close(fd)


def test_fallocate_argument_checks(plain_ring, tmp_path):
    with pytest.raises(ValueError):
        plain_ring.prep_fallocate(0, 0, 0, 0)
    with pytest.raises(ValueError):
        plain_ring.prep_fallocate(0, 0, -1, 10)
    assert plain_ring.inflight == 0


def test_fallocate_on_readonly_fd_is_ebadf(plain_ring, tmp_path):
    _need("fallocate")
    path = tmp_path / "ro"
    path.write_bytes(b"")
    fd = os.open(path, os.O_RDONLY)
    try:
        plain_ring.prep_fallocate(fd, 0, 0, 4096)
        assert _one(plain_ring).res == -errno.EBADF
    finally:
        os.close(fd)


# --------------------------------------------------------------------------
# unlinkat / renameat / mkdirat
# --------------------------------------------------------------------------

def test_unlinkat_file_and_rmdir(ring, tmp_path):
    _need("unlinkat")
    f = tmp_path / "f"
    f.write_bytes(b"x")
    d = tmp_path / "d"
    d.mkdir()
    ring.prep_unlinkat(f, user_data="file")
    ring.prep_unlinkat(d, user_data="dir", rmdir=True)
    cs = {c.user_data: c for c in _collect(ring, 2)}
    assert cs["file"].res == 0 and cs["dir"].res == 0
    assert cs["file"].op == "unlinkat"
    assert not f.exists() and not d.exists()


def test_unlinkat_errors(plain_ring, tmp_path):
    _need("unlinkat")
    d = tmp_path / "d"
    d.mkdir()
    (d / "child").write_bytes(b"")
    f = tmp_path / "f"
    f.write_bytes(b"")
    plain_ring.prep_unlinkat(tmp_path / "missing", user_data="enoent")
    plain_ring.prep_unlinkat(d, user_data="isdir")                 # unlink on a directory
    plain_ring.prep_unlinkat(d, user_data="notempty", rmdir=True)  # rmdir non-empty
    plain_ring.prep_unlinkat(f, user_data="notdir", rmdir=True)    # rmdir on a file
    cs = {c.user_data: c for c in _collect(plain_ring, 4)}
    assert cs["enoent"].res == -errno.ENOENT
    assert cs["isdir"].res == -errno.EISDIR
    assert cs["notempty"].res == -errno.ENOTEMPTY
    assert cs["notdir"].res == -errno.ENOTDIR
    with pytest.raises(FileNotFoundError):
        cs["enoent"].result()
    with pytest.raises(IsADirectoryError):
        cs["isdir"].result()
    with pytest.raises(NotADirectoryError):
        cs["notdir"].result()
    assert d.exists() and f.exists()


def test_unlinkat_relative_to_dir_fd(plain_ring, tmp_path):
    _need("unlinkat")
    (tmp_path / "f").write_bytes(b"")
    dfd = os.open(tmp_path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        plain_ring.prep_unlinkat("f", dir_fd=dfd)
        assert _one(plain_ring).res == 0
    finally:
        os.close(dfd)
    assert not (tmp_path / "f").exists()


def test_renameat(ring, tmp_path):
    _need("renameat")
    (tmp_path / "a").write_bytes(b"AAA")
    ring.prep_renameat(tmp_path / "a", tmp_path / "b", user_data="mv")
    c = _one(ring)
    assert c.user_data == "mv" and c.res == 0 and c.op == "renameat"
    assert not (tmp_path / "a").exists()
    assert (tmp_path / "b").read_bytes() == b"AAA"


def test_renameat_with_dir_fds_and_noreplace(plain_ring, tmp_path):
    _need("renameat")
    (tmp_path / "src").mkdir()
    (tmp_path / "dst").mkdir()
    (tmp_path / "src" / "x").write_bytes(b"X")
    (tmp_path / "dst" / "y").write_bytes(b"Y")
    sfd = os.open(tmp_path / "src", os.O_RDONLY | os.O_DIRECTORY)
    dfd = os.open(tmp_path / "dst", os.O_RDONLY | os.O_DIRECTORY)
    try:
        # NOREPLACE onto an existing name: EEXIST, nothing moved
        plain_ring.prep_renameat("x", "y", old_dir_fd=sfd, new_dir_fd=dfd,
                           rename_flags=RENAME_NOREPLACE)
        c = _one(plain_ring)
        if c.res == -errno.EINVAL:
            pytest.skip("file system does not support RENAME_NOREPLACE")
        assert c.res == -errno.EEXIST
        with pytest.raises(FileExistsError):
            c.result()
        assert (tmp_path / "src" / "x").exists()
        plain_ring.prep_renameat("x", "z", old_dir_fd=sfd, new_dir_fd=dfd)
        assert _one(plain_ring).res == 0
    finally:
        os.close(sfd)
        os.close(dfd)
    assert (tmp_path / "dst" / "z").read_bytes() == b"X"
    assert (tmp_path / "dst" / "y").read_bytes() == b"Y"


def test_renameat_missing_source(plain_ring, tmp_path):
    _need("renameat")
    plain_ring.prep_renameat(tmp_path / "nope", tmp_path / "b")
    assert _one(plain_ring).res == -errno.ENOENT


def test_mkdirat(ring, tmp_path):
    _need("mkdirat")
    d = tmp_path / "newdir"
    ring.prep_mkdirat(d, 0o750, user_data="mk")
    c = _one(ring)
    assert c.user_data == "mk" and c.res == 0 and c.op == "mkdirat"
    st = os.stat(d)
    assert stat.S_ISDIR(st.st_mode)
    assert stat.S_IMODE(st.st_mode) == 0o750 & ~_umask()
    # again: EEXIST
    ring.prep_mkdirat(d)
    c = _one(ring)
    assert c.res == -errno.EEXIST
    with pytest.raises(FileExistsError):
        c.result()
    # parent missing: ENOENT
    ring.prep_mkdirat(tmp_path / "no" / "parent")
    assert _one(ring).res == -errno.ENOENT


def test_mkdirat_relative_to_dir_fd(plain_ring, tmp_path):
    _need("mkdirat")
    dfd = os.open(tmp_path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        plain_ring.prep_mkdirat("child", dir_fd=dfd)
        assert _one(plain_ring).res == 0
    finally:
        os.close(dfd)
    assert (tmp_path / "child").is_dir()


def test_mkdir_create_rename_unlink_chain(ring, tmp_path):
    """A linked sequence of path ops runs in order."""
    _need("mkdirat", "openat", "renameat", "unlinkat")
    d = tmp_path / "d"
    ring.prep_mkdirat(d, flags=SQE.LINK, user_data=0)
    ring.prep_openat(d / "f", os.O_CREAT | os.O_WRONLY, flags=SQE.LINK, user_data=1)
    ring.prep_renameat(d / "f", d / "g", flags=SQE.LINK, user_data=2)
    ring.prep_unlinkat(d / "g", flags=SQE.LINK, user_data=3)
    ring.prep_unlinkat(d, rmdir=True, user_data=4)
    cs = _collect(ring, 5)
    by = {c.user_data: c for c in cs}
    fd = by[1].result()
    os.close(fd)
    assert [by[k].res for k in (0, 2, 3, 4)] == [0, 0, 0, 0]
    assert not d.exists()


# --------------------------------------------------------------------------
# readv / writev
# --------------------------------------------------------------------------

def test_writev_several_buffers(ring, tmp_path):
    _need("writev")
    path = tmp_path / "v"
    fd = os.open(path, os.O_CREAT | os.O_RDWR, 0o600)
    try:
        parts = [b"alpha-", bytearray(b"beta-"), memoryview(b"gamma-delta"), b"!"]
        total = sum(len(p) for p in parts)
        ring.prep_writev(fd, parts, 0, user_data="wv")
        c = _one(ring)
        assert c.user_data == "wv" and c.op == "writev"
        assert c.res == total
        # at an offset
        ring.prep_writev(fd, [b"XY", b"Z"], 100)
        assert _one(ring).res == 3
    finally:
        os.close(fd)
    content = path.read_bytes()
    assert content[:total] == b"alpha-beta-gamma-delta!"
    assert content[100:103] == b"XYZ"
    assert content[total:100] == bytes(100 - total)


def test_readv_several_buffers(ring, datafile):
    _need("readv")
    path, data = datafile
    fd = os.open(path, os.O_RDONLY)
    try:
        bufs = [bytearray(3), bytearray(4096), bytearray(1), bytearray(777)]
        total = sum(len(b) for b in bufs)
        ring.prep_readv(fd, bufs, 5000, user_data="rv")
        c = _one(ring)
        assert c.user_data == "rv" and c.op == "readv"
        assert c.res == total
        assert b"".join(bytes(b) for b in bufs) == data[5000:5000 + total]
        # short read at EOF spans only the first buffers
        bufs2 = [bytearray(10), bytearray(10)]
        ring.prep_readv(fd, bufs2, len(data) - 15)
        assert _one(ring).res == 15
        assert bytes(bufs2[0]) == data[-15:-5]
        assert bytes(bufs2[1][:5]) == data[-5:]
    finally:
        os.close(fd)


def test_readv_writev_file_position(ring, tmp_path):
    """offset -1 uses (and advances) the file position."""
    _need("readv", "writev")
    path = tmp_path / "pos"
    fd = os.open(path, os.O_CREAT | os.O_RDWR, 0o600)
    try:
        ring.prep_writev(fd, [b"abc", b"def"], flags=SQE.LINK)
        ring.prep_writev(fd, [b"ghi"])
        assert [c.res for c in _collect(ring, 2)] == [6, 3]
        assert os.lseek(fd, 0, os.SEEK_CUR) == 9
        os.lseek(fd, 2, os.SEEK_SET)
        bufs = [bytearray(2), bytearray(3)]
        ring.prep_readv(fd, bufs)
        assert _one(ring).res == 5
        assert bytes(bufs[0]) + bytes(bufs[1]) == b"cdefg"
        assert os.lseek(fd, 0, os.SEEK_CUR) == 7
    finally:
        os.close(fd)


def test_readv_buffers_pinned_and_validated(plain_ring, tmp_path):
    _need("readv")
    with pytest.raises(ValueError):
        plain_ring.prep_readv(0, [])
    with pytest.raises((TypeError, BufferError)):
        plain_ring.prep_readv(0, [b"read-only bytes"])  # readv needs writable buffers
    assert plain_ring.inflight == 0
    r, w = os.pipe()
    try:
        bufs = [bytearray(4), bytearray(4)]
        plain_ring.prep_readv(r, bufs)
        plain_ring.submit()
        with pytest.raises(BufferError):
            bufs[1].extend(b"no")
        os.write(w, b"12345678")
        assert _one(plain_ring).res == 8
        bufs[1].extend(b"ok")  # unpinned after the final completion
        assert bufs == [bytearray(b"1234"), bytearray(b"5678ok")]
    finally:
        os.close(r)
        os.close(w)


def test_readv_bad_fd(plain_ring):
    _need("readv")
    plain_ring.prep_readv(-1, [bytearray(4)])
    c = _one(plain_ring)
    assert c.res == -errno.EBADF


# --------------------------------------------------------------------------
# opening into the registered-file table (direct descriptors)
# --------------------------------------------------------------------------

def _raw_openat_direct(ring, path, slot_field: int):
    """OPENAT with file_index set and *without* O_CLOEXEC, built by hand."""
    from subring._sqeargs import AT_FDCWD, path_pin

    p = path_pin(path)
    return ring.prep_sqe(Op.OPENAT, AT_FDCWD, p.address, 0, 0, os.O_RDONLY, 0, 0, 0,
                         slot_field, 0, None, p)


def test_openat_direct_descriptor_kernel_control(plain_ring, datafile):
    """Control for the regression below: the kernel itself opens into a
    registered-file slot when the SQE carries no O_CLOEXEC."""
    _need("openat", "read", "close")
    path, data = datafile
    plain_ring.register_files_sparse(4)
    _raw_openat_direct(plain_ring, path, 2 + 1)  # slot 2
    assert _one(plain_ring).res == 0
    buf = bytearray(100)
    plain_ring.prep_read(2, buf, 50, flags=SQE.FIXED_FILE)
    assert _one(plain_ring).res == 100
    assert bytes(buf) == data[50:150]
    plain_ring.prep_close(2, fixed=True)
    assert _one(plain_ring).res == 0
    plain_ring.prep_read(2, buf, 0, flags=SQE.FIXED_FILE)
    assert _one(plain_ring).res == -errno.EBADF  # slot is empty again


def test_regression_openat_file_index_direct_descriptor(plain_ring, datafile):
    """prep_openat(file_index=N) must open into registered-file slot N.

    The kernel rejects O_CLOEXEC together with a file_index (a direct
    descriptor has no fd table entry), but prep_openat always ORs O_CLOEXEC
    into the open flags, so every direct open fails with -EINVAL.
    """
    _need("openat", "read", "close")
    path, data = datafile
    plain_ring.register_files_sparse(4)
    plain_ring.prep_openat(path, file_index=1)
    c = _one(plain_ring)
    assert c.res == 0, f"openat into slot 1 failed: {c!r}"
    buf = bytearray(64)
    plain_ring.prep_read(1, buf, 0, flags=SQE.FIXED_FILE)
    assert _one(plain_ring).res == 64
    assert bytes(buf) == data[:64]
    plain_ring.prep_close(1, fixed=True)
    assert _one(plain_ring).res == 0


def test_regression_openat_file_index_alloc(plain_ring, datafile):
    """prep_openat(file_index=FILE_INDEX_ALLOC): res is the allocated slot.
    Fails for the same reason (O_CLOEXEC is always added)."""
    _need("openat", "read", "close")
    path, data = datafile
    plain_ring.register_files_sparse(4)
    plain_ring.prep_openat(path, file_index=FILE_INDEX_ALLOC)
    c = _one(plain_ring)
    assert c.res >= 0, f"openat with FILE_INDEX_ALLOC failed: {c!r}"
    slot = c.res
    assert 0 <= slot < 4
    buf = bytearray(32)
    plain_ring.prep_read(slot, buf, 100, flags=SQE.FIXED_FILE)
    assert _one(plain_ring).res == 32
    assert bytes(buf) == data[100:132]
    plain_ring.prep_close(slot, fixed=True)
    assert _one(plain_ring).res == 0


def test_close_fixed_slot_registered_with_register_files(plain_ring, datafile):
    _need("close", "read")
    path, data = datafile
    fd = os.open(path, os.O_RDONLY)
    try:
        plain_ring.register_files([None, fd])
        buf = bytearray(10)
        plain_ring.prep_read(1, buf, 0, flags=SQE.FIXED_FILE)
        assert _one(plain_ring).res == 10
        plain_ring.prep_close(1, fixed=True)
        assert _one(plain_ring).res == 0
        plain_ring.prep_read(1, buf, 0, flags=SQE.FIXED_FILE)
        assert _one(plain_ring).res == -errno.EBADF
        # our own fd is untouched by closing the slot
        assert os.pread(fd, 4, 0) == data[:4]
    finally:
        os.close(fd)


# --------------------------------------------------------------------------
# a failed prep-time SQE and wait()
# --------------------------------------------------------------------------

def test_regression_wait_after_sqe_rejected_at_prep(plain_ring, tmp_path):
    """ring.wait(n, timeout) must wait for n completions (or the timeout).

    Without IORING_SETUP_SUBMIT_ALL the kernel stops consuming the SQ at the
    first SQE that fails at prep time (here: unlinkat with invalid flags) and
    io_uring_enter returns without waiting.  subring does not resubmit the
    rest, so wait() returns early with 1 completion while the other SQEs sit
    unsubmitted in the SQ (sq_pending > 0) though no timeout passed.
    (With SQPOLL the kernel thread picks the rest up by itself.)
    """
    _need("unlinkat", "nop")
    from subring._sqeargs import AT_FDCWD, path_pin

    p = path_pin(tmp_path / "whatever")
    # unlink_flags other than AT_REMOVEDIR: -EINVAL at prep time
    plain_ring.prep_sqe(Op.UNLINKAT, AT_FDCWD, p.address, 0, 0, 0x1, 0, 0, 0, 0, 0, "bad", p)
    plain_ring.prep_nop(user_data="nop1")
    plain_ring.prep_nop(user_data="nop2")
    t0 = time.monotonic()
    got = plain_ring.wait(3, 2.0)
    elapsed = time.monotonic() - t0
    pending = plain_ring.sq_pending
    by = {c.user_data: c.res for c in got}
    # drain whatever is left so that the ring closes cleanly either way
    rest = _collect(plain_ring, 3 - len(got)) if len(got) < 3 else []
    assert by.get("bad") == -errno.EINVAL or any(
        c.user_data == "bad" and c.res == -errno.EINVAL for c in rest)
    assert len(got) == 3, (
        f"wait(3, timeout=2.0) returned {len(got)} completion(s) after {elapsed:.3f}s "
        f"with {pending} SQE(s) left unsubmitted")


def test_linkat_and_symlinkat(ring, tmp_path):
    _need("linkat", "symlinkat")
    (tmp_path / "a").write_bytes(b"AAA")
    ring.prep_linkat(tmp_path / "a", tmp_path / "hard", user_data="ln")
    ring.prep_symlinkat("a", tmp_path / "soft", user_data="ln -s")
    got = {c.user_data: (c.res, c.op) for c in _collect(ring, 2)}
    assert got == {"ln": (0, "linkat"), "ln -s": (0, "symlinkat")}
    assert os.stat(tmp_path / "hard").st_ino == os.stat(tmp_path / "a").st_ino
    assert os.readlink(tmp_path / "soft") == "a"
    assert (tmp_path / "soft").read_bytes() == b"AAA"
    ring.prep_linkat(tmp_path / "nope", tmp_path / "x")
    ring.prep_symlinkat("a", tmp_path / "soft")             # exists
    assert sorted(c.res for c in _collect(ring, 2)) == sorted([-errno.ENOENT, -errno.EEXIST])


def test_linkat_with_dir_fds(plain_ring, tmp_path):
    _need("linkat")
    (tmp_path / "d").mkdir()
    (tmp_path / "d" / "f").write_bytes(b"F")
    dfd = os.open(tmp_path / "d", os.O_RDONLY | os.O_DIRECTORY)
    try:
        plain_ring.prep_linkat("f", "g", old_dir_fd=dfd, new_dir_fd=dfd)
        assert _one(plain_ring).res == 0
        assert (tmp_path / "d" / "g").read_bytes() == b"F"
    finally:
        os.close(dfd)
