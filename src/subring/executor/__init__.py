"""RingExecutor: a ``concurrent.futures`` process pool whose workers are subsystems.

Each worker is a standalone :class:`~subring.Subsystem` process with its own
queue pair to the executor.  A task is one SQE: the pickled call (protocol 5)
travels inline or in the op's slot of the shared region when small, and out-
of-band buffers (whatever pickle protocol 5 hands out of band: bytes,
bytearray, ``pickle.PickleBuffer``, NumPy arrays, ...) are written straight into
a shared :class:`~subring.BufferPool` arena -- nothing goes through a pipe.
Results come back in the op's result slot (up to ``slot_size``, 64 KiB by
default), or, when larger, are written by the worker straight into the arena
by a second op and lent to the caller as views of it (see ``arena.Arena``).

The ``concurrent.futures`` contract holds (``docs/executor.md`` lists what
still differs and why): a task is PENDING and cancellable until a worker
starts it, even once it sits in a worker's ring (``worker.py`` explains the
claim); ``shutdown(wait, cancel_futures)``; pending work runs at interpreter
exit; ``max_tasks_per_child``; a failing initializer is logged to the
``concurrent.futures`` logger and breaks the pool.  Beyond it: a worker's
death fails only the task it was running (``on_worker_death="replace"``,
default; ``"break"`` is ProcessPoolExecutor's behaviour), its queued tasks run
elsewhere; ``map`` is lazy; ``await executor.run(fn, *args)``.

Modules: ``pool`` (RingExecutor), ``future`` (the Future; the only module
touching ``concurrent.futures`` internals), ``handle`` (a worker as the pool
sees it), ``launcher`` (starts worker processes from one thread), ``worker``
(the worker process), ``claims`` (the cancel/start arbitration), ``arena``
(shared memory for large data), ``results`` (fetching and unpickling
answers), ``mapping`` (``map``), ``framing`` (pickles on the wire),
``options`` (statistics, parameter checks), ``dask_plugin`` (Dask workers on
RingExecutors; needs ``distributed``).
"""

from __future__ import annotations

from .future import BrokenProcessPool
from .pool import ExecutorStatistics, RingExecutor

__all__ = ["BrokenProcessPool", "ExecutorStatistics", "RingExecutor"]
