"""The ``subring`` command (also ``python -m subring``).

    subring probe                          what io_uring can do on this machine
    subring bench [SUITE ...] [--quick]    run benchmarks: table, JSON, charts
    subring serve MODULE:CLASS --socket P  run a Subsystem
    subring ops ADDRESS                    list a running subsystem's operations
    subring stat ADDRESS                   a running subsystem's statistics, once
    subring top ADDRESS                    the same, refreshed with rates
    subring fuse MODULE:CLASS MOUNTPOINT   mount a Python file system

Tables use ``rich`` and charts ``matplotlib`` when installed
(``pip install 'subring[cli]'``); without them the output is plain text.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import traceback
from typing import Any

from .errors import (
    EXIT_CODES_HELP,
    EXIT_FAILED,
    EXIT_INTERRUPTED,
    EXIT_OK,
    EXIT_UNAVAILABLE,
    EXIT_USAGE,
    CommandError,
)
from .output import Output, yes_no

log = logging.getLogger("subring.cli")

DESCRIPTION = ("subring: io_uring-shaped rings to the kernel, to subsystem processes and to "
               "FUSE.  Every command has --help.")


def _version() -> str:
    from .. import __version__

    return f"subring {__version__}"


# --------------------------------------------------------------------------
# probe
# --------------------------------------------------------------------------

def _add_probe(sub: Any) -> None:
    p = sub.add_parser(
        "probe", help="what io_uring can do on this machine",
        description="Show the kernel version, every io_uring opcode with whether this kernel "
        "supports it, the usable setup flags and the features by name, the registered-buffer "
        "and memlock limits, FUSE over io_uring availability, and whether the "
        "kernel.io_uring_disabled sysctl or a seccomp filter blocks io_uring (and what to "
        "do).  Exits 3 where io_uring is unavailable.")
    p.add_argument("--json", action="store_true", help="print JSON instead of tables")
    p.set_defaults(func=_run_probe)


def _fmt_bytes(n: int | None) -> str:
    if n is None:
        return "unlimited"
    for unit, shift in (("GiB", 30), ("MiB", 20), ("KiB", 10)):
        if n >= 1 << shift and n % (1 << shift) == 0:
            return f"{n >> shift} {unit}"
    return f"{n} B"


def _run_probe(args: argparse.Namespace, out: Output) -> int:
    from . import probe

    rep = probe.report()
    if args.json:
        out.line(json.dumps(rep, indent=2))
    else:
        k, b, lim, fuse = rep["kernel"], rep["blockers"], rep["limits"], rep["fuse"]
        out.line(f"kernel {k['release']} ({k['machine']}), {k['version']}")
        out.table("what can block io_uring", ["check", "value"], [
            ["kernel.io_uring_disabled", b["io_uring_disabled"]],
            ["kernel.io_uring_group", b["io_uring_group"]],
            ["seccomp", f"{b['seccomp_mode']} ({b['seccomp_filters']} filters)"],
            ["io_uring usable", yes_no(rep["available"])],
        ])
        if rep["available"]:
            ops = rep["opcodes"]
            cells = [[n, yes_no(v)] for n, v in ops.items()]
            per = (len(cells) + 2) // 3                 # three pairs of columns
            rows = [sum((cells[i + per * c] if i + per * c < len(cells) else ["", ""]
                         for c in range(3)), []) for i in range(per)]
            out.table(f"opcodes ({sum(ops.values())} of {len(ops)} known to subring supported)",
                      ["opcode", "supported"] * 3, rows)
            out.table("setup flags (a ring was created with each)", ["flag", "usable"],
                      [[n, yes_no(v) if v is not None else f"not tried: {probe.NOT_TRIED[n]}"]
                       for n, v in rep["setup_flags"].items()])
            out.table("features (reported at setup)", ["feature", "present"],
                      [[n, yes_no(v)] for n, v in rep["features"].items()])
        out.table("registration limits", ["limit", "value"], [
            ["RLIMIT_MEMLOCK soft / hard", f"{_fmt_bytes(lim['memlock_soft_bytes'])} / "
                                           f"{_fmt_bytes(lim['memlock_hard_bytes'])}"],
            ["CAP_IPC_LOCK (registered buffers not counted)", yes_no(lim["cap_ipc_lock"])],
            ["registered buffers, at most", lim["max_registered_buffers"]],
            ["one registered buffer, at most", _fmt_bytes(lim["max_registered_buffer_bytes"])],
            ["fixed files, at most", lim["max_fixed_files"]],
        ])
        out.table("FUSE over io_uring", ["check", "value"], [
            ["/dev/fuse", yes_no(fuse["dev_fuse"])],
            ["fuse module loaded", yes_no(fuse["fuse_module_loaded"])],
            ["CONFIG_FUSE_IO_URING", fuse["config_fuse_io_uring"] or "?"],
            ["enable_uring", yes_no(fuse["enable_uring"])],
            ["may mount (CAP_SYS_ADMIN)", yes_no(fuse["can_mount"])],
        ])
        out.line(f"FUSE: {fuse['advice']}")
    if not rep["available"]:
        raise CommandError(f"io_uring is unavailable here ({rep['error']}): {rep['advice']}",
                           EXIT_UNAVAILABLE)
    return EXIT_OK


# --------------------------------------------------------------------------
# fuse (the fuse package's own command)
# --------------------------------------------------------------------------

def _add_fuse(sub: Any) -> None:
    from ..fuse import cli as fuse_cli

    p = fuse_cli.add_parser(sub)

    def run(args: argparse.Namespace, out: Output) -> int:
        return int(fuse_cli.run(args))

    p.set_defaults(func=run)


# --------------------------------------------------------------------------

def build_parser() -> argparse.ArgumentParser:
    """The ``subring`` argument parser (every command and option has help)."""
    from . import bench, serve, stat

    ap = argparse.ArgumentParser(prog="subring", description=DESCRIPTION,
                                 epilog=EXIT_CODES_HELP,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--version", action="version", version=_version(),
                    help="print the version and exit")
    ap.add_argument("--plain", action="store_true",
                    help="plain text output even when rich is installed")
    ap.add_argument("--traceback", action="store_true",
                    help="on an error, print the full traceback too")
    sub = ap.add_subparsers(dest="command", metavar="COMMAND", required=True,
                            title="commands")
    _add_probe(sub)
    bench.add_parser(sub)
    serve.add_parsers(sub)
    stat.add_parsers(sub)
    _add_fuse(sub)
    # the global switches also work after the command (`subring probe --plain`)
    for command in sub.choices.values():
        command.add_argument("--plain", action="store_true", default=argparse.SUPPRESS,
                             help="plain text output even when rich is installed")
        command.add_argument("--traceback", action="store_true", default=argparse.SUPPRESS,
                             help="on an error, print the full traceback too")
    return ap


def main(argv: list[str] | None = None) -> int:
    """Run the command; returns the exit code (see ``subring --help``)."""
    ap = build_parser()
    args = ap.parse_args(argv)
    out = Output(plain=args.plain)
    try:
        return int(args.func(args, out))
    except CommandError as e:
        if args.traceback:
            traceback.print_exc()
        print(f"subring {args.command}: error: {e}", file=sys.stderr)
        return e.code
    except KeyboardInterrupt:
        print(f"subring {args.command}: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    except BrokenPipeError:              # `subring ... | head`: the reader is done
        import os

        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return EXIT_OK
    except Exception as e:  # noqa: BLE001 -- one line, not a traceback
        if args.traceback:
            traceback.print_exc()
        print(f"subring {args.command}: error: {type(e).__name__}: {e} "
              f"(--traceback shows where)", file=sys.stderr)
        return EXIT_FAILED


__all__ = ["main", "build_parser", "CommandError", "EXIT_OK", "EXIT_FAILED", "EXIT_USAGE",
           "EXIT_UNAVAILABLE"]
