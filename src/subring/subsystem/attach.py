"""The attach protocol, both sides (the control plane of user-space subsystems).

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

This module owns every message and every check of the exchange: the framing
(:func:`send`, :func:`recv`), the client's hello and its reading of the reply
(:func:`hello`, :func:`check_reply`), the server's reading of a hello and its
replies (:func:`parse_hello`, :func:`attach_reply`, :func:`refusal`), and the
two errors a client raises when it is turned away.  Servers and clients call
it; neither spells a message of its own.
"""

from __future__ import annotations

import errno
import json
import os
import socket
import stat
import time
from typing import Any

from .. import _core
from ..errors import SubringError

__all__ = ["ABI_VERSION", "MAX_FDS", "MAX_MESSAGE", "PROTOCOL", "AbiMismatchError",
           "AttachRefusedError", "attach_reply", "check_reply", "close_fds", "exchange",
           "get_int", "hello", "is_stat_request", "open_control", "parse_hello", "recv", "refusal",
           "replace_stale_socket", "send", "stat_request"]

# The version of these JSON messages (the "subring" key of a hello).
PROTOCOL = 1
# The layout of the shared ring region (abi.h's SR_URING_ABI_VERSION), named in
# the attach reply so that a client refuses a server built from another layout
# before it maps anything.  Defined once, in C (tests/project/test_abi_consistency.py
# checks the reply, the region header and abi.h agree).
ABI_VERSION: int = _core.URING_ABI_VERSION
MAX_MESSAGE = 65536
MAX_FDS = 4


class AttachRefusedError(SubringError, ConnectionError):
    """The subsystem refused this connection, and said why.

    ``reason`` is the server's text, ``code`` a short machine-readable word
    (``"uid"``: this user may not attach; ``"busy"``: too many connections
    (in total or not yet attached for this uid); ``"fd-limit"``: the server
    is out of file descriptors; ``"timeout"``: no hello in time;
    ``"protocol"``: a bad hello), ``address`` the socket path."""

    def __init__(self, address: str, reason: str, code: str = "") -> None:
        super().__init__(f"{address}: attach refused: {reason}")
        self.address = address
        self.reason = reason
        self.code = code


class AbiMismatchError(SubringError, ConnectionError):
    """The subsystem shares rings laid out for another ABI version (a server
    built from another subring release): attaching would misread its memory.

    ``server_abi`` is the version in the server's attach reply (None if it
    sent none), ``client_abi`` this build's, ``address`` the socket path."""

    def __init__(self, address: str, server_abi: object, client_abi: int) -> None:
        super().__init__(f"{address}: the subsystem speaks ring ABI {server_abi}, this "
                         f"subring speaks {client_abi}: use the same subring version on both "
                         "sides")
        self.address = address
        self.server_abi = server_abi
        self.client_abi = client_abi


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
        close_fds(fds)
        return None, []
    if flags & (socket.MSG_TRUNC | socket.MSG_CTRUNC):
        close_fds(fds)
        raise ValueError("control message truncated")
    try:
        obj = json.loads(data)
        if not isinstance(obj, dict):
            raise ValueError("control message is not an object")  # noqa: TRY004 - bad input
    except (ValueError, RecursionError) as e:   # untrusted input: never more than this
        close_fds(fds)
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


def close_fds(fds: list[int] | tuple[int, ...]) -> None:
    """Close descriptors that came with a message nobody keeps."""
    for fd in fds:
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


# -- the client's side ---------------------------------------------------------------

def hello(entries: int, slot_size: int, mode: str) -> dict[str, Any]:
    """The first message of an attach (the server may cap what it asks for)."""
    return {"subring": PROTOCOL, "entries": entries, "slot_size": slot_size, "mode": mode,
            "pid": os.getpid()}


def stat_request() -> dict[str, Any]:
    """The first (and only) message of a statistics query."""
    return {"subring": PROTOCOL, "cmd": "stat"}


def check_reply(address: str, reply: dict[str, Any], fds: list[int], *,
                nfds: int) -> dict[str, Any]:
    """The server's answer to a hello (``nfds=3``) or a statistics query
    (``nfds=0``), checked: a refusal raises :class:`AttachRefusedError`, an
    attach reply for another ring layout :class:`AbiMismatchError`, a reply
    without the ``nfds`` descriptors ``ConnectionError``.  The descriptors are
    closed on every error; on success the caller owns them."""
    try:
        if not reply.get("ok"):
            raise AttachRefusedError(address, str(reply.get("error")),
                                     str(reply.get("refused", "")))
        if nfds and reply.get("abi") != ABI_VERSION:
            raise AbiMismatchError(address, reply.get("abi"), ABI_VERSION)
        if len(fds) != nfds:
            raise ConnectionError(f"{address}: attach reply carried {len(fds)} fds, not {nfds}")
    except BaseException:
        close_fds(fds)
        raise
    return reply


# -- the server's side ---------------------------------------------------------------

def parse_hello(msg: dict[str, Any], max_entries: int, max_slot_size: int) -> tuple[int, int]:
    """(entries, slot_size) for a client's hello, within the server's limits:
    entries a power of two, slot_size a multiple of 64 (>= 64).  A hello of
    another protocol or with non-integer fields raises ValueError."""
    if msg.get("subring") != PROTOCOL:
        raise ValueError("unsupported protocol version")
    entries = get_int(msg, "entries", 256, 1, 1 << 20)
    slot_size = get_int(msg, "slot_size", 4096, 64, 1 << 40, clamp_low=True)
    entries = min(1 << (entries - 1).bit_length(), max_entries)
    slot_size = (max(64, min(slot_size, max_slot_size)) + 63) & ~63
    return entries, slot_size


def is_stat_request(msg: dict[str, Any]) -> bool:
    """True for the first message of a statistics query."""
    return msg.get("cmd") == "stat" and msg.get("subring") == PROTOCOL


def attach_reply(name: str, ops: list[list[Any]], entries: int,
                 slot_size: int) -> dict[str, Any]:
    """The server's reply to an accepted hello (sent with the region memfd,
    the doorbell and the completion eventfd)."""
    return {"ok": True, "abi": ABI_VERSION, "name": name, "ops": ops, "entries": entries,
            "slot_size": slot_size, "server_pid": os.getpid()}


def refusal(reason: str, code: str | None = None) -> dict[str, Any]:
    """A refused request: before attach ``code`` says why (the client raises
    :class:`AttachRefusedError`); after it (``None``) only the text."""
    msg: dict[str, Any] = {"ok": False, "error": reason}
    if code is not None:
        msg["refused"] = code
    return msg
