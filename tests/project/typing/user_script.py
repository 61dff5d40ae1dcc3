"""A user script touching every public entry point (checked by mypy --strict)."""
from __future__ import annotations

import array
import asyncio
import os

import subring
import subring.aio as aio
from subring import (
    SQE,
    BufferPool,
    Completion,
    Feature,
    KernelProbe,
    KernelRing,
    Op,
    RingExecutor,
    Setup,
    Subsystem,
    SubsystemClient,
    connect,
    op,
    probe,
)


class Store(Subsystem):
    def __init__(self) -> None:
        super().__init__()
        self.data: dict[int, bytes] = {}

    @op
    def put(self, req: subring.Request) -> None:
        self.data[req.arg0] = bytes(req.data)

    @op
    def get(self, req: subring.Request) -> bytes:
        return self.data[req.arg0]


def kernel() -> int:
    kp: KernelProbe = probe()
    assert kp.supports(Op.READ) and kp.features & Feature.NODROP
    _ = Setup.SQPOLL, SQE.LINK
    with KernelRing(64) as ring:
        fd = os.open("/etc/hostname", os.O_RDONLY)
        buf = bytearray(4096)
        ring.prep_read(fd, buf, 0, user_data="x")
        ring.submit_and_wait(1, timeout=5)
        done: list[Completion] = ring.reap()
        n = done[0].result()
        ring.prep_reads(fd, bytearray(8192), 4096, array.array("q", [0, 4096]))
        ring.submit_and_wait(2, timeout=5)
        ud, res = array.array("Q", [0] * 2), array.array("i", [0] * 2)
        ring.reap_into(ud, res)
        os.close(fd)
        stats = ring.statistics()
        print(stats.submitted)
    return int(n)


def client(path: str) -> bytes:
    with connect(path, timeout=5) as c:
        assert isinstance(c, SubsystemClient)
        c.call("put", b"hello", arg0=1)
        out = c.call("get", arg0=1)
        return bytes(out)


async def files() -> bytes:
    async with aio.open("/etc/hostname", "rb") as f:
        data = await f.read()
    ring = aio.get_ring()
    fd = await ring.openat("/etc/hostname")
    await ring.close(fd)
    return bytes(data)


def pool() -> int:
    with RingExecutor(max_workers=1) as ex:
        return ex.submit(pow, 2, 10).result()


def buffers() -> None:
    with BufferPool(4, 4096) as bp:
        print(bp)


if __name__ == "__main__":
    print(kernel(), asyncio.run(files()), pool())
