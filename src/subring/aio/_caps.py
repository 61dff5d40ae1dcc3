"""What a ring can do, asked of the ring itself (duck typing, no class checks).

:class:`~subring.aio.AsyncRing` adapts any ring that has the shared verbs
(``prep_*``, ``submit``, ``reap``, ``inflight``, ``max_inflight``, ``closed``).
The rest it needs differs between ring kinds, and is found here by asking the
ring for the methods that provide it:

* completion wake-ups: ``enable_eventfd()`` (the kernel signals an eventfd
  per completion) or ``set_async(on)`` (a subsystem client signals its
  completion eventfd while asynchronous mode is on);
* recall: ``prep_cancel`` (kernel ops can be cancelled; a subsystem op cannot
  be recalled once sent);
* peer death: ``peer_dead`` plus the fd that becomes readable when the peer
  goes away;
* spinning: a ring with a ``wait_mode`` other than ``"interrupt"`` answers in
  microseconds, worth a short spin after submitting.

Every ring kind spells them the same (``enable_eventfd`` or ``set_async``,
``peer_fd``, ``live_user_data``); this module is the only place that asks.
"""

from __future__ import annotations

import dataclasses
from typing import Any


@dataclasses.dataclass(frozen=True)
class RingCaps:
    """The capabilities of one ring, as AsyncRing uses them."""

    cancellable: bool        # ops can be recalled with prep_cancel
    data_results: bool       # completions may carry data (bytes) besides res
    has_peer: bool           # another process answers: it may die
    default_spin_us: float   # spin after submitting (subsystems not in interrupt mode)

    @classmethod
    def of(cls, ring: Any) -> RingCaps:
        for verb in ("submit", "reap", "prep_nop"):
            if not callable(getattr(ring, verb, None)):
                raise TypeError(f"AsyncRing needs a ring with {verb}(); "
                                f"{type(ring).__name__} has none")
        has_peer = hasattr(ring, "peer_dead")
        # the notification mode: `mode` (newer spelling), else `wait_mode`
        mode = getattr(ring, "mode", None) if has_peer else "interrupt"
        if not isinstance(mode, str):
            mode = getattr(ring, "wait_mode", "interrupt")
        return cls(cancellable=callable(getattr(ring, "prep_cancel", None)),
                   data_results=callable(getattr(ring, "prep_call", None)),
                   has_peer=has_peer,
                   default_spin_us=20.0 if has_peer and mode != "interrupt" else 0.0)


def completion_fd(ring: Any) -> int:
    """Turn on eventfd wake-ups for the ring's completions; return the fd."""
    enable = getattr(ring, "enable_eventfd", None)
    if enable is not None:
        return int(enable())
    set_async = getattr(ring, "set_async", None)
    if set_async is None:
        raise TypeError(f"{type(ring).__name__} offers no completion eventfd "
                        f"(enable_eventfd or set_async)")
    return int(set_async(True))


def stop_completion_fd(ring: Any) -> None:
    """Undo :func:`completion_fd` where that means something (a subsystem
    client returns to synchronous use; a kernel ring keeps its eventfd)."""
    set_async = getattr(ring, "set_async", None)
    if set_async is not None and not ring.closed:
        set_async(False)


def peer_fd(ring: Any) -> int:
    """The fd that becomes readable when the ring's peer dies (-1: none)."""
    get = getattr(ring, "peer_fd", None)
    return int(get()) if get is not None else -1


def live_user_data(ring: Any) -> list[Any]:
    """The user_data of every op still in flight."""
    get = getattr(ring, "live_user_data", None)
    return list(get()) if get is not None else []
