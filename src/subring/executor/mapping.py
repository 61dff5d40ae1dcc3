"""``RingExecutor.map``: lazy past a first window, results released as they
are handed out."""

from __future__ import annotations

import collections
import concurrent.futures as cf
import itertools
import time
from collections.abc import Callable, Iterable, Iterator
from typing import Any

from .framing import process_chunk

__all__ = ["lazy_map"]


def lazy_map(submit: Callable[..., cf.Future[Any]], fn: Callable[..., Any],
             iterables: tuple[Iterable[Any], ...], timeout: float | None, chunksize: int,
             window: int) -> Iterator[Any]:
    """Submit the first ``window`` chunks now (as ``Executor.map`` submits all
    of its input: the work starts before the caller iterates), the rest one
    per result consumed.  Neither a future nor a result handed out stays
    referenced here; closing the iterator early cancels what did not start."""
    if chunksize < 1:
        raise ValueError("chunksize must be >= 1.")
    deadline = None if timeout is None else time.monotonic() + timeout
    args = zip(*iterables, strict=False)   # map() stops at the shortest input

    def chunks() -> Iterator[list[tuple[Any, ...]]]:
        while True:
            chunk = list(itertools.islice(args, chunksize))
            if not chunk:
                return
            yield chunk

    def submit_chunk(chunk: list[tuple[Any, ...]]) -> cf.Future[Any]:
        if chunksize == 1:
            return submit(fn, *chunk[0])
        return submit(process_chunk, fn, chunk)

    def next_result() -> Any:
        f = futs.popleft()
        left = None if deadline is None else deadline - time.monotonic()
        try:
            return f.result(left)
        finally:
            nxt = next(src, None)
            if nxt is not None:
                futs.append(submit_chunk(nxt))

    src = chunks()
    futs: collections.deque[cf.Future[Any]] = collections.deque()
    try:
        for chunk in itertools.islice(src, window):
            futs.append(submit_chunk(chunk))
    except BaseException:
        for f in futs:
            f.cancel()
        raise

    def gen() -> Iterator[Any]:
        try:
            while futs:
                if chunksize == 1:
                    yield next_result()
                else:
                    # The chunk's results in order, each popped (released)
                    # as it is handed out.  (Not iter(out.pop, marker): that
                    # compares every result with ==, which NumPy arrays refuse.)
                    out = next_result()
                    out.reverse()
                    pop = out.pop
                    while out:
                        yield pop()
        finally:
            for f in futs:
                f.cancel()

    return gen()
