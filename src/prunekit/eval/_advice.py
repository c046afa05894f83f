"""Deployment advice built from a `BenchResult`'s numbers: which savings are real on CPU, GPU and edge targets.

Every sentence is made from the measured values and these documented thresholds, never a fixed paragraph:

- `SPEEDUP_REAL` (1.10): a variant is "faster" when baseline p50 / variant p50 >= 1.10; "slower" when <= 1/1.10;
  in between it is "no real speedup" (timing noise on a shared machine is several percent).
- `SIZE_REAL` (0.95): a file is "smaller" when its size is <= 0.95 of the baseline's.
- `METRIC_TOL` (0.01): the task metric is "kept" when it got worse by at most 1% of the baseline value (relative);
  otherwise the line says how much it lost.
- A variant with only zeros (same shapes, float) measured >= 1.10x faster is flagged as unexpected (dense kernels
  multiply zeros too): real only with sparse kernels, otherwise noise.
- What a variant is, is read from its counts: "structured" when it has <= 0.95 of the baseline's parameters,
  "N% zeros" when its non-zero fraction is >= 5 points below the baseline's, "INT8" when it holds quantized Linears.

GPU: numbers are only claimed when the bench ran on CUDA. Otherwise the GPU line says "not measured here" and
states what carries over by construction (smaller dense layers do; unstructured zeros and torch.ao's dynamic INT8,
a CPU-only kernel, do not). Edge targets are judged on file size, peak memory and the CPU latency measured here.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from prunekit.eval._savings import format_value

if TYPE_CHECKING:
    from prunekit.eval.bench import BenchResult, VariantResult

SPEEDUP_REAL = 1.10
SIZE_REAL = 0.95
METRIC_TOL = 0.01


def _features(v: VariantResult, base: VariantResult) -> dict[str, Any]:
    density = v.nonzeros / v.params if v.params else 1.0
    base_density = base.nonzeros / base.params if base.params else 1.0
    return {
        "structured": v.params <= SIZE_REAL * base.params,
        "params_ratio": v.params / base.params if base.params else 1.0,
        "sparse": density <= base_density - 0.05,
        "sparsity": 1.0 - density,
        "int8": v.quantized and not base.quantized,
    }


def describe(v: VariantResult, base: VariantResult) -> str:
    """'structured (0.52x params) + INT8', '80% zeros', or 'same shape and density as the baseline'."""
    f = _features(v, base)
    parts = []
    if f["structured"]:
        parts.append(f"structured ({f['params_ratio']:.2f}x params)")
    if f["sparse"]:
        parts.append(f"{f['sparsity']:.0%} zeros")
    if f["int8"]:
        parts.append("INT8 dynamic")
    return " + ".join(parts) or "same shape and density as the baseline"


def _speed_text(speed: float) -> str:
    if speed >= SPEEDUP_REAL:
        return f"{speed:.2f}x faster"
    if speed <= 1.0 / SPEEDUP_REAL:
        return f"{1.0 / speed:.2f}x slower"
    return f"{speed:.2f}x latency (no real speedup)"


def _metric_text(result: BenchResult, v: VariantResult, base: VariantResult) -> tuple[str, bool]:
    """(', accuracy 0.95 -> 0.91 (-4.2%)' or '', whether every metric was kept within METRIC_TOL)."""
    texts, kept = [], True
    for name, after in v.metrics.items():
        before = base.metrics.get(name)
        if before is None:
            continue
        worse = (before - after) if result.higher_is_better.get(name, True) else (after - before)
        relative = worse / abs(before) if before else (0.0 if worse <= 0 else float("inf"))
        if relative > METRIC_TOL:
            kept = False
            texts.append(f"{name} {before:.4g} -> {after:.4g} ({-relative:+.1%}, lost)")
        else:
            texts.append(f"{name} kept ({before:.4g} -> {after:.4g})")
    return ("; " + "; ".join(texts)) if texts else "", kept


def _cpu_line(result: BenchResult, v: VariantResult, base: VariantResult) -> str:
    f = _features(v, base)
    speed, size = base.latency_p50_ms / v.latency_p50_ms, v.file_bytes / max(1, base.file_bytes)
    metric, kept = _metric_text(result, v, base)
    head = (f"{v.name} ({describe(v, base)}): {_speed_text(speed)} measured here, file {size:.2f}x "
            f"({format_value(v.file_bytes, 'bytes')}){metric}")
    zeros_only = f["sparse"] and not f["structured"] and not f["int8"]
    if speed >= SPEEDUP_REAL and zeros_only:
        verdict = ("unexpected for zeros on dense kernels: real only if this variant runs sparse kernels, otherwise "
                   "timing noise (measure again with more runs)")
    elif speed >= SPEEDUP_REAL and kept:
        verdict = f"real on {result.device.upper()}"
    elif speed >= SPEEDUP_REAL:
        verdict = f"real speedup on {result.device.upper()}, but the task metric dropped: fine-tune or prune less"
    elif zeros_only:
        verdict = (f"{1 / size:.2f}x smaller on disk, but no speedup: the zeros still run on dense kernels (sparse "
                   "kernels pay off only at very high sparsity)" if size <= SIZE_REAL else
                   "no saving in time or size while zeros are stored and run dense: needs compressed storage for "
                   "size, sparse kernels (very high sparsity) for speed")
    else:
        verdict = "no real speedup here" + (f", but {1 / size:.2f}x smaller on disk" if size <= SIZE_REAL else "")
    return f"{head} -> {verdict}"


def _gpu_line(result: BenchResult, v: VariantResult, base: VariantResult) -> str:
    if result.device == "cuda":
        return _cpu_line(result, v, base)
    f = _features(v, base)
    parts = []
    if f["structured"]:
        parts.append(f"its {f['params_ratio']:.2f}x smaller dense layers carry over (expect a speedup when the GPU "
                     "is compute-bound, e.g. large batches)")
    if f["sparse"]:
        parts.append(f"its {f['sparsity']:.0%} unstructured zeros give no GPU speedup (only 2:4 with "
                     "semi-structured kernels does)")
    if f["int8"]:
        parts.append("torch.ao dynamic INT8 has no CUDA kernel (not a GPU path)")
    why = "; ".join(parts) or "nothing changed that a GPU could use"
    where = "no CUDA on this machine" if not result.cuda_available else "the bench ran on CPU"
    return f"{v.name}: not measured on GPU ({where}); by construction {why}"


def _edge_line(result: BenchResult, v: VariantResult, base: VariantResult) -> str:
    speed, size = base.latency_p50_ms / v.latency_p50_ms, v.file_bytes / max(1, base.file_bytes)
    memory = v.peak_memory_bytes / max(1, base.peak_memory_bytes)
    _, kept = _metric_text(result, v, base)
    good = size <= SIZE_REAL and speed >= SPEEDUP_REAL and kept
    if good:
        verdict = "a real edge saving"
    elif size <= SIZE_REAL:
        verdict = "smaller only (not faster)" if kept else "smaller, but the task metric dropped"
    else:
        verdict = "no edge saving"
    return (f"{v.name}: file {size:.2f}x, peak activation memory {memory:.2f}x, {_speed_text(speed)} on this CPU "
            f"-> {verdict}")


def _zeros_only(v: VariantResult, base: VariantResult) -> bool:
    """Zeros on dense kernels: any speed-up it measures is timing noise, never a reason to deploy it."""
    f = _features(v, base)
    return f["sparse"] and not f["structured"] and not f["int8"]


def _best(result: BenchResult, key: str) -> VariantResult | None:
    base = result.variant(result.baseline)
    ok = [v for v in result.variants if v is not base and _metric_text(result, v, base)[1]]
    if key == "latency":
        ok = [v for v in ok if base.latency_p50_ms / v.latency_p50_ms >= SPEEDUP_REAL and not _zeros_only(v, base)]
        return min(ok, key=lambda v: v.latency_p50_ms, default=None)
    ok = [v for v in ok if v.file_bytes <= SIZE_REAL * base.file_bytes and
          base.latency_p50_ms / v.latency_p50_ms > 1.0 / SPEEDUP_REAL]
    return min(ok, key=lambda v: (v.file_bytes, v.latency_p50_ms), default=None)


def _loss(result: BenchResult, v: VariantResult, base: VariantResult) -> float:
    """The largest relative worsening over the shared task metrics (0 when none got worse)."""
    losses = [0.0]
    for name, after in v.metrics.items():
        before = base.metrics.get(name)
        if before:
            worse = (before - after) if result.higher_is_better.get(name, True) else (after - before)
            losses.append(worse / abs(before))
    return max(losses)


def _closest(result: BenchResult) -> str:
    """'; closest: X (1.92x faster, task metric 1.3% worse)' for the faster variant that lost least, or ''."""
    base = result.variant(result.baseline)
    faster = [v for v in result.variants if v is not base and base.latency_p50_ms / v.latency_p50_ms >= SPEEDUP_REAL
              and not _zeros_only(v, base)]
    if not faster:
        return ""
    best = min(faster, key=lambda v: (_loss(result, v, base), v.latency_p50_ms))
    return (f"; closest: {best.name} ({base.latency_p50_ms / best.latency_p50_ms:.2f}x faster, task metric "
            f"{_loss(result, best, base):.1%} worse)")


def advice_lines(result: BenchResult) -> list[str]:
    """Per target ('CPU', 'GPU', 'edge'), one line per variant against the baseline, then a recommendation."""
    base = result.variant(result.baseline)
    others = [v for v in result.variants if v is not base]
    device = result.device.upper()
    lines = [f"{device} (measured here, {result.threads} thread(s), batch {result.batch_size}, baseline "
             f"{base.name!r} p50 {format_value(base.latency_p50_ms, 'ms')}):"]
    lines += [f"  {_cpu_line(result, v, base)}" for v in others]
    fastest = _best(result, "latency")
    kept = "metric kept" if base.metrics else "no task metric measured: check quality first"
    lines.append(f"  deploy on {device}: " + (
        f"{fastest.name} ({base.latency_p50_ms / fastest.latency_p50_ms:.2f}x faster, {kept})" if fastest else
        f"{base.name}: no variant was >= {SPEEDUP_REAL:.2f}x faster with the task metric kept" + _closest(result)))
    if device != "CUDA":
        lines.append("GPU:")
        lines += [f"  {_gpu_line(result, v, base)}" for v in others]
    lines.append("edge (file size, memory, CPU latency measured here):")
    lines += [f"  {_edge_line(result, v, base)}" for v in others]
    smallest = _best(result, "size")
    lines.append("  deploy on edge: " + (
        f"{smallest.name} (file {smallest.file_bytes / max(1, base.file_bytes):.2f}x, "
        f"{base.latency_p50_ms / smallest.latency_p50_ms:.2f}x speed, {kept})" if smallest else
        f"{base.name}: no variant was smaller (<= {SIZE_REAL:.2f}x) and not slower with the metric kept"))
    return lines
