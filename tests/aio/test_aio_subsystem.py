"""AsyncRing over a SubsystemClient: ``AsyncRing(subring.connect(path))``
against a real subsystem process (started with ``subprocess``, always killed
and reaped)."""

from __future__ import annotations

import asyncio
import contextlib
import errno
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import textwrap
import time

import pytest
from aio_support import run

import subring
from subring.aio import AsyncRing

pytestmark = pytest.mark.timeout(60)

SERVER = textwrap.dedent('''
    import errno, struct, sys, time
    import subring

    class AioTest(subring.Subsystem):
        @subring.op
        def add(self, req):
            """arg0 + arg1"""
            return req.arg0 + req.arg1

        @subring.op
        def echo(self, req):
            """the payload back"""
            return bytes(req.data)

        @subring.op
        def tag(self, req):
            """arg0 and the payload, as bytes"""
            return struct.pack("<Q", req.arg0) + bytes(req.data)

        @subring.op
        def fail(self, req):
            raise ValueError(f"bad thing {req.arg0}")

        @subring.op
        def deny(self, req):
            raise PermissionError(errno.EPERM, "not for you")

        @subring.op
        def neg(self, req):
            return -errno.ENOSPC

        @subring.op
        def slow(self, req):
            """sleep arg0 ms (blocks the server), return arg0"""
            time.sleep(req.arg0 / 1000)
            return req.arg0

    mode = sys.argv[2] if len(sys.argv) > 2 else "interrupt"
    spin_us = float(sys.argv[3]) if len(sys.argv) > 3 else 50.0
    AioTest().serve(sys.argv[1], mode=mode, spin_us=spin_us)
''')


class Server:
    def __init__(self, directory: str, *args: str) -> None:
        self.dir = directory
        self.path = os.path.join(directory, "aio.sock")
        script = os.path.join(directory, "server.py")
        with open(script, "w") as f:
            f.write(SERVER)
        self.log = os.path.join(directory, "server.log")
        with open(self.log, "wb") as log:
            self.proc = subprocess.Popen([sys.executable, script, self.path, *args],
                                         stdout=log, stderr=log, stdin=subprocess.DEVNULL)
        deadline = time.monotonic() + 15
        while not os.path.exists(self.path):
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"subsystem server did not start: {self.output()}")
            time.sleep(0.01)

    def output(self) -> str:
        with open(self.log, errors="replace") as f:
            return f.read()

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(5)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)


@contextlib.contextmanager
def server_process(*args: str):
    """A subsystem server process; ``args``: [mode [spin_us]]."""
    d = tempfile.mkdtemp(prefix="sraio")      # short path: AF_UNIX limit
    srv = None
    try:
        srv = Server(d, *args)
        yield srv
    finally:
        if srv is not None:
            srv.stop()
            srv.kill()
        shutil.rmtree(d, ignore_errors=True)


@pytest.fixture(scope="module")
def server():
    with server_process() as srv:
        yield srv
        assert srv.proc.poll() is None, f"server died: {srv.output()}"


async def settle(ring, timeout: float = 3.0) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while ring.inflight and loop.time() < deadline:
        await asyncio.sleep(0.005)
    assert ring.inflight == 0


# ---------------------------------------------------------------------------
# results
# ---------------------------------------------------------------------------

def test_call_results(server):
    async def main():
        async with AsyncRing(subring.connect(server.path), own=True) as ar:
            assert await ar.call("add", None, 2, 3) == 5
            assert await ar.call("add", None, 0, 0) == 0
            assert await ar.call(ar.ring.op_index("add"), None, 40, 2) == 42
            assert await ar.call("nop") == 0
            assert await ar.call("echo", b"hello") == b"hello"
            assert await ar.call("echo", bytearray(b"x" * 80)) == b"x" * 80      # inline
            big = bytes(range(256)) * 15                                         # in a slot
            assert await ar.call("echo", memoryview(big)) == big
            assert await ar.call("tag", b"abc", 7) == (7).to_bytes(8, "little") + b"abc"

            with pytest.raises(OSError) as ei:
                await ar.call("fail", None, 7)
            assert ei.value.errno == errno.EINVAL
            assert "ValueError: bad thing 7" in str(ei.value)
            with pytest.raises(PermissionError) as ei:
                await ar.call("deny")
            assert ei.value.errno == errno.EPERM and "not for you" in str(ei.value)
            with pytest.raises(OSError) as ei:
                await ar.call("neg")
            assert ei.value.errno == errno.ENOSPC
            with pytest.raises(KeyError):
                await ar.call("no_such_op")
            # an error does not disturb what follows
            assert await ar.call("add", None, 1, 1) == 2
            await settle(ar.ring)
        assert ar.ring.closed

    run(main)


def test_one_task_sequential_calls(server):
    async def main():
        async with AsyncRing(subring.connect(server.path), own=True) as ar:
            for i in range(300):
                assert await ar.call("add", None, i, 1000) == i + 1000
                if i % 50 == 0:
                    payload = os.urandom(i + 1)
                    assert await ar.call("echo", payload) == payload

    run(main)


def test_32_concurrent_tasks(server):
    async def main():
        async with AsyncRing(subring.connect(server.path), own=True) as ar:
            async def worker(k):
                for i in range(60):
                    assert await ar.call("add", None, k, i) == k + i
                    tag = f"{k}:{i}".encode()
                    assert await ar.call("tag", tag, k * 1000 + i) == \
                        (k * 1000 + i).to_bytes(8, "little") + tag
                return k

            assert await asyncio.gather(*(worker(k) for k in range(32))) == list(range(32))
            await settle(ar.ring)

    run(main)


def test_thousands_of_concurrent_calls(server):
    """4000 calls at once (a 4096-entry ring: no waiting for room here -- with
    the default 256 entries the adapter's over-grant bug, see
    test_aio_ring.test_regression_backpressure_*, makes some of them fail with
    RingFullError now and then): each gets its own result."""

    async def main():
        c = subring.connect(server.path, entries=4096)
        async with AsyncRing(c, own=True) as ar:
            assert c.max_inflight >= 4000
            n = 3000
            tasks = [asyncio.create_task(ar.call("add", None, i, 7)) for i in range(n)]
            tasks += [asyncio.create_task(ar.call("tag", str(i).encode(), i))
                      for i in range(1000)]
            res = await asyncio.gather(*tasks)
            assert res[:n] == [i + 7 for i in range(n)]
            assert res[n:] == [i.to_bytes(8, "little") + str(i).encode() for i in range(1000)]
            await settle(ar.ring)

    run(main, timeout=30)


def test_early_submission_stops_while_the_server_sleeps(server):
    """The module's server runs in interrupt mode: it sleeps after every
    batch, so each early publish (every EARLY_SUBMIT calls prepared in one
    loop iteration, for a spinning client) rings its doorbell.  The adapter
    must see that in the client's doorbell count and stop publishing early:
    past the first checks, about one doorbell per flush (the flush's own),
    not one per EARLY_SUBMIT calls."""
    from subring.aio import ring as ring_mod

    async def main():
        c = subring.connect(server.path, mode="hybrid")
        async with AsyncRing(c, own=True) as ar:
            async def worker(k, n):
                for i in range(n):
                    assert await ar.call("add", None, k, i) == k + i

            deadline = time.monotonic() + 20
            while ar.statistics().flushes < 3 * ring_mod.EARLY_CHECK:    # past the checks
                await asyncio.gather(*(worker(k, 20) for k in range(32)))
                assert time.monotonic() < deadline
            f0, b0 = ar.statistics().flushes, c.statistics().doorbells
            await asyncio.gather(*(worker(k, 100) for k in range(32)))
            flushes = ar.statistics().flushes - f0
            bells = c.statistics().doorbells - b0
            assert flushes < ring_mod.EARLY_RETRY       # no new try within the window
            assert bells <= 1.5 * flushes, (bells, flushes)
            await settle(ar.ring)

    run(main, timeout=40)


def test_concurrent_calls_small_ring_backpressure(server):
    """A 16-entry connection: 2000 concurrent calls wait for room, all complete."""

    async def main():
        c = subring.connect(server.path, entries=16)
        async with AsyncRing(c, own=True) as ar:
            assert c.max_inflight <= 16
            res = await asyncio.gather(*(ar.call("add", None, i, 1) for i in range(2000)),
                                       return_exceptions=True)
            errors = [r for r in res if isinstance(r, BaseException)]
            assert not errors, f"{len(errors)} calls failed: {errors[:2]!r}"
            assert res == [i + 1 for i in range(2000)]

    run(main, timeout=30)


def test_two_clients_concurrently(server):
    async def main():
        a = AsyncRing(subring.connect(server.path), own=True)
        b = AsyncRing(subring.connect(server.path), own=True)
        try:
            ra, rb = await asyncio.gather(
                asyncio.gather(*(a.call("add", None, i, 0) for i in range(500))),
                asyncio.gather(*(b.call("add", None, i, 10_000) for i in range(500))))
            assert ra == list(range(500))
            assert rb == [i + 10_000 for i in range(500)]
        finally:
            await a.aclose()
            await b.aclose()

    run(main)


# ---------------------------------------------------------------------------
# cancellation
# ---------------------------------------------------------------------------

def test_cancel_subsystem_calls(server):
    async def main():
        async with AsyncRing(subring.connect(server.path), own=True) as ar:
            tasks = [asyncio.create_task(ar.call("slow", None, 30)) for _ in range(6)]
            await asyncio.sleep(0.01)
            for t in tasks[::2]:
                t.cancel()
            res = await asyncio.wait_for(asyncio.gather(*tasks, return_exceptions=True), 10)
            for k, x in enumerate(res):
                if k % 2 == 0:
                    assert isinstance(x, asyncio.CancelledError), x
                else:
                    assert x == 30
            await settle(ar.ring)            # the cancelled calls' results were reaped
            assert await ar.call("add", None, 1, 2) == 3

    run(main)


def test_timeout_around_slow_call(server):
    async def main():
        async with AsyncRing(subring.connect(server.path), own=True) as ar:
            loop = asyncio.get_running_loop()
            t0 = loop.time()
            with pytest.raises(TimeoutError):
                async with asyncio.timeout(0.05):
                    await ar.call("slow", None, 300)
            assert loop.time() - t0 < 0.25
            # the next call gets its own result, not the late one
            assert await ar.call("add", None, 5, 5) == 10
            await settle(ar.ring)

    run(main)


def test_aclose_borrowed_client_returns_it_to_sync_use(server):
    async def main():
        c = subring.connect(server.path)
        try:
            ar = AsyncRing(c)
            assert await ar.call("add", None, 1, 2) == 3
            await ar.aclose()
            assert not c.closed
            return c.call("add", None, 3, 4)                    # synchronous again
        finally:
            c.close()

    assert run(main) == 7


# ---------------------------------------------------------------------------
# the server dies
# ---------------------------------------------------------------------------

def _is_reset(x) -> bool:
    return isinstance(x, ConnectionResetError) or (
        isinstance(x, OSError) and x.errno == errno.ECONNRESET)


def test_server_sigkill_while_tasks_await_slow_calls():
    with server_process() as srv:
        async def main():
            loop = asyncio.get_running_loop()
            async with AsyncRing(subring.connect(srv.path), own=True) as ar:
                assert await ar.call("add", None, 1, 1) == 2
                tasks = [asyncio.create_task(ar.call("slow", None, 5000)) for _ in range(8)]
                tasks += [asyncio.create_task(ar.call("add", None, i, 0)) for i in range(8)]
                await asyncio.sleep(0.2)
                assert not any(t.done() for t in tasks[:8])
                srv.proc.send_signal(signal.SIGKILL)
                t0 = loop.time()
                done, pending = await asyncio.wait(tasks, timeout=5)
                took = loop.time() - t0
                for t in pending:
                    t.cancel()
                res = [t.exception() if t in done else "hung" for t in tasks]
                assert not pending, f"{len(pending)} tasks still waiting 5 s after SIGKILL"
                assert all(_is_reset(x) for x in res), res
                assert took < 3
                with pytest.raises(ConnectionResetError):
                    await asyncio.wait_for(ar.call("add", None, 1, 1), 3)
                assert ar.ring.inflight == 0
            srv.proc.wait(5)

        run(main)


def test_regression_server_sigkill_strands_tasks_waiting_for_room():
    """BUG: when the subsystem dies while tasks wait for room (backpressure),
    only ``max_inflight`` of the waiters are woken; each of those fails in
    prep_call with PeerDiedError without waking the next one, and nothing
    else ever calls _dispatch: every other waiter hangs forever (the contract
    says every awaiting task gets ConnectionResetError)."""
    with server_process() as srv:
        async def main():
            c = subring.connect(srv.path, entries=4)
            async with AsyncRing(c, own=True) as ar:
                tasks = [asyncio.create_task(ar.call("slow", None, 5000)) for _ in range(20)]
                await asyncio.sleep(0.2)
                srv.proc.send_signal(signal.SIGKILL)
                done, pending = await asyncio.wait(tasks, timeout=2)
                for t in pending:
                    t.cancel()
                await asyncio.gather(*pending, return_exceptions=True)
                return [t.exception() for t in done], len(pending)

        errors, hung = run(main)
        assert hung == 0, f"{hung} of 20 tasks still waiting 2 s after SIGKILL"
        assert all(_is_reset(x) for x in errors), errors
