"""Zero-copy from the kernel to a subsystem through one BufferPool.

The kernel reads a file straight into a pool buffer (read_fixed: the pool is
registered with a KernelRing as fixed buffers); the subsystem process then
computes a checksum over the very same pages (the pool is registered with its
connection too).  No byte of the file is copied by Python or through a pipe.

    python examples/kernel_to_subsystem.py [FILE]
"""

from __future__ import annotations

import multiprocessing as mp
import os
import sys
import tempfile
import zlib

import subring

CHUNK = 1 << 20


class Checksummer(subring.Subsystem):
    @subring.op
    def crc32(self, req):
        """CRC-32 of the payload (a pool buffer, read in place)."""
        return zlib.crc32(req.data) & 0x7FFFFFFF


def serve(path: str) -> None:
    Checksummer().serve(path)


def main() -> None:
    src = sys.argv[1] if len(sys.argv) > 1 else __file__
    with tempfile.TemporaryDirectory() as d:
        sock = os.path.join(d, "crc.sock")
        server = mp.get_context("spawn").Process(target=serve, args=(sock,), daemon=True)
        server.start()
        try:
            pool = subring.BufferPool(count=2, size=CHUNK)
            with subring.KernelRing(8) as ring, subring.connect(sock, timeout=10) as sub:
                ring.register_buffers(pool.buffers())      # kernel side: fixed buffers
                sub.register_pool(pool)                     # subsystem side: same memfd
                crc = sub.op_index("crc32")
                fd = os.open(src, os.O_RDONLY)
                try:
                    offset, total = 0, 0
                    while True:
                        ring.prep_read_fixed(fd, 0, offset, CHUNK)   # into pool buffer 0
                        n = ring.wait(1, timeout=5)[0].result()
                        if n == 0:
                            break
                        sub.prep_call_pool(crc, 0, 0, n)             # same bytes, no copy
                        sub.submit_and_wait(1, timeout=5)
                        got = sub.reap()[0].result()
                        assert got == zlib.crc32(pool.buffer(0)[:n]) & 0x7FFFFFFF
                        print(f"offset {offset:>10}: {n:>8} bytes, crc32 {got:#010x}")
                        offset += n
                        total += n
                finally:
                    os.close(fd)
                ring.unregister_buffers()
            pool.close()
            print(f"{total} bytes read by the kernel and checksummed by pid {server.pid}, "
                  "zero copies")
        finally:
            server.terminate()
            server.join(5)


if __name__ == "__main__":
    main()
