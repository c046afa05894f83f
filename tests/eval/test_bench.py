"""`prunekit.eval.bench`: side-by-side measurement of variants, its JSON / Markdown / plot, and the advice built
from the numbers."""

from __future__ import annotations

import dataclasses
import json

import pytest
import torch
from torch import nn

from prunekit.errors import PrunekitError
from prunekit.eval import _advice
from prunekit.eval.bench import BenchResult, Variant, VariantResult, bench, guess_higher_is_better, output_agreement
from prunekit.export.quantize_dynamic import is_quantized, plain_state_dict, quantize_dynamic_int8

X = torch.randn(8, 32, generator=torch.Generator().manual_seed(0))


def mlp(hidden: int = 64, seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(32, hidden), nn.ReLU(), nn.Linear(hidden, 4)).eval()


def sparse_mlp(sparsity: float = 0.8) -> nn.Module:
    model = mlp()
    with torch.no_grad():
        for layer in (model[0], model[2]):
            keep = torch.rand(layer.weight.shape, generator=torch.Generator().manual_seed(1)) >= sparsity
            layer.weight.mul_(keep)
    return model


def test_bench_measures_every_field_and_json_round_trips(tmp_path):
    dense, small, sparse = mlp(), mlp(hidden=16), sparse_mlp()
    calls = []

    def evaluate(model):
        calls.append(model)
        return {"accuracy": 0.5 if model is small else 0.9}

    result = bench({"dense": dense, "small": small, "sparse": sparse}, X, evaluate=evaluate, threads=1, warmup=1,
                   runs=4, rounds=2)
    assert [v.name for v in result.variants] == ["dense", "small", "sparse"]
    assert calls == [dense, small, sparse]
    assert result.threads == 1 and result.device == "cpu" and result.batch_size == 8 and result.runs == 4
    assert result.torch_version == torch.__version__ and result.higher_is_better == {"accuracy": True}
    d, s, sp = result.variants
    for v in result.variants:
        assert 0 < v.latency_min_ms <= v.latency_p50_ms <= v.latency_p90_ms
        assert v.throughput_per_s == pytest.approx(8 * 1000.0 / v.latency_p50_ms)
        assert v.peak_memory_bytes > 0 and v.file_bytes > v.weight_bytes > 0
    assert d.params == 32 * 64 + 64 + 64 * 4 + 4 and d.nonzeros == d.params
    assert s.params < d.params and s.file_bytes < d.file_bytes
    assert sp.params == d.params and sp.nonzeros < 0.3 * d.params and sp.file_bytes == d.file_bytes
    assert s.metrics == {"accuracy": 0.5} and result.speedup("dense") == 1.0

    data = json.loads(json.dumps(result.to_dict()))
    assert set(data) == {f.name for f in dataclasses.fields(BenchResult)}
    assert set(data["variants"][0]) == {f.name for f in dataclasses.fields(VariantResult)}
    assert BenchResult.from_dict(data) == result
    with pytest.raises(PrunekitError, match=r"missing \['threads'\]"):
        BenchResult.from_dict({k: v for k, v in data.items() if k != "threads"})

    written = result.save(tmp_path / "b")
    assert [p.name for p in written] == ["bench.json", "bench.md", "bench.png"]
    assert BenchResult.from_dict(json.loads(written[0].read_text())) == result
    text = written[1].read_text()
    assert "| small |" in text and "1 thread(s)" in text and "## What is real" in text
    assert written[2].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_bench_pins_threads_and_restores_them():
    before = torch.get_num_threads()
    result = bench({"a": mlp()}, X, threads=2, warmup=0, runs=1, rounds=1)
    assert result.threads == 2 and torch.get_num_threads() == before


def test_int8_variant_and_files_size(tmp_path):
    dense = mlp(hidden=256)
    q = quantize_dynamic_int8(dense)
    assert is_quantized(q) and not is_quantized(dense)
    torch.testing.assert_close(q(X), dense(X), atol=0.05, rtol=0.05)
    plain = plain_state_dict(q)
    assert plain["0.weight"].dtype == torch.int8 and plain["0.weight_scale"].shape == (256,)
    stored = tmp_path / "w.bin"
    stored.write_bytes(b"x" * 1234)
    result = bench({"dense": dense, "int8": q, "stored": Variant(dense, [stored], "a file")}, X, warmup=0, runs=2,
                   rounds=1)
    d, i, f = result.variants
    assert i.quantized and not d.quantized and i.params == d.params
    assert i.file_bytes < 0.35 * d.file_bytes and "INT8" in i.file_source
    assert f.file_bytes == 1234 and f.file_source == "files: w.bin" and f.note == "a file"


def test_bench_errors_name_the_bad_value():
    with pytest.raises(PrunekitError, match="at least one variant"):
        bench({}, X)
    with pytest.raises(PrunekitError, match=r"baseline 'dens' is not a variant. Did you mean: dense\? Variants: a, dense"):
        bench({"a": mlp(), "dense": mlp()}, X, baseline="dens")
    with pytest.raises(PrunekitError, match="variant 'a' is a str"):
        bench({"a": "model"}, X)
    with pytest.raises(PrunekitError, match="threads must be an integer >= 1, got 0"):
        bench({"a": mlp()}, X, threads=0)
    with pytest.raises(PrunekitError, match="example_inputs must be"):
        bench({"a": mlp()}, "x")
    with pytest.raises(PrunekitError, match="variant files not found"):
        bench({"a": Variant(mlp(), ["/no/such/file"])}, X, warmup=0, runs=1)
    with pytest.raises(PrunekitError, match="has none"):
        quantize_dynamic_int8(nn.Sequential(nn.Conv2d(1, 1, 1)))


def test_output_agreement_and_metric_direction():
    dense = mlp()
    evaluate = output_agreement(dense, X)
    assert evaluate(dense)["output_cosine"] == pytest.approx(1.0)
    assert evaluate(mlp(seed=3))["output_cosine"] < 0.99
    assert guess_higher_is_better("accuracy") and not guess_higher_is_better("perplexity")


def _variant(name, p50, *, params=1000, nonzeros=1000, file=4000, quantized=False, metrics=None):
    return VariantResult(name=name, note="", latency_p50_ms=p50, latency_p90_ms=p50, latency_mean_ms=p50,
                         latency_min_ms=p50, throughput_per_s=1000 / p50, peak_memory_bytes=100, file_bytes=file,
                         file_source="", weight_bytes=file, params=params, nonzeros=nonzeros, quantized=quantized,
                         metrics=metrics or {})


def _result(*variants, cuda=False, device="cpu"):
    return BenchResult(variants=list(variants), baseline=variants[0].name, threads=1, device=device,
                       cuda_available=cuda, torch_version="x", inputs="(1, 4)", batch_size=1, warmup=1, runs=1,
                       rounds=1, higher_is_better={"accuracy": True})


def test_advice_follows_the_numbers():
    base = _variant("dense", 10.0, metrics={"accuracy": 0.9})
    fast = _result(base, _variant("s", 10.0 / 1.6, params=500, nonzeros=500, file=2000, metrics={"accuracy": 0.9}))
    slow = _result(base, _variant("s", 10.0 / 1.05, params=500, nonzeros=500, file=2000, metrics={"accuracy": 0.9}))
    a_fast, a_slow = fast.advice(), slow.advice()
    assert a_fast != a_slow
    assert "s (structured (0.50x params)): 1.60x faster measured here" in a_fast[1] and "real on CPU" in a_fast[1]
    assert "1.05x latency (no real speedup)" in a_slow[1] and "2.00x smaller on disk" in a_slow[1]
    assert "deploy on CPU: s (1.60x faster, metric kept)" in "\n".join(a_fast)
    assert "deploy on CPU: dense: no variant" in "\n".join(a_slow)

    dense_zeros = _result(base, _variant("u80", 10.0, nonzeros=200, metrics={"accuracy": 0.9}))
    text = "\n".join(dense_zeros.advice())
    assert "u80 (80% zeros): 1.00x latency (no real speedup) measured here, file 1.00x" in text
    assert "no saving in time or size while zeros are stored and run dense" in text
    assert "80% unstructured zeros give no GPU speedup" in text and "no CUDA on this machine" in text
    noisy = _result(base, _variant("u80", 8.0, nonzeros=200, metrics={"accuracy": 0.9}))
    assert "1.25x faster measured here" in noisy.advice()[1] and "otherwise timing noise" in noisy.advice()[1]
    assert "deploy on CPU: dense: no variant" in "\n".join(noisy.advice())  # noise is never a reason to deploy
    compressed = _result(base, _variant("u80c", 10.0, nonzeros=200, file=1000, metrics={"accuracy": 0.9}))
    assert "4.00x smaller on disk, but no speedup" in "\n".join(compressed.advice())

    lost = _result(base, _variant("s", 5.0, params=500, nonzeros=500, file=2000, metrics={"accuracy": 0.8}))
    text = "\n".join(lost.advice())
    assert "accuracy 0.9 -> 0.8 (-11.1%, lost)" in text and "the task metric dropped" in text
    assert "deploy on CPU: dense: no variant was >= 1.10x faster with the task metric kept; closest: s (2.00x " \
           "faster, task metric 11.1% worse)" in text
    int8 = _result(base, _variant("q", 5.0, file=1000, quantized=True, metrics={"accuracy": 0.9}))
    text = "\n".join(int8.advice())
    assert "q (INT8 dynamic): 2.00x faster" in text and "no CUDA kernel" in text
    assert "deploy on edge: q (file 0.25x, 2.00x speed, metric kept)" in text


def test_advice_thresholds_and_gpu_measured():
    base = _variant("dense", 10.0)
    just_below = _result(base, _variant("v", 10.0 / (_advice.SPEEDUP_REAL - 0.01)))
    just_above = _result(base, _variant("v", 10.0 / (_advice.SPEEDUP_REAL + 0.01)))
    assert "no real speedup" in just_below.advice()[1] and "1.11x faster" in just_above.advice()[1]
    assert "no task metric measured" in "\n".join(just_above.advice())
    on_gpu = _result(base, _variant("v", 5.0, params=500, nonzeros=500), cuda=True, device="cuda")
    text = "\n".join(on_gpu.advice())
    assert text.startswith("CUDA (measured here") and "not measured on GPU" not in text
