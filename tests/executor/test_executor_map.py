"""RingExecutor.map: order, chunksize, timeout, laziness, zip semantics,
exceptions."""

from __future__ import annotations

import itertools
import random
import time

import executor_funcs as ef
import pytest
from executor_funcs import make_executor  # noqa: F401 - fixture

T = 30


class Counting:
    """Wraps an iterable and counts how many items were taken from it."""

    def __init__(self, it):
        self.it = iter(it)
        self.taken = 0

    def __iter__(self):
        return self

    def __next__(self):
        item = next(self.it)
        self.taken += 1
        return item


@pytest.fixture
def ex(make_executor):
    return make_executor(2, start="eager")


@pytest.mark.parametrize("chunksize", [1, 2, 7, 64, 1000])
def test_map_order(ex, chunksize):
    n = 500
    assert list(ex.map(ef.inc, range(n), chunksize=chunksize)) == list(range(1, n + 1))


@pytest.mark.parametrize("chunksize", [1, 3])
def test_map_order_with_uneven_durations(ex, chunksize):
    """Later items finish first; results still come in input order."""
    rng = random.Random(7)
    delays = [rng.choice([0.0, 0.0, 0.002, 0.01]) for _ in range(60)]
    values = list(range(60))
    got = list(ex.map(ef.sleep_return, delays, values, chunksize=chunksize, timeout=T))
    assert got == values


def test_map_empty_and_bad_chunksize(ex):
    assert list(ex.map(ef.inc, [])) == []
    assert list(ex.map(ef.inc, [], chunksize=5)) == []
    assert list(ex.map(ef.add)) == []               # no iterables: zip() is empty
    with pytest.raises(ValueError):
        ex.map(ef.inc, [1], chunksize=0)


def test_map_several_iterables_zip_semantics(ex):
    assert list(ex.map(pow, [1, 2, 3, 4], [2, 2])) == [1, 4]
    assert list(ex.map(ef.add, range(10), range(100, 103), chunksize=2)) == [100, 102, 104]
    # an endless iterable zipped with a finite one ends with the finite one
    assert list(ex.map(ef.add, itertools.count(), [10, 20, 30])) == [10, 21, 32]
    assert list(ex.map(ef.echo, "ab", [1, 2, 3], (None,) * 5)) == [
        (("a", 1, None), {}), (("b", 2, None), {})]


@pytest.mark.parametrize("chunksize", [1, 8])
def test_map_is_lazy_on_endless_input(ex, chunksize):
    n = 25
    src = Counting(itertools.count())
    results = ex.map(ef.inc, src, chunksize=chunksize)
    assert list(itertools.islice(results, n)) == list(range(1, n + 1))
    # Only a bounded window beyond what was consumed has been read.
    assert n <= src.taken <= n + 200, src.taken
    taken = src.taken
    # Taking more keeps the window bounded.
    more = list(itertools.islice(results, 300))
    assert more == list(range(n + 1, n + 301))
    assert src.taken <= n + 300 + 200, src.taken
    assert src.taken > taken
    results.close()                       # abandon it: in-flight chunks are cancelled
    assert ex.submit(ef.inc, 1).result(T) == 2


def test_map_reads_only_a_window_before_iteration(ex):
    """Like Executor.map, work starts at the call (a first window is read and
    submitted at once); unlike it, the rest is read as results are consumed."""
    src = Counting(range(1000))
    results = ex.map(ef.inc, src)
    time.sleep(0.05)
    assert 0 < src.taken <= 201
    assert next(results) == 1
    assert src.taken <= 201
    assert sum(results) == sum(range(2, 1001))
    assert src.taken == 1000


def test_map_timeout(ex):
    t0 = time.monotonic()
    it = ex.map(ef.sleep_return, [0.0, 1.5, 0.0], [1, 2, 3], timeout=0.3)
    assert next(it) == 1
    with pytest.raises(TimeoutError):
        next(it)
    elapsed = time.monotonic() - t0
    # the timeout counts from the map() call (as in concurrent.futures); allow
    # for RingFuture.result() spending the timeout twice (see the regression
    # test in test_executor_errors.py) plus scheduling noise
    assert elapsed < 1.5, elapsed
    # the pool is still usable; the slow task finishes in the background
    assert ex.submit(ef.inc, 1).result(T) == 2


def test_map_timeout_not_hit(ex):
    assert list(ex.map(ef.sleep_return, [0.01] * 10, range(10), timeout=T)) == list(range(10))


@pytest.mark.parametrize("chunksize", [1, 4])
def test_map_exception_propagates_when_iterated(ex, chunksize):
    it = ex.map(ef.raise_if, range(20), itertools.repeat(9), chunksize=chunksize)
    got = []
    with pytest.raises(ValueError, match="bad item 9") as info:
        for x in it:
            got.append(x)
    # as in concurrent.futures, the whole chunk holding the bad item fails
    assert got == [x * 10 for x in range(9 // chunksize * chunksize)]
    assert "raise_if" in str(info.value.__cause__)
    assert ex.submit(ef.inc, 1).result(T) == 2


def test_map_exception_is_lazy(ex):
    """Building the iterator never raises for a failing item; iterating does."""
    it = ex.map(ef.raise_if, [0], [0])
    with pytest.raises(ValueError):
        list(it)


def test_map_big_payloads(ex):
    import numpy as np

    arrays = [ef.make_array((1 << 17,), "float64", s) for s in range(12)]   # 1 MiB each
    for a, got in zip(arrays, ex.map(ef.double, arrays, chunksize=1), strict=True):
        np.testing.assert_array_equal(got, a * 2)
    for a, got in zip(arrays, ex.map(ef.double, arrays, chunksize=3), strict=True):
        np.testing.assert_array_equal(got, a * 2)


def test_map_after_shutdown(make_executor):
    ex = make_executor(1)
    ex.shutdown()
    with pytest.raises(RuntimeError):
        list(ex.map(ef.inc, [1, 2]))
