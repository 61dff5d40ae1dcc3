"""Helpers shared by the asyncio tests (tests/aio/)."""

from __future__ import annotations

import asyncio


def run(fn, *args, timeout: float = 20.0):
    """Run the coroutine function ``fn(*args)`` in a fresh event loop,
    bounded by ``timeout`` seconds."""
    async def main():
        async with asyncio.timeout(timeout):
            return await fn(*args)

    return asyncio.run(main())
