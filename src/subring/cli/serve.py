"""``subring serve`` and ``subring ops``: run a Subsystem, list a running
one's operations."""

from __future__ import annotations

import argparse
import importlib
import inspect
import logging
import os
import signal
import stat as stat_mod
import sys
from typing import Any

from .errors import EXIT_OK, EXIT_USAGE, CommandError, unreachable
from .output import Output


def load_class(target: str, base: type, what: str) -> type:
    """Import ``MODULE:CLASS`` (the current directory first on the path) and
    check that it is a subclass of ``base``; CommandError otherwise."""
    modname, sep, clsname = target.partition(":")
    if not sep or not modname or not clsname:
        raise CommandError(f"target {target!r} must be MODULE:CLASS, e.g. mymod:Store", EXIT_USAGE)
    if "" not in sys.path and os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())
    try:
        module = importlib.import_module(modname)
    except ImportError as e:
        raise CommandError(f"cannot import module {modname!r}: {e}", EXIT_USAGE) from e
    except Exception as e:  # noqa: BLE001 -- the user's module failed to run
        raise CommandError(f"importing module {modname!r} failed: {type(e).__name__}: {e}",
                           EXIT_USAGE) from e
    obj: Any = module
    for part in clsname.split("."):
        if not hasattr(obj, part):
            raise CommandError(f"module {modname!r} has no attribute {clsname!r}", EXIT_USAGE)
        obj = getattr(obj, part)
    if not (isinstance(obj, type) and issubclass(obj, base)):
        raise CommandError(f"{target} is not a {what} subclass", EXIT_USAGE)
    return obj


def add_parsers(sub: Any) -> None:
    """Add ``serve`` and ``ops`` to the command's subparsers."""
    s = sub.add_parser("serve", help="run a Subsystem subclass on a Unix socket",
                       description="Run MODULE:CLASS (a subring.Subsystem subclass) on a Unix "
                       "socket until SIGINT or SIGTERM.  The current directory is on the "
                       "import path.  Prints one line once it accepts connections.")
    s.add_argument("target", metavar="MODULE:CLASS", help="the Subsystem subclass to serve")
    s.add_argument("--socket", required=True, metavar="PATH", help="Unix socket path to listen on")
    s.add_argument("--mode", default="hybrid", choices=["hybrid", "interrupt", "poll"],
                   help="how the server waits for work: spin then sleep (hybrid, default), "
                   "sleep at once (interrupt), or spin only (poll: one CPU busy)")
    s.add_argument("--spin-us", type=float, default=50.0, metavar="US",
                   help="hybrid mode: microseconds to spin before sleeping (default 50)")
    s.add_argument("--socket-mode", metavar="OCTAL",
                   help="permissions of the socket file (default: the server's choice, 600 = "
                   "only this user)")
    s.add_argument("--allow-uid", type=int, action="append", metavar="UID",
                   help="also let this uid attach (checked with SO_PEERCRED; repeatable)")
    s.add_argument("--attach-timeout", type=float, metavar="SECONDS",
                   help="drop a client that does not finish attaching in time "
                   "(default: the server's, 5 s)")
    s.add_argument("--log-level", default="INFO",
                   choices=["DEBUG", "INFO", "WARNING", "ERROR"],
                   help="level of the subring.* log lines on stderr (default INFO)")
    s.set_defaults(func=run_serve)

    o = sub.add_parser("ops", help="list the operations of a running subsystem",
                       description="Attach to the subsystem at ADDRESS and list its "
                       "operations (index, name, documentation).")
    o.add_argument("address", metavar="ADDRESS", help="the subsystem's Unix socket path")
    o.add_argument("--timeout", type=float, default=5.0, metavar="SECONDS",
                   help="give up after this long (default 5)")
    o.add_argument("--json", action="store_true", help="print JSON instead of a table")
    o.set_defaults(func=run_ops)


def run_serve(args: argparse.Namespace, out: Output) -> int:
    """``subring serve``."""
    from ..subsystem import Subsystem

    kw: dict[str, Any] = {"mode": args.mode, "spin_us": args.spin_us}
    if args.socket_mode is not None:
        try:
            kw["socket_mode"] = int(args.socket_mode, 8)
        except ValueError:
            raise CommandError(f"--socket-mode {args.socket_mode!r} is not an octal number",
                               EXIT_USAGE) from None
    if args.allow_uid:
        kw["allow_uids"] = list(args.allow_uid)
    if args.attach_timeout is not None:
        kw["attach_timeout"] = args.attach_timeout
    accepted = inspect.signature(Subsystem.serve).parameters
    for name, flag in (("allow_uids", "--allow-uid"), ("attach_timeout", "--attach-timeout")):
        if name in kw and name not in accepted:
            raise CommandError(f"{flag} is not supported by this subring's Subsystem.serve",
                               EXIT_USAGE)
    cls = load_class(args.target, Subsystem, "subring.Subsystem")
    if os.path.exists(args.socket) and not stat_mod.S_ISSOCK(os.stat(args.socket).st_mode):
        raise CommandError(f"{args.socket} exists and is not a socket: refusing to replace it",
                           EXIT_USAGE)
    logging.basicConfig(level=getattr(logging, args.log_level),
                        format="%(asctime)s %(name)s %(levelname)s %(message)s")
    try:
        sub = cls()
    except Exception as e:  # noqa: BLE001 -- the user's constructor
        raise CommandError(f"{args.target}() failed: {type(e).__name__}: {e}") from e
    signal.signal(signal.SIGTERM, lambda *_: sub.stop())
    signal.signal(signal.SIGINT, lambda *_: sub.stop())

    def ready() -> None:
        out.line(f"serving {args.target} on {args.socket} ({args.mode}); "
                 f"Ctrl-C or SIGTERM stops it")

    try:
        sub.serve(args.socket, ready=ready, **kw)
    except OSError as e:
        raise CommandError(f"cannot serve on {args.socket}: {e.strerror or e}") from e
    return EXIT_OK


def run_ops(args: argparse.Namespace, out: Output) -> int:
    """``subring ops``."""
    import json

    from ..subsystem import connect

    try:
        client = connect(args.address, timeout=args.timeout)
    except (OSError, TimeoutError) as e:
        raise unreachable(args.address, e) from e
    with client as c:
        docs: dict[str, str] = getattr(c, "op_docs", None) or {}
        rows = [(index, name, docs.get(name, "") or "") for name, index in c.ops.items()]
    if args.json:
        out.line(json.dumps([{"index": i, "name": n, "doc": d} for i, n, d in rows], indent=2))
    else:
        out.table(f"operations of {args.address}", ["index", "name", "doc"], rows, right=[0])
    return EXIT_OK
