"""The demo's deploy choice follows the measured numbers (synthetic bench results: no timing involved)."""

from __future__ import annotations

import pytest

from prunekit.cli import demo
from prunekit.eval.bench import BenchResult, VariantResult


def _v(name, p50, acc, *, params=1000, nonzeros=1000, file=4000, quantized=False):
    return VariantResult(name=name, note="", latency_p50_ms=p50, latency_p90_ms=p50, latency_mean_ms=p50,
                         latency_min_ms=p50, throughput_per_s=1000 / p50, peak_memory_bytes=100, file_bytes=file,
                         file_source="", weight_bytes=file, params=params, nonzeros=nonzeros, quantized=quantized,
                         metrics={"accuracy": acc})


def _result(structured_p50, structured_acc, unstructured_p50=1.0):
    variants = [
        _v("dense", 1.0, 0.98),
        _v("80% unstructured", unstructured_p50, 0.978, nonzeros=200),
        _v("80% compressed int8", 1.0, 0.978, nonzeros=200, file=700),
        _v("structured 2x", structured_p50, structured_acc, params=500, nonzeros=500, file=2000),
        _v("structured 2x + INT8", structured_p50 * 1.02, structured_acc, params=500, nonzeros=500, file=1900,
           quantized=True),
    ]
    return BenchResult(variants=variants, baseline="dense", threads=1, device="cpu", cuda_available=False,
                       torch_version="x", inputs="(32, 1, 8, 8)", batch_size=32, warmup=1, runs=1, rounds=1,
                       higher_is_better={"accuracy": True})


def _cpu_pick(lines):
    return lines[0].split(": ", 1)[1].split(" (p50")[0]


def _edge_pick(lines):
    return next(t for t in lines if t.startswith("- deploy on an edge")).split(": ", 1)[1].split(" (p50")[0]


def test_faster_variant_that_keeps_accuracy_is_deployed_on_cpu():
    lines = demo.deploy_lines(_result(structured_p50=0.5, structured_acc=0.975))
    assert _cpu_pick(lines) == "structured 2x"
    assert "p50 0.500 ms = 2.00x the speed of dense" in lines[0] and "the lowest latency" in lines[0]
    assert _edge_pick(lines) == "80% compressed int8"  # the smallest file, kept and not slower


def test_faster_variant_that_lost_accuracy_is_not_deployed():
    lines = demo.deploy_lines(_result(structured_p50=0.5, structured_acc=0.95))  # 3 points lost
    assert _cpu_pick(lines) == "80% compressed int8"
    assert "speed does not decide" in lines[0]
    assert "  (structured 2x was 2.00x faster but lost more than 1 point)" in lines


def test_exactly_one_point_lost_still_counts_as_kept():
    assert _cpu_pick(demo.deploy_lines(_result(structured_p50=0.5, structured_acc=0.97))) == "structured 2x"


def test_zeros_on_dense_kernels_never_count_as_faster():
    lines = demo.deploy_lines(_result(structured_p50=1.0, structured_acc=0.98, unstructured_p50=0.5))
    assert _cpu_pick(lines) == "80% compressed int8"
    text = demo._ratio_text(_result(1.0, 0.98, unstructured_p50=0.5), "80% unstructured")
    assert text == "file 1.00x, speed 2.00x (same dense kernels: the difference is timing noise)"


def test_slower_smaller_variant_is_not_the_edge_pick():
    result = _result(structured_p50=0.5, structured_acc=0.975)
    slow = [_v("dense", 1.0, 0.98), _v("tiny but slow", 2.0, 0.98, params=400, nonzeros=400, file=100),
            _v("structured 2x", 0.5, 0.975, params=500, nonzeros=500, file=2000)]
    result = BenchResult(**{**result.to_dict(), "variants": slow})
    lines = demo.deploy_lines(result)
    assert _edge_pick(lines) == "structured 2x" and _cpu_pick(lines) == "structured 2x"


@pytest.mark.parametrize(("speed", "word"), [(0.5, "faster"), (1.0, "no real change"), (1.5, "SLOWER")])
def test_ratio_text_follows_the_thresholds(speed, word):
    result = _result(structured_p50=speed, structured_acc=0.98)
    assert f"speed {1 / speed:.2f}x ({word}" in demo._ratio_text(result, "structured 2x")
