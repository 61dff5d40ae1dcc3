"""What a subsystem's handlers see: ``@op``, the op table, requests.

A handler receives a :class:`~subring.Request` (``op``, ``arg0``, ``arg1``,
``data``, ``user_data``, ``client``) and returns

* ``None`` (res 0) or an ``int`` (res; negative means -errno),
* a bytes-like object: copied into the op's result slot (res = its length),
* :data:`subring.PENDING`: it will call ``req.complete(value)``,
  ``req.fail(errno, text)`` or ``req.fail_with(exc)`` later (from the serving
  thread), or it returned ``self.defer_to_thread(req, fn, *args)`` (blocking
  work on a worker thread, finished on the serving thread); a request dropped
  without completion completes with ``-ECANCELED``;

or raises: ``OSError`` keeps its errno, ``KeyError`` -> ENOENT, ``ValueError``/
``TypeError`` -> EINVAL, ``NotImplementedError`` -> ENOSYS, anything else ->
EIO; the text ``"Type: message"`` travels to the client
(``Completion.error_text``, and the message of ``Completion.result()``).  The
subsystem keeps running.  ``KeyboardInterrupt``/``SystemExit`` stop it (after
every taken op got its completion).

``@subring.op(batch=True)`` handlers get a list of requests (consecutive ops of
that kind in one batch) and return one result for all, a sequence of results,
or PENDING; requests a short sequence has no result for fail with EINVAL (the
same rule as vector handlers).  The serving loop is one thread: a handler
that blocks stalls every client (use ``defer_to_thread``).

``req.data`` is zero-copy: inline payloads live in the request, larger ones in
the op's slot of the shared region, pool payloads in the client's BufferPool
(writable: handlers may write results in place).  It is valid until the
request completes; copy what you keep.

This module holds the handler-facing names (:func:`op`, :class:`OpSpec`,
:class:`ClientInfo`, :data:`PENDING`, :class:`Request`, :class:`Batch`) and
builds a subsystem's op table from its ``@op`` methods; serving is in
:mod:`subring.subsystem.server`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar, overload

from .. import _core

__all__ = ["PENDING", "Batch", "ClientInfo", "OpSpec", "Request", "bound_handlers", "op",
           "op_table"]

#: a handler's return value: it will complete the request later
PENDING = _core.PENDING
Request = _core.Request
Batch = _core.Batch

# the most ops a subsystem has (an SQE's opcode is one byte; index 0 is nop)
MAX_OPS = 255


@dataclass(frozen=True)
class OpSpec:
    """One entry of a subsystem's op table (what clients learn at attach)."""

    index: int
    name: str
    batch: int      # 0 per-op, 1 batch (list of Requests), 2 vector (Batch)
    doc: str


@dataclass(frozen=True)
class ClientInfo:
    """Who is on the other side of a connection (from SO_PEERCRED)."""

    pid: int
    uid: int
    gid: int
    token: int


_Handler = TypeVar("_Handler", bound=Callable[..., Any])


@overload
def op(fn: _Handler, *, batch: bool = False, vector: bool = False,
       name: str | None = None) -> _Handler: ...
@overload
def op(fn: None = None, *, batch: bool = False, vector: bool = False,
       name: str | None = None) -> Callable[[_Handler], _Handler]: ...
def op(fn: Callable[..., Any] | None = None, *, batch: bool = False, vector: bool = False,
       name: str | None = None) -> Any:
    """Mark a method as a subsystem operation.

    ``@op``: called once per request with a :class:`Request`.
    ``@op(batch=True)``: called with a list of Requests (a run of consecutive
    ops of this kind).  ``@op(vector=True)``: called with one :class:`Batch`
    -- every payload back to back in ``batch.data`` (``offsets``, ``arg0``,
    ``arg1`` as arrays) and no per-message Python object; return None / an
    int for all, or one int per op (a sequence, ``array('i')``, int32 NumPy).
    ``@op(name="other_name")`` renames it."""
    if batch and vector:
        raise ValueError("an op is batch or vector, not both")

    def mark(f: _Handler) -> _Handler:
        f.__subring_op__ = {"batch": 2 if vector else int(batch),  # type: ignore[attr-defined]
                            "name": name or f.__name__}
        return f

    return mark(fn) if fn is not None else mark


def op_table(cls: type) -> list[OpSpec]:
    """The op table of subsystem class ``cls``: index 0 is the built-in
    ``nop`` (answered by the C core), then every ``@op`` method in MRO order
    from the base down (a subclass's override keeps its base's index)."""
    table = [OpSpec(0, "nop", 0, "No operation (answered without Python).")]
    seen: set[str] = {"nop"}
    for klass in reversed(cls.__mro__):
        for fn in vars(klass).values():
            meta = getattr(fn, "__subring_op__", None)
            if meta is None or meta["name"] in seen:
                continue
            seen.add(meta["name"])
            table.append(OpSpec(len(table), meta["name"], meta["batch"],
                                (fn.__doc__ or "").strip().split("\n")[0]))
    if len(table) > MAX_OPS + 1:
        raise ValueError(f"a subsystem has at most {MAX_OPS} operations")
    return table


def bound_handlers(subsystem: Any) -> list[Any]:
    """What the C serving loop calls, by op index: None for the built-in
    ``nop``, then ``(bound method, kind)`` per entry of ``subsystem.op_table()``
    (kind 0 per-op, 1 batch, 2 vector)."""
    out: list[Any] = [None]
    attrs = {getattr(fn, "__subring_op__", {}).get("name"): attr
             for klass in type(subsystem).__mro__ for attr, fn in vars(klass).items()
             if hasattr(fn, "__subring_op__")}
    for spec in subsystem.op_table()[1:]:
        out.append((getattr(subsystem, attrs[spec.name]), spec.batch))
    return out
