"""``subring probe``: what this machine lets io_uring do, and what to do when
it does not.

Facts come from the running kernel (a real ring, :func:`subring.probe`),
``/proc`` and ``/sys``; nothing is guessed from the kernel version.
"""

from __future__ import annotations

import errno
import gzip
import os
import platform
import resource
from typing import Any

# io_uring's own limits for registration (io_uring/rsrc.c, io_uring/register.c)
MAX_REG_BUFFERS = 1 << 14             # IORING_MAX_REG_BUFFERS
MAX_REG_BUFFER_BYTES = 1 << 30        # each registered buffer: at most 1 GiB
MAX_FIXED_FILES = 1 << 20             # IORING_MAX_FIXED_FILES (and RLIMIT_NOFILE)
CAP_IPC_LOCK = 14
CAP_SYS_ADMIN = 21

_ERRNO_OF: dict[type, int] = {PermissionError: errno.EPERM, FileNotFoundError: errno.ENOENT,
                              MemoryError: errno.ENOMEM}

FUSE_URING_PARAM = "/sys/module/fuse/parameters/enable_uring"


def _read(path: str) -> str | None:
    try:
        with open(path) as f:
            return f.read().strip()
    except OSError:
        return None


def _status_field(name: str) -> str | None:
    for line in (_read("/proc/self/status") or "").splitlines():
        key, _, value = line.partition(":")
        if key == name:
            return value.strip()
    return None


def _has_cap(bit: int) -> bool | None:
    eff = _status_field("CapEff")
    return None if eff is None else bool(int(eff, 16) >> bit & 1)


def _limit(value: int) -> int | None:
    return None if value == resource.RLIM_INFINITY else value


def _kernel_config(option: str) -> str | None:
    """``y`` / ``m`` / ``n`` for CONFIG_<option> from /proc/config.gz or
    /boot/config-RELEASE; None if neither is readable."""
    text = None
    try:
        with gzip.open("/proc/config.gz", "rt") as f:
            text = f.read()
    except OSError:
        text = _read(f"/boot/config-{platform.release()}")
    if text is None:
        return None
    for line in text.splitlines():
        if line.startswith(f"CONFIG_{option}="):
            return line.split("=", 1)[1]
        if line == f"# CONFIG_{option} is not set":
            return "n"
    return "n"


def blockers() -> dict[str, Any]:
    """What can refuse io_uring_setup besides the kernel build: the sysctl
    ``kernel.io_uring_disabled`` (with ``kernel.io_uring_group``) and a
    seccomp filter on this process."""
    disabled = _read("/proc/sys/kernel/io_uring_disabled")
    group = _read("/proc/sys/kernel/io_uring_group")
    seccomp = _status_field("Seccomp")
    return {
        "io_uring_disabled": None if disabled is None else int(disabled),
        "io_uring_group": None if group is None else int(group),
        "seccomp_mode": {"0": "none", "1": "strict", "2": "filter"}.get(seccomp or "", seccomp),
        "seccomp_filters": _status_field("Seccomp_filters"),
    }


def advice(err: OSError, block: dict[str, Any]) -> str:
    """One sentence: why io_uring_setup failed here and what to do."""
    dis = block["io_uring_disabled"]
    if dis == 2:
        return ("io_uring is disabled for everyone (kernel.io_uring_disabled = 2): as root, "
                "`sysctl kernel.io_uring_disabled=0` (or 1 with kernel.io_uring_group)")
    if dis == 1 and err.errno == errno.EPERM:
        return ("io_uring is limited to root and kernel.io_uring_group (kernel.io_uring_disabled"
                " = 1): run as a member of that group, or set the sysctl to 0")
    if block["seccomp_mode"] in ("filter", "strict") and err.errno in (errno.EPERM, errno.ENOSYS):
        return ("a seccomp filter refuses io_uring_setup (containers do this by default): allow "
                "io_uring_setup/io_uring_enter/io_uring_register in the profile, e.g. "
                "`docker run --security-opt seccomp=PROFILE`")
    if err.errno == errno.ENOSYS:
        return ("this kernel has no io_uring (built without CONFIG_IO_URING, or older than 5.1);"
                " subring needs Linux 5.11+")
    if err.errno in (errno.ENOMEM, errno.EAGAIN):
        return ("the ring could not be allocated: raise the memlock limit (`ulimit -l`) or free"
                " memory")
    return f"io_uring_setup failed: {os.strerror(err.errno or 0)}"


def fuse_report() -> dict[str, Any]:
    """FUSE over io_uring: /dev/fuse, the kernel option, ``enable_uring``."""
    enable = _read(FUSE_URING_PARAM)
    module_loaded = os.path.isdir("/sys/module/fuse")
    config = _kernel_config("FUSE_IO_URING")
    if enable is None and module_loaded:
        config = config or "n"          # the fuse module has no enable_uring parameter
    out: dict[str, Any] = {
        "dev_fuse": os.path.exists("/dev/fuse"),
        "fuse_module_loaded": module_loaded,
        "config_fuse_io_uring": config,
        "enable_uring": None if enable is None else enable in ("Y", "y", "1"),
        "can_mount": _has_cap(CAP_SYS_ADMIN),
    }
    if not out["dev_fuse"]:
        out["advice"] = "/dev/fuse is missing: `modprobe fuse` (in a container: --device /dev/fuse)"
    elif enable is None:
        out["advice"] = ("no FUSE over io_uring in this kernel (needs Linux 6.14+ with "
                         "CONFIG_FUSE_IO_URING=y); subring.fuse uses the classic /dev/fuse loop")
    elif not out["enable_uring"]:
        out["advice"] = (f"available but off: as root `echo 1 > {FUSE_URING_PARAM}` (or "
                         "`subring fuse ... --enable-uring`, which restores it afterwards)")
    else:
        out["advice"] = "FUSE over io_uring is on"
    return out


def limits_report() -> dict[str, Any]:
    """Registered buffers count against RLIMIT_MEMLOCK (unless CAP_IPC_LOCK)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_MEMLOCK)
    nofile = resource.getrlimit(resource.RLIMIT_NOFILE)
    ipc_lock = _has_cap(CAP_IPC_LOCK)
    return {
        "memlock_soft_bytes": _limit(soft),
        "memlock_hard_bytes": _limit(hard),
        "cap_ipc_lock": ipc_lock,
        "registered_buffers_accounted": not ipc_lock if ipc_lock is not None else None,
        "max_registered_buffers": MAX_REG_BUFFERS,
        "max_registered_buffer_bytes": MAX_REG_BUFFER_BYTES,
        "max_fixed_files": min(MAX_FIXED_FILES, nofile[0]) if nofile[0] != resource.RLIM_INFINITY
        else MAX_FIXED_FILES,
    }


def report() -> dict[str, Any]:
    """Everything ``subring probe`` shows, as plain data (the ``--json`` form).
    ``available`` is False, with ``error`` and ``advice``, where io_uring
    cannot be used."""
    from .. import Feature, Op, Setup, UnsupportedError, probe

    uname = os.uname()
    out: dict[str, Any] = {
        "kernel": {"release": uname.release, "version": uname.version, "machine": uname.machine},
        "blockers": blockers(),
        "limits": limits_report(),
        "fuse": fuse_report(),
    }
    try:
        kp = probe()
    except (OSError, UnsupportedError) as e:
        cause = e if isinstance(e, OSError) else e.__cause__
        err = cause if isinstance(cause, OSError) else OSError(errno.EINVAL, str(e))
        if err.errno is None:           # an OSError subclass raised with a message only
            code = _ERRNO_OF.get(type(err), errno.EINVAL)
            err = OSError(code, os.strerror(code))
        out["available"] = False
        out["error"] = f"io_uring_setup: {err.strerror or err}"
        out["advice"] = advice(err, out["blockers"])
        return out
    out["available"] = True
    out["opcodes"] = {op.name: op in kp.opcodes for op in Op}
    out["features"] = {f.name: bool(kp.features & f) for f in Feature if f.name}
    out["setup_flags"] = {s.name: setup_flag_usable(s, kp.setup_flags) for s in Setup if s.name}
    return out


# flags that only make sense with others: how to try each for real
_FLAG_TRIALS: dict[str, tuple[int, dict[str, Any]]] = {
    "SQ_AFF": (0, {"sqpoll": True, "sq_thread_cpu": 0}),
    "CQSIZE": (0, {"cq_entries": 16}),
    "TASKRUN_FLAG": (0, {"coop_taskrun": True, "taskrun_flag": True}),
    "DEFER_TASKRUN": (0, {"defer_taskrun": True}),
    "HYBRID_IOPOLL": (1, {}),             # | IOPOLL
}
# flags a ring cannot be created with on its own here (another ring's fd,
# caller-provided ring memory): reported as not tried
NOT_TRIED = {"ATTACH_WQ": "needs another ring to attach to",
             "NO_MMAP": "needs ring memory from the caller",
             "REGISTERED_FD_ONLY": "needs NO_MMAP"}


def setup_flag_usable(flag: Any, known: Any) -> bool | None:
    """True if a ring can be created here with ``flag`` (and what it needs),
    None when it cannot be tried alone (:data:`NOT_TRIED`)."""
    from .. import KernelRing, Setup, UnsupportedError

    if known & flag:
        return True
    if flag.name in NOT_TRIED:
        return None
    extra, kw = _FLAG_TRIALS.get(flag.name, (0, {}))
    flags = int(flag) | (int(Setup.IOPOLL) if extra else 0)
    if flag.name in ("CQSIZE", "SQ_AFF", "TASKRUN_FLAG", "DEFER_TASKRUN"):
        flags = 0                          # set through the keyword arguments
    try:
        KernelRing(8, flags=flags, no_sqarray=False, **kw).close()
    except (OSError, UnsupportedError, ValueError):
        return False
    return True
