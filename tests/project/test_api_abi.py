"""ABI facts of the subsystem layer that Python and C both rely on, in one place.

The big ones are checked by test_abi_consistency.py (opcodes, the opcode-name
table, flags, the region layout, the attach ABI version, which Python reads
from the C core instead of repeating: ``attach.ABI_VERSION is
_core.URING_ABI_VERSION``).  Here: the size of a subsystem's op table.  An op
index travels in the SQE's one-byte ``opcode``, so a subsystem has at most
256 entries (nop + 255 ops); the C serving loop takes at most that many
handlers and the per-client permission bitmap has one bit per index.
``subring.subsystem.handlers.MAX_OPS`` says it once for Python; these tests
hold it to the C side by behaviour, not by reading C text.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from cheaders import c_compiler, compile_values

import subring
from subring import _core
from subring.subsystem import attach, handlers

CORE = Path(subring.__file__).resolve().parent / "_core"


def test_attach_abi_version_is_read_from_the_c_core_not_repeated() -> None:
    assert attach.ABI_VERSION == _core.URING_ABI_VERSION
    pkg = Path(subring.__file__).resolve().parent
    literal = re.compile(r"ABI_VERSION\w*\s*(?::\s*int\s*)?=\s*\d")
    assert [p for p in pkg.rglob("*.py") if literal.search(p.read_text())] == []


@pytest.mark.skipif(c_compiler() is None, reason="no C compiler on this machine")
def test_an_op_index_fits_the_sqe_opcode_byte(tmp_path: Path) -> None:
    got = compile_values(["sizeof(((struct io_uring_sqe *)0)->opcode)"], ['"abi.h"'],
                         tmp_path, [CORE])
    assert handlers.MAX_OPS + 1 == 1 << (8 * got["sizeof(((struct io_uring_sqe *)0)->opcode)"])


def test_the_c_loop_takes_exactly_max_ops_plus_nop_handlers() -> None:
    loop = _core.ServerLoop()
    loop.set_handlers([None] * (handlers.MAX_OPS + 1))
    with pytest.raises(ValueError):
        loop.set_handlers([None] * (handlers.MAX_OPS + 2))


def test_the_permission_bitmap_has_one_bit_per_op_index() -> None:
    q = _core.ServerQueue(8, 4096, 0)
    try:
        q.restrict(bytes((handlers.MAX_OPS + 1) // 8))
        for wrong in ((handlers.MAX_OPS + 1) // 8 - 1, (handlers.MAX_OPS + 1) // 8 + 1):
            with pytest.raises(ValueError):
                q.restrict(bytes(wrong))
    finally:
        q.detach()


def test_op_table_refuses_one_op_too_many() -> None:
    def many(n: int) -> type:
        body = {f"op{k}": subring.op(lambda self, req: None, name=f"op{k}") for k in range(n)}
        return type(f"Ops{n}", (subring.Subsystem,), body)

    assert len(many(handlers.MAX_OPS).op_table()) == handlers.MAX_OPS + 1
    with pytest.raises(ValueError, match=f"at most {handlers.MAX_OPS}"):
        many(handlers.MAX_OPS + 1).op_table()
