"""Run a Dask worker's tasks on a :class:`RingExecutor` (needs the optional
``distributed`` package: ``pip install 'subring[dask]'``).

A Dask worker runs each task in its default executor (a thread pool).
:class:`RingExecutorPlugin` swaps in a RingExecutor created *inside* each
worker process, so a one-machine-per-worker Dask cluster gets subring's
per-machine speed for CPU-bound Python tasks::

    from distributed import Client
    from subring.executor.dask_plugin import RingExecutorPlugin

    client = Client(cluster)
    client.register_plugin(RingExecutorPlugin(max_workers=4))

The worker's thread pool stays available as the ``"threads"`` executor
(``dask.annotate(executor="threads")``).  Worker processes must not be
daemonic -- a daemonic process may not start children -- so start the
cluster with ``dask.config.set({"distributed.worker.daemon": False})``.
"""

from __future__ import annotations

import multiprocessing as mp
from typing import Any

from distributed.diagnostics.plugin import WorkerPlugin

from .pool import RingExecutor

__all__ = ["RingExecutorPlugin"]


class RingExecutorPlugin(WorkerPlugin):
    """A WorkerPlugin that makes a RingExecutor the worker's default executor.

    Keyword arguments go to :class:`RingExecutor`; ``mp_context`` may be given
    by name (``"fork"``, ``"forkserver"``, ``"spawn"``) since the plugin is
    pickled to the workers."""

    name = "subring-ring-executor"
    idempotent = True

    def __init__(self, *, start_method: str | None = None, **executor_kwargs: Any) -> None:
        self.start_method = start_method
        self.executor_kwargs = executor_kwargs

    def setup(self, worker: Any) -> None:
        """Create the RingExecutor in the worker process and make it the default."""
        if mp.current_process().daemon:
            raise RuntimeError(
                "RingExecutorPlugin needs non-daemonic Dask worker processes: set "
                "dask.config distributed.worker.daemon to False before starting them")
        kwargs = dict(self.executor_kwargs)
        if self.start_method is not None:
            kwargs["mp_context"] = mp.get_context(self.start_method)
        kwargs.setdefault("max_workers", worker.state.nthreads)
        executor = RingExecutor(**kwargs)
        worker.executors["threads"] = worker.executors["default"]
        worker.executors["default"] = executor

    def teardown(self, worker: Any) -> None:
        """Put the thread pool back and shut the RingExecutor down."""
        executor = worker.executors.get("default")
        if isinstance(executor, RingExecutor):
            worker.executors["default"] = worker.executors.pop("threads")
            executor.shutdown(wait=True, cancel_futures=True)
