"""What a ring can do, asked of the ring itself (duck typing, no class checks).

:class:`~subring.aio.AsyncRing` adapts any :class:`~subring.Ring` -- a ring
with the shared verbs (``prep_nop``, ``submit``, ``reap``, ``inflight``,
``max_inflight``, ``closed``...; see :mod:`subring.ring`).  The rest it needs
differs between ring kinds, and is found here by asking the ring for the
methods that provide it:

* completion wake-ups: ``enable_eventfd()`` (the kernel signals an eventfd
  per completion) or ``set_async(on)`` (a subsystem client signals its
  completion eventfd while asynchronous mode is on);
* recall: ``prep_cancel`` (kernel ops can be cancelled; a subsystem op cannot
  be recalled once sent);
* peer death: ``peer_dead`` plus the fd that becomes readable when the peer
  goes away;
* spinning: a ring with a peer whose notification ``mode`` is not
  ``"interrupt"`` answers in microseconds, worth a short spin after
  submitting.

Every ring kind spells them the same (``enable_eventfd`` or ``set_async``,
``peer_fd``); this module is the only place that asks, and it never checks a
ring's class.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from ..ring import Ring


@dataclasses.dataclass(frozen=True)
class RingCaps:
    """The capabilities of one ring, as AsyncRing uses them."""

    cancellable: bool        # ops can be recalled with prep_cancel
    data_results: bool       # completions may carry data (bytes) besides res
    has_peer: bool           # another process answers: it may die
    default_spin_us: float   # spin after submitting (subsystems not in interrupt mode)

    @classmethod
    def of(cls, ring: Any) -> RingCaps:
        if not isinstance(ring, Ring):      # structural: the shared verbs are all there
            missing = [m for m in sorted(_RING_MEMBERS) if not hasattr(ring, m)]
            raise TypeError(f"AsyncRing needs a subring.Ring; {type(ring).__name__} lacks "
                            f"{', '.join(missing)}")
        has_peer = hasattr(ring, "peer_dead")
        # the notification mode (`mode` on every ring kind that has a peer)
        mode = getattr(ring, "mode", "interrupt") if has_peer else "interrupt"
        return cls(cancellable=callable(getattr(ring, "prep_cancel", None)),
                   data_results=callable(getattr(ring, "prep_call", None)),
                   has_peer=has_peer,
                   default_spin_us=20.0 if has_peer and mode != "interrupt" else 0.0)


# the members isinstance(x, Ring) looks for (to name the missing ones)
_RING_MEMBERS = frozenset(n for n in vars(Ring) if not n.startswith("_")) | {
    "__enter__", "__exit__"}


def completion_fd(ring: Ring) -> int:
    """Turn on eventfd wake-ups for the ring's completions; return the fd."""
    enable = getattr(ring, "enable_eventfd", None)
    if enable is not None:
        return int(enable())
    set_async = getattr(ring, "set_async", None)
    if set_async is None:
        raise TypeError(f"{type(ring).__name__} offers no completion eventfd "
                        f"(enable_eventfd or set_async)")
    return int(set_async(True))


def stop_completion_fd(ring: Ring) -> None:
    """Undo :func:`completion_fd` where that means something (a subsystem
    client returns to synchronous use; a kernel ring keeps its eventfd)."""
    set_async = getattr(ring, "set_async", None)
    if set_async is not None and not ring.closed:
        set_async(False)


def peer_fd(ring: Ring) -> int:
    """The fd that becomes readable when the ring's peer dies (-1: none)."""
    get = getattr(ring, "peer_fd", None)
    return int(get()) if get is not None else -1


def live_user_data(ring: Ring) -> list[Any]:
    """The user_data of every op still in flight (a shared verb of every
    :class:`~subring.Ring`)."""
    return list(ring.live_user_data())
