"""`bench`: measure model variants (dense, pruned, pruned + INT8, ...) side by side on the machine at hand.

For each variant: latency p50 / p90 after warm-up, throughput, peak activation memory, file size, weight memory,
parameters / non-zeros and the task metric. Timing is interleaved: every variant is warmed up, then `rounds` rounds
each time every variant (in a rotated order) for `runs / rounds` consecutive calls, so a burst of background load
is shared by all variants instead of hitting one. CPU threads are pinned to `threads` for the whole run (restored
afterwards) and reported.

    result = bench({"dense": dense, "pruned": pruned, "pruned + INT8": quantize_dynamic_int8(pruned)}, x,
                   evaluate=lambda m: {"accuracy": acc(m)})
    result.print(); result.save("out/")        # bench.json, bench.md, bench.png (metric vs latency)
    result.advice()                            # which savings are real, for CPU / GPU / edge targets

File size is the safetensors file of the variant's state dict (quantized Linear layers unpacked to INT8 + scales),
or, for a variant given with `files`, the total size of those files (e.g. a pruned folder's model.safetensors).
"""

from __future__ import annotations

import contextlib
import math
import os
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from prunekit.errors import PrunekitError
from prunekit.eval._bench_measure import counts, output_agreement, sizes
from prunekit.eval._inputs import call_model, check_inputs, describe_inputs, eval_mode, iter_tensors
from prunekit.eval.measure import measure_peak_memory
from prunekit.export.quantize_dynamic import is_quantized

__all__ = ["BenchResult", "Variant", "VariantResult", "bench", "guess_higher_is_better", "output_agreement"]

LOWER_IS_BETTER_WORDS = ("perplexity", "loss", "error", "wer", "cer", "latency")


@dataclass
class Variant:
    """A model to bench, with the files it is stored in (their total size is its file size) and a note."""

    model: nn.Module
    files: Sequence[str | os.PathLike[str]] | None = None
    note: str = ""


@dataclass(frozen=True)
class VariantResult:
    """Everything measured for one variant. Sizes in bytes, times in ms, throughput in samples per second."""

    name: str
    note: str
    latency_p50_ms: float
    latency_p90_ms: float
    latency_mean_ms: float
    latency_min_ms: float
    throughput_per_s: float
    peak_memory_bytes: int
    file_bytes: int
    file_source: str
    weight_bytes: int
    params: int
    nonzeros: int
    quantized: bool
    metrics: dict[str, float] = field(default_factory=dict)


@dataclass(frozen=True)
class BenchResult:
    """The variants measured side by side, with how (threads, device, inputs, counts); `baseline` is the reference."""

    variants: list[VariantResult]
    baseline: str
    threads: int
    device: str
    cuda_available: bool
    torch_version: str
    inputs: str
    batch_size: int
    warmup: int
    runs: int
    rounds: int
    higher_is_better: dict[str, bool]

    def variant(self, name: str) -> VariantResult:
        """The result of variant `name`."""
        for v in self.variants:
            if v.name == name:
                return v
        from prunekit.errors import choices_text, suggest

        names = [v.name for v in self.variants]
        raise PrunekitError(f"no variant {name!r}.{suggest(name, names)} Measured: {choices_text(names)}")

    def speedup(self, name: str) -> float:
        """Baseline p50 / variant p50 (> 1: faster than the baseline)."""
        return self.variant(self.baseline).latency_p50_ms / self.variant(name).latency_p50_ms

    def file_ratio(self, name: str) -> float:
        """Variant file size / baseline file size."""
        return self.variant(name).file_bytes / max(1, self.variant(self.baseline).file_bytes)

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-ready dict (every field; `from_dict` reads it back)."""
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> BenchResult:
        """Inverse of `to_dict`; unknown or missing keys are an error naming them."""
        own = {f.name for f in fields(cls)}
        if set(data) != own:
            raise PrunekitError(f"bench result keys differ: missing {sorted(own - set(data))}, "
                                f"unknown {sorted(set(data) - own)}")
        values = dict(data)
        values["variants"] = [VariantResult(**v) for v in data["variants"]]
        return cls(**values)

    def advice(self) -> list[str]:
        """Deployment advice for CPU / GPU / edge built from these numbers (thresholds: `prunekit.eval._advice`)."""
        from prunekit.eval._advice import advice_lines

        return advice_lines(self)

    def to_markdown(self) -> str:
        """bench.md: the table, how it was measured, and the advice."""
        from prunekit.eval._bench_render import bench_markdown

        return bench_markdown(self)

    def print(self, console: Any = None) -> None:
        """The table and the advice on a rich console."""
        from prunekit.eval._bench_render import print_bench

        print_bench(self, console)

    def plot(self, path: str | os.PathLike[str]) -> None:
        """PNG: task metric (or file size when there is none) vs latency p50, one point per variant."""
        from prunekit.eval._bench_render import plot_bench

        plot_bench(self, path)

    def save(self, directory: str | os.PathLike[str]) -> list[Path]:
        """Write bench.json, bench.md and bench.png into `directory` (created if missing)."""
        import json

        folder = Path(directory)
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "bench.json").write_text(json.dumps(self.to_dict(), indent=2) + "\n", encoding="utf-8")
        (folder / "bench.md").write_text(self.to_markdown(), encoding="utf-8")
        self.plot(folder / "bench.png")
        return [folder / "bench.json", folder / "bench.md", folder / "bench.png"]


def _check_int(name: str, value: Any, minimum: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise PrunekitError(f"{name} must be an integer >= {minimum}, got {value!r}")


def guess_higher_is_better(metric: str) -> bool:
    """Accuracy-like metrics are higher-is-better; names containing perplexity / loss / error ... are not."""
    return not any(word in metric.lower() for word in LOWER_IS_BETTER_WORDS)


def _batch_size(example_inputs: Any) -> int:
    for tensor in iter_tensors(example_inputs):
        return int(tensor.shape[0]) if tensor.dim() else 1
    return 1


def _timed_rounds(models: dict[str, nn.Module], example_inputs: Any, warmup: int, runs: int,
                  rounds: int) -> dict[str, list[float]]:
    names = list(models)
    per_round = math.ceil(runs / rounds)
    sync = torch.cuda.synchronize if torch.cuda.is_available() else (lambda: None)
    times: dict[str, list[float]] = {n: [] for n in names}
    for name in names:
        for _ in range(warmup):
            call_model(models[name], example_inputs)
    sync()
    for r in range(rounds):
        for name in names[r % len(names):] + names[:r % len(names)]:  # rotated: no variant always goes first
            for _ in range(per_round):
                start = time.perf_counter()
                call_model(models[name], example_inputs)
                sync()
                times[name].append((time.perf_counter() - start) * 1000.0)
    return times


def bench(variants: Mapping[str, nn.Module | Variant], example_inputs: Any, *,
          evaluate: Callable[[nn.Module], Mapping[str, float]] | None = None, baseline: str | None = None,
          threads: int = 1, warmup: int = 5, runs: int = 30, rounds: int = 5,
          higher_is_better: Mapping[str, bool] | None = None) -> BenchResult:
    """Measure every variant on `example_inputs` the same way; see the module docstring.

    Args:
        variants: name -> model (or `Variant` with its files); insertion order is the table order.
        example_inputs: a Tensor, a tuple of positional inputs or a dict of keyword inputs (its first dimension is
            the batch size used for throughput).
        evaluate: model -> {metric: value} (e.g. test accuracy), called once per variant.
        baseline: the variant the others are compared with (default: the first).
        threads: CPU threads pinned for the whole run (restored afterwards).
        warmup: untimed calls per variant before timing.
        runs: timed calls per variant, spread over `rounds` interleaved rounds.
        higher_is_better: per metric; metrics not named are guessed from their name (`guess_higher_is_better`).

    Raises:
        PrunekitError: no variants, a value that is not a model, an unknown baseline, or a bad count.
    """
    if not variants:
        raise PrunekitError("bench needs at least one variant (name -> model)")
    check_inputs(example_inputs)
    for label, value in (("threads", threads), ("runs", runs), ("rounds", rounds)):
        _check_int(label, value, 1)
    _check_int("warmup", warmup, 0)
    items = {n: v if isinstance(v, Variant) else Variant(v) for n, v in variants.items()}
    for name, item in items.items():
        if not isinstance(item.model, nn.Module):
            raise PrunekitError(f"variant {name!r} is a {type(item.model).__name__}, not a torch.nn.Module")
    baseline = next(iter(items)) if baseline is None else baseline
    if baseline not in items:
        from prunekit.errors import choices_text, suggest

        raise PrunekitError(f"baseline {baseline!r} is not a variant.{suggest(baseline, items)} "
                            f"Variants: {choices_text(items)}")
    rounds = min(rounds, runs)
    previous = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        used_threads = torch.get_num_threads()
        models = {n: v.model for n, v in items.items()}
        with contextlib.ExitStack() as stack:
            for model in models.values():
                stack.enter_context(eval_mode(model))
            stack.enter_context(torch.inference_mode())
            times = _timed_rounds(models, example_inputs, warmup, runs, rounds)
        batch = _batch_size(example_inputs)
        results = []
        for name, item in items.items():
            values = np.asarray(times[name], dtype=np.float64)
            p50 = float(np.percentile(values, 50))
            disk, source, memory = sizes(item)
            params, nonzeros = counts(item.model)
            metrics = {k: float(v) for k, v in (evaluate(item.model) if evaluate else {}).items()}
            results.append(VariantResult(
                name=name, note=item.note, latency_p50_ms=p50, latency_p90_ms=float(np.percentile(values, 90)),
                latency_mean_ms=float(values.mean()), latency_min_ms=float(values.min()),
                throughput_per_s=batch * 1000.0 / p50 if p50 > 0 else float("inf"),
                peak_memory_bytes=measure_peak_memory(item.model, example_inputs), file_bytes=int(disk),
                file_source=source, weight_bytes=int(memory), params=params, nonzeros=nonzeros,
                quantized=is_quantized(item.model), metrics=metrics))
    finally:
        torch.set_num_threads(previous)
    names = sorted({k for r in results for k in r.metrics})
    direction = {k: bool((higher_is_better or {}).get(k, guess_higher_is_better(k))) for k in names}
    device = "cuda" if any(t.is_cuda for t in iter_tensors(example_inputs)) else "cpu"
    return BenchResult(
        variants=results, baseline=baseline, threads=used_threads, device=device,
        cuda_available=torch.cuda.is_available(), torch_version=torch.__version__,
        inputs=describe_inputs(example_inputs), batch_size=_batch_size(example_inputs), warmup=warmup,
        runs=math.ceil(runs / rounds) * rounds, rounds=rounds, higher_is_better=direction)
