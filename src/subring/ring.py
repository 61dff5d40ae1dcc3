"""The Ring protocol: the verbs every kind of ring shares.

subring speaks one ring ABI to several kinds of peer.  Whatever is on the
other side -- the kernel (:class:`~subring.KernelRing`) or a subsystem process
(:class:`~subring.SubsystemClient`, from :func:`~subring.connect`) -- a ring
is used the same way: prepare ops, submit, wait, reap, look at statistics,
close.  :class:`Ring` names exactly those shared verbs, so code written
against it (an event-loop adapter, a benchmark, a test) takes any ring::

    def drain(ring: subring.Ring, timeout: float = 5.0) -> list[subring.Completion]:
        got = []
        while ring.inflight:
            if not ring.submit_and_wait(1, timeout):
                raise TimeoutError
            got += ring.reap()
        return got

It is a structural protocol (``typing.Protocol``): rings do not inherit from
it, they simply have these members, and ``isinstance(x, Ring)`` checks that
they are all there (``runtime_checkable``: presence, not signatures; mypy
checks the signatures).

What the kinds do *not* share is left out on purpose and asked of the ring
itself when needed (``subring.aio`` does that in one place):

* recalling an op: only a kernel ring has ``prep_cancel``/``cancel`` -- an op
  sent to a subsystem cannot be recalled, it always gets its handler's result
  (or ``ECONNRESET`` if the subsystem dies);
* the ops themselves: ``prep_read``, ``prep_accept``... (kernel) versus
  ``prep_call``, ``prep_calls``... (subsystem);
* completion wake-ups: ``enable_eventfd()`` (kernel) versus ``set_async()``
  (subsystem); a peer that can die: ``peer_dead``/``peer_fd()`` (subsystem).

Shared verbs whose behaviour differs by kind, each documented on the class:

* ``close(timeout)``: a kernel ring *drains* -- it cancels every op in flight
  and waits (up to ``timeout``) for their final completions, because the
  kernel may write into their buffers until then.  A subsystem client
  *abandons* them at once -- their results are dropped (the subsystem
  finishes them into nothing) and ``timeout`` is not used.  On both, the ring
  is closed afterwards (every verb raises :class:`~subring.RingClosedError`),
  ``inflight`` is 0 and unreaped completions are discarded.
* ``submit()``: returns the SQEs the peer has not taken yet on an SQPOLL
  kernel ring (whose kernel thread takes them on its own); the number
  published otherwise.
* ``statistics()``: each kind returns its own frozen dataclass; all carry
  the :class:`RingCounters` fields, ``backend`` says which kind it is.

``tests/contract/`` runs every shared verb over every kernel-ring
configuration and a subsystem client in each notification mode.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

if TYPE_CHECKING:
    from typing import Self

    from typing_extensions import Buffer

    from ._core import Completion

__all__ = ["Ring", "RingCounters", "Statistics"]


@runtime_checkable
class Statistics(Protocol):
    """What every ``statistics()`` snapshot in subring has: a frozen
    dataclass whose ``backend`` names what it describes (``"kernel"``,
    ``"subsystem-client"``, ``"subsystem"``, ``"asyncio"``, ``"buffer-pool"``,
    ``"executor"``, ``"fuse-uring"``/``"fuse-classic"``)."""

    @property
    def backend(self) -> str: ...


@runtime_checkable
class RingCounters(Statistics, Protocol):
    """The counters every ring's ``statistics()`` has, whatever its kind."""

    @property
    def submitted(self) -> int: ...       # SQEs the peer took
    @property
    def completed(self) -> int: ...       # final completions delivered
    @property
    def inflight(self) -> int: ...        # ops prepared and not yet finally completed
    @property
    def max_inflight(self) -> int: ...    # the cap on ops in flight


@runtime_checkable
class Ring(Protocol):
    """The verbs every ring shares (see the module docstring for what each
    kind adds, and where shared verbs differ)."""

    # -- state ------------------------------------------------------------------

    @property
    def closed(self) -> bool:
        """True after :meth:`close` (and in a forked child's copy)."""
    @property
    def inflight(self) -> int:
        """Ops prepared and not yet finally completed."""
    @property
    def max_inflight(self) -> int:
        """Cap on ops in flight; one more raises RingFullError (nothing lost)."""
    @property
    def sq_entries(self) -> int:
        """Submission ring size."""
    @property
    def cq_entries(self) -> int:
        """Completion ring size."""
    # Declared for type checkers only: on Python 3.11, isinstance() against a
    # runtime-checkable protocol *reads* every data member, and these three
    # raise RingClosedError on a closed ring (an isinstance() that raises is
    # worse than one that checks a little less).  3.12+ would not read them.
    if TYPE_CHECKING:
        @property
        def sq_space(self) -> int:
            """Free submission entries now."""
        @property
        def sq_pending(self) -> int:
            """Submission entries published that the peer has not taken yet."""
        @property
        def cq_ready(self) -> int:
            """Completions ready to reap now."""

    # -- prepare, submit, wait, reap -------------------------------------------

    def prep_nop(self, user_data: Any = None, flags: int = 0) -> int:
        """Prepare an op that does nothing (the peer answers res 0).  Returns
        its token."""
    def prep_nops(self, count: int, user_data: int = 0, flags: int = 0) -> int:
        """Prepare ``count`` nops with user_data ``user_data + k``."""
    def submit(self) -> int:
        """Publish what is prepared; never waits."""
    def submit_and_wait(self, wait_nr: int = 1, timeout: float | None = None) -> int:
        """Publish, then wait until ``wait_nr`` completions are ready or
        ``timeout`` passed (not an error).  Returns the number ready."""
    def reap(self, max: int | None = None) -> list[Completion]:
        """Take up to ``max`` ready completions; never blocks."""
    def reap_into(self, user_data_out: Buffer, res_out: Buffer,
                  flags_out: Buffer | None = None) -> int:
        """Reap into caller-owned arrays (8-byte user_data, 4-byte res and
        flags).  Returns how many."""
    def live_user_data(self) -> list[Any]:
        """The user_data of every op in flight."""

    # -- introspection and lifetime ----------------------------------------------

    def statistics(self) -> RingCounters:
        """A frozen snapshot; ``backend`` names the kind of ring."""
    def close(self, timeout: float | None = ...) -> None:
        """Close the ring: a kernel ring drains its ops in flight (up to
        ``timeout``), a subsystem client abandons them.  Idempotent."""
    def __enter__(self) -> Self: ...
    def __exit__(self, *exc: object) -> None: ...
