"""One statistics family: every ``statistics()`` in subring returns a frozen,
documented dataclass carrying a ``backend`` tag.

Walked here: KernelRing, SubsystemClient, Subsystem (with its per-client
rows), AsyncRing, BufferPool, RingExecutor -- live, from real objects -- and
the FUSE mount's class (a live FUSE snapshot needs a mount: tests/fuse checks
its backend).  "Documented" means every field has a comment on its line or is
named in the class docstring, so ``help()`` and the source say what it counts.
"""

from __future__ import annotations

import asyncio
import dataclasses
import inspect
import re
import threading
from pathlib import Path

import pytest

import subring
from subring import ring as ring_mod
from subring.aio import AsyncRing
from subring.aio.ring import AsyncRingStatistics
from subring.executor.options import ExecutorStatistics
from subring.fuse.session import FuseStatistics

FAMILY = {
    subring.RingStatistics: {"kernel"},
    subring.ClientStatistics: {"subsystem-client"},
    subring.SubsystemStatistics: {"subsystem"},
    subring.ClientRow: None,                    # a row inside SubsystemStatistics: no tag
    AsyncRingStatistics: {"asyncio"},
    subring.PoolStatistics: {"buffer-pool"},
    ExecutorStatistics: {"executor"},
    FuseStatistics: {"fuse-uring", "fuse-classic"},
}

# Fields whose documentation is asked of another module's owner (requests.md);
# each entry must still be undocumented -- remove it once it is documented.
PENDING_DOCS: set[tuple[str, str]] = set()


def _undocumented(cls: type) -> set[str]:
    src = inspect.getsource(cls)
    doc = cls.__doc__ or ""
    out = set()
    for f in dataclasses.fields(cls):
        line = re.search(rf"^\s+{f.name}\s*:[^\n]*$", src, re.M)
        assert line, f"{cls.__name__}.{f.name}: no annotation line found"
        if "#" not in line.group(0) and f"``{f.name}``" not in doc:
            out.add(f.name)
    return out


@pytest.mark.parametrize("cls", list(FAMILY), ids=lambda c: c.__name__)
def test_every_statistics_class_is_frozen_tagged_and_documented(cls: type) -> None:
    assert dataclasses.is_dataclass(cls)
    assert cls.__dataclass_params__.frozen, f"{cls.__name__} is not frozen"  # type: ignore[attr-defined]
    assert (cls.__doc__ or "").strip(), f"{cls.__name__} has no docstring"
    names = [f.name for f in dataclasses.fields(cls)]
    if FAMILY[cls] is not None:
        assert "backend" in names, f"{cls.__name__} has no backend field"
    missing = _undocumented(cls) - {f for c, f in PENDING_DOCS if c == cls.__name__}
    assert not missing, f"{cls.__name__}: fields without a comment or docstring mention: {missing}"


def test_pending_documentation_entries_are_still_needed() -> None:
    by_name = {c.__name__: c for c in FAMILY}
    for cls_name, field in PENDING_DOCS:
        assert field in _undocumented(by_name[cls_name]), \
            f"{cls_name}.{field} is documented now: drop it from PENDING_DOCS"


def _check(snapshot: object, cls: type) -> None:
    assert type(snapshot) is cls
    assert isinstance(snapshot, ring_mod.Statistics)
    want = FAMILY[cls]
    assert want is not None and snapshot.backend in want          # type: ignore[attr-defined]
    field = dataclasses.fields(snapshot)[0].name                   # type: ignore[arg-type]
    with pytest.raises(dataclasses.FrozenInstanceError):
        setattr(snapshot, field, None)


def test_kernel_ring_and_buffer_pool() -> None:
    with subring.KernelRing(8) as r:
        _check(r.statistics(), subring.RingStatistics)
        assert isinstance(r.statistics(), ring_mod.RingCounters)
    with subring.BufferPool(2, 4096) as pool:
        st = pool.statistics()
        _check(st, subring.PoolStatistics)
        assert (st.count, st.size, st.nbytes, st.closed) == (2, 4096, 8192, False)
    assert pool.statistics().closed and pool.closed


def test_subsystem_with_per_client_rows_and_its_client(tmp_path: Path) -> None:
    class Echo(subring.Subsystem):
        @subring.op
        def echo(self, req: subring.Request) -> bytes:
            return bytes(req.data)

    srv = Echo()
    path = str(tmp_path / "stats.sock")
    ready = threading.Event()
    t = threading.Thread(target=srv.serve, args=(path,), kwargs={"ready": ready.set},
                         daemon=True)
    t.start()
    try:
        assert ready.wait(10)
        with subring.connect(path, mode="interrupt") as c:
            assert c.call("echo", b"x", timeout=5) == b"x"
            _check(c.statistics(), subring.ClientStatistics)
            st = srv.statistics()
            _check(st, subring.SubsystemStatistics)
            assert isinstance(st.clients, tuple) and len(st.clients) == 1
            row = st.clients[0]
            assert type(row) is subring.ClientRow and row.submitted >= 1
            with pytest.raises(dataclasses.FrozenInstanceError):
                row.pid = 0                                        # type: ignore[misc]
            # the control-plane copy is the same family, rows and all
            remote = subring.query_statistics(path)
            assert type(remote) is subring.SubsystemStatistics
            assert [r.token for r in remote.clients] == [row.token]
    finally:
        srv.stop()
        t.join(10)
    assert not t.is_alive()


def test_async_ring() -> None:
    async def main() -> object:
        async with AsyncRing(own=True) as ar:
            await ar.nop()
            return ar.statistics()

    _check(asyncio.run(asyncio.wait_for(main(), 20)), AsyncRingStatistics)


def test_ring_executor() -> None:
    with subring.RingExecutor(max_workers=1) as ex:
        assert ex.submit(abs, -3).result(timeout=60) == 3
        _check(ex.statistics(), ExecutorStatistics)
