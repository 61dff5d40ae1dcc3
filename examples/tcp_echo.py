"""A TCP echo server and client on the kernel ring, with asyncio.

The server accepts with a multishot accept (one SQE for every connection) and
receives with multishot recv into a provided-buffer ring (one SQE per
connection for all its data); sends go through the ring too.

    python examples/tcp_echo.py            # runs server + 4 clients, prints a summary
"""

from __future__ import annotations

import asyncio
import os
import socket

import subring.aio as aio


async def handle(ring: aio.AsyncRing, fd: int) -> None:
    try:
        async for chunk in ring.recv_stream(fd, buffers=16, size=4096):
            await ring.sendall(fd, chunk)
    finally:
        await ring.close(fd)


async def serve(ring: aio.AsyncRing, listener: socket.socket, stop: asyncio.Event) -> None:
    conns: set[asyncio.Task[None]] = set()
    accepts = ring.accept_stream(listener)
    stopper = asyncio.ensure_future(stop.wait())
    try:
        while True:
            nxt = asyncio.ensure_future(accepts.__anext__())
            done, _ = await asyncio.wait({nxt, stopper}, return_when=asyncio.FIRST_COMPLETED)
            if stopper in done:
                nxt.cancel()
                break
            t = asyncio.ensure_future(handle(ring, nxt.result()))
            conns.add(t)
            t.add_done_callback(conns.discard)
    finally:
        accepts.close()
        stopper.cancel()
        for t in conns:
            t.cancel()
        await asyncio.gather(*conns, return_exceptions=True)


async def client(ring: aio.AsyncRing, port: int, n: int) -> int:
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        await ring.connect(s, ("127.0.0.1", port))
        echoed = 0
        for i in range(n):
            msg = f"message {i} from {s.getsockname()[1]}\n".encode()
            await ring.sendall(s, msg)
            got = b""
            while len(got) < len(msg):
                part = await ring.recv(s, 4096)
                if not part:
                    raise ConnectionError("server closed early")
                got += part
            assert got == msg, (got, msg)
            echoed += len(got)
        return echoed
    finally:
        s.close()


async def main() -> None:
    listener = socket.create_server(("127.0.0.1", 0))
    port = listener.getsockname()[1]
    async with aio.AsyncRing() as ring:
        stop = asyncio.Event()
        server = asyncio.ensure_future(serve(ring, listener, stop))
        totals = await asyncio.gather(*(client(ring, port, 200) for _ in range(4)))
        stop.set()
        await server
    listener.close()
    print(f"echoed {sum(totals)} bytes over {len(totals)} connections "
          f"(pid {os.getpid()}, all I/O through one io_uring)")


if __name__ == "__main__":
    asyncio.run(main())
