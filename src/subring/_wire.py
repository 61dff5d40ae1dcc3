"""The attach protocol's messages (control plane of user-space subsystems).

A client connects to the subsystem's Unix socket (SOCK_SEQPACKET: message
boundaries are kept) and the two exchange small JSON messages, with file
descriptors attached as SCM_RIGHTS ancillary data:

    client -> server   {"subring": 1, "entries": N, "slot_size": S}
    server -> client   {"ok": true, "abi": 1, "name": ..., "ops": [[name, batch, doc]...],
                        "entries": N', "slot_size": S', "server_pid": P}
                       + fds [region memfd, doorbell eventfd, completion eventfd]
    client -> server   {"cmd": "pool", "count": C, "size": Z} + fds [pool memfd]
    server -> client   {"ok": true} | {"ok": false, "error": "..."}

After the attach reply the socket carries no data path traffic: it stays open
only as the control channel and as the death detector (either side closing it
-- or dying -- makes the other's end readable/HUP).
"""

from __future__ import annotations

import json
import socket
from typing import Any

PROTOCOL = 1
MAX_MESSAGE = 65536
MAX_FDS = 4


def send(sock: socket.socket, obj: dict[str, Any], fds: list[int] | tuple[int, ...] = ()) -> None:
    data = json.dumps(obj, separators=(",", ":")).encode()
    if len(data) > MAX_MESSAGE:
        raise ValueError("control message too large")
    if fds:
        socket.send_fds(sock, [data], list(fds))
    else:
        sock.send(data)


def recv(sock: socket.socket) -> tuple[dict[str, Any] | None, list[int]]:
    """One message and its fds; (None, []) on EOF.  Malformed input raises
    ValueError (after closing any fds that came with it)."""
    data, fds, flags, _addr = socket.recv_fds(sock, MAX_MESSAGE, MAX_FDS)
    if not data:
        for fd in fds:
            _close(fd)
        return None, []
    if flags & (socket.MSG_TRUNC | socket.MSG_CTRUNC):
        for fd in fds:
            _close(fd)
        raise ValueError("control message truncated")
    try:
        obj = json.loads(data)
        if not isinstance(obj, dict):
            raise ValueError("control message is not an object")
    except (ValueError, RecursionError) as e:   # untrusted input: never more than this
        for fd in fds:
            _close(fd)
        raise ValueError(f"malformed control message: {type(e).__name__}") from None
    return obj, list(fds)


def get_int(msg: dict[str, Any], key: str, default: int, lo: int, hi: int,
            clamp_low: bool = False) -> int:
    """An integer field of an untrusted message: anything but an int is
    refused; values above ``hi`` are clamped to it, values below ``lo``
    refused (or clamped with ``clamp_low``)."""
    v = msg.get(key, default)
    if not isinstance(v, int) or isinstance(v, bool):
        raise ValueError(f"{key} must be an integer")
    if v < lo and not clamp_low:
        raise ValueError(f"{key} must be >= {lo}")
    return max(lo, min(v, hi))


def _close(fd: int) -> None:
    import os

    try:
        os.close(fd)
    except OSError:
        pass
