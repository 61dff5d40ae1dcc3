"""The kernel switches FUSE over io_uring depends on (read-only helpers, and an
explicit opt-in switch for tools and tests: the library never flips it)."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

ENABLE_URING = "/sys/module/fuse/parameters/enable_uring"
POSSIBLE_CPUS = "/sys/devices/system/cpu/possible"


def possible_cpus() -> list[int]:
    """CPU numbers in ``/sys/devices/system/cpu/possible`` (the kernel makes
    one FUSE queue per *possible* CPU, not per online one)."""
    with open(POSSIBLE_CPUS) as f:
        text = f.read().strip()
    cpus: list[int] = []
    for part in text.split(","):
        if "-" in part:
            lo, hi = part.split("-")
            cpus.extend(range(int(lo), int(hi) + 1))
        elif part:
            cpus.append(int(part))
    return cpus


def uring_enabled() -> bool | None:
    """``enable_uring`` as a bool, or None when the kernel has no such
    parameter (no ``CONFIG_FUSE_IO_URING``, or fuse not loaded)."""
    try:
        with open(ENABLE_URING) as f:
            return f.read().strip() in ("Y", "1")
    except OSError:
        return None


def set_uring_enabled(on: bool) -> bool:
    """Write ``enable_uring`` (root only); returns the previous value."""
    prev = uring_enabled()
    if prev is None:
        raise FileNotFoundError(f"{ENABLE_URING} is absent: this kernel has no FUSE over io_uring")
    with open(ENABLE_URING, "w") as f:
        f.write("Y" if on else "N")
    return prev


@contextlib.contextmanager
def uring_switched(on: bool = True) -> Iterator[bool]:
    """Set ``enable_uring`` for the block (it is read when a mount sends
    FUSE_INIT, so mount inside the block) and restore the previous value."""
    prev = set_uring_enabled(on)
    try:
        yield prev
    finally:
        set_uring_enabled(prev)


__all__ = ["possible_cpus", "uring_enabled", "set_uring_enabled", "uring_switched",
           "ENABLE_URING"]
