"""The attach protocol's messages (control plane of user-space subsystems).

A client connects to the subsystem's Unix socket (SOCK_SEQPACKET: message
boundaries are kept) and the two exchange small JSON messages, with file
descriptors attached as SCM_RIGHTS ancillary data:

    client -> server   {"subring": 1, "entries": N, "slot_size": S, "mode": M}
    server -> client   {"ok": true, "abi": ABI_VERSION, "name": ..., "ops": [[name, batch, doc]...],
                        "entries": N', "slot_size": S', "server_pid": P}
                       + fds [region memfd, doorbell eventfd, completion eventfd]
    client -> server   {"cmd": "pool", "count": C, "size": Z} + fds [pool memfd]
    server -> client   {"ok": true} | {"ok": false, "error": "..."}

A statistics query is a connection of its own whose first message is
``{"subring": 1, "cmd": "stat"}``; the server answers ``{"ok": true, "stat":
{...}}`` and closes it (it never attaches).

A server that refuses a connection (uid not allowed, too many connections,
no hello in time, fd limit) sends ``{"ok": false, "error": text, "refused":
code}`` and closes it -- possibly before the client's hello, so a client
that cannot send its hello still reads the reason.

After the attach reply the socket carries no data path traffic: it stays open
only as the control channel and as the death detector (either side closing it
-- or dying -- makes the other's end readable/HUP).
"""

from __future__ import annotations

import errno
import json
import os
import socket
import stat
import time
from typing import Any

from . import _core

PROTOCOL = 1
# The layout of the shared ring region (abi.h's SR_URING_ABI_VERSION), named in
# the attach reply so that a client refuses a server built from another layout
# before it maps anything.  Defined once, in C.
ABI_VERSION: int = _core.URING_ABI_VERSION
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
            raise ValueError("control message is not an object")  # noqa: TRY004 - bad input
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
        raise ValueError(f"{key} must be an integer")  # noqa: TRY004 - untrusted input
    if v < lo and not clamp_low:
        raise ValueError(f"{key} must be >= {lo}")
    return max(lo, min(v, hi))


def _close(fd: int) -> None:
    import os

    try:
        os.close(fd)
    except OSError:
        pass


def _path_error(address: str) -> OSError:
    """Why connecting to ``address`` was refused, naming the path."""
    try:
        st = os.stat(address)
    except FileNotFoundError:
        return FileNotFoundError(errno.ENOENT, "no subsystem socket at this path", address)
    except OSError as e:
        return type(e)(e.errno, e.strerror, address)
    if not stat.S_ISSOCK(st.st_mode):
        return ConnectionRefusedError(errno.ECONNREFUSED,
                                      "not a socket (is the path right?)", address)
    return ConnectionRefusedError(errno.ECONNREFUSED,
                                  "nobody is serving this socket (stale, or the "
                                  "subsystem is starting)", address)


def open_control(address: str, timeout: float | None, wait: bool) -> socket.socket:
    """A connected SOCK_SEQPACKET socket to ``address``.

    Without ``wait``, a missing path, a non-socket or a socket nobody serves
    fail at once with ``FileNotFoundError`` / ``ConnectionRefusedError`` whose
    ``filename`` is the path; with ``wait`` those are retried until ``timeout``
    (a subsystem that is starting).  Permission errors never wait."""
    deadline = None if timeout is None else time.monotonic() + timeout
    while True:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET | socket.SOCK_CLOEXEC)
        try:
            if deadline is not None:
                sock.settimeout(max(0.01, deadline - time.monotonic()))
            sock.connect(address)
            return sock
        except (FileNotFoundError, ConnectionRefusedError):
            sock.close()
            if not wait or (deadline is not None and time.monotonic() >= deadline):
                raise _path_error(address) from None
            time.sleep(0.01)
        except TimeoutError:
            sock.close()
            raise TimeoutError(errno.ETIMEDOUT, f"no answer within {timeout} s",
                               address) from None
        except OSError as e:
            sock.close()
            if e.filename is None:
                raise type(e)(e.errno, e.strerror, address) from None
            raise
        except BaseException:
            sock.close()
            raise


def exchange(sock: socket.socket, msg: dict[str, Any]) -> tuple[dict[str, Any] | None, list[int]]:
    """Send ``msg``, read the reply.  A server that refused the connection may
    have closed it before our send: its refusal is still there to read."""
    try:
        send(sock, msg)
    except (BrokenPipeError, ConnectionResetError):
        pass
    try:
        return recv(sock)
    except ConnectionResetError:
        return None, []


def replace_stale_socket(address: str) -> None:
    """Before binding ``address``: remove a socket file nobody serves (a dead
    server's); refuse a live one (EADDRINUSE) and anything that is not a
    socket (FileExistsError: never delete a user's file)."""
    try:
        st = os.lstat(address)
    except FileNotFoundError:
        return
    if not stat.S_ISSOCK(st.st_mode):
        raise FileExistsError(errno.EEXIST, "exists and is not a socket: not replacing it",
                              address)
    probe = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET | socket.SOCK_CLOEXEC)
    try:
        probe.connect(address)
    except ConnectionRefusedError:
        # A stale socket from a dead server.  Unlink only that very file
        # (not one a concurrent starter just bound in its place).
        try:
            if os.lstat(address).st_ino == st.st_ino:
                os.unlink(address)
        except FileNotFoundError:
            pass
    except FileNotFoundError:
        pass
    else:
        raise OSError(errno.EADDRINUSE, "a subsystem already serves this socket", address)
    finally:
        probe.close()
