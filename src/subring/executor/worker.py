"""The worker process: a one-client :class:`~subring.Subsystem` that runs
pickled calls.

Claiming a task.  A task written into a worker's ring is still PENDING (and
cancellable) in the executor.  Each one carries a claim slot and a sequence
number (``arg0``, ``arg1``); the executor writes the sequence number into
``claims[slot]`` before it submits the task.  The worker, before it runs the
task, and the executor's ``cancel()`` each take the worker's claim lock
(a process-shared semaphore) and look at the slot:

* the worker finds ``seq`` -> writes ``-seq`` (started) and runs the task;
* ``cancel()`` finds ``seq`` -> writes 0 (cancelled); the worker will find 0,
  skip the call and answer ``TAG_SKIPPED``.

Whoever takes the lock first wins, so a task either runs or is cancelled,
never both, and ``cancel()`` succeeds for every task no worker has started.

No worker outlives its executor: before anything else (the initializer may
take long) the worker asks the kernel for SIGKILL when its parent ends
(``PR_SET_PDEATHSIG``; the parent is the executor's launcher thread, or the
forkserver, which ends with the program), and watches the executor's process
through a pidfd (the executor's pid *and* start time are passed in, so a
reused pid is never mistaken for it; a kernel without pidfds is polled
instead) and exits at once when it is gone -- whatever the start method, the
forkserver included, whose workers are not the executor's children.
"""

from __future__ import annotations

import itertools
import logging
import os
import select
import threading
import time
import traceback
from typing import Any

from ..subsystem import Subsystem, op
from .claims import map_claims
from .framing import (
    BIG,
    TAG_BIG,
    TAG_ERROR,
    TAG_RESULT,
    TAG_SKIPPED,
    encode,
    frame_bytes,
    frame_size,
    read_frame,
    write_frame,
)

__all__ = ["INIT_FAILED", "Worker", "process_start_time", "worker_main"]

#: exit status of a worker whose initializer raised (the executor breaks the
#: pool, as ProcessPoolExecutor does; any other early death is retried)
INIT_FAILED = 88
#: exit status of a worker whose executor process is gone
ORPHANED = 89
#: the largest slot the layers below accept (``ServerQueue``: 16 MiB)
MAX_SLOT_SIZE = 16 << 20


class Worker(Subsystem):
    """The subsystem each worker process serves (one client: the executor)."""

    max_slot_size = MAX_SLOT_SIZE

    def __init__(self, zero_copy: bool, slot_size: int, claims: Any, claim_lock: Any) -> None:
        super().__init__()
        self.zero_copy = zero_copy
        self.slot_size = slot_size
        self.claims = claims
        self.claim_lock = claim_lock
        self.big: dict[int, Any] = {}
        self.keys = itertools.count(1)

    def claim(self, slot: int, seq: int) -> bool:
        """Take task ``seq`` in ``slot`` (False: it was cancelled)."""
        with self.claim_lock:
            if self.claims[slot] != seq:
                return False
            self.claims[slot] = -seq
            return True

    @op
    def run(self, req: Any) -> Any:
        """Run a pickled call (claim slot arg0, sequence arg1); return the
        pickled outcome."""
        if not self.claim(req.arg0, req.arg1):
            return TAG_SKIPPED
        try:
            fn, args, kwargs = read_frame(req.data, copy=not self.zero_copy)
            result = fn(*args, **kwargs)
            data, oob = encode(result)
            tag = TAG_RESULT
        except BaseException as e:  # noqa: BLE001 - everything goes back to the caller,
            tb = traceback.format_exc()   # SystemExit included (as ProcessPoolExecutor)
            try:
                data, oob = encode((e, tb))
            except Exception:  # noqa: BLE001 - unpicklable exception
                data, oob = encode((RuntimeError(f"unpicklable exception {e!r}"), tb))
            tag = TAG_ERROR
        size = len(tag) + frame_size(data, oob)
        if size <= self.slot_size:
            return frame_bytes(data, oob, tag)
        # Too big for the result slot: keep the pickle and its out-of-band
        # buffers as they are (no frame copy here) until the executor fetches
        # them straight into its arena.
        key = next(self.keys)
        self.big[key] = (tag, data, oob, size)
        return TAG_BIG + BIG.pack(key, size)

    @op
    def fetch(self, req: Any) -> int:
        """Write a large result (key arg0) into the executor's arena."""
        tag, data, oob, size = self.big.pop(req.arg0)
        if req.arg1:            # the executor gave up on this result: just drop it
            return 0
        dst = req.data
        if len(dst) != size:
            raise ValueError("fetch buffer has the wrong size")
        dst[:len(tag)] = tag
        write_frame(dst[len(tag):], data, oob)
        return int(size)

    def on_disconnect(self, client: Any) -> None:
        """The executor closed the connection (or died): stop serving."""
        self.stop()     # our only client is gone: the pool shut down or died


def keep_freed_memory() -> None:
    """Make glibc malloc in this worker reuse freed memory instead of giving it
    back to the kernel.

    By default glibc serves large blocks (>= 128 KiB, rising with use) with a
    fresh mmap and trims the heap top once 2x that much is free, so a worker
    that handles a stream of 1 MiB arrays maps, page-faults (256 faults per
    MiB, several microseconds each in a VM) and unmaps the same memory for every
    task -- measured here as most of a 1 MiB task's cost.  With fixed
    thresholds the memory a task freed serves the next one.  The price is that
    a worker keeps up to its peak heap (bounded by the trim threshold) instead
    of returning it at once.  Only worker processes do this, never the
    executor's (the caller's) process.  A libc without mallopt is left alone.
    """
    import ctypes

    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):
        return
    M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3
    mallopt(M_MMAP_THRESHOLD, 32 << 20)     # glibc's largest allowed value
    mallopt(M_TRIM_THRESHOLD, 256 << 20)


def process_start_time(pid: int) -> int | None:
    """Start time of process ``pid`` (clock ticks since boot), None if gone.
    With the pid it names one process for good (pids are reused)."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            stat = f.read()
    except OSError:
        return None
    # comm (field 2) may hold spaces and parentheses: split after its last ')'
    return int(stat[stat.rindex(b")") + 2:].split()[19].decode())


def watch_executor(pid: int, start: int | None) -> None:
    """Exit this process (status ORPHANED) as soon as the executor's process
    is gone.  Returns once the watch runs (in a daemon thread)."""
    try:
        fd = os.pidfd_open(pid)
    except (OSError, AttributeError):
        fd = -1
    # Checked after the pidfd is open: if it is still the executor now, the
    # pidfd refers to the executor (not to a later process with its pid).
    if start is not None and process_start_time(pid) != start:
        os._exit(ORPHANED)

    def wait_pidfd() -> None:
        poller = select.poll()
        poller.register(fd, select.POLLIN)
        while not poller.poll():        # readable once the process has exited
            pass
        os._exit(ORPHANED)

    def poll_proc() -> None:
        while process_start_time(pid) == start:
            time.sleep(0.2)
        os._exit(ORPHANED)

    threading.Thread(target=wait_pidfd if fd >= 0 else poll_proc, daemon=True,
                     name="RingExecutor-watch").start()


def die_with_parent(parent: int) -> None:
    """Have the kernel SIGKILL this process when its parent ends
    (``PR_SET_PDEATHSIG``): it works even while this process holds the GIL
    in a long C call, when the watch thread cannot run.  The parent is the
    executor's launcher thread (fork, spawn: see launcher.py) or the
    forkserver, which ends with the process that started it.  A parent that
    ended before the prctl is left to the watch."""
    import ctypes
    import signal

    try:
        prctl = ctypes.CDLL(None, use_errno=True).prctl
    except (OSError, AttributeError):
        return
    PR_SET_PDEATHSIG = 1
    prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    if os.getppid() != parent:
        # A forkserver child.  multiprocessing hands each one a copy of the
        # program's end of the pipe whose EOF tells the forkserver that the
        # program is gone -- so while a worker lives, the forkserver would
        # never exit, and its death signal never reach us.  This worker
        # starts no forkserver process: let the copy go.
        from multiprocessing import forkserver

        server = getattr(forkserver, "_forkserver", None)
        fd = getattr(server, "_forkserver_alive_fd", None)
        if isinstance(fd, int) and fd >= 0:
            try:
                os.close(fd)
            except OSError:
                pass
            setattr(server, "_forkserver_alive_fd", None)  # noqa: B010 - stdlib's (above)


def worker_main(path: str, initializer: Any, initargs: tuple[Any, ...], mode: str,
                spin_us: float, slot_size: int, zero_copy: bool, parent: int,
                parent_start: int | None, claims_path: str, depth: int,
                claim_lock: Any) -> None:
    """The worker process's entry point (``multiprocessing.Process`` target)."""
    die_with_parent(parent)
    watch_executor(parent, parent_start)
    claims = map_claims(claims_path, depth)
    keep_freed_memory()
    if initializer is not None:
        try:
            initializer(*initargs)
        except BaseException:
            logging.getLogger("concurrent.futures").critical(
                "Exception in initializer:", exc_info=True)
            raise SystemExit(INIT_FAILED) from None
    w = Worker(zero_copy, slot_size, claims, claim_lock)
    w.serve(path, mode=mode, spin_us=spin_us)
