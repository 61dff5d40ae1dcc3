"""Rate-limited logging: a server under attack or at its fd limit must not
write megabytes of the same line."""

from __future__ import annotations

import logging
import time
from typing import Any


class RateLimitedLog:
    """At most one record per ``interval`` seconds per key; the next one
    says how many were suppressed meanwhile."""

    def __init__(self, logger: logging.Logger, interval: float = 10.0) -> None:
        self.logger = logger
        self.interval = interval
        self._last: dict[str, float] = {}
        self._suppressed: dict[str, int] = {}

    def __call__(self, level: int, key: str, msg: str, *args: Any) -> None:
        now = time.monotonic()
        if now - self._last.get(key, -1e18) < self.interval:
            self._suppressed[key] = self._suppressed.get(key, 0) + 1
            return
        n = self._suppressed.pop(key, 0)
        self._last[key] = now
        if n:
            msg += " (%d similar messages suppressed)"
            args = (*args, n)
        self.logger.log(level, msg, *args)
