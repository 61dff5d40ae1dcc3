#!/usr/bin/env python3
"""A reader process of bench/fuse.py: runs one measurement per command.

The benchmark keeps two of these alive for the whole run (so that no process
start-up is measured) and drives them through stdin/stdout, one JSON object
per line.  Commands::

    {"op": "stat" | "read", "path": FILE, "size": BYTES, "seconds": S,
     "chunk": N, "cpu": CPU or null, "seed": K}
    {"op": "probe", "path": FILE, "size": BYTES, "cpu": null}

``stat`` calls ``os.stat(FILE)`` and ``read`` calls ``os.pread(fd, 4096,
off)`` at random block-aligned offsets (from ``seed``), in chunks of N ops,
until S seconds of timed chunks (one untimed warm-up chunk first).  ``cpu``
pins this process to that CPU for the measurement (null: every CPU the
benchmark may use).  Each op's result is checked (the file's size; the
length of each read, and the contents of the last read of every chunk), so
a server that answers wrongly cannot look fast.  Reply:
``{"ops": N, "seconds": S}`` or ``{"error": "..."}``.  ``probe`` lists the
directory, stats the file and reads and checks a few blocks.
"""

from __future__ import annotations

import json
import os
import random
import struct
import sys
import time
from typing import Any

BLOCK = 4096
ALL_CPUS = os.sched_getaffinity(0)


class WrongAnswer(Exception):
    pass


def block_bytes(b: int) -> bytes:
    return struct.pack("<Q", b) * (BLOCK // 8)


def run_stat(path: str, size: int, seconds: float, chunk: int) -> tuple[int, float]:
    st = os.stat
    perf = time.perf_counter

    def one_chunk() -> None:
        for _ in range(chunk):
            if st(path).st_size != size:
                raise WrongAnswer(f"stat({path}).st_size != {size}")

    one_chunk()                       # warm-up, untimed
    ops, elapsed = 0, 0.0
    while elapsed < seconds:
        t0 = perf()
        one_chunk()
        elapsed += perf() - t0
        ops += chunk
    return ops, elapsed


def run_read(path: str, size: int, seconds: float, chunk: int, seed: int) -> tuple[int, float]:
    rng = random.Random(seed)
    blocks = size // BLOCK
    offs = [rng.randrange(blocks) * BLOCK for _ in range(4096)]
    fd = os.open(path, os.O_RDONLY)
    try:
        pread = os.pread
        perf = time.perf_counter
        pos = 0

        def one_chunk() -> None:
            nonlocal pos
            i = pos
            buf = b""
            for _ in range(chunk):
                buf = pread(fd, BLOCK, offs[i & 4095])
                if len(buf) != BLOCK:
                    raise WrongAnswer(f"short read: {len(buf)} bytes")
                i += 1
            off = offs[(i - 1) & 4095]
            if buf != block_bytes(off // BLOCK):
                raise WrongAnswer(f"read at offset {off} returned the wrong block")
            pos = i

        one_chunk()
        ops, elapsed = 0, 0.0
        while elapsed < seconds:
            t0 = perf()
            one_chunk()
            elapsed += perf() - t0
            ops += chunk
        return ops, elapsed
    finally:
        os.close(fd)


def run_probe(path: str, size: int) -> None:
    names = os.listdir(os.path.dirname(path))
    if names != [os.path.basename(path)]:
        raise WrongAnswer(f"listdir: {names}")
    st = os.stat(path)
    if st.st_size != size:
        raise WrongAnswer(f"st_size {st.st_size} != {size}")
    fd = os.open(path, os.O_RDONLY)
    try:
        for b in (0, 1, size // BLOCK - 1):
            if os.pread(fd, BLOCK, b * BLOCK) != block_bytes(b):
                raise WrongAnswer(f"block {b} has the wrong contents")
        if os.pread(fd, BLOCK, size) != b"":
            raise WrongAnswer("a read past the end returned data")
    finally:
        os.close(fd)


def serve_one(cmd: dict[str, Any]) -> dict[str, Any]:
    cpu = cmd.get("cpu")
    os.sched_setaffinity(0, ALL_CPUS if cpu is None else {cpu})
    op = cmd["op"]
    if op == "probe":
        run_probe(cmd["path"], cmd["size"])
        return {"ok": True}
    if op == "stat":
        ops, secs = run_stat(cmd["path"], cmd["size"], cmd["seconds"], cmd["chunk"])
    elif op == "read":
        ops, secs = run_read(cmd["path"], cmd["size"], cmd["seconds"], cmd["chunk"],
                             cmd.get("seed", 0))
    else:
        raise ValueError(f"unknown op {op!r}")
    return {"ops": ops, "seconds": secs}


def main() -> int:
    for line in sys.stdin:
        if not line.strip():
            continue
        try:
            reply = serve_one(json.loads(line))
        except Exception as e:  # noqa: BLE001 -- reported to the benchmark
            reply = {"error": f"{type(e).__name__}: {e}"}
        sys.stdout.write(json.dumps(reply) + "\n")
        sys.stdout.flush()
    return 0


if __name__ == "__main__":
    sys.exit(main())
