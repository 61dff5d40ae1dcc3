"""The ``subring`` command.

    subring probe                               what the kernel supports
    subring serve module:Class --socket PATH    run a Subsystem
    subring ops PATH                            list a running subsystem's ops
"""

from __future__ import annotations

import argparse
import importlib
import json
import signal
import sys


def _probe(args: argparse.Namespace) -> int:
    from . import probe

    p = probe()
    out = {"opcodes": sorted(o.name for o in p.opcodes), "features": str(p.features),
           "setup_flags": str(p.setup_flags)}
    print(json.dumps(out, indent=2))
    return 0


def _serve(args: argparse.Namespace) -> int:
    from .subsystem import Subsystem

    modname, _, clsname = args.target.partition(":")
    if not clsname:
        print("target must be module:Class", file=sys.stderr)
        return 2
    sys.path.insert(0, ".")
    cls = getattr(importlib.import_module(modname), clsname)
    if not (isinstance(cls, type) and issubclass(cls, Subsystem)):
        print(f"{args.target} is not a subring.Subsystem subclass", file=sys.stderr)
        return 2
    sub = cls()
    signal.signal(signal.SIGTERM, lambda *_: sub.stop())
    signal.signal(signal.SIGINT, lambda *_: sub.stop())
    mode = int(args.socket_mode, 8)
    sub.serve(args.socket, mode=args.mode, spin_us=args.spin_us, socket_mode=mode,
              ready=lambda: print(f"serving {args.target} on {args.socket} "
                                  f"({args.mode})", flush=True))
    return 0


def _ops(args: argparse.Namespace) -> int:
    from .client import connect

    with connect(args.socket, timeout=args.timeout) as c:
        for name, index in c.ops.items():
            print(f"{index:3d}  {name:20s} {c.op_docs.get(name, '')}")
    return 0


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="subring", description=__doc__.split("\n")[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    sub.add_parser("probe", help="print what the running kernel's io_uring supports")
    s = sub.add_parser("serve", help="run a Subsystem subclass")
    s.add_argument("target", help="module:Class")
    s.add_argument("--socket", required=True, help="Unix socket path to listen on")
    s.add_argument("--mode", default="hybrid", choices=["hybrid", "interrupt", "poll"])
    s.add_argument("--spin-us", type=float, default=50.0)
    s.add_argument("--socket-mode", default="600", help="octal permissions (default 600)")
    o = sub.add_parser("ops", help="list the ops of a running subsystem")
    o.add_argument("socket")
    o.add_argument("--timeout", type=float, default=5.0)
    args = ap.parse_args(argv)
    return {"probe": _probe, "serve": _serve, "ops": _ops}[args.cmd](args)


if __name__ == "__main__":
    sys.exit(main())
