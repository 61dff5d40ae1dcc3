"""Child process of the lost wake-up hunt: one op in flight at a time
against a server, every wait bounded; a wait that runs out is a lost
wake-up (or a dead peer) and is reported with a dump of the shared region's
indices and flags as both sides published them, plus the client's own view.

    python -m wakeup_pingpong SOCKET SECONDS CLIENT_MODE [DEPTH]
"""

from __future__ import annotations

import sys
import time

from reliab_util import emit

import subring

# struct sr_uring_region: offsets of the shared words (abi.h; the same
# constants as tests/subsys_helpers.py)
WORDS = {"sq_tail": 128, "sq_head": 192, "sq_flags": 256, "cq_tail": 320, "cq_head": 384,
         "cq_flags": 448, "state": 512}


def region_dump(pid: int | str = "self") -> list[dict]:
    """The shared words of every subring queue region mapped by ``pid``
    (read through /proc/PID/mem, so it works on another process too)."""
    out = []
    with open(f"/proc/{pid}/maps") as f:
        spans = [line.split()[0] for line in f if "memfd:subring-queue" in line]
    with open(f"/proc/{pid}/mem", "rb", buffering=0) as mem:
        for span in spans:
            start = int(span.split("-")[0], 16)
            mem.seek(start)
            head = mem.read(4096)
            out.append({k: int.from_bytes(head[o:o + 4], "little") for k, o in WORDS.items()})
    return out


def proc_state(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/stat") as f:
            data = f.read()
        state = data[data.rindex(")") + 2]
        with open(f"/proc/{pid}/wchan") as f:
            return f"{state} wchan={f.read().strip()}"
    except OSError as e:
        return f"gone ({e})"


def main() -> None:
    path, seconds, mode = sys.argv[1], float(sys.argv[2]), sys.argv[3]
    depth = int(sys.argv[4]) if len(sys.argv) > 4 else 1
    c = subring.connect(path, entries=16, mode=mode, spin_us=5, timeout=10)
    add = c.op_index("add")
    lat: list[float] = []
    errors: list[str] = []
    end = time.monotonic() + seconds
    k = 0
    while time.monotonic() < end and not errors:
        for j in range(depth):
            c.prep_call(add, None, k + j, 1, user_data=k + j)
        t0 = time.monotonic()
        got: list = []
        while len(got) < depth:
            c.submit_and_wait(depth - len(got), timeout=10)
            new = c.reap()
            got += new
            if not new:
                errors.append(
                    f"lost wake-up: no completion within 10 s (op {k}, mode {mode}); "
                    f"client: inflight={c.inflight} sq_pending={c.sq_pending} "
                    f"cq_ready={c.cq_ready} peer_dead={c.peer_dead}; shared region "
                    f"{region_dump()}; server {c.server_pid}: {proc_state(c.server_pid)}")
                break
        lat.append(time.monotonic() - t0)
        for comp in got:
            if comp.res != comp.user_data + 1:
                errors.append(f"wrong result {comp!r}")
        k += depth
    st = c.statistics()
    c.close()
    lat.sort()
    emit({"ops": k, "errors": errors, "sleeps": st.sleeps, "doorbells": st.doorbells,
          "p50_us": round(lat[len(lat) // 2] * 1e6) if lat else None,
          "max_ms": round(lat[-1] * 1e3, 1) if lat else None,
          "stalls_over_900ms": sum(1 for x in lat if x > 0.9)})


if __name__ == "__main__":
    main()
