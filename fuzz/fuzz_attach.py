"""Fuzz the attach handshake and the control channel: a Subsystem serves in
a thread of this process; each input becomes one or two control messages
(raw bytes, or JSON with fuzzed keys, types and values; optionally a pool
registration carrying a memfd of fuzzed size and seals) sent by a raw
client.  The server must answer or hang up, never die; a well-behaved
client must still attach afterwards; fds must not grow."""

from __future__ import annotations

import fcntl
import json
import os
import socket
import tempfile
import threading

from _common import atheris, instrument, instrumented, main

with instrumented():
    import subring
    from subring.subsystem import attach


class Target(subring.Subsystem):
    max_entries = 256
    max_slot_size = 65536

    @subring.op
    def echo(self, req):
        return bytes(req.data)


class Harness:
    def __init__(self) -> None:
        self.dir = tempfile.mkdtemp(prefix="fuzz-attach-")
        self.path = os.path.join(self.dir, "s.sock")
        self.server = Target()
        ready = threading.Event()
        self.thread = threading.Thread(
            target=self.server.serve, args=(self.path,), kwargs={"ready": ready.set},
            daemon=True)
        self.thread.start()
        if not ready.wait(10):
            raise RuntimeError("server did not start")
        self.n = 0
        self.check_good()
        self.fds = len(os.listdir("/proc/self/fd"))

    def check_good(self) -> None:
        if not self.thread.is_alive():
            raise AssertionError("the server thread died")
        with subring.connect(self.path, timeout=5) as c:
            assert c.call("echo", b"ok", timeout=5) == b"ok"

    @instrument
    def message(self, fdp) -> tuple[bytes, list[int]]:
        kind = fdp.ConsumeIntInRange(0, 3)
        if kind == 0:
            return fdp.ConsumeBytes(fdp.ConsumeIntInRange(0, 600)), []
        msg: dict = {}
        for _ in range(fdp.ConsumeIntInRange(0, 6)):
            key = fdp.PickValueInList(["subring", "entries", "slot_size", "pid", "cmd", "count",
                                       "size", "x"])
            t = fdp.ConsumeIntInRange(0, 6)
            if t == 0:
                val = fdp.ConsumeInt(8)
            elif t == 1:
                val = fdp.ConsumeIntInRange(-2, 70000)
            elif t == 2:
                val = fdp.ConsumeUnicodeNoSurrogates(12)
            elif t == 3:
                val = fdp.ConsumeBool()
            elif t == 4:
                val = None
            elif t == 5:
                val = fdp.ConsumeFloat()
            else:
                val = [fdp.ConsumeIntInRange(0, 9)]
            msg[key] = val
        if kind == 2:
            msg.setdefault("subring", attach.PROTOCOL)
        if kind == 3:
            msg["cmd"] = "pool"
        try:
            raw = json.dumps(msg).encode()
        except ValueError:                     # NaN etc. are fine for json; guard anyway
            raw = b"{}"
        fds = []
        if fdp.ConsumeBool():
            fd = os.memfd_create("fuzz-pool", os.MFD_CLOEXEC | os.MFD_ALLOW_SEALING)
            os.ftruncate(fd, fdp.ConsumeIntInRange(0, 1 << 20))
            if fdp.ConsumeBool():
                fcntl.fcntl(fd, fcntl.F_ADD_SEALS, fcntl.F_SEAL_SHRINK | fcntl.F_SEAL_GROW)
            fds.append(fd)
        return raw, fds

    def one(self, data: bytes) -> None:
        fdp = atheris.FuzzedDataProvider(data) if atheris else _MiniProvider(data)
        s = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET | socket.SOCK_CLOEXEC)
        mine: list[int] = []
        try:
            s.settimeout(5)
            s.connect(self.path)
            for _ in range(fdp.ConsumeIntInRange(1, 3)):
                raw, fds = self.message(fdp)
                mine += fds
                try:
                    if fds:
                        socket.send_fds(s, [raw or b" "], fds)
                    else:
                        s.send(raw or b" ")
                    reply, rfds, _, _ = socket.recv_fds(s, attach.MAX_MESSAGE, attach.MAX_FDS)
                except (BrokenPipeError, ConnectionResetError):
                    break
                except TimeoutError:
                    raise AssertionError("the server neither answered nor hung up in 5 s")
                for fd in rfds:
                    os.close(fd)
                if not reply:
                    break
        finally:
            s.close()
            for fd in mine:
                os.close(fd)
        self.n += 1
        if self.n % 200 == 0:
            self.check_good()
            fds = len(os.listdir("/proc/self/fd"))
            if fds > self.fds + 8:
                raise AssertionError(f"fds grew from {self.fds} to {fds}")


class _MiniProvider:
    """The few FuzzedDataProvider calls used above, for replay without atheris."""

    def __init__(self, data: bytes) -> None:
        self.d = data
        self.i = 0

    def _take(self, n: int) -> bytes:
        b = self.d[self.i:self.i + n]
        self.i += len(b)
        return b

    def ConsumeIntInRange(self, lo: int, hi: int) -> int:
        v = int.from_bytes(self._take(4), "little")
        return lo + v % (hi - lo + 1)

    def ConsumeInt(self, n: int) -> int:
        return int.from_bytes(self._take(n), "little", signed=True)

    def ConsumeBytes(self, n: int) -> bytes:
        return self._take(n)

    def ConsumeUnicodeNoSurrogates(self, n: int) -> str:
        return self._take(n).decode("latin-1")

    def ConsumeBool(self) -> bool:
        return bool(self._take(1)[:1] and self._take(0) == b"" and self.d[self.i - 1] & 1)

    def ConsumeFloat(self) -> float:
        return float(self.ConsumeInt(4)) / 7.0

    def PickValueInList(self, xs):
        return xs[self.ConsumeIntInRange(0, len(xs) - 1)]


H: Harness | None = None


def test_one_input(data: bytes) -> None:
    global H
    if H is None:
        H = Harness()
    H.one(data)


if __name__ == "__main__":
    main(test_one_input)
