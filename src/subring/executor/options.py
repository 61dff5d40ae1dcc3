"""RingExecutor's statistics snapshot and parameter checks."""

from __future__ import annotations

import dataclasses
import warnings
from typing import Any

__all__ = ["ExecutorStatistics", "int_in"]


@dataclasses.dataclass(frozen=True)
class ExecutorStatistics:
    """A snapshot of a RingExecutor."""

    backend: str                    # always 'executor'
    workers: int                    # ready workers
    starting: int                   # workers being started
    pending: int                    # tasks waiting in the executor (not in a ring yet)
    inflight: int                   # ops in the workers' rings (queued, running, fetching)
    per_worker: tuple[int, ...]     # ring entries each ready worker holds
    submitted: int                  # tasks accepted by submit()/map() since the start
    completed: int                  # finished with a result or an exception
    cancelled: int                  # cancelled by the executor or skipped in a ring
    worker_deaths: int              # workers that died (the task each held failed; replaced)
    start_failures: int             # failed worker starts (retried with backoff)
    broken: bool                    # the pool is broken: submit() raises BrokenProcessPool

    def __getitem__(self, key: str) -> Any:
        warnings.warn("RingExecutor.statistics() is a dataclass now: use attributes "
                      f"(stats.{key}), not stats[{key!r}]", DeprecationWarning, stacklevel=2)
        return getattr(self, key)


def int_in(name: str, value: Any, low: int, high: int) -> int:
    """``value`` if it is an int in [low, high]; TypeError / ValueError else."""
    if not isinstance(value, int) or isinstance(value, bool):
        raise TypeError(f"{name} must be an int, not {type(value).__name__}")
    if not low <= value <= high:
        raise ValueError(f"{name} must be between {low} and {high}, not {value}")
    return value
