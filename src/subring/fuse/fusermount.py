"""Mounting without root: the setuid ``fusermount3`` helper of libfuse's
package (the protocol, not the library).

``fusermount3 -o OPTS -- MOUNTPOINT`` with ``_FUSE_COMMFD=<fd>`` in its
environment opens ``/dev/fuse``, mounts it (checking that the caller may use
the mount point) and sends the fd back over that Unix socket (SCM_RIGHTS).
With ``auto_unmount`` it then stays alive, holding the socket, and unmounts
when the socket closes -- i.e. when this process dies -- which is what the
root path's watchdog process does.
"""

from __future__ import annotations

import errno
import os
import shutil
import socket
import subprocess

HELPER = "fusermount3"


def available() -> str | None:
    """Path of fusermount3, or None."""
    return shutil.which(HELPER)


class Handle:
    """What keeps a fusermount3 mount's auto_unmount armed: the socket
    fusermount3 waits on, and the fusermount3 process itself."""

    def __init__(self, sock: socket.socket, proc: subprocess.Popen[bytes]) -> None:
        self.sock = sock
        self.proc = proc

    def close(self, timeout: float = 5.0) -> None:
        """After a clean unmount: fusermount3 sees EOF and exits."""
        self.sock.close()
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(timeout)


def mount(path: str, options: list[str], timeout: float = 10.0) -> tuple[int, Handle]:
    """Mount via fusermount3; returns (the /dev/fuse fd, the Handle to keep
    for the life of the mount and close after unmounting)."""
    helper = available()
    if helper is None:
        raise FileNotFoundError(errno.ENOENT, "fusermount3 is not installed")
    ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
    proc = None
    try:
        env = dict(os.environ, _FUSE_COMMFD=str(theirs.fileno()))
        # auto_unmount: fusermount3 stays alive after mounting, and unmounts
        # when `ours` closes (this process exiting or dying included).
        proc = subprocess.Popen([helper, "-o", ",".join(options + ["auto_unmount"]), "--", path],
                                env=env, pass_fds=(theirs.fileno(),),
                                stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                stderr=subprocess.PIPE)
        theirs.close()
        ours.settimeout(timeout)
        try:
            _, fds, _, _ = socket.recv_fds(ours, 1, 1)
        except OSError:      # timeout included
            fds = []
        if not fds:
            proc.kill()
            _, err = proc.communicate(timeout=timeout)
            raise PermissionError(errno.EPERM, "fusermount3 could not mount: " +
                                  err.decode(errors="replace").strip(), path)
        os.set_inheritable(fds[0], False)
        if proc.stderr is not None:
            proc.stderr.close()
        ours.settimeout(None)
        return fds[0], Handle(ours, proc)
    except BaseException:
        ours.close()
        theirs.close()
        if proc is not None and proc.poll() is None:
            proc.kill()
            proc.wait(timeout)
        raise


def unmount(path: str, lazy: bool = False, timeout: float = 10.0) -> None:
    """``fusermount3 -u [-z] path``; OSError(EBUSY) when busy (not lazy)."""
    helper = available()
    if helper is None:
        raise FileNotFoundError(errno.ENOENT, "fusermount3 is not installed")
    args = [helper, "-u", "-q"] + (["-z"] if lazy else []) + ["--", path]
    out = subprocess.run(args, capture_output=True, timeout=timeout, check=False)
    if out.returncode != 0:
        text = out.stderr.decode(errors="replace").strip()
        if "not mounted" in text or "not found in" in text or "entry for" in text:
            raise OSError(errno.EINVAL, text, path)
        raise OSError(errno.EBUSY if "busy" in text else errno.EPERM, text, path)
