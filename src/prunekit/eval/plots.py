"""PNG plots of a `PruneReport`: per-layer sparsity bars and a before/after summary of the measured metrics.

Matplotlib is imported lazily and used through its object API with the Agg canvas, so plotting never touches the
caller's pyplot state or GUI backend. Figures grow with the number of layers (readable at ~50 layers and beyond);
long layer names are shortened from the left, keeping the informative tail.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Any

from prunekit.eval._savings import RESOURCE_LABELS, format_value, metric_label

if TYPE_CHECKING:
    from prunekit.eval.report import PruneReport

STATUS_COLORS = {"pruned": "#1f77b4", "skipped": "#ff7f0e", "untouched": "#b0b0b0"}
COLORS = {"better": "#2ca02c", "worse": "#d62728", "same": "#9e9e9e"}
MAX_BARS = 150


def _figure(width: float, height: float) -> Any:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), dpi=110)
    FigureCanvasAgg(fig)
    return fig


def _finish(fig: Any, handles: list[Any], height: float, path: str | os.PathLike[str]) -> None:
    """Put the legend in a strip under the axes (never over bars), lay out and write the PNG."""
    strip = 0.42 / height  # a fixed 0.42 inch strip whatever the figure height
    fig.legend(handles=handles, loc="lower center", ncol=len(handles), fontsize=8, frameon=False)
    fig.tight_layout(rect=(0.0, strip, 1.0, 1.0))
    fig.savefig(path, format="png")


def _short(name: str, limit: int = 42) -> str:
    return name if len(name) <= limit else "…" + name[-(limit - 1):]


def plot_layer_sparsity(report: PruneReport, path: str | os.PathLike[str]) -> None:
    """Horizontal bars of each layer's sparsity, coloured by status, with the target sparsity as a dashed line.

    Args:
        report: the report to draw.
        path: where to write the PNG.
    """
    from matplotlib.patches import Patch

    rows = [r for r in report.layers if r.params > 0]
    title = "Per-layer sparsity"
    if len(rows) > MAX_BARS:
        keep = set(sorted(range(len(rows)), key=lambda i: rows[i].params, reverse=True)[:MAX_BARS])
        title += f" ({MAX_BARS} largest of {len(rows)} layers)"
        rows = [r for i, r in enumerate(rows) if i in keep]
    height = max(3.0, 0.26 * len(rows) + 1.9)
    fig = _figure(9.0, height)
    ax = fig.add_subplot(1, 1, 1)
    handles: list[Any] = []
    if not rows:
        ax.text(0.5, 0.5, "no layers with parameters", ha="center", va="center", transform=ax.transAxes)
        ax.set_axis_off()
    else:
        y = list(range(len(rows)))
        values = [100.0 * r.sparsity for r in rows]
        ax.barh(y, values, color=[STATUS_COLORS.get(r.status, "#b0b0b0") for r in rows], height=0.7)
        ax.set_yticks(y, [_short(r.name or "(model)") for r in rows], fontsize=8)
        ax.invert_yaxis()  # model order, top to bottom
        ax.set_xlim(0, 112)
        ax.set_xlabel("sparsity (% of weights that are zero)")
        ax.set_ylim(len(rows) - 0.5, -0.5)
        for yi, value, row in zip(y, values, rows):
            text = f"{value:.0f}%"
            if row.status == "skipped":
                reason = row.reason or "no reason given"
                text += f"  skipped: {reason if len(reason) <= 48 else reason[:47] + '…'}"
            ax.text(value + 1.0, yi, text, va="center", fontsize=7,
                    color="#a04000" if row.status == "skipped" else "black")
        handles = [Patch(color=c, label=s) for s, c in STATUS_COLORS.items() if any(r.status == s for r in rows)]
        if report.target_sparsity is not None:
            target = 100.0 * report.target_sparsity
            handles.append(ax.axvline(target, color="#d62728", linestyle="--", linewidth=1.2,
                                      label=f"target {target:.0f}%"))
        ax.grid(axis="x", alpha=0.3)
        t = report.totals
        title += f": {t.targeted_sparsity:.1%} over pruned layers, {t.sparsity:.1%} overall"
    ax.set_title(title, fontsize=10)
    _finish(fig, handles, height, path)


SUMMARY_ORDER = ["params", "nonzeros", "macs", "effective_macs", "latency_p50_ms", "file_bytes", "peak_memory_bytes"]


def _summary_pairs(report: PruneReport) -> list[Any]:
    by_name = {m.name: m for m in report.metrics if m.ratio is not None}
    names = [n for n in SUMMARY_ORDER if n in by_name]
    names += [n for n in by_name if n not in names and n in RESOURCE_LABELS]
    names += [n for n in by_name if n not in names]
    return [by_name[n] for n in names]


def plot_summary(report: PruneReport, path: str | os.PathLike[str], tolerance: float = 0.05) -> None:
    """Before/after bars of every measured metric as a ratio to the original (before = 1.0).

    Green after-bars are better by more than `tolerance`, red ones worse, grey ones within noise (task metrics
    such as accuracy, where higher is better, get no noise band).

    Args:
        report: the report to draw.
        path: where to write the PNG.
        tolerance: relative change drawn as "no measurable change".
    """
    pairs = _summary_pairs(report)
    height = max(3.0, 0.62 * len(pairs) + 1.9)
    fig = _figure(9.0, height)
    ax = fig.add_subplot(1, 1, 1)
    if not pairs:
        ax.text(0.5, 0.5, "no before/after metrics measured", ha="center", va="center", transform=ax.transAxes)
        ax.set_axis_off()
        ax.set_title("Before / after", fontsize=10)
        fig.savefig(path, format="png")
        return
    from matplotlib.patches import Patch

    y = list(range(len(pairs)))
    ratios = [p.ratio for p in pairs]
    colors = []
    for p, r in zip(pairs, ratios):
        better = r > 1.0 if p.higher_is_better else r < 1.0
        # task metrics (higher is better) get no noise band: any change in accuracy matters
        noise = 0.0 if p.higher_is_better else tolerance
        colors.append(COLORS["same"] if abs(r - 1.0) <= noise else COLORS["better" if better else "worse"])
    ax.barh([v - 0.19 for v in y], [1.0] * len(pairs), height=0.36, color="white", edgecolor="#555555",
            linewidth=0.8, hatch="//")
    ax.barh([v + 0.19 for v in y], ratios, height=0.36, color=colors)
    top = max([1.0, *ratios])
    for yi, p, r in zip(y, pairs, ratios):
        text = f"{r:.2f}x  ({format_value(p.before, p.unit)} → {format_value(p.after, p.unit)})"
        ax.text(r + 0.01 * top, yi + 0.19, text, va="center", fontsize=8,
                bbox={"facecolor": "white", "edgecolor": "none", "pad": 0.6, "alpha": 0.85})
    handles = [Patch(facecolor="white", edgecolor="#555555", hatch="//", label="before (= 1.0)"),
               Patch(color=COLORS["better"], label="after: better"), Patch(color=COLORS["worse"], label="after: worse"),
               Patch(color=COLORS["same"], label=f"after: within ±{tolerance:.0%}")]
    labels = [metric_label(p.name) + ("\n(higher is better)" if p.higher_is_better else "") for p in pairs]
    ax.set_yticks(y, labels, fontsize=9)
    ax.set_ylim(len(pairs) - 0.5, -0.6)
    ax.set_xlim(0, top * 1.55)
    ax.axvline(1.0, color="black", linewidth=0.8)
    ax.set_xlabel("after / before (1.0 = unchanged)")
    ax.grid(axis="x", alpha=0.3)
    ax.set_title("What pruning changed, measured (after relative to before)", fontsize=10)
    _finish(fig, handles, height, path)


def plot_schedule(report: PruneReport, path: str | os.PathLike[str]) -> None:
    """The sparsity each gradual stage applied, against its optimizer step (a step line per stage).

    Reads the stages' `sparsity_history` ([step, sparsity] at every mask update, as recorded by the stage).
    """
    from matplotlib.lines import Line2D

    fig = _figure(8.0, 4.2)
    ax = fig.add_subplot(1, 1, 1)
    handles = []
    for i, st in enumerate(report.stages):
        history = st.get("sparsity_history") or []
        if not history:
            continue
        steps = [int(s) for s, _ in history]
        values = [100.0 * float(v) for _, v in history]
        label = f"stage {i + 1}: {st.get('method', '?')}"
        (line,) = ax.step(steps, values, where="post", linewidth=1.6, marker="." if len(steps) <= 60 else None)
        handles.append(Line2D([], [], color=line.get_color(), label=label))
    ax.set_xlabel("optimizer step")
    ax.set_ylabel("sparsity of the targeted layers (%)")
    ax.set_ylim(0, 100)
    ax.grid(alpha=0.3)
    ax.set_title("Sparsity schedule as applied", fontsize=10)
    _finish(fig, handles, 4.2, path)

