"""One worker as the executor sees it: its process, ring, arena and claim
table; starting it (process, bounded handshake) and closing it."""

from __future__ import annotations

import collections
import inspect
import os
import time
from typing import Any

from ..memory import BufferPool
from ..subsystem import SubsystemClient, connect
from .arena import Arena, pool_close_when_unused, pool_map
from .claims import ClaimTable
from .future import BrokenProcessPool, RingFuture
from .worker import INIT_FAILED, worker_main

__all__ = ["InitializerFailed", "StartFailed", "WorkerHandle"]

_CONNECT_WAIT = {"wait": True} if "wait" in inspect.signature(connect).parameters else {}


class StartFailed(BrokenProcessPool):
    """A worker could not be started (retried with backoff by the pool)."""


class InitializerFailed(BrokenProcessPool):
    """A worker's initializer raised: the pool is broken, as in ProcessPoolExecutor."""


class WorkerHandle:
    """A worker process and the executor's side of its ring."""

    def __init__(self, index: int, ctx: Any, depth: int, directory: str) -> None:
        self.index = index
        self.ctx = ctx
        self.process: Any = None
        self.client: SubsystemClient | None = None
        self.pool: BufferPool | None = None
        self.arena: Arena | None = None
        self.path = os.path.join(directory, f"w{index}.sock")
        self.claims = ClaimTable(ctx, depth, os.path.join(directory, f"w{index}.claims"))
        self.claims.exited = self.exited
        # token -> task (None: an op whose answer nobody waits for)
        self.tasks: dict[int, RingFuture | None] = {}
        self.fetches: collections.deque[RingFuture] = collections.deque()  # big results to fetch
        self.op_run = self.op_fetch = 0
        self.dead = False
        self.retiring = False      # max_tasks_per_child reached: no new tasks
        self.dispatched = 0
        self.close_by = 0.0        # graveyard: kill if still alive after this (monotonic)

    @property
    def load(self) -> int:
        """Ring entries this worker's tasks hold or will need."""
        return len(self.tasks) + len(self.fetches)

    def exited(self) -> bool:
        """Whether the process has ended (never blocks)."""
        p = self.process
        if p is None:
            return False
        try:
            return p.exitcode is not None
        except (ValueError, AssertionError, OSError):
            return True

    # -- start -------------------------------------------------------------------

    def start(self, cfg: dict[str, Any], timeout: float, launcher: Any,
              abandon: Any = lambda: False) -> None:
        """Start the process and attach to it; bounded by ``timeout``.  On
        failure the half-started process is killed and reaped, and
        StartFailed (or InitializerFailed) is raised."""
        try:
            self._start(self.path, cfg, timeout, launcher, abandon)
        except BaseException as e:
            self.reap(kill=True)
            if isinstance(e, BrokenProcessPool):
                raise
            raise StartFailed(f"worker {self.index} did not start: "
                              f"{type(e).__name__}: {e}") from e

    def _start(self, path: str, cfg: dict[str, Any], timeout: float, launcher: Any,
               abandon: Any) -> None:
        deadline = time.monotonic() + timeout
        self.process = self.ctx.Process(
            target=worker_main, name=f"RingExecutor-worker-{self.index}", daemon=True,
            args=(path, cfg["initializer"], cfg["initargs"], cfg["mode"], cfg["spin_us"],
                  cfg["slot_size"], cfg["zero_copy"], cfg["parent"], cfg["parent_start"],
                  self.claims.path, self.claims.size, self.claims.lock))
        launcher.start(self.process, timeout)     # (from the launcher thread: see launcher.py)
        # Wait for the socket, watching the process: a worker that dies (its
        # initializer failed, it was killed) is seen at once, not at the deadline.
        while not os.path.exists(path):
            if self.process.exitcode is not None or self._wait_exit(0.02):
                self.process.join(5.0)      # (the sentinel closes just before the exit)
                code = self.process.exitcode
                if code == INIT_FAILED:
                    raise InitializerFailed(
                        "a worker's initializer raised (logged to the concurrent.futures "
                        "logger); the pool is not usable anymore")
                raise StartFailed(f"worker {self.index} exited during start-up, before "
                                  f"serving (exit code {code}): killed, or its initializer "
                                  "ended the process")
            if abandon():
                raise StartFailed("start abandoned: the executor shut down")
            if time.monotonic() > deadline:
                raise StartFailed(f"worker {self.index} did not start within {timeout} s "
                                  "(raise start_timeout for a slow initializer)")
        left = max(1.0, deadline - time.monotonic())
        # (The socket file exists once bound, a moment before it listens:
        # connect must wait for that, with connect()'s own ``wait`` where
        # it has one -- newer connect() fails at once without it.)
        self.client = connect(path, entries=cfg["depth"], slot_size=cfg["slot_size"],
                              mode=cfg["mode"], spin_us=cfg["spin_us"], timeout=left,
                              **_CONNECT_WAIT)
        self.pool = BufferPool(1, cfg["arena_size"], name="subring-exec-arena")
        self.client.register_pool(self.pool, timeout=left)
        self.arena = Arena(cfg["arena_size"], pool_map(self.pool))
        self.op_run = self.client.op_index("run")
        self.op_fetch = self.client.op_index("fetch")

    def _wait_exit(self, timeout: float) -> bool:
        from multiprocessing.connection import wait

        return bool(wait([self.process.sentinel], timeout))

    # -- close ---------------------------------------------------------------------

    def close_ring(self) -> None:
        """Close the connection (the worker then exits by itself).  Raises
        RingBusyError while a thread waits on it."""
        if self.client is not None and not self.client.closed:
            self.client.close()

    def reap(self, kill: bool, timeout: float = 5.0) -> None:
        """Close everything; wait up to ``timeout`` for the process (killed
        first if ``kill``, and anyway if it does not exit in time)."""
        self.close_ring()
        p = self.process
        if p is not None and p.pid is not None:
            if kill and p.exitcode is None:
                p.kill()
            p.join(timeout)
            if p.exitcode is None:
                p.kill()
                p.join(timeout)
            if p.exitcode is not None:
                p.close()           # its sentinel pipe, now rather than at GC
        self.close_arena()
        self.claims.close()

    def close_arena(self) -> None:
        """Unmap the arena (left to the last view of a lent result)."""
        if self.pool is None:
            return
        arena, pool, self.pool, self.arena = self.arena, self.pool, None, None
        if arena is not None:
            arena.take_returns()
            if not arena.lent:
                # Nothing lent outlives the pool: drop the arena's own
                # reference to the mapping too (whoever still holds the
                # arena -- a stale lease callback -- must not keep it).
                arena.map = None
        try:
            pool.close()
        except BufferError:
            # Results the caller still holds are views of this arena:
            # give back the memory of every other range now, and let the
            # mapping go with the last of those views.
            pool_close_when_unused(pool, arena.free if arena is not None else [])

    def describe_death(self) -> str:
        """'worker 3 (pid 123) died (signal 9)'."""
        code = None
        if self.process is not None:
            self.process.join(0.2)
            code = self.process.exitcode
        how = f"exit code {code}" if code is None or code >= 0 else f"signal {-code}"
        pid = self.process.pid if self.process is not None else None
        return f"worker {self.index} (pid {pid}) died ({how})"
