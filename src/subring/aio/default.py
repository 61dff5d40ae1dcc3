"""The default ring of each event loop (what :func:`subring.aio.open` and the
helpers use).

``_default`` maps a loop to a *weak* reference to its ring, and nothing here
holds the ring or the loop strongly: the loop holds the ring (through the
eventfd reader it watches) and the ring holds the loop.  When the loop
closes it drops its readers, so the ring's last reference goes and the ring
is closed at once (a KernelRing closes on deallocation) -- even without
``shutdown_asyncgens()`` -- and the loop itself can be collected.  With
``asyncio.run`` (which shuts down async generators) the ring is closed
earlier and properly: its ops are cancelled and reaped first.
"""

from __future__ import annotations

import asyncio
import weakref
from collections.abc import AsyncGenerator

from ..kernel import KernelRing
from .ring import AsyncRing

__all__ = ["close_default_ring", "get_ring"]

_default: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop,
                                    weakref.ref[AsyncRing]] = weakref.WeakKeyDictionary()
# each default ring -> the async generator that closes it at loop shutdown
_keepers: weakref.WeakKeyDictionary[AsyncRing, AsyncGenerator[None, None]] = \
    weakref.WeakKeyDictionary()


async def _close_at_shutdown(ref: weakref.ref[AsyncRing]) -> AsyncGenerator[None, None]:
    """Parked at its yield for the life of the loop.  asyncio registers every
    started async generator with its loop, and ``loop.shutdown_asyncgens()``
    (which ``asyncio.run`` calls; uvloop too) closes them: that runs the
    finally below, which closes the default ring.  It holds the ring weakly,
    so that it never keeps it alive."""
    try:
        yield
    finally:
        ar = ref()
        if ar is not None:
            loop = ar.loop
            if _current(loop) is ar:
                del _default[loop]
            ar.close_now()


def _current(loop: asyncio.AbstractEventLoop) -> AsyncRing | None:
    ref = _default.get(loop)
    ar = ref() if ref is not None else None
    return None if ar is None or ar.closed else ar


def get_ring() -> AsyncRing:
    """The running loop's default ring (a KernelRing), created on first use
    and closed when the loop shuts down its async generators (asyncio.run
    does), when the loop is closed, or by :func:`close_default_ring`."""
    loop = asyncio.get_running_loop()
    ar = _current(loop)
    if ar is None:
        ar = AsyncRing(KernelRing(256), own=True)
        keeper = _close_at_shutdown(weakref.ref(ar))
        try:
            keeper.asend(None).send(None)   # run to the yield: the loop now tracks it
        except StopIteration:
            pass
        _keepers[ar] = keeper
        _default[loop] = weakref.ref(ar)
    return ar


async def close_default_ring() -> None:
    """Close the running loop's default ring now (its ops are cancelled and
    reaped first); the next :func:`get_ring` makes a new one."""
    loop = asyncio.get_running_loop()
    ar = _current(loop)
    _default.pop(loop, None)
    if ar is not None:
        await ar.aclose()
        keeper = _keepers.pop(ar, None)
        if keeper is not None:
            await keeper.aclose()
