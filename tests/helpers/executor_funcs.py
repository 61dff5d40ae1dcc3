"""Functions and helpers for the RingExecutor tests.

Everything a worker runs must be importable by reference (``pickle`` sends
functions by qualified name), so it lives here rather than in the test modules.
The ``make_executor`` fixture is imported by the test modules.
"""

from __future__ import annotations

import ctypes
import faulthandler
import os
import resource
import signal
import threading
import time
from typing import Any

import pytest

from subring.executor import RingExecutor

# -- plain tasks ------------------------------------------------------------------------


def inc(x: int) -> int:
    return x + 1


def add(a: Any, b: Any) -> Any:
    return a + b


def identity(x: Any) -> Any:
    return x


def echo(*args: Any, **kwargs: Any) -> tuple[tuple[Any, ...], dict[str, Any]]:
    return args, kwargs


def getpid(_: Any = None) -> int:
    return os.getpid()


def sleep_return(t: float, value: Any = None) -> Any:
    time.sleep(t)
    return value


def sleep_pid(t: float) -> int:
    time.sleep(t)
    return os.getpid()


def make_bytes(n: int, kind: str = "bytes") -> Any:
    data = bytes(range(256)) * (n // 256) + bytes(range(n % 256))
    return bytearray(data) if kind == "bytearray" else data


def make_array(shape: tuple[int, ...], dtype: str, seed: int = 0) -> Any:
    import numpy as np

    rng = np.random.default_rng(seed)
    n = int(np.prod(shape))
    if np.dtype(dtype).kind == "b":
        return rng.integers(0, 2, n).astype(dtype).reshape(shape)
    if np.dtype(dtype).kind == "c":
        return (rng.standard_normal(n) + 1j * rng.standard_normal(n)).astype(dtype).reshape(shape)
    return (rng.standard_normal(n) * 100).astype(dtype).reshape(shape)


def double(a: Any) -> Any:
    return a * 2


def describe_array(a: Any) -> tuple[tuple[int, ...], str, bool, float]:
    """What the worker received: shape, dtype, writable, a checksum."""
    import numpy as np

    return a.shape, str(a.dtype), bool(a.flags.writeable), float(np.sum(a.astype(np.float64)))


def mutate_and_sum(a: Any) -> float:
    """Writes into its argument (the worker's copy must be private and writable)."""
    a[...] = 1
    return float(a.sum())


class Holder:
    """An object holding several out-of-band buffers (and some in-band state)."""

    def __init__(self, name: str, arrays: dict[str, Any], blob: bytearray) -> None:
        self.name = name
        self.arrays = arrays
        self.blob = blob

    def scaled(self, k: int) -> Holder:
        return Holder(self.name + "!", {n: a * k for n, a in self.arrays.items()},
                      bytearray(self.blob[::-1]))


def scale_holder(h: Holder, k: int) -> Holder:
    return h.scaled(k)


# -- initializer --------------------------------------------------------------------------

_INIT: dict[str, Any] = {}


def init_worker(value: Any, *more: Any) -> None:
    _INIT["value"] = (value, *more)
    _INIT["pid"] = os.getpid()


def read_init(_: Any = None) -> tuple[int, Any, Any]:
    """(this pid, the pid the initializer ran in, the value it stored)."""
    return os.getpid(), _INIT.get("pid"), _INIT.get("value")


def init_fail_if_exists(flag: str) -> None:
    if os.path.exists(flag):
        os._exit(7)


# -- errors -------------------------------------------------------------------------------


class CustomError(Exception):
    def __init__(self, msg: str, code: int = 0) -> None:
        super().__init__(msg)
        self.code = code

    def __reduce__(self) -> Any:
        return (CustomError, (self.args[0], self.code))


def worker_raises_marker_fn(msg: str) -> None:
    """The name of this function must show up in the remote traceback."""
    _inner_helper_marker(msg)


def _inner_helper_marker(msg: str) -> None:
    raise ValueError(msg)


def raise_custom(msg: str, code: int) -> None:
    raise CustomError(msg, code)


class UnpicklableError(Exception):
    def __reduce__(self) -> Any:
        raise TypeError("this exception refuses to be pickled")


def raise_unpicklable() -> None:
    raise UnpicklableError("boom")


class TwoArgError(Exception):
    """Pickles, but cannot be unpickled (the classic ``__init__`` pitfall)."""

    def __init__(self, a: Any, b: Any) -> None:
        super().__init__(f"{a}/{b}")


def raise_two_arg() -> None:
    raise TwoArgError(1, 2)


def return_lock() -> Any:
    return threading.Lock()


def raise_if(x: int, bad: int) -> int:
    if x == bad:
        raise ValueError(f"bad item {x}")
    return x * 10


def raise_system_exit() -> None:
    raise SystemExit(3)


class FailsToUnpickle:
    """Pickles fine in the caller; unpickling it (in the worker) raises."""

    def __reduce__(self) -> Any:
        return (_refuse, ("nope",))


def _refuse(msg: str) -> None:
    raise RuntimeError(f"refusing to unpickle: {msg}")


# -- gates and deaths ------------------------------------------------------------------------


def wait_for_file(path: str, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while not os.path.exists(path):
        if time.monotonic() > deadline:
            raise TimeoutError(f"gate {path} never opened")
        time.sleep(0.002)


def gated(path: str, value: Any) -> Any:
    wait_for_file(path)
    return value


def die(how: str) -> None:
    if how == "exit":
        os._exit(3)
    elif how == "sigkill":
        os.kill(os.getpid(), signal.SIGKILL)
    elif how == "segv":
        resource.setrlimit(resource.RLIMIT_CORE, (0, 0))     # no core file
        # A deliberate crash: no "Fatal Python error" stack dump on stderr
        # (pytest's faulthandler is inherited by forked workers).
        faulthandler.disable()
        ctypes.string_at(0)
    else:
        raise ValueError(how)
    time.sleep(30)          # SIGKILL delivery is asynchronous


def die_gated(path: str, how: str) -> None:
    wait_for_file(path)
    die(how)


class DieOnUnpickle:
    """Kills the worker while it unpickles the call's arguments."""

    def __init__(self, path: str, how: str) -> None:
        self.path, self.how = path, how

    def __reduce__(self) -> Any:
        return (die_gated, (self.path, self.how))


class DieOnPickle:
    """Returned as a result: kills the worker while it pickles the result."""

    def __init__(self, path: str, how: str) -> None:
        self.path, self.how = path, how

    def __reduce__(self) -> Any:
        die_gated(self.path, self.how)
        raise AssertionError("unreachable")


def return_die_on_pickle(path: str, how: str) -> DieOnPickle:
    return DieOnPickle(path, how)


def take_and_return(_: Any) -> int:
    return 1


# -- process / resource helpers --------------------------------------------------------------


def child_pids() -> set[int]:
    """Pids whose parent is this process (from /proc), minus multiprocessing's
    resource tracker (a helper the 'spawn' start method keeps for good)."""
    me = os.getpid()
    out = set()
    for d in os.listdir("/proc"):
        if not d.isdigit():
            continue
        try:
            with open(f"/proc/{d}/stat") as f:
                stat = f.read()
        except OSError:
            continue
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        if ppid == me:
            out.add(int(d))
    try:
        from multiprocessing import resource_tracker

        tracker = resource_tracker._resource_tracker._pid
        if tracker is not None:
            out.discard(tracker)
    except (ImportError, AttributeError):
        pass
    return out


def shm_files() -> set[str]:
    try:
        return set(os.listdir("/dev/shm"))
    except FileNotFoundError:
        return set()


def open_fds() -> set[str]:
    return set(os.listdir("/proc/self/fd"))


def wait_until(pred: Any, timeout: float, step: float = 0.01) -> bool:
    deadline = time.monotonic() + timeout
    while True:
        if pred():
            return True
        if time.monotonic() > deadline:
            return False
        time.sleep(step)


def bounded_shutdown(ex: RingExecutor, timeout: float = 30.0, **kw: Any) -> float:
    """shutdown() in a helper thread; fail the test if it does not return in time."""
    err: list[BaseException] = []

    def run() -> None:
        try:
            ex.shutdown(**kw)
        except BaseException as e:  # noqa: BLE001
            err.append(e)

    t0 = time.monotonic()
    th = threading.Thread(target=run, daemon=True)
    th.start()
    th.join(timeout)
    if th.is_alive():
        pytest.fail(f"RingExecutor.shutdown({kw}) did not return within {timeout} s")
    if err:
        raise err[0]
    return time.monotonic() - t0


@pytest.fixture
def make_executor():
    """Factory: make_executor(**kw) -> RingExecutor (2 workers unless told);
    every executor made is shut down (bounded) at teardown."""
    made: list[RingExecutor] = []

    def factory(max_workers: int = 2, **kw: Any) -> RingExecutor:
        ex = RingExecutor(max_workers, **kw)
        made.append(ex)
        return ex

    yield factory
    for ex in made:
        bounded_shutdown(ex, wait=True, cancel_futures=True)


def exit_worker(code: int = 3) -> None:
    """End the worker process at once (no exception goes back)."""
    os._exit(code)


# -- helpers for the contract tests (test_executor_contract.py) -------------------------


def record(path: str, value: Any, t: float = 0.0) -> Any:
    """Append ``value`` to the file ``path`` (proof that the task ran), then
    sleep ``t``."""
    with open(path, "a") as f:
        f.write(f"{value}\n")
    time.sleep(t)
    return value


def recorded(path: str) -> list[str]:
    try:
        with open(path) as f:
            return f.read().split()
    except FileNotFoundError:
        return []


def write_pid_then_sleep(path: str, t: float) -> None:
    """Initializer: leave this worker's pid in ``path``, then take ``t`` s."""
    with open(path, "a") as f:
        f.write(f"{os.getpid()}\n")
    time.sleep(t)


def sleep_if_exists(flag: str, t: float) -> None:
    """Initializer: take ``t`` s to start, but only once ``flag`` exists."""
    if os.path.exists(flag):
        time.sleep(t)


def hog_gil_after_init(t: float) -> None:
    """Initializer: a thread then holds the GIL for ~``t`` s in one C call,
    so the worker answers its attach late (a worker on a loaded machine)."""
    def hog() -> None:
        time.sleep(0.01)
        end = time.monotonic() + t
        while time.monotonic() < end:
            sum(range(5_000_000))           # one C call: the GIL is not released

    threading.Thread(target=hog, daemon=True).start()


def raise_in_initializer() -> None:
    raise ValueError("error in initializer")


class Box:
    """A weak-referenceable result."""

    def __init__(self, value: Any) -> None:
        self.value = value


def make_box(value: Any) -> Box:
    return Box(value)


class SystemExitOnUnpickle:
    """Pickles fine in the worker; unpickling it (in the caller) raises SystemExit."""

    def __reduce__(self) -> Any:
        return (raise_system_exit, ())


def return_system_exit_on_unpickle() -> SystemExitOnUnpickle:
    return SystemExitOnUnpickle()


def make_big(n: int) -> bytearray:
    return bytearray(n)


def pid_of_task(_: Any = None) -> int:
    return os.getpid()


def gated_big(path: str, n: int) -> bytearray:
    wait_for_file(path)
    return bytearray(n)


# -- for test_executor_conformance.py (CPython's concurrent.futures scenarios) ---------

INIT_STATUS = "uninitialized"


def set_init_status(x: Any) -> None:
    global INIT_STATUS
    INIT_STATUS = x


def get_init_status() -> Any:
    return INIT_STATUS


def mul(x: Any, y: Any) -> Any:
    return x * y


def sleep_and_raise(t: float) -> None:
    time.sleep(t)
    raise Exception("this is an exception")


def return_instance(cls: type) -> Any:
    return cls()


def raise_error(cls: type) -> None:
    raise cls("raised in the worker")


def crash() -> None:
    die("segv")


def exit_now() -> None:
    raise SystemExit(1)


class ExitAtPickle:
    def __reduce__(self) -> Any:
        raise SystemExit(1)


class ErrorAtPickle:
    def __reduce__(self) -> Any:
        from pickle import PicklingError

        raise PicklingError("error at pickle")


class CrashAtPickle:
    def __reduce__(self) -> Any:
        die("segv")


class ExitAtUnpickle:
    def __reduce__(self) -> Any:
        return (exit_now, ())


class ErrorAtUnpickle:
    def __reduce__(self) -> Any:
        return (_unpickle_error, ())


def _unpickle_error() -> None:
    from pickle import UnpicklingError

    raise UnpicklingError("error at unpickle")


class CrashAtUnpickle:
    def __reduce__(self) -> Any:
        return (crash, ())


def pid_and_parent(_: Any = None) -> tuple[int, int]:
    return os.getpid(), os.getppid()


def executor_pipeline(executor: Any) -> dict[str, Any]:
    """Code written against the Executor interface only (submit, map,
    as_completed, wait, add_done_callback, cancel): it runs unchanged on a
    RingExecutor or on ``distributed.Client.get_executor()``."""
    import concurrent.futures as cf

    out: dict[str, Any] = {}
    out["submit"] = executor.submit(add, 2, 3).result(60)
    out["map"] = list(executor.map(inc, range(20)))
    futs = [executor.submit(mul, i, i) for i in range(10)]
    out["as_completed"] = sorted(f.result() for f in cf.as_completed(futs, timeout=60))
    done, not_done = cf.wait([executor.submit(inc, 1)], timeout=60)
    out["wait"] = (len(done), len(not_done))
    seen: list[Any] = []
    f = executor.submit(inc, 10)
    f.add_done_callback(lambda fut: seen.append(fut.result()))
    f.result(60)
    out["callback"] = wait_until(lambda: seen == [11], 10)
    try:
        executor.submit(raise_if, 1, 1).result(60)
    except ValueError as e:
        out["error"] = str(e)
    return out


def hold_gil() -> int:
    """Hold the GIL in one C call that does not end in practice (no other
    thread of this process runs Python code again; kill the process)."""
    return sum(range(10 ** 12))
