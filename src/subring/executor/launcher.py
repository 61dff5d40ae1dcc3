"""Start worker processes from one long-lived thread.

A worker asks the kernel to kill it when its parent goes away
(``PR_SET_PDEATHSIG``, see ``worker.py``).  The kernel's notion of "parent"
there is the *thread* that forked it: a worker started from a short-lived
thread would be killed when that thread ends.  So every worker process of an
executor is started by this one thread, which lives until the executor has
closed all of its workers.
"""

from __future__ import annotations

import queue
import threading
from typing import Any

__all__ = ["Launcher"]


class Launcher:
    """A thread that runs ``process.start()`` for whoever asks."""

    def __init__(self, name: str) -> None:
        self._requests: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self._thread = threading.Thread(target=self._run, daemon=True, name=name)
        self._thread.start()

    def _run(self) -> None:
        while True:
            item = self._requests.get()
            if item is None:
                return
            process, done, outcome = item
            try:
                process.start()
            except BaseException as e:  # noqa: BLE001 - handed to the caller
                outcome.append(e)
            done.set()

    def start(self, process: Any, timeout: float) -> None:
        """Start ``process`` from the launcher thread; raise what start()
        raised, or TimeoutError."""
        done = threading.Event()
        outcome: list[BaseException] = []
        self._requests.put((process, done, outcome))
        if not done.wait(timeout):
            raise TimeoutError(f"starting a worker process took over {timeout} s")
        if outcome:
            raise outcome[0]

    def close(self) -> None:
        """End the thread (after every worker it started is gone)."""
        self._requests.put(None)
        if threading.current_thread() is not self._thread:
            self._thread.join(5.0)
