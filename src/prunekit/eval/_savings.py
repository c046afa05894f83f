"""Plain-English verdicts on what pruning really saved, derived only from measured before/after numbers.

Pure functions over metric values (no model, no I/O): `format_value` prints a number in its unit, `metric_label`
names a metric for people, `savings_lines` turns metric pairs into honest sentences. A change within the noise
tolerance (default +-5%) is reported as no measurable change, never as a saving.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

RESOURCE_LABELS = {
    "params": "parameters",
    "nonzeros": "non-zero weights",
    "macs": "dense MACs",
    "effective_macs": "effective MACs (zeros skipped)",
    "latency_p50_ms": "latency (p50)",
    "latency_p90_ms": "latency (p90)",
    "latency_mean_ms": "latency (mean)",
    "peak_memory_bytes": "peak activation memory",
    "weight_bytes": "weight memory",
    "state_dict_bytes": "state_dict payload",
    "file_bytes": "file size",
}
"""Known lower-is-better resource metrics and their names for people, in display order."""

_FEWER = {"params", "nonzeros", "macs", "effective_macs"}
_TIME = {"latency_p50_ms", "latency_p90_ms", "latency_mean_ms"}


def metric_label(name: str) -> str:
    """Human name of a metric ('file_bytes' -> 'file size'); unknown names are returned unchanged."""
    return RESOURCE_LABELS.get(name, name)


def _human(value: float, base: float, units: Sequence[str]) -> str:
    for unit in units[:-1]:
        if abs(value) < base:
            return f"{value:.3g}{unit}" if unit else f"{value:.4g}"
        value /= base
    return f"{value:.3g}{units[-1]}"


def format_value(value: float | None, unit: str = "") -> str:
    """Format a number in its unit: bytes as KiB/MiB/GiB, counts as k/M/G, ms with 3 significant digits."""
    if value is None:
        return "-"
    if unit == "bytes":
        return _human(float(value), 1024.0, [" B", " KiB", " MiB", " GiB", " TiB"])
    if unit in ("count", "MACs"):
        text = _human(float(value), 1000.0, ["", "k", "M", "G", "T"])
        return text if unit == "count" else f"{text} MACs"
    if unit == "ms":
        return f"{value:.3g} ms"
    if isinstance(value, int):
        return f"{value}{' ' + unit if unit else ''}"
    return f"{value:.4g}{' ' + unit if unit else ''}"


def _reason_for_no_change(name: str, sparser: bool, smaller: bool) -> str:
    """Why an unchanged resource did not move, given whether weights got sparser and whether shapes shrank."""
    if not sparser or smaller:
        return ""
    return {
        "file_bytes": "zeros are stored densely; compressed storage turns sparsity into bytes (prunekit export --format compressed, docs/storage.md)",
        "state_dict_bytes": "zeros are stored densely",
        "weight_bytes": "zeros still take memory in dense tensors",
        "latency_p50_ms": "unstructured zeros run on dense kernels",
        "latency_p90_ms": "unstructured zeros run on dense kernels",
        "latency_mean_ms": "unstructured zeros run on dense kernels",
        "peak_memory_bytes": "activations keep their dense shapes",
        "macs": "dense kernels still multiply the zeros",
    }.get(name, "")


def _resource_line(name: str, before: float, after: float, unit: str, tol: float, sparser: bool, smaller: bool) -> str:
    label = metric_label(name)
    values = f"{format_value(before, unit)} -> {format_value(after, unit)}"
    ratio = after / before
    if name in _FEWER:
        if ratio < 1.0 - tol:
            fewer = f"{before / after:.2f}x fewer" if after else "all removed"
            extra = "; a bound that only kernels skipping zeros reach" if name == "effective_macs" else ""
            return f"{label}: {fewer} ({values}){extra}"
        if ratio > 1.0 + tol:
            return f"{label}: {ratio:.2f}x more ({values})"
        why = _reason_for_no_change(name, sparser, smaller)
        return f"{label}: {ratio:.2f}x (no measurable change{': ' + why if why else ''}; {values})"
    head = f"{label}: {ratio:.2f}x of the original ({values})"
    if ratio < 1.0 - tol:
        word = "faster" if name in _TIME else "smaller"
        return f"{head}: {1.0 / ratio:.2f}x {word}" if after else f"{head}: all removed"
    if ratio > 1.0 + tol:
        return f"{head}: {ratio:.2f}x {'slower' if name in _TIME else 'larger'}"
    kind = "no real speedup" if name in _TIME else "no saving"
    why = _reason_for_no_change(name, sparser, smaller)
    noise = "" if after == before else f" (within ±{tol:.0%}, i.e. noise)"
    return f"{head}: {kind}{': ' + why if why else ''}{noise}"


def _quality_line(name: str, before: float, after: float, unit: str, higher_is_better: bool) -> str:
    delta = after - before
    values = f"{format_value(before, unit)} -> {format_value(after, unit)}"
    if delta == 0:
        return f"{name}: unchanged ({values})"
    better = (delta > 0) == higher_is_better
    relative = f", {delta / abs(before):+.1%}" if before else ""
    return f"{name}: {values} ({delta:+.4g}{relative}, {'better' if better else 'worse'})"


def savings_lines(metrics: Mapping[str, Any], tolerance: float = 0.05) -> list[str]:
    """Honest one-line verdicts, one per metric that has a value.

    Args:
        metrics: metric name -> object with `before`, `after`, `unit`, `higher_is_better` (a `MetricPair`).
        tolerance: relative change treated as noise for resource metrics (0.05 = within +-5%).

    Returns:
        Lines such as "non-zero weights: 5.00x fewer (...)" or "file size: 1.00x of the original (...): no saving:
        zeros are stored densely; ...". Resource metrics come first in a fixed order, then task metrics.
    """
    def ratio(name: str) -> float | None:
        pair = metrics.get(name)
        if pair is None or pair.before in (None, 0) or pair.after is None:
            return None
        return pair.after / pair.before

    nonzeros_ratio, params_ratio = ratio("nonzeros"), ratio("params")
    sparser = nonzeros_ratio is not None and nonzeros_ratio < 1.0 - tolerance
    smaller = params_ratio is not None and params_ratio < 1.0 - tolerance
    ordered = [n for n in RESOURCE_LABELS if n in metrics] + [n for n in metrics if n not in RESOURCE_LABELS]
    lines = []
    for name in ordered:
        pair = metrics[name]
        if pair.after is None:
            continue
        if pair.before is None:
            lines.append(f"{metric_label(name)}: {format_value(pair.after, pair.unit)} (no baseline measured)")
        elif name in RESOURCE_LABELS or (not pair.higher_is_better and pair.unit in ("bytes", "ms", "count", "MACs")):
            if pair.before == 0:
                lines.append(f"{metric_label(name)}: {format_value(pair.before, pair.unit)} -> "
                             f"{format_value(pair.after, pair.unit)}")
            else:
                lines.append(_resource_line(name, pair.before, pair.after, pair.unit, tolerance, sparser, smaller))
        else:
            lines.append(_quality_line(name, pair.before, pair.after, pair.unit, pair.higher_is_better))
    return lines
