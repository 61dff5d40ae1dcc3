"""Subsystem subclasses used by the user-space subsystem tests.

They live in their own module so that a server process started with
``python -m subring.cli serve subsys_examples:Class`` (or a ``spawn``ed
multiprocessing child) can import them.  Keep this module free of test-only
imports (no pytest): it runs inside the server processes.
"""

from __future__ import annotations

import errno
import json
import os
import time
import zlib

import subring
from subring import PENDING, op


class EchoTest(subring.Subsystem):
    """The general-purpose test subsystem."""

    name = "echo-test"

    def __init__(self) -> None:
        super().__init__()
        self._deferred: list = []
        self._batch_sizes: list[int] = []
        self._connects = 0
        self._disconnects = 0
        self._spins = 0

    # -- plain results ------------------------------------------------------

    @op
    def echo(self, req):
        """Return the payload."""
        return bytes(req.data)

    @op
    def add(self, req):
        """arg0 + arg1."""
        return req.arg0 + req.arg1

    @op
    def ret_none(self, req):
        return None

    @op
    def ret_int(self, req):
        """Return arg0 as the result (may be negative or out of range)."""
        return req.arg0

    @op
    def ret_obj(self, req):
        """Return an unusual object, chosen by arg0."""
        return [1.5, "text", True, bytearray(b"ba"), memoryview(b"mv"), b"", object()][req.arg0]

    @op
    def nbytes(self, req):
        """Return arg0 bytes (0x5a) -- larger than the slot gives -EMSGSIZE."""
        return b"\x5a" * req.arg0

    @op
    def length(self, req):
        return len(req.data)

    @op
    def crc(self, req):
        """crc32 of the payload (31 bits, so it is a non-negative int32)."""
        return zlib.crc32(req.data) & 0x7FFFFFFF

    @op
    def writable(self, req):
        """1 if req.data is writable (pool payloads), else 0."""
        return 0 if req.data.readonly else 1

    @op
    def where(self, req):
        """Request attributes as JSON (op index, args, user_data, client pid)."""
        info = req.client
        return json.dumps({"op": req.op, "arg0": req.arg0, "arg1": req.arg1,
                           "user_data": req.user_data, "len": len(req.data),
                           "pid": getattr(info, "pid", None)}).encode()

    @op
    def pool_xor(self, req):
        """XOR the (pool) payload in place with arg0 & 0xff; return its length."""
        mv = req.data
        if mv.readonly:
            raise ValueError("pool_xor needs a writable (pool) payload")
        key = req.arg0 & 0xFF
        mv[:] = bytes(b ^ key for b in mv)
        return len(mv)

    # -- errors ---------------------------------------------------------------

    @op(name="raise")
    def raise_(self, req):
        """Raise an exception chosen by arg0 (arg1: errno for OSError)."""
        k = req.arg0
        if k == 0:
            raise KeyError("no-such-key")
        if k == 1:
            raise ValueError("bad value here")
        if k == 2:
            raise OSError(req.arg1, "custom os error")
        if k == 3:
            raise RuntimeError("boom runtime")
        if k == 4:
            raise TypeError("wrong type given")
        if k == 5:
            raise NotImplementedError("not there yet")
        if k == 6:
            raise ZeroDivisionError("division by zero!")
        if k == 7:
            raise FileNotFoundError(errno.ENOENT, "missing file")
        if k == 8:
            raise TimeoutError("took too long")
        if k == 9:
            raise PermissionError("not allowed")
        if k == 10:
            raise IndexError("index out")
        if k == 11:
            raise MemoryError("no memory")
        if k == 12:
            raise Exception("x" * 10000)      # longer than any slot
        raise AssertionError("unknown selector")

    # -- batches --------------------------------------------------------------

    @op(batch=True)
    def bsize(self, reqs):
        """Every request of the batch gets the batch's size."""
        self._batch_sizes.append(len(reqs))
        return len(reqs)

    @op(batch=True)
    def bdouble(self, reqs):
        """One result each: 2 * arg0 (or the payload's first byte * 2)."""
        return [2 * (r.arg0 if not len(r.data) else r.data[0]) for r in reqs]

    @op(batch=True)
    def bnone(self, reqs):
        return None

    @op(batch=True)
    def bshort(self, reqs):
        """Fewer results than requests: the rest fail with EINVAL."""
        return [7] * (len(reqs) // 2)

    @op(batch=True)
    def bbad(self, reqs):
        """Not a valid batch result: every request gets -EINVAL."""
        return 1.5

    @op(batch=True)
    def braise(self, reqs):
        raise KeyError("batch failed")

    @op(batch=True)
    def bbytes(self, reqs):
        """Bytes results, one per request (the payload reversed)."""
        return [bytes(r.data)[::-1] for r in reqs]

    # -- PENDING --------------------------------------------------------------

    @op
    def defer(self, req):
        """Hold the request; `flush` completes it later (with 10 * arg0)."""
        self._deferred.append(req)
        return PENDING

    @op
    def defer_drop(self, req):
        """Say PENDING and drop the request: it must complete with -ECANCELED."""
        return PENDING

    @op
    def flush(self, req):
        """Complete the deferred requests.  arg0: 0 -> complete(10 * arg0),
        1 -> fail(EBUSY, text), 2 -> complete(bytes), 3 -> write b"LATE" into
        a writable (pool) payload first, then complete(0).  Returns how many
        completions reached a live client; arg1=1 also checks that completing
        twice raises RuntimeError (returns -1 if it did not)."""
        held, self._deferred = self._deferred, []
        alive = 0
        for r in held:
            if req.arg0 == 1:
                ok = r.fail(errno.EBUSY, f"deferred {r.arg0} busy")
            elif req.arg0 == 2:
                ok = r.complete(b"late:" + str(r.arg0).encode())
            elif req.arg0 == 3:
                if not r.data.readonly:
                    r.data[:4] = b"LATE"
                ok = r.complete(0)
            else:
                ok = r.complete(10 * r.arg0)
            alive += bool(ok)
            if req.arg1 == 1:
                try:
                    r.complete(1)
                except RuntimeError:
                    pass
                else:
                    return -1
        return alive

    @op
    def held(self, req):
        return len(self._deferred)

    # -- time and state -------------------------------------------------------

    @op
    def slow(self, req):
        """Sleep arg0 milliseconds, then return arg1."""
        time.sleep(req.arg0 / 1000.0)
        return req.arg1

    @op
    def spin(self, req):
        """Busy-loop arg0 milliseconds (holds the serving thread), return arg1."""
        end = time.monotonic() + req.arg0 / 1000.0
        while time.monotonic() < end:
            pass
        self._spins += 1
        return req.arg1

    @op
    def slow_threaded(self, req):
        """Sleep arg0 ms on a worker thread (defer_to_thread), return arg1;
        arg1 < 0: raise KeyError there instead."""
        def work(ms, value):
            time.sleep(ms / 1000.0)
            if value < 0:
                raise KeyError(f"thread {value}")
            return value
        return self.defer_to_thread(req, work, req.arg0, req.arg1)

    @op
    def bad_str(self, req):
        """Raise an exception whose str() raises too."""
        class BadStr(Exception):
            def __str__(self):
                raise RuntimeError("no text for you")
        raise BadStr()

    @op
    def spins(self, req):
        """How many `spin` ops the server has run so far (all clients)."""
        return self._spins

    @op
    def stats(self, req):
        """The server's statistics() plus hook counters, as JSON."""
        st = self.statistics()
        s = st.to_dict()
        s["clients"] = len(st.clients)
        s["connects"] = self._connects
        s["disconnects"] = self._disconnects
        s["mode"] = self.mode
        s["batch_sizes"] = self._batch_sizes[-50:]
        return json.dumps(s).encode()

    @op
    def set_mode(self, req):
        """Switch the server's mode at run time: arg0 0 hybrid, 1 interrupt, 2 poll."""
        self.mode = ("hybrid", "interrupt", "poll")[req.arg0]
        return 0

    @op
    def getpid(self, req):
        return os.getpid()

    @op
    def forkchild(self, req):
        """fork() without exec: the child sleeps arg0 ms and exits.  Returns
        the child's pid."""
        pid = os.fork()
        if pid == 0:
            try:
                time.sleep(req.arg0 / 1000.0)
            finally:
                os._exit(0)
        return pid

    def on_connect(self, client):
        self._connects += 1

    def on_disconnect(self, client):
        self._disconnects += 1


class FuzzTarget(subring.Subsystem):
    """Only cheap, bounded operations: a raw client may call them with any
    arguments.  Op order matters (the fuzz model looks ops up by name)."""

    name = "fuzz-target"
    max_entries = 64

    def __init__(self) -> None:
        super().__init__()
        self._held = None

    @op
    def echo(self, req):
        return bytes(req.data)

    @op
    def add(self, req):
        return req.arg0 + req.arg1

    @op
    def fail(self, req):
        k = req.arg0 % 4
        if k == 0:
            raise KeyError("fuzz key")
        if k == 1:
            raise ValueError("fuzz value")
        if k == 2:
            raise OSError(errno.EBADMSG, "fuzz os")
        raise RuntimeError("fuzz runtime")

    @op(batch=True)
    def blen(self, reqs):
        return [len(r.data) for r in reqs]

    @op
    def defer(self, req):
        """Complete the previously held request (with its arg0 & 0x7fffffff)
        and hold this one."""
        prev, self._held = self._held, req
        if prev is not None:
            prev.complete(prev.arg0 & 0x7FFFFFFF)
        return PENDING

    @op
    def pool_xor(self, req):
        mv = req.data
        if mv.readonly:
            raise ValueError("not a pool payload")
        key = req.arg0 & 0xFF
        mv[:] = bytes(b ^ key for b in mv)
        return len(mv)

    @op
    def retsize(self, req):
        return bytes(req.arg0 & 0x1FFF)

    @op
    def stats(self, req):
        st = self.statistics()
        return json.dumps({**st.to_dict(), "clients": len(st.clients)}).encode()


class RecordSink(subring.Subsystem):
    """A vector op that keeps every call it gets (for packed records)."""

    name = "record-sink"

    def __init__(self) -> None:
        super().__init__()
        self.calls: list[tuple[bytes, int, int]] = []
        self.batches = 0

    @op(vector=True)
    def sink(self, batch):
        self.batches += 1
        d, off, a0, a1 = batch.data, batch.offsets, batch.arg0, batch.arg1
        self.calls.extend((bytes(d[off[k]:off[k + 1]]), a0[k], a1[k]) for k in range(batch.count))

    @op(vector=True)
    def per_call(self, batch):
        """One result per call: its length (a packed op still reports its count)."""
        off = batch.offsets
        return [off[k + 1] - off[k] for k in range(batch.count)]

    @op(vector=True)
    def explode(self, batch):
        raise ValueError(f"refused {batch.count} calls")

    @op
    def plain(self, req):
        return 1

    @op
    def taken(self, req):
        """The calls so far as JSON [[hex, arg0, arg1], ...], and forget them."""
        out = json.dumps([[d.hex(), a, b] for d, a, b in self.calls]).encode()
        self.calls = []
        return out


class VectorShort(subring.Subsystem):
    """A vector handler that returns fewer results than calls."""

    @op(vector=True)
    def vshort(self, batch):
        return [1] * (batch.count // 2)


class TwoClients(EchoTest):
    """At most two connections."""

    max_clients = 2


class Restricted(EchoTest):
    """Clients may call `add` (and the built-in nop) only."""

    def allowed_ops(self, client):
        return {"add"}
