"""Text renderings of a `PruneReport`: Markdown for report.md and rich tables for the terminal.

Both show the same things in the same order: the before/after metric table, the savings lines, the per-layer table
and the skipped layers with their reasons. The terminal table is compact for big models (the largest layers plus
"... K more rows"); report.md always lists every layer.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

from prunekit.eval._savings import format_value, metric_label

if TYPE_CHECKING:
    from prunekit.eval.report import LayerRow, MetricPair, PruneReport


def _ratio_text(pair: MetricPair) -> str:
    return "-" if pair.ratio is None else f"{pair.ratio:.3f}x"


def _shape_text(row: LayerRow) -> str:
    return "-" if row.shape is None else "x".join(str(s) for s in row.shape)


def _count(value: int | None) -> str:
    return format_value(value, "count")


def _md_cell(value: Any) -> str:
    return str(value).replace("|", "\\|").replace("\n", " ")


def _md_table(header: list[str], rows: list[list[Any]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(_md_cell(c) for c in row) + " |" for row in rows]
    return lines + [""]


def _layer_cells(row: LayerRow) -> list[str]:
    return [
        row.name or "(model)",
        row.type,
        _shape_text(row),
        _count(row.params),
        _count(row.nonzeros),
        f"{row.sparsity:.1%}" if row.params else "-",
        row.pattern or "-",
        row.status,
        _count(row.macs),
        _count(row.effective_macs),
    ]


LAYER_HEADER = ["layer", "type", "shape", "params", "non-zeros", "sparsity", "pattern", "status", "MACs", "eff. MACs"]


def _metric_cells(pair: MetricPair) -> list[str]:
    better = "higher" if pair.higher_is_better else "lower"
    return [metric_label(pair.name), format_value(pair.before, pair.unit), format_value(pair.after, pair.unit),
            _ratio_text(pair), f"{better} is better" + (f"; {pair.note}" if pair.note else "")]


METRIC_HEADER = ["metric", "before", "after", "after/before", "note"]


def report_markdown(report: PruneReport) -> str:
    """The whole report as Markdown text."""
    t = report.totals
    lines = ["# Prune report", ""]
    spec = report.model_spec if isinstance(report.model_spec, str) or report.model_spec is None else json.dumps(
        report.model_spec)
    versions = ", ".join(f"{k} {v}" for k, v in report.versions.items())
    lines += [f"- model: {spec or 'not recorded'}", f"- created: {report.created or 'not recorded'} ({versions})",
              f"- MACs counted for inputs: {report.inputs or 'none given'} (whole batch)",
              f"- params: {_count(t.params)}, non-zeros: {_count(t.nonzeros)}, sparsity: {t.sparsity:.1%} overall, "
              f"{t.targeted_sparsity:.1%} over pruned layers", ""]
    lines += ["## Summary", ""]
    if report.metrics:
        lines += _md_table(METRIC_HEADER, [_metric_cells(m) for m in report.metrics])
    else:
        lines += ["No before/after metrics were measured.", ""]
    lines += ["## What was really saved", ""]
    lines += [f"- {line}" for line in report.savings_summary()] + [""]
    lines += ["## Layers", ""]
    lines += _md_table(LAYER_HEADER, [_layer_cells(row) for row in report.layers])
    lines += ["## Skipped layers", ""]
    if report.skipped:
        lines += _md_table(["layer", "type", "reason"], [[r.name, r.type, r.reason or "-"] for r in report.skipped])
    else:
        lines += ["None.", ""]
    lines += structured_markdown(report)
    if report.stages:
        lines += ["## Stages", "", "```json", json.dumps(report.stages, indent=2, default=str), "```", ""]
    return "\n".join(lines)


def _compact_rows(rows: list[LayerRow], max_rows: int) -> tuple[list[LayerRow], int]:
    """The `max_rows` rows with the most params + MACs, in model order, and how many were left out."""
    if len(rows) <= max_rows:
        return rows, 0
    order = sorted(range(len(rows)), key=lambda i: (rows[i].params + (rows[i].macs or 0)), reverse=True)
    keep = sorted(order[:max_rows])
    return [rows[i] for i in keep], len(rows) - max_rows


def print_report(report: PruneReport, console: Any = None, max_rows: int = 25) -> None:
    """Print the metric table, the layer table (compact) and the savings lines with rich."""
    from rich.console import Console
    from rich.table import Table

    console = console or Console()
    if report.metrics:
        metrics = Table(title="Before / after", title_justify="left")
        for i, name in enumerate(METRIC_HEADER):
            metrics.add_column(name, justify="right" if 0 < i < 4 else "left")
        for pair in report.metrics:
            metrics.add_row(*_metric_cells(pair))
        console.print(metrics)
    rows, hidden = _compact_rows(report.layers, max_rows)
    layers = Table(title=f"Layers ({len(report.layers)})", title_justify="left")
    # A narrow terminal gets the columns that matter most instead of every column folded into slivers.
    cols = list(range(len(LAYER_HEADER))) if console.width >= 120 else [0, 1, 2, 4, 5, 7]
    for i in cols:
        layers.add_column(LAYER_HEADER[i], justify="right" if i in (3, 4, 5, 8, 9) else "left", overflow="fold")
    style = {"pruned": "green", "skipped": "yellow", "untouched": "dim"}
    for row in rows:
        cells = _layer_cells(row)
        layers.add_row(*[cells[i] for i in cols], style=style.get(row.status))
    if hidden:
        layers.add_row(f"... {hidden} more rows", *[""] * (len(cols) - 1), style="italic")
    console.print(layers)
    if report.skipped:
        skipped = Table(title="Skipped layers", title_justify="left")
        skipped.add_column("layer")
        skipped.add_column("reason")
        for row in report.skipped:
            skipped.add_row(row.name, row.reason or "-")
        console.print(skipped)
    console.print("[bold]What was really saved[/bold]")
    for line in report.savings_summary():
        console.print(f"  - {line}", markup=False, highlight=False)


# -- structured pruning: channel / head counts before -> after ----------------------------------------------------

_MODE_PREFIXES = ("mode:", "hf_config:", "target ", "verify:", "repair:")


def structured_notes(report: PruneReport) -> list[str]:
    """The mode lines of every structured stage (uniform / per-layer counts, Hugging Face config edit, target
    reached, equivalence check), prefixed with the stage number when there are several."""
    stages = [s for s in report.stages if s.get("method") == "structured"]
    out = []
    for i, stage in enumerate(stages):
        prefix = f"stage {i + 1}: " if len(stages) > 1 else ""
        out += [prefix + n for n in stage.get("notes", []) if isinstance(n, str) and n.startswith(_MODE_PREFIXES)]
    return out


def resized_layers(report: PruneReport) -> list[LayerRow]:
    """Layers whose sizes a structured stage changed (their reason reads 'out channels 64 -> 32; ...')."""
    return [r for r in report.layers if r.status == "pruned" and r.reason and " -> " in r.reason]


def plan_group_rows(plan: dict[str, Any]) -> list[list[str]]:
    """[step, group, before, after, kept, unit] per group of a plan dict (`PruningPlan.to_dict()`).

    A unit is one channel when each removed unit takes one index of the group's first tensor, otherwise a block of
    w indices (an attention head of w features, a key-value group, a flattened channel of w positions)."""
    rows = []
    steps = plan.get("steps", [])
    for i, step in enumerate(steps):
        for g in step.get("groups", []):
            before, after = int(g["channels_before"]), int(g["channels_after"])
            first = g["removed"][0] if g.get("removed") else None
            width = len(first["indices"]) // max(before - after, 1) if first else 1
            unit = "channel" if width <= 1 else f"block of {width}"
            rows.append([str(i + 1), g["name"], str(before), str(after), f"{after / before:.0%}" if before else "-",
                         unit])
    return rows


PLAN_HEADER = ["step", "group", "before", "after", "kept", "unit"]


def structured_markdown(report: PruneReport) -> list[str]:
    """The 'Structured pruning' section of report.md (empty when no stage was structured)."""
    if not any(s.get("method") == "structured" for s in report.stages):
        return []
    lines = ["## Structured pruning", ""]
    lines += [f"- {n}" for n in structured_notes(report)] + [""]
    rows = resized_layers(report)
    if rows:
        lines += _md_table(["layer", "type", "before -> after"], [[r.name, r.type, r.reason] for r in rows])
    else:
        lines += ["No layer changed size.", ""]
    return lines


def print_structured(report: PruneReport, plan: dict[str, Any] | None, console: Any, max_rows: int = 25) -> None:
    """Print the structured part of a saved result: mode lines, per-group counts (plan.json), resized layers."""
    from rich.console import Console
    from rich.table import Table

    console = console or Console()
    notes = structured_notes(report)
    groups = plan_group_rows(plan) if plan else []
    layers = resized_layers(report)
    if not (notes or groups or layers):
        return
    console.print("[bold]Structured pruning[/bold]")
    for note in notes:
        console.print(f"  - {note}", markup=False, highlight=False)
    if groups:
        table = Table(title=f"Channel / head counts per group (plan.json, {len(groups)} changed)", title_justify="left")
        for i, name in enumerate(PLAN_HEADER):
            table.add_column(name, justify="right" if i in (0, 2, 3, 4) else "left", overflow="fold")
        for row in groups[:max_rows]:
            table.add_row(*row)
        if len(groups) > max_rows:
            table.add_row("", f"... {len(groups) - max_rows} more groups", *[""] * 4, style="italic")
        console.print(table)
    if layers:
        table = Table(title=f"Resized layers ({len(layers)})", title_justify="left")
        for name in ("layer", "type", "before -> after"):
            table.add_column(name, overflow="fold")
        for row in layers[:max_rows]:
            table.add_row(row.name, row.type, row.reason)
        if len(layers) > max_rows:
            table.add_row(f"... {len(layers) - max_rows} more layers", "", "", style="italic")
        console.print(table)
