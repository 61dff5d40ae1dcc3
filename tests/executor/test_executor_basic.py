"""RingExecutor: round trips of every kind of argument and result, kwargs,
functions by reference, initializer, eager/lazy start, fork and spawn."""

from __future__ import annotations

import multiprocessing as mp
import pickle
import threading
from concurrent.futures.process import BrokenProcessPool

import executor_funcs as ef
import numpy as np
import pytest
from executor_funcs import make_executor  # noqa: F401 - fixture

T = 30          # bound on every result()


@pytest.fixture(scope="module")
def shared():
    """One eager pool for the pure round-trip tests (created before the
    per-test fd snapshot; every fd it needs exists from the start)."""
    ex = ef.RingExecutor(2, start="eager")
    yield ex
    ef.bounded_shutdown(ex, wait=True)


@pytest.fixture(scope="module")
def _resource_tracker():
    # The 'spawn' start method starts multiprocessing's resource tracker (a
    # child process with a pipe to us) the first time it is used.  Start it
    # before the per-test fd snapshot so that it does not count as a leak.
    from multiprocessing import resource_tracker

    resource_tracker.ensure_running()


SCALARS = [
    0, -1, 2**70, 3.5, float("inf"), complex(1, -2), True, None,
    "", "héllo wörld ✓", "x" * 10_000,
    b"", b"\x00\xff" * 3, bytearray(b"abc"),
    [1, [2, [3, [4, []]]]], (1, (2.0, ("three", (None,)))),
    {"a": {"b": {"c": [1, 2, {"d": (3, 4)}]}}, 5: "int key", (1, 2): "tuple key"},
    {1, 2, 3}, frozenset({"a", "b"}), range(3, 30, 7), slice(1, 2, 3),
]


def test_roundtrip_small_values(shared):
    ex = shared
    futs = [ex.submit(ef.identity, v) for v in SCALARS * 3]
    for v, f in zip(SCALARS * 3, futs):
        got = f.result(T)
        assert type(got) is type(v) and got == v, v
    # also as several positional arguments at once
    assert ex.submit(ef.echo, *SCALARS).result(T) == (tuple(SCALARS), {})


BYTE_SIZES = [0, 1, 80, 81, 4095, 64 * 1024 - 100, 64 * 1024 + 1, (1 << 20) + 3, 5 << 20]


@pytest.mark.parametrize("kind", ["bytes", "bytearray"])
def test_roundtrip_bytes_sizes(shared, kind):
    """Across the inline / slot / arena / big-result thresholds."""
    ex = shared
    for n in BYTE_SIZES:
        data = ef.make_bytes(n, kind)
        got = ex.submit(ef.identity, data).result(T)
        assert type(got) is type(data) and got == data, n
        made = ex.submit(ef.make_bytes, n, kind).result(T)       # result only
        assert type(made) is type(data) and made == data, n


def test_memoryview_and_picklebuffer(shared):
    ex = shared
    # memoryview is not picklable: the caller gets pickle's error at submit
    with pytest.raises(TypeError, match="memoryview"):
        ex.submit(ef.identity, memoryview(b"abc"))
    # a PickleBuffer over a writable buffer travels out of band
    buf = bytearray(b"0123456789" * 10_000)
    got = ex.submit(ef.identity, pickle.PickleBuffer(buf)).result(T)
    assert bytes(got) == bytes(buf)
    # a memoryview slice of a large buffer, sent as bytes
    mv = memoryview(buf)[10:50_000]
    assert ex.submit(ef.identity, mv.tobytes()).result(T) == bytes(mv)


ARRAY_CASES = [
    ((1 << 20,), "float64"),             # 8 MiB
    ((512, 1024), "float32"),            # 2 MiB
    ((3, 256, 1024), "int16"),           # 1.5 MiB, 3-D
    ((2_000_000,), "uint8"),
    ((700, 700), "complex128"),          # 7.5 MiB
    ((100_001,), "bool"),
    ((0,), "float64"),
    ((7,), "int64"),
]


@pytest.mark.parametrize("shape,dtype", ARRAY_CASES, ids=lambda v: str(v))
def test_numpy_arrays_roundtrip(shared, shape, dtype):
    ex = shared
    a = ef.make_array(shape, dtype, seed=len(shape))
    got = ex.submit(ef.identity, a).result(T)
    assert isinstance(got, np.ndarray)
    assert got.dtype == a.dtype and got.shape == a.shape
    np.testing.assert_array_equal(got, a)
    assert got.flags.writeable
    keep = a.copy()
    got[...] = 0                       # really writable, and private
    np.testing.assert_array_equal(a, keep)
    doubled = ex.submit(ef.double, a).result(T)
    np.testing.assert_array_equal(doubled, a * 2)
    assert doubled.flags.writeable
    made = ex.submit(ef.make_array, shape, dtype, len(shape)).result(T)
    np.testing.assert_array_equal(made, a)
    assert made.flags.writeable


@pytest.mark.parametrize("view", ["strided", "transposed", "fortran", "reversed", "column"])
def test_numpy_noncontiguous(shared, view):
    ex = shared
    base = ef.make_array((1024, 768), "float64", seed=3)     # 6 MiB
    a = {"strided": base[::2, ::3], "transposed": base.T,
         "fortran": np.asfortranarray(base), "reversed": base[::-1],
         "column": base[:, 5]}[view]
    expected = pickle.loads(pickle.dumps(a, protocol=5))     # "whatever pickle does"
    got = ex.submit(ef.identity, a).result(T)
    np.testing.assert_array_equal(got, expected)
    assert got.shape == a.shape and got.dtype == a.dtype
    assert got.flags.writeable
    assert got.flags.c_contiguous == expected.flags.c_contiguous
    assert got.flags.f_contiguous == expected.flags.f_contiguous
    shape, dtype, writable, checksum = ex.submit(ef.describe_array, a).result(T)
    assert shape == a.shape and dtype == str(a.dtype) and writable
    assert checksum == pytest.approx(float(a.sum()))


def test_worker_gets_private_writable_args(shared):
    ex = shared
    a = np.zeros(300_000)                                   # > slot: arena path
    assert ex.submit(ef.mutate_and_sum, a).result(T) == 300_000.0
    assert not a.any()                                      # caller's copy untouched
    small = np.zeros(10)                                    # inline path
    assert ex.submit(ef.mutate_and_sum, small).result(T) == 10.0
    assert not small.any()


def test_nested_object_with_many_buffers(shared):
    ex = shared
    arrays = {"a": ef.make_array((1 << 18,), "float64", 1),    # 2 MiB
              "b": ef.make_array((300, 301), "int32", 2),
              "c": ef.make_array((5,), "uint8", 3),
              "d": ef.make_array((1 << 16,), "float32", 4)}
    blob = bytearray(ef.make_bytes(3 << 20))
    h = ef.Holder("h", arrays, blob)
    payload = {"holders": [h, ef.Holder("empty", {}, bytearray())],
               "tuple": (arrays["c"], blob[:100], "text"), "n": 3}
    got = ex.submit(ef.identity, payload).result(T)
    assert got["n"] == 3 and got["tuple"][2] == "text"
    gh = got["holders"][0]
    assert isinstance(gh, ef.Holder) and gh.name == "h" and gh.blob == blob
    for k, v in arrays.items():
        np.testing.assert_array_equal(gh.arrays[k], v)
        assert gh.arrays[k].flags.writeable
    np.testing.assert_array_equal(got["tuple"][0], arrays["c"])
    assert got["holders"][1].arrays == {}
    scaled = ex.submit(ef.scale_holder, h, 3).result(T)
    assert scaled.name == "h!" and scaled.blob == blob[::-1]
    for k, v in arrays.items():
        np.testing.assert_array_equal(scaled.arrays[k], v * 3)


@pytest.mark.parametrize("nbytes", [1000, 64 * 1024 + 8, (1 << 20) + 8, 12 << 20])
def test_results_across_sizes(shared, nbytes):
    """Results below the slot, just above it (fetched), > 1 MiB, > 10 MiB."""
    ex = shared
    futs = [ex.submit(ef.make_array, (nbytes // 8,), "float64", s) for s in range(4)]
    for s, f in enumerate(futs):
        got = f.result(T)
        np.testing.assert_array_equal(got, ef.make_array((nbytes // 8,), "float64", s))
        assert got.flags.writeable


def test_kwargs(shared):
    ex = shared
    a = np.arange(200_000)
    args, kwargs = ex.submit(ef.echo, 1, "two", big=a, small={"x": [1]}, b=b"z" * 100_000).result(T)
    assert args == (1, "two")
    assert set(kwargs) == {"big", "small", "b"}
    np.testing.assert_array_equal(kwargs["big"], a)
    assert kwargs["small"] == {"x": [1]} and kwargs["b"] == b"z" * 100_000
    assert ex.submit(ef.echo).result(T) == ((), {})
    # a kwarg named like submit's own parameter still reaches the function
    assert ex.submit(ef.echo, fn=1).result(T) == ((), {"fn": 1})


def test_functions_by_reference(shared):
    ex = shared
    assert ex.submit(ef.inc, 41).result(T) == 42
    assert ex.submit(pow, 2, 10).result(T) == 1024                 # builtin
    assert ex.submit(ef.Holder, "n", {}, bytearray()).result(T).name == "n"   # a class
    assert ex.submit(np.add, np.arange(3), 1).result(T).tolist() == [1, 2, 3]
    assert ex.submit(str.upper, "abc").result(T) == "ABC"               # method descriptor


def test_lambda_fails_at_submit_in_caller(shared):
    ex = shared
    with pytest.raises((pickle.PicklingError, AttributeError)):
        ex.submit(lambda: 1)

    def local():
        return 1

    with pytest.raises((pickle.PicklingError, AttributeError)):
        ex.submit(local)
    with pytest.raises(TypeError):
        ex.submit(ef.identity, threading.Lock())            # unpicklable argument
    assert ex.statistics().inflight == 0
    assert ex.submit(ef.inc, 1).result(T) == 2               # the pool is fine


def test_initializer_runs_in_each_worker(make_executor):
    ex = make_executor(2, initializer=ef.init_worker, initargs=("hello", 7), start="eager")
    seen = {}
    for _ in range(20):
        futs = [ex.submit(ef.read_init, i) for i in range(8)]
        for f in futs:
            pid, init_pid, value = f.result(T)
            assert pid == init_pid          # the initializer ran in this very worker
            assert value == ("hello", 7)
            seen[pid] = value
        if len(seen) == 2:
            break
    assert len(seen) == 2


def test_initializer_must_be_callable():
    with pytest.raises(TypeError):
        ef.RingExecutor(1, initializer=42)


def test_failing_initializer_gives_broken_pool(make_executor, tmp_path):
    flag = tmp_path / "fail"
    flag.touch()
    ex = make_executor(1, initializer=ef.init_fail_if_exists, initargs=(str(flag),))
    with pytest.raises(BrokenProcessPool, match="initializer"):
        ex.submit(ef.inc, 1).result(T)


def test_bad_constructor_args():
    with pytest.raises(ValueError):
        ef.RingExecutor(0)
    with pytest.raises(ValueError):
        ef.RingExecutor(1, on_worker_death="ignore")
    with pytest.raises(ValueError):
        ef.RingExecutor(1, start="later")


def test_lazy_start(make_executor):
    ex = make_executor(2)
    assert ex.statistics().workers == 0
    assert ex.submit(ef.inc, 1).result(T) == 2
    assert 1 <= ex.statistics().workers <= 2
    futs = [ex.submit(ef.sleep_pid, 0.05) for _ in range(6)]
    pids = {f.result(T) for f in futs}
    assert ex.statistics().workers == 2
    assert len(pids) == 2


def test_eager_start(make_executor):
    ex = make_executor(2, start="eager")
    assert ex.statistics().workers == 2
    assert ex.statistics().inflight == 0
    assert ex.submit(ef.inc, 1).result(T) == 2


@pytest.mark.parametrize("method", ["fork", "spawn"])
def test_mp_contexts(_resource_tracker, make_executor, method):
    ctx = mp.get_context(method)
    ex = make_executor(2, mp_context=ctx, initializer=ef.init_worker, initargs=(method,),
                       start="eager")
    a = ef.make_array((1 << 17,), "float64")                   # 1 MiB
    futs = [ex.submit(ef.double, a) for _ in range(4)] + [ex.submit(ef.read_init) for _ in range(4)]
    for f in futs[:4]:
        np.testing.assert_array_equal(f.result(T), a * 2)
    for f in futs[4:]:
        pid, init_pid, value = f.result(T)
        assert pid == init_pid and value == (method,)
    assert list(ex.map(ef.inc, range(10), chunksize=3)) == list(range(1, 11))
