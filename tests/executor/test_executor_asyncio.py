"""RingExecutor with asyncio: ``await executor.run(fn, *args)`` and
``loop.run_in_executor(executor, fn, arg)``; exceptions reach the awaiting
task.  (pytest-asyncio is not installed: each test drives asyncio.run.)"""

from __future__ import annotations

import asyncio
import time
from concurrent.futures.process import BrokenProcessPool, _RemoteTraceback

import executor_funcs as ef
import numpy as np
import pytest
from executor_funcs import make_executor  # noqa: F401 - fixture

T = 30


def run(coro, timeout: float = T):
    async def bounded():
        return await asyncio.wait_for(coro, timeout)

    return asyncio.run(bounded())


@pytest.fixture
def ex(make_executor):
    return make_executor(2, start="eager")


def test_run_many_concurrent(ex):
    async def main():
        return await asyncio.gather(*(ex.run(ef.inc, i) for i in range(500)))

    assert run(main()) == list(range(1, 501))


def test_run_kwargs_and_big_data(ex):
    a = ef.make_array((1 << 18,), "float64")        # 2 MiB

    async def main():
        r1 = ex.run(ef.double, a)
        r2 = ex.run(ef.echo, 1, key="v")
        r3 = ex.run(ef.make_bytes, 3 << 20)
        return await asyncio.gather(r1, r2, r3)

    doubled, echoed, blob = run(main())
    np.testing.assert_array_equal(doubled, a * 2)
    assert echoed == ((1,), {"key": "v"})
    assert blob == ef.make_bytes(3 << 20)


def test_run_overlaps_with_other_coroutines(ex):
    """The loop keeps running while tasks are in the workers."""
    async def main():
        ticks = 0

        async def ticker():
            nonlocal ticks
            while True:
                await asyncio.sleep(0.01)
                ticks += 1

        t = asyncio.create_task(ticker())
        t0 = time.monotonic()
        res = await asyncio.gather(*(ex.run(ef.sleep_return, 0.2, i) for i in range(4)))
        elapsed = time.monotonic() - t0
        t.cancel()
        return res, ticks, elapsed

    res, ticks, elapsed = run(main())
    assert res == [0, 1, 2, 3]
    assert ticks >= 5, ticks            # the loop was not blocked
    assert elapsed < 2.0                # 2 workers: ~0.4 s


def test_run_in_executor(ex):
    async def main():
        loop = asyncio.get_running_loop()
        futs = [loop.run_in_executor(ex, ef.inc, i) for i in range(200)]
        return await asyncio.gather(*futs)

    assert run(main()) == list(range(1, 201))


def test_exception_propagates_into_awaiting_task(ex):
    async def main():
        try:
            await ex.run(ef.worker_raises_marker_fn, "async boom")
        except ValueError as e:
            return e
        return None

    e = run(main())
    assert isinstance(e, ValueError) and str(e) == "async boom"
    assert isinstance(e.__cause__, _RemoteTraceback)
    assert "worker_raises_marker_fn" in str(e.__cause__)


def test_exceptions_in_gather(ex):
    async def main():
        coros = [ex.run(ef.raise_if, i, 3) for i in range(6)]
        return await asyncio.gather(*coros, return_exceptions=True)

    out = run(main())
    assert out[:3] == [0, 10, 20] and out[4:] == [40, 50]
    assert isinstance(out[3], ValueError)


def test_run_in_executor_exception(ex):
    async def main():
        loop = asyncio.get_running_loop()
        with pytest.raises(ef.CustomError) as info:
            await loop.run_in_executor(ex, ef.raise_custom, "rie", 5)
        return info.value.code

    assert run(main()) == 5


def test_submit_error_raised_in_caller(ex):
    async def main():
        with pytest.raises(Exception, match="pickle"):
            await ex.run(lambda: 1)
        return await ex.run(ef.inc, 1)

    assert run(main()) == 2


def test_worker_death_reaches_awaiting_task(ex):
    async def main():
        with pytest.raises(BrokenProcessPool):
            await ex.run(ef.die, "exit")
        return await ex.run(ef.inc, 41)

    assert run(main()) == 42


def test_cancel_awaiting_task(ex):
    """Cancelling the awaiting task cancels a not-yet-started future; a
    running one finishes in the worker and the pool stays usable."""
    async def main():
        with pytest.raises(asyncio.TimeoutError):
            await asyncio.wait_for(ex.run(ef.sleep_return, 0.5, 0), 0.05)
        return await ex.run(ef.inc, 1)

    assert run(main()) == 2
