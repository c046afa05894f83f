"""Measure two models (before and after pruning) the same way and return before/after `MetricPair`s.

Latency, peak activation memory, weight memory and file size come from `prunekit.eval.measure`; both models get the
same inputs, thread count and iteration counts. Latency is timed in alternating rounds (before, after, before,
after) and the lower p50 of each model's rounds is kept, so a burst of background load hurts neither side alone.
"""

from __future__ import annotations

from typing import Any

from torch import nn

from prunekit.eval.measure import file_size, measure_latency, measure_peak_memory, weight_bytes
from prunekit.eval.report import MetricPair


def compare_models(
    before: nn.Module,
    after: nn.Module,
    example_inputs: Any,
    *,
    latency: bool = True,
    peak_memory: bool = True,
    size: bool = True,
    warmup: int = 5,
    iters: int = 30,
    rounds: int = 2,
    threads: int | None = None,
) -> list[MetricPair]:
    """Measure `before` and `after` on `example_inputs`.

    Args:
        before: the original (dense) model.
        after: the pruned model.
        example_inputs: a Tensor, a tuple of positional inputs or a dict of keyword inputs.
        latency: measure `latency_p50_ms`.
        peak_memory: measure `peak_memory_bytes` (activations of one forward).
        size: measure `file_bytes` (safetensors) and `weight_bytes` (params + buffers in memory).
        warmup: untimed runs per latency round.
        iters: timed runs per latency round.
        rounds: alternating latency rounds per model; the lowest p50 is kept.
        threads: CPU threads for latency (None keeps the current setting).

    Returns:
        Metric pairs in the order latency, peak memory, file size, weight memory.
    """
    pairs = []
    if latency:
        p50 = {"before": [], "after": []}
        for _ in range(max(1, rounds)):
            for key, model in (("before", before), ("after", after)):
                stats = measure_latency(model, example_inputs, warmup=warmup, iters=iters, threads=threads)
                p50[key].append(stats.p50_ms)
        note = f"p50 of {iters} runs, best of {max(1, rounds)} rounds, {stats.threads} thread(s), {stats.device}"
        pairs.append(MetricPair("latency_p50_ms", min(p50["before"]), min(p50["after"]), "ms", False, note))
    if peak_memory:
        pairs.append(MetricPair("peak_memory_bytes", measure_peak_memory(before, example_inputs),
                                measure_peak_memory(after, example_inputs), "bytes", False,
                                "tensors created during one forward"))
    if size:
        pairs.append(MetricPair("file_bytes", file_size(before), file_size(after), "bytes", False,
                                "state_dict as safetensors"))
        pairs.append(MetricPair("weight_bytes", weight_bytes(before), weight_bytes(after), "bytes", False,
                                "params + buffers in memory"))
    return pairs
