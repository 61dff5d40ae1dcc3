"""BufferPool (memory.py): a sealed memfd of buffers, shared with subsystems
and registrable with a KernelRing."""

from __future__ import annotations

import os
import stat

import pytest

from subring import BufferPool, KernelRing
from ringhelpers import reap_n


def test_buffer_pool_memfd_is_private_to_its_owner():
    """issue 14 ("memfds created with safe modes"): memfd_create makes the
    file 0777, so anyone who could name it (/proc/PID/fd/N) could open it."""
    with BufferPool(4, 4096) as pool:
        mode = stat.S_IMODE(os.fstat(pool.fd).st_mode)
        assert mode & 0o077 == 0, oct(mode)
        assert mode & 0o600 == 0o600


def test_buffer_pool_public_names_for_its_map_and_deferred_close():
    pool = BufferPool(2, 4096)
    m = pool.shared_map
    assert m is not None and len(memoryview(m)) == 2 * 4096
    view = pool.buffer(1)
    view[:3] = b"abc"
    pool.close_when_unused(free=[(0, 4096)])     # buffer 0: nobody can reach it
    assert pool.shared_map is None
    with pytest.raises(ValueError):
        pool.fd
    assert bytes(view[:3]) == b"abc"               # the lent view outlives the pool
    view.release()
    assert BufferPool._close_when_unused is BufferPool.close_when_unused


def test_buffer_pool_as_fixed_buffers_of_a_kernel_ring(tmp_path):
    p = tmp_path / "f"
    p.write_bytes(b"0123456789" * 100)
    fd = os.open(p, os.O_RDONLY)
    try:
        with BufferPool(2, 4096) as pool, KernelRing(8) as ring:
            bufs = pool.buffers()
            ring.register_buffers(bufs)
            ring.prep_read_fixed(fd, 1, 0, 10, user_data="r")
            (c,) = reap_n(ring, 1)
            assert c.res == 10 and bytes(pool.buffer(1)[:10]) == b"0123456789"
            ring.unregister_buffers()
            for b in bufs:
                b.release()
    finally:
        os.close(fd)
