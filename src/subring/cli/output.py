"""Terminal output for the ``subring`` command: tables, with ``rich`` when it
is installed (the ``cli`` extra) and plain aligned text otherwise."""

from __future__ import annotations

import os
import sys
from collections.abc import Sequence
from typing import Any, TextIO


def load_rich() -> Any:
    """The ``rich`` package, or None when it is not installed (or broken)."""
    try:
        import rich.console
        import rich.markup
        import rich.table
    except Exception:  # noqa: BLE001 -- absent or broken: the plain fallback
        return None
    return rich


class Output:
    """Where the command prints: ``rich`` tables when available and not
    ``plain``, else aligned text.  Errors go to stderr, one line each."""

    def __init__(self, plain: bool = False, stream: TextIO | None = None) -> None:
        self.stream = stream if stream is not None else sys.stdout
        self.rich: Any = None if plain or os.environ.get("NO_RICH") else load_rich()
        self.console: Any = None
        if self.rich is not None:
            # a pipe or file gets wide lines rather than rich's 80 columns
            width = None if self.stream.isatty() else 160
            self.console = self.rich.console.Console(file=self.stream, highlight=False,
                                                     width=width)

    def line(self, text: str = "") -> None:
        """Print text as it is (never wrapped or styled: JSON stays JSON)."""
        print(text, file=self.stream, flush=True)

    def table(self, title: str, columns: Sequence[str], rows: Sequence[Sequence[Any]],
              *, right: Sequence[int] = ()) -> None:
        """A titled table; ``right`` lists the column indexes to right-align."""
        cells = [["" if c is None else str(c) for c in row] for row in rows]
        if self.console is not None:
            t = self.rich.table.Table(title=title, title_justify="left", show_lines=False)
            for k, col in enumerate(columns):
                t.add_column(col, justify="right" if k in right else "left",
                             no_wrap=k < len(columns) - 1, overflow="fold")
            for row in cells:
                t.add_row(*(self.rich.markup.escape(c) for c in row))
            self.console.print(t)
            return
        print(format_table(title, columns, cells, right=right), file=self.stream, flush=True)


def format_table(title: str, columns: Sequence[str], rows: Sequence[Sequence[str]],
                 *, right: Sequence[int] = ()) -> str:
    """Plain aligned text: title, header, rule, rows."""
    widths = [len(c) for c in columns]
    for row in rows:
        for k, c in enumerate(row):
            widths[k] = max(widths[k], len(c))

    def fmt(row: Sequence[str]) -> str:
        return "  ".join(c.rjust(widths[k]) if k in right else c.ljust(widths[k])
                         for k, c in enumerate(row)).rstrip()

    lines = [title, fmt(columns), "  ".join("-" * w for w in widths)]
    lines += [fmt(r) for r in rows]
    return "\n".join(lines)


def yes_no(flag: bool | None) -> str:
    """``yes`` / ``no`` / ``?`` (unknown)."""
    return "?" if flag is None else "yes" if flag else "no"
