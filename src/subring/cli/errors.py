"""How the ``subring`` command fails: one line on stderr and an exit code."""

from __future__ import annotations

# exit codes (also listed in ``subring --help``)
EXIT_OK = 0
EXIT_FAILED = 1          # the command ran and failed (a benchmark script, a server)
EXIT_USAGE = 2           # bad arguments; a module or class that cannot be loaded
EXIT_UNAVAILABLE = 3     # io_uring (or a feature the command needs) is unavailable here
EXIT_UNREACHABLE = 4     # no subsystem answers at the address
EXIT_INTERRUPTED = 130   # Ctrl-C

EXIT_CODES_HELP = """exit codes:
  0  success
  1  the command failed (a benchmark script, the server)
  2  bad arguments, or a MODULE:CLASS that cannot be loaded
  3  io_uring, or something the command needs, is unavailable on this machine
  4  no subsystem answers at the address (missing, not a socket, refused, timed out)
  130 interrupted (Ctrl-C)"""


class CommandError(Exception):
    """A failure the command reports as ``subring: error: MESSAGE`` and
    ``code``, without a traceback."""

    def __init__(self, message: str, code: int = EXIT_FAILED) -> None:
        super().__init__(message)
        self.code = code


def unreachable(address: str, err: BaseException) -> CommandError:
    """The error for a subsystem that cannot be reached at ``address``,
    naming the path and why (missing, not a socket, refused, timed out)."""
    import os
    import stat

    try:
        st = os.stat(address)
    except OSError:
        st = None
    if st is not None and not stat.S_ISSOCK(st.st_mode):
        why = "that path is not a socket"
    elif isinstance(err, FileNotFoundError):
        why = "nothing at that path (is `subring serve` running?)"
    elif isinstance(err, PermissionError):
        why = f"permission denied ({err.strerror or err})"
    elif isinstance(err, TimeoutError):
        why = f"no answer in time ({err})"
    elif isinstance(err, ConnectionRefusedError):
        why = str(err) if "socket" in str(err) else "connection refused (nobody is serving it)"
    else:
        why = f"{type(err).__name__}: {err}"
    return CommandError(f"cannot reach a subsystem at {address}: {why}", EXIT_UNREACHABLE)
