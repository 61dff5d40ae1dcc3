"""Fixtures of the asyncio tests."""

from __future__ import annotations

import os

import pytest


@pytest.fixture
def pipes():
    """Factory: pipes(n=1) -> n (read_fd, write_fd) pairs, all closed at teardown."""
    made: list[tuple[int, int]] = []

    def make(n: int = 1):
        ps = [os.pipe() for _ in range(n)]
        made.extend(ps)
        return ps

    yield make
    for r, w in made:
        os.close(r)
        os.close(w)
