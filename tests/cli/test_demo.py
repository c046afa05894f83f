"""`prunekit demo --quick` end to end: trains a small model into a temp cache, prunes, fine-tunes, reports."""

from __future__ import annotations

import json

import pytest

from prunekit.cli.demo import deploy_lines
from prunekit.eval.bench import BenchResult

from prunekit.cli.main import main


@pytest.mark.timeout(600)
def test_demo_quick_end_to_end(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("PRUNEKIT_CACHE_DIR", str(tmp_path / "cache"))
    out = tmp_path / "demo"
    assert main(["demo", "--quick", "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "honest bottom line" in printed
    report = json.loads((out / "report.json").read_text())
    metrics = {m["name"]: m for m in report["metrics"]}
    assert report["totals"]["targeted_sparsity"] == pytest.approx(0.8, abs=1e-3)
    assert metrics["nonzeros"]["after"] < 0.3 * metrics["nonzeros"]["before"]
    assert metrics["file_bytes"]["after"] == pytest.approx(metrics["file_bytes"]["before"], rel=0.01)
    assert metrics["accuracy"]["after"] > 0.85  # quick: 6 training epochs + 2 fine-tuning epochs
    assert {p.name for p in out.iterdir()} >= {"model.safetensors", "recipe.yaml", "report.json", "report.md",
                                               "bench.json", "bench.md", "bench.png", "summary.md"}
    _check_bench(out, printed, metrics, capsys)
    # a second run to the same folder is refused, the first output untouched
    assert main(["demo", "--quick", "--out", str(out)]) == 2
    assert json.loads((out / "report.json").read_text()) == report


def _check_bench(out, printed, metrics, capsys):
    """The bench at the end: every variant, real files, compressed models loaded back, advice from the numbers."""
    result = BenchResult.from_dict(json.loads((out / "bench.json").read_text()))
    assert [v.name for v in result.variants] == ["dense", "80% unstructured", "80% compressed fp16",
                                                 "80% compressed int8", "structured 2x", "structured 2x + INT8"]
    assert result.threads == 1 and result.batch_size == 32
    for name, file in (("80% unstructured", "model.safetensors"), ("80% compressed fp16", "model.bitmask-fp16.safetensors"),
                       ("80% compressed int8", "model.bitmask-int8.safetensors"),
                       ("structured 2x", "structured/model.safetensors")):
        assert result.variant(name).file_bytes == (out / file).stat().st_size, name
    assert result.file_ratio("80% compressed int8") < result.file_ratio("80% compressed fp16") < 0.3
    acc = {v.name: v.metrics["accuracy"] for v in result.variants}
    assert acc["80% unstructured"] == pytest.approx(metrics["accuracy"]["after"])
    assert abs(acc["80% compressed fp16"] - acc["80% unstructured"]) <= 0.01  # loaded back: same model, fp16 values
    assert result.variant("80% compressed fp16").nonzeros == result.variant("80% unstructured").nonzeros
    assert result.variant("structured 2x + INT8").quantized and result.variant("structured 2x").params < 0.6 * \
        result.variant("dense").params
    flat = " ".join(printed.split())
    for line in deploy_lines(result):  # the verdict is the one the measured numbers give
        assert " ".join(line.split()) in flat, line
    assert "dynamic INT8 reaches only nn.Linear layers" in flat
    assert main(["report", str(out)]) == 0
    again = " ".join(capsys.readouterr().out.split())
    assert "deploy on CPU:" in again and "80% compressed int8" in again
