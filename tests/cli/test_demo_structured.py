"""The demo's structured run: half the MACs by removing channels, fine-tuned, measured, saved, loadable."""

from __future__ import annotations

import json
import re
from types import SimpleNamespace

import pytest
import torch
from rich.console import Console
from torch.utils.data import Subset

import prunekit
from prunekit.cli import demo
from prunekit.cli.main import main


def test_structured_run_halves_macs_and_reloads(tmp_path):
    from prunekit.data import DIGITS_RECIPE, digits_cnn, evaluate_classifier, load_dataset

    torch.manual_seed(0)
    dense = digits_cnn(pretrained=False)  # untrained: this checks the plumbing, the slow test the real run
    full = load_dataset("digits")
    small = Subset(full.train, range(128))  # a few steps keep this plumbing test quick
    splits = SimpleNamespace(train=small, test=full.test)
    x = full.test.tensors[0][:8]
    acc = lambda m: {"accuracy": evaluate_classifier(m, Subset(full.test, range(128)))}  # noqa: E731
    con = Console(file=open(tmp_path / "log.txt", "w"), width=120)  # noqa: SIM115
    model, report, recipe = demo._structured_run(con, dense, splits, x, acc, DIGITS_RECIPE, epochs=1, iters=2)
    macs = report.metric("macs")
    assert macs.ratio <= demo.STRUCTURED_MACS_RATIO + 0.02
    assert report.metric("params").after < report.metric("params").before
    for name in ("latency_p50_ms", "accuracy", "accuracy_oneshot", "accuracy_bn_recalibrated", "file_bytes"):
        assert report.metric(name) is not None and report.metric(name).after is not None, name
    demo._save_structured(tmp_path / "structured", model, report, recipe)
    loaded = prunekit.load(tmp_path / "structured")  # base spec prunekit.data:digits_cnn, built without weights
    torch.testing.assert_close(loaded(x), model(x), rtol=0, atol=0)
    lines = demo._summary_lines(report, report)
    lat, a = report.metric("latency_p50_ms"), report.metric("accuracy")
    line = next(t for t in lines if t.startswith("- structured"))
    assert line.startswith(f"- structured {1 / macs.ratio:.1f}x fewer MACs: latency {lat.ratio:.2f}x (")
    assert f"accuracy {a.before:.1%} -> {a.after:.1%}" in line
    with_bench = demo._summary_lines(report, report, _bench_result(), 0.01)  # the bench owns the latency numbers
    line = next(t for t in with_bench if t.startswith("- structured"))
    assert "latency: see the bench" in line and f"{lat.ratio:.2f}x" not in line


def _bench_result():
    from prunekit.eval.bench import BenchResult, VariantResult

    def v(name, p50, params=1000, nonzeros=1000, quantized=False):
        return VariantResult(name=name, note="", latency_p50_ms=p50, latency_p90_ms=p50, latency_mean_ms=p50,
                             latency_min_ms=p50, throughput_per_s=1.0, peak_memory_bytes=1, file_bytes=params,
                             file_source="", weight_bytes=1, params=params, nonzeros=nonzeros, quantized=quantized,
                             metrics={"accuracy": 0.9})

    variants = [v("dense", 1.0), v("80% unstructured", 1.0, nonzeros=200), v("80% compressed fp16", 1.0, nonzeros=200),
                v("structured 2x", 0.8, params=500, nonzeros=500),
                v("structured 2x + INT8", 0.8, params=500, nonzeros=500, quantized=True)]
    return BenchResult(variants=variants, baseline="dense", threads=1, device="cpu", cuda_available=False,
                       torch_version="x", inputs="(1, 4)", batch_size=1, warmup=1, runs=1, rounds=1,
                       higher_is_better={"accuracy": True})


@pytest.mark.parametrize(("ratio", "text"), [(0.5, "2.00x faster"), (1.5, "1.50x SLOWER"), (1.02, "no measurable change"),
                                             (None, "not measured")])
def test_latency_verdict_follows_the_numbers(ratio, text):
    assert demo._verdict(ratio) == text


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_demo_quick_writes_the_structured_result(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("PRUNEKIT_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setenv("COLUMNS", "200")
    out = tmp_path / "demo"
    assert main(["demo", "--quick", "--out", str(out)]) == 0
    printed = " ".join(capsys.readouterr().out.split())
    assert {p.name for p in (out / "structured").iterdir()} >= {"model.safetensors", "plan.json", "recipe.yaml",
                                                                "report.json", "report.md"}
    report = json.loads((out / "structured" / "report.json").read_text())
    metrics = {m["name"]: m for m in report["metrics"]}
    assert metrics["macs"]["ratio"] <= 0.52 and metrics["accuracy"]["after"] > 0.8
    lat = metrics["latency_p50_ms"]["ratio"]
    assert re.search(r"structured 2\.\d?x fewer MACs: latency: see the bench", printed), printed[-800:]
    assert lat > 0 and "honest bottom line" in printed
    assert "| structured 2x |" in (out / "summary.md").read_text()
    model = prunekit.load(out / "structured")
    assert model.fc.in_features < 32
