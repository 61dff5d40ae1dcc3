"""PNG charts of a benchmark suite's JSON (matplotlib, the ``cli`` extra).

One panel per workload: a bar per contender at its median, its
per-repetition figures as dots (the spread), and the C ceiling (contenders
named ``c-*``) as a dashed horizontal line.
"""

from __future__ import annotations

import math
import statistics
from pathlib import Path
from typing import Any


def matplotlib_error() -> str | None:
    """None when matplotlib can draw here, else why not."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot  # noqa: F401
    except Exception as e:  # noqa: BLE001 -- absent or broken
        return f"matplotlib is not usable: {type(e).__name__}: {e}"
    return None


def _figure(entry: dict[str, Any], latency: bool = False) -> tuple[str, list[float]] | None:
    """The field to plot for one contender: a throughput (``*_per_s``), or
    for a round-trip workload (``latency``) its median latency (``p50_us``)
    first, as the suites' ratios do; only numeric samples."""
    keys = [k for k in entry if k.endswith("_per_s") and isinstance(entry[k], list)]
    lat = [k for k in ("p50_us",) if isinstance(entry.get(k), list)]
    keys = lat + keys if latency else keys + lat
    for k in keys:
        vals = [float(x) for x in entry[k] if isinstance(x, (int, float)) and math.isfinite(x)]
        if vals:
            return k, vals
    return None


def _is_ceiling(name: str) -> bool:
    return name.startswith("c-")


def draw_suite(suite: str, doc: dict[str, Any], path: Path) -> None:
    """Write one PNG for a suite's JSON document."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = []
    for workload, contenders in (doc.get("results") or {}).items():
        series = {n: f for n, e in contenders.items() if isinstance(e, dict)
                  for f in [_figure(e, latency=workload.startswith("rtt"))] if f is not None}
        if series:
            panels.append((workload, series))
    if not panels:
        raise ValueError("no per-repetition figures in the JSON")
    cols = min(2, len(panels))
    rows = math.ceil(len(panels) / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(6.5 * cols, 3.6 * rows), squeeze=False)
    for ax in axes.flat[len(panels):]:
        ax.set_visible(False)
    for ax, (workload, series) in zip(axes.flat, panels, strict=False):
        bars = [(n, f) for n, f in series.items() if not _is_ceiling(n)]
        field = bars[0][1][0] if bars else next(iter(series.values()))[0]
        for k, (name, (_, vals)) in enumerate(bars):
            color = "tab:blue" if name.startswith("subring") else "tab:gray"
            ax.bar(k, statistics.median(vals), color=color, alpha=0.75)
            ax.scatter([k] * len(vals), vals, color="black", s=8, zorder=3)
        styles = ("--", ":", "-.")
        colors = ("tab:red", "tab:orange", "tab:purple", "tab:brown", "tab:green", "tab:pink")
        for j, (name, (_, vals)) in enumerate((n, f) for n, f in series.items() if _is_ceiling(n)):
            ax.axhline(statistics.median(vals), linestyle=styles[j % len(styles)],
                       linewidth=1.2, color=colors[j % len(colors)],
                       label=f"{name} (C, median)")
        medians = [statistics.median(v) for _, (_, v) in series.items() if v]
        if medians and min(medians) > 0 and max(medians) / min(medians) > 100:
            ax.set_yscale("log")                  # contenders orders of magnitude apart
        ax.set_xticks(range(len(bars)))
        ax.set_xticklabels([n for n, _ in bars], rotation=30, ha="right", fontsize=8)
        better = "lower is better" if field.endswith("_us") else "higher is better"
        ax.set_title(f"{workload}: {field} ({better})", fontsize=9)
        if any(_is_ceiling(n) for n in series):
            ax.legend(fontsize=7, loc="best")
    mode = doc.get("mode", "")
    fig.suptitle(f"subring bench {suite} ({mode}): bars = median, dots = repetitions",
                 fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
