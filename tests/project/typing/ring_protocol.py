"""Code written against subring.Ring, used with both ring kinds.

tests/project/test_api_ring.py type-checks this file with ``mypy --strict``
(both KernelRing and SubsystemClient must satisfy the protocol statically)
and runs it against a real kernel ring and a real subsystem.
"""

from __future__ import annotations

import array

import subring
from subring.ring import RingCounters


def nops(ring: subring.Ring, n: int, timeout: float = 5.0) -> RingCounters:
    """Run ``n`` nops to completion through the shared verbs only."""
    assert ring.prep_nops(n, user_data=100) == n
    ring.prep_nop(user_data=-1)
    got: list[int] = []
    ud, res = array.array("Q", bytes(8 * (n + 1))), array.array("i", bytes(4 * (n + 1)))
    while ring.inflight:
        if not ring.cq_ready and not ring.submit_and_wait(1, timeout):
            raise TimeoutError(f"{ring.inflight} ops still in flight")
        if len(got) < n:
            k = ring.reap_into(ud, res)
            got += ud[:k]
        else:
            got += [c.user_data for c in ring.reap()]
    assert sorted(got)[:n] == list(range(100, 100 + n)), got
    return ring.statistics()


def with_kernel() -> str:
    with subring.KernelRing(16) as ring:
        st = nops(ring, 8)
    return st.backend


def with_client(address: str) -> str:
    with subring.connect(address, entries=16) as client:
        st = nops(client, 8)
    return st.backend


def close_any(ring: subring.Ring) -> bool:
    ring.close(timeout=1.0)
    return ring.closed
