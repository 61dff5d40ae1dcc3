"""python -m subring.fuse MODULE:CLASS MOUNTPOINT  (also: subring fuse ...)

Mounts an instance of the class, prints one JSON line when it is serving,
serves until SIGINT/SIGTERM (or an outside umount), unmounts, and restores
enable_uring if --enable-uring changed it.

Exit status: 0 served and unmounted, 1 the mount failed, 2 bad MODULE:CLASS,
3 FUSE is unavailable here (no /dev/fuse, not root and no fusermount3, or
io_uring asked for and not offered).
"""

from __future__ import annotations

import argparse
import importlib
import json
import logging
import os
import signal
import sys
import threading
from typing import Any

from .session import DEFAULT_POLL_US


def add_parser(subparsers: Any) -> argparse.ArgumentParser:
    """Add the ``fuse`` command to an argparse subparsers object."""
    p = subparsers.add_parser("fuse", help="mount a Python file system (FUSE)",
                              description=__doc__,
                              formatter_class=argparse.RawDescriptionHelpFormatter)
    configure(p)
    parser: argparse.ArgumentParser = p
    return parser


def configure(p: argparse.ArgumentParser) -> None:
    """Add the command's arguments to ``p``."""
    p.add_argument("target", help="MODULE:CLASS, a subring.fuse.Operations subclass")
    p.add_argument("mountpoint", help="an existing directory")
    p.add_argument("--transport", choices=("auto", "uring", "classic"), default="auto",
                   help="uring: FUSE over io_uring or fail; classic: /dev/fuse read/write; "
                        "auto (default): io_uring when the kernel offers it")
    p.add_argument("--threads", choices=("auto", "per-queue", "single"), default="auto",
                   help="per-queue: a thread per CPU queue, pinned; single: one thread; "
                        "auto (default): per-queue on io_uring, single on classic")
    p.add_argument("--queue-depth", type=int, default=8,
                   help="io_uring entries per queue (default 8)")
    p.add_argument("--poll-us", type=float, default=None, metavar="US",
                   help="io_uring: how long a serving thread polls for the next request "
                        f"before it sleeps (default {DEFAULT_POLL_US:g}; 0: never poll)")
    p.add_argument("--enable-uring", action="store_true",
                   help="set /sys/module/fuse/parameters/enable_uring to Y for the mount "
                        "(root) and restore it afterwards")
    p.add_argument("--direct-io", action="store_true", help="bypass the page cache")
    p.add_argument("--attr-timeout", type=float, default=1.0,
                   help="seconds the kernel may cache attributes (default 1; 0: never)")
    p.add_argument("--entry-timeout", type=float, default=1.0,
                   help="seconds the kernel may cache names (default 1; 0: never)")
    p.add_argument("--timeout", type=float, default=None,
                   help="unmount after SECONDS (default: serve until a signal)")
    p.add_argument("--arg", action="append", default=[],
                   help="positional argument for the class constructor (repeatable)")
    p.set_defaults(func=run)


class _BadTarget(Exception):
    pass


def _load(target: str, args: list[str]) -> Any:
    modname, _, clsname = target.partition(":")
    if not modname or not clsname:
        raise _BadTarget(f"target must be MODULE:CLASS, not {target!r}")
    if "" not in sys.path and "." not in sys.path:
        sys.path.insert(0, "")
    try:
        obj: Any = importlib.import_module(modname)
        for part in clsname.split("."):
            obj = getattr(obj, part)
    except (ImportError, AttributeError) as e:
        raise _BadTarget(f"cannot load {target}: {e}") from e
    if not callable(obj):
        raise _BadTarget(f"{target} is not a class")
    return obj(*args)


def run(args: argparse.Namespace) -> int:
    """Run the command described by ``args`` (from :func:`add_parser`)."""
    from . import (
        FuseOptionError,
        FuseTransportError,
        FuseUnavailableError,
        mount,
        set_uring_enabled,
    )

    logging.basicConfig(level=logging.INFO, format="%(name)s: %(message)s")
    try:
        ops = _load(args.target, args.arg)
    except _BadTarget as e:
        print(f"subring fuse: {e}", file=sys.stderr)
        return 2
    restore = None
    stop = threading.Event()
    old = {s: signal.signal(s, lambda *_: stop.set()) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        if args.enable_uring:
            try:
                restore = set_uring_enabled(True)
            except OSError as e:
                print(f"subring fuse: --enable-uring: {e}", file=sys.stderr)
                return 3 if isinstance(e, FileNotFoundError) else 1
        try:
            tuning = {} if args.poll_us is None else {"poll_us": args.poll_us}
            m = mount(ops, args.mountpoint, transport=args.transport, threads=args.threads,
                      queue_depth=args.queue_depth, direct_io=args.direct_io,
                      attr_timeout=args.attr_timeout, entry_timeout=args.entry_timeout,
                      **tuning)
        except FuseOptionError as e:      # a bad --queue-depth, --poll-us...: usage
            print(f"subring fuse: {e}", file=sys.stderr)
            return 2
        except (FuseUnavailableError, FuseTransportError) as e:
            print(f"subring fuse: cannot mount {args.mountpoint}: {e}", file=sys.stderr)
            return 3
        except OSError as e:
            print(f"subring fuse: cannot mount {args.mountpoint}: {e}", file=sys.stderr)
            return 1
        finally:
            if restore is not None:
                # INIT is done: the connection keeps what it negotiated.
                set_uring_enabled(restore)
                restore = None
        with m:
            print(json.dumps({"mounted": m.mountpoint, "transport": m.transport,
                              "threads": m.threads, "pid": os.getpid()}),
                  flush=True)
            waited = 0.0
            while not stop.is_set():
                if m.wait(0.2):
                    break
                waited += 0.2
                if args.timeout is not None and waited >= args.timeout:
                    break
        return 0
    finally:
        if restore is not None:
            set_uring_enabled(restore)
        for s, h in old.items():
            signal.signal(s, h)


def main(argv: list[str] | None = None) -> int:
    """``python -m subring.fuse``."""
    p = argparse.ArgumentParser(prog="python -m subring.fuse", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    configure(p)
    args = p.parse_args(argv)
    return run(args)


__all__ = ["add_parser", "run", "main"]
