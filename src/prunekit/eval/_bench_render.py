"""Renderings of a `BenchResult`: Markdown (bench.md), a rich table for the terminal, and the metric-vs-latency plot.

All three show the same columns: latency p50 / p90 and the speedup over the baseline, throughput, peak activation
memory, file size and its ratio, parameters and non-zeros, and each task metric.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Any

from prunekit.eval._savings import format_value

if TYPE_CHECKING:
    from prunekit.eval.bench import BenchResult

HEADER = ["variant", "p50", "p90", "speedup", "samples/s", "peak act. mem", "file", "file ratio", "params",
          "non-zeros"]
"""Column names; then one column per task metric."""


def _rows(result: BenchResult) -> tuple[list[str], list[list[str]]]:
    metric_names = sorted({k for v in result.variants for k in v.metrics})
    rows = []
    for v in result.variants:
        rows.append([
            v.name,
            format_value(v.latency_p50_ms, "ms"),
            format_value(v.latency_p90_ms, "ms"),
            f"{result.speedup(v.name):.2f}x",
            f"{v.throughput_per_s:,.0f}" if v.throughput_per_s >= 100 else f"{v.throughput_per_s:.3g}",
            format_value(v.peak_memory_bytes, "bytes"),
            format_value(v.file_bytes, "bytes"),
            f"{result.file_ratio(v.name):.2f}x",
            format_value(v.params, "count"),
            format_value(v.nonzeros, "count"),
            *[f"{v.metrics[m]:.4g}" if m in v.metrics else "-" for m in metric_names],
        ])
    header = HEADER + [f"{m} ({'higher' if result.higher_is_better.get(m, True) else 'lower'} is better)"
                       for m in metric_names]
    return header, rows


def how_measured(result: BenchResult) -> str:
    """One line: device, threads, torch, inputs, counts."""
    return (f"{result.device}, {result.threads} thread(s), torch {result.torch_version}, inputs {result.inputs} "
            f"(batch {result.batch_size}); {result.warmup} warm-up + {result.runs} timed runs per variant in "
            f"{result.rounds} interleaved rounds; baseline {result.baseline!r}")


def bench_markdown(result: BenchResult) -> str:
    """bench.md."""
    header, rows = _rows(result)
    lines = ["# prunekit bench", "", f"Measured on {how_measured(result)}.", ""]
    lines += ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(c.replace("|", "\\|") for c in row) + " |" for row in rows]
    lines += ["", "File sizes: " + "; ".join(f"{v.name}: {v.file_source}" for v in result.variants), ""]
    notes = [f"- {v.name}: {v.note}" for v in result.variants if v.note]
    if notes:
        lines += ["Variants:", *notes, ""]
    lines += ["## What is real (advice from these numbers)", "", "```", *result.advice(), "```", ""]
    return "\n".join(lines)


def print_bench(result: BenchResult, console: Any = None) -> None:
    """The table and the advice on a rich console."""
    from rich.console import Console
    from rich.table import Table

    con = console or Console(highlight=False, width=max(Console().width, 150))  # 10+ columns: no wrapping
    header, rows = _rows(result)
    table = Table(title=f"bench: {how_measured(result)}", title_justify="left")
    for i, name in enumerate(header):
        table.add_column(name, justify="left" if i == 0 else "right")
    for row in rows:
        table.add_row(*row)
    con.print(table)
    for line in result.advice():
        con.print(line, markup=False, soft_wrap=True)


def plot_bench(result: BenchResult, path: str | os.PathLike[str]) -> None:
    """Task metric (the first one; file size when there is none) vs latency p50, one labelled point per variant."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(7.0, 4.6), dpi=110)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot(1, 1, 1)
    metric_names = sorted({k for v in result.variants for k in v.metrics})
    metric = metric_names[0] if metric_names else None
    points = []
    for v in result.variants:
        if metric is None:
            points.append((v, v.latency_p50_ms, v.file_bytes / 2**20))
        elif metric in v.metrics:
            points.append((v, v.latency_p50_ms, v.metrics[metric]))
    for v, x, y in points:
        ax.scatter([x], [y], s=60, zorder=3, color="#d62728" if v.name == result.baseline else "#1f77b4")
        ax.annotate(f"{v.name}\n{result.speedup(v.name):.2f}x, file {result.file_ratio(v.name):.2f}x", (x, y),
                    textcoords="offset points", xytext=(6, 6), fontsize=8)
    ax.set_xlabel(f"latency p50 (ms), {result.device}, {result.threads} thread(s), batch {result.batch_size}")
    if metric is None:
        ax.set_ylabel("file size (MiB)")
        ax.set_title("File size vs latency (no task metric given)", fontsize=10)
    else:
        better = "higher" if result.higher_is_better.get(metric, True) else "lower"
        ax.set_ylabel(f"{metric} ({better} is better)")
        ax.set_title(f"{metric} vs latency, one point per variant (red: baseline)", fontsize=10)
    if points:
        xs = [p[1] for p in points]
        ax.margins(y=0.22)  # room for the labels above the highest point
        ax.set_xlim(0, max(xs) * 1.35)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, format="png")
