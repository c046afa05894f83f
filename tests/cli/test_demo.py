"""`prunekit demo --quick` end to end: trains a small model into a temp cache, prunes, fine-tunes, reports."""

from __future__ import annotations

import json

import pytest

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
    assert {p.name for p in out.iterdir()} >= {"model.safetensors", "recipe.yaml", "report.json", "report.md"}
    # a second run to the same folder is refused, the first output untouched
    assert main(["demo", "--quick", "--out", str(out)]) == 2
    assert json.loads((out / "report.json").read_text()) == report
