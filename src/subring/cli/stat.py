"""``subring stat`` and ``subring top``: a running subsystem's statistics,
read through its control plane (``query_statistics``: a short separate
connection; the data path is untouched)."""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import time
from typing import Any

from ..subsystem import query_statistics
from .errors import EXIT_OK, CommandError, unreachable
from .output import Output

# per-client counters shown as rates by `top` (monotonic in ClientRow)
RATE_FIELDS = ("submitted", "completed", "wakeups_sent", "wakeups_suppressed", "doorbells",
               "poll_hits", "sleeps", "errors")
CLIENT_COLUMNS = ("pid", "mode", "submitted", "completed", "inflight", "sq", "cq",
                  "wakeups sent", "suppressed", "doorbells", "poll hits", "sleeps", "errors")


def fetch(address: str, timeout: float) -> Any:
    """The subsystem's statistics, or CommandError naming the address."""
    try:
        return query_statistics(address, timeout)
    except (OSError, TimeoutError) as e:     # ConnectionError is an OSError
        raise unreachable(address, e) from e


def as_dict(stats: Any) -> dict[str, Any]:
    """A statistics dataclass (or mapping) as plain JSON-able data."""
    if dataclasses.is_dataclass(stats) and not isinstance(stats, type):
        return dataclasses.asdict(stats)
    return dict(stats)


def _summary(s: dict[str, Any]) -> str:
    return (f"{s.get('name', '?')} at {s.get('address', '?')}  pid {s.get('pid', '?')}  "
            f"mode {s.get('mode', '?')}  up {s.get('uptime', 0):.1f} s  "
            f"clients {len(s.get('clients', ()))}  ops {s.get('ops', 0)}  "
            f"rounds {s.get('rounds', 0)}  sleeps {s.get('sleeps', 0)}  "
            f"attaches {s.get('attaches', 0)}  refused {s.get('refused', 0)}  "
            f"dropped {s.get('dropped', 0)}")


def _occupancy(c: dict[str, Any], side: str) -> str:
    return f"{c.get(f'{side}_pending', 0)}/{c.get(f'{side}_entries', 0)}"


def client_rows(s: dict[str, Any]) -> list[list[str]]:
    """One ``stat`` table row per client (:data:`CLIENT_COLUMNS`): totals."""
    rows = []
    for c in s.get("clients", ()):
        rows.append([str(c.get("pid", "?")), str(c.get("mode", "?")),
                     *(str(c.get(f, 0)) for f in ("submitted", "completed", "inflight")),
                     _occupancy(c, "sq"), _occupancy(c, "cq"),
                     *(str(c.get(f, 0)) for f in RATE_FIELDS[2:])])
    return rows


# `top`: what is happening now -- rates per second, and the occupancy
# (wake = the server signalled the client's eventfd; nowake = it posted without
# one because the client was not asleep; bell = the client rang the server;
# hit = a client wait satisfied without sleeping)
TOP_COLUMNS = ("pid", "mode", "infl", "sq", "cq", "sub/s", "done/s", "wake/s", "nowake/s",
               "bell/s", "hit/s", "sleep/s", "err/s")


def top_rows(s: dict[str, Any], rates: dict[int, dict[str, float]]) -> list[list[str]]:
    """One ``top`` row per client (:data:`TOP_COLUMNS`); a client seen for
    the first time has no rates yet (``-``)."""
    rows = []
    for c in s.get("clients", ()):
        r = rates.get(c.get("token", -1))
        rows.append([str(c.get("pid", "?")), str(c.get("mode", "?")), str(c.get("inflight", 0)),
                     _occupancy(c, "sq"), _occupancy(c, "cq"),
                     *((f"{r[f]:,.0f}" if r is not None else "-") for f in RATE_FIELDS)])
    return rows


def rates_between(before: dict[str, Any], after: dict[str, Any], seconds: float
                  ) -> dict[int, dict[str, float]]:
    """Per-client rates of the monotonic counters (clients matched by token)."""
    old = {c["token"]: c for c in before.get("clients", ()) if "token" in c}
    out: dict[int, dict[str, float]] = {}
    for c in after.get("clients", ()):
        prev = old.get(c.get("token"))
        if prev is None or seconds <= 0:
            continue
        out[c["token"]] = {f: max(0, c.get(f, 0) - prev.get(f, 0)) / seconds
                           for f in RATE_FIELDS}
    return out


def add_parsers(sub: Any) -> None:
    """Add ``stat`` and ``top``."""
    s = sub.add_parser("stat", help="print a running subsystem's statistics once",
                       description="Ask the subsystem at ADDRESS for its statistics over "
                       "its control plane and print them: the server, then one row per "
                       "client (submitted, completed, in flight, SQ/CQ occupancy, wake-ups "
                       "sent and suppressed, doorbells, poll hits vs sleeps, errors, mode).")
    s.add_argument("address", metavar="ADDRESS", help="the subsystem's Unix socket path")
    s.add_argument("--timeout", type=float, default=5.0, metavar="SECONDS",
                   help="give up after this long (default 5)")
    s.add_argument("--json", action="store_true", help="print JSON instead of tables")
    s.set_defaults(func=run_stat)

    t = sub.add_parser("top", help="watch a running subsystem's statistics, like top",
                       description="Refresh the subsystem's statistics every INTERVAL "
                       "seconds with per-second rates, until Ctrl-C.  Columns: infl = ops in "
                       "flight; sq/cq = entries waiting / ring size; sub/s, done/s = SQEs "
                       "taken, CQEs posted; wake/s = completions that had to wake the client "
                       "(eventfd), nowake/s = those that did not; bell/s = the client woke the "
                       "server; hit/s, sleep/s = client waits that found work spinning vs "
                       "slept; err/s = error completions.")
    t.add_argument("address", metavar="ADDRESS", help="the subsystem's Unix socket path")
    t.add_argument("-n", "--interval", type=float, default=1.0, metavar="SECONDS",
                   help="seconds between refreshes (default 1)")
    t.add_argument("--iterations", type=int, default=0, metavar="N",
                   help="stop after N refreshes (default: run until Ctrl-C)")
    t.add_argument("--timeout", type=float, default=5.0, metavar="SECONDS",
                   help="give up on a query after this long (default 5)")
    t.set_defaults(func=run_top)


def show(out: Output, s: dict[str, Any], rates: dict[int, dict[str, float]] | None = None
         ) -> None:
    """Print the summary line and the client table: totals, or with
    ``rates`` the ``top`` view."""
    out.line(_summary(s))
    if rates is None:
        out.table("clients (totals since attach)", CLIENT_COLUMNS, client_rows(s),
                  right=range(2, 13))
    else:
        out.table("clients (per second)", TOP_COLUMNS, top_rows(s, rates), right=range(2, 13))


def run_stat(args: argparse.Namespace, out: Output) -> int:
    """``subring stat``."""
    s = as_dict(fetch(args.address, args.timeout))
    if args.json:
        out.line(json.dumps(s, indent=2, default=str))
    else:
        show(out, s)
    return EXIT_OK


def run_top(args: argparse.Namespace, out: Output) -> int:
    """``subring top``: refresh until Ctrl-C (or ``--iterations``)."""
    if args.interval <= 0:
        raise CommandError("--interval must be > 0", 2)
    prev = as_dict(fetch(args.address, args.timeout))
    t_prev = time.monotonic()
    live = None
    if out.rich is not None and out.stream.isatty():
        import rich.live

        live = rich.live.Live(console=out.console, auto_refresh=False)
        live.start()
    n = 0
    try:
        while not args.iterations or n < args.iterations:
            time.sleep(args.interval)
            cur = as_dict(fetch(args.address, args.timeout))
            now = time.monotonic()
            rates = rates_between(prev, cur, now - t_prev)
            prev, t_prev, n = cur, now, n + 1
            if live is not None:
                live.update(_rich_view(out, cur, rates), refresh=True)
            else:
                if out.stream.isatty():
                    out.stream.write("\x1b[H\x1b[2J")
                out.line(time.strftime("%H:%M:%S"))
                show(out, cur, rates)
                sys.stdout.flush()
    except KeyboardInterrupt:
        pass
    finally:
        if live is not None:
            live.stop()
    return EXIT_OK


def _rich_view(out: Output, s: dict[str, Any], rates: dict[int, dict[str, float]]) -> Any:
    import rich.box
    import rich.console
    import rich.table

    t = rich.table.Table(title="clients (per second)", title_justify="left",
                         box=rich.box.SIMPLE_HEAD, pad_edge=False)
    for k, col in enumerate(TOP_COLUMNS):
        t.add_column(col, justify="right" if k >= 2 else "left", no_wrap=True)
    for row in top_rows(s, rates):
        t.add_row(*row)
    return rich.console.Group(time.strftime("%H:%M:%S  ") + _summary(s), t)
