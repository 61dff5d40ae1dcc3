"""How a call, a result or an error travels between the executor and a worker.

A *frame* is one pickle (protocol 5) and its out-of-band buffers laid out back
to back so it can be written once into a ring slot or an arena range::

    [n_oob u32][len(pickle) u32] [len(buf) u64 for each] pickle buf0 buf1 ...

A worker's answer is a one-byte tag followed by a frame (``TAG_RESULT``,
``TAG_ERROR``) or by ``BIG`` (``TAG_BIG``: the frame is too large for the
result slot and waits in the worker to be fetched into the arena), or the
single byte ``TAG_SKIPPED`` (the task was cancelled before the worker claimed
it, so it did not run).
"""

from __future__ import annotations

import pickle
import struct
from collections.abc import Callable
from typing import Any

__all__ = [
    "BIG",
    "HDR",
    "LEN",
    "TAG_BIG",
    "TAG_ERROR",
    "TAG_RESULT",
    "TAG_SKIPPED",
    "encode",
    "frame_bytes",
    "frame_size",
    "process_chunk",
    "read_frame",
    "write_frame",
]

HDR = struct.Struct("<II")      # number of out-of-band buffers, in-band pickle length
LEN = struct.Struct("<Q")
BIG = struct.Struct("<QQ")      # key, size of a result left in the worker
TAG_RESULT, TAG_ERROR, TAG_BIG, TAG_SKIPPED = b"R", b"E", b"B", b"C"


def encode(obj: Any) -> tuple[bytes, list[pickle.PickleBuffer]]:
    """Pickle ``obj`` (protocol 5); large buffers come back out of band."""
    oob: list[pickle.PickleBuffer] = []
    data = pickle.dumps(obj, protocol=5, buffer_callback=oob.append)
    return data, oob


def frame_size(data: bytes, oob: list[pickle.PickleBuffer]) -> int:
    """Bytes the frame of ``(data, oob)`` takes."""
    return HDR.size + LEN.size * len(oob) + len(data) + sum(b.raw().nbytes for b in oob)


def write_frame(dst: memoryview, data: bytes, oob: list[pickle.PickleBuffer]) -> int:
    """Write the frame into ``dst``; returns the bytes written."""
    pos = HDR.size
    HDR.pack_into(dst, 0, len(oob), len(data))
    raws = [b.raw() for b in oob]
    for r in raws:
        LEN.pack_into(dst, pos, r.nbytes)
        pos += LEN.size
    dst[pos:pos + len(data)] = data
    pos += len(data)
    for r in raws:
        dst[pos:pos + r.nbytes] = r
        pos += r.nbytes
    return pos


def frame_bytes(data: bytes, oob: list[pickle.PickleBuffer], tag: bytes = b"") -> Any:
    """A frame (optionally after a one-byte tag) in one buffer, one copy."""
    if not oob:
        return tag + HDR.pack(0, len(data)) + data
    out = bytearray(len(tag) + frame_size(data, oob))
    out[:len(tag)] = tag
    write_frame(memoryview(out)[len(tag):], data, oob)
    return out


def read_frame(src: memoryview, copy: bool) -> Any:
    """Unpickle a frame.  ``copy=False`` gives the out-of-band buffers as
    views of ``src`` (the caller keeps ``src`` alive), else private copies."""
    n, dlen = HDR.unpack_from(src, 0)
    if not n:
        return pickle.loads(src[HDR.size:HDR.size + dlen])
    pos = HDR.size
    lens = []
    for _ in range(n):
        lens.append(LEN.unpack_from(src, pos)[0])
        pos += LEN.size
    data = src[pos:pos + dlen]
    pos += dlen
    bufs = []
    for ln in lens:
        piece = src[pos:pos + ln]
        bufs.append(bytearray(piece) if copy else piece)
        pos += ln
    return pickle.loads(data, buffers=bufs)


def process_chunk(fn: Callable[..., Any], chunk: list[tuple[Any, ...]]) -> list[Any]:
    """Run one ``map`` chunk in a worker."""
    return [fn(*args) for args in chunk]
