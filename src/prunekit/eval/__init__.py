"""Evaluation: count (params, non-zeros, MACs), measure (latency, peak memory, file size) and report.

Every pruning job ends in a `PruneReport` that says what was really saved, measured:

    base = count_model(model, x)                       # before pruning
    ...prune...
    report = build_report(model, x, layer_info=info, base_count=base,
                          metrics=compare_models(dense, model, x))
    report.print(); report.save("out/")                 # report.json, report.md, 2 PNG plots
"""

from __future__ import annotations

from prunekit.eval.compare import compare_models
from prunekit.eval.counting import LayerCount, ModelCount, count_model, count_params
from prunekit.eval.measure import (
    LatencyStats,
    file_size,
    measure_latency,
    measure_peak_memory,
    state_dict_bytes,
    weight_bytes,
)
from prunekit.eval.plots import plot_layer_sparsity, plot_summary
from prunekit.eval.report import LayerRow, MetricPair, PruneReport, Totals, build_report, count_metrics

__all__ = [
    "LatencyStats",
    "LayerCount",
    "LayerRow",
    "MetricPair",
    "ModelCount",
    "PruneReport",
    "Totals",
    "build_report",
    "compare_models",
    "count_metrics",
    "count_model",
    "count_params",
    "file_size",
    "measure_latency",
    "measure_peak_memory",
    "plot_layer_sparsity",
    "plot_summary",
    "state_dict_bytes",
    "weight_bytes",
]
