"""Smoke tests of the structured-pruning benchmark scripts: tiny settings, the tables they print are well formed.

The scripts live in benchmarks/ (not a package); they are loaded from their files. Slow: each runs a real prune.
"""

from __future__ import annotations

import importlib.util
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2] / "benchmarks"


def _load(name: str):
    spec = importlib.util.spec_from_file_location(f"bench_{name}", ROOT / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _rows(text: str, first: str) -> list[list[str]]:
    return [[c.strip() for c in line.strip("|").split("|")] for line in text.splitlines()
            if line.startswith(f"| {first}")]


@pytest.mark.slow
def test_latency_script_reports_halved_macs_and_a_speedup(capsys):
    pytest.importorskip("torchvision")
    bench = _load("structured_latency")
    args = ["--models", "resnet18", "--px", "64", "--rounds", "1", "--iters", "2", "--batches", "1", "2"]
    assert bench.main(args) == 0
    rows = _rows(capsys.readouterr().out, "resnet18")
    assert [r[2] for r in rows] == ["1", "2"]  # one row per batch size
    for row in rows:
        speedup, gain, efficiency = (float(v.rstrip("x")) for v in row[5:8])
        assert 1.8 < gain < 2.2  # macs_ratio 0.5 reached within 10%
        assert speedup > 0 and efficiency == pytest.approx(speedup / gain, abs=0.011)


@pytest.mark.slow
def test_vs_tp_accuracy_table_has_both_tools_at_half_macs(capsys):
    pytest.importorskip("torch_pruning")
    bench = _load("structured_vs_tp")
    assert bench.main(["--part", "accuracy", "--seeds", "0", "--epochs", "1"]) == 0
    out = capsys.readouterr().out
    for model in ("digits_cnn", "mnist1d_cnn"):
        rows = {r[1].split(" (")[0]: r for r in _rows(out, model)}
        assert set(rows) == {"dense", "prunekit l1", "Torch-Pruning l1"}
        for tool in ("prunekit l1", "Torch-Pruning l1"):
            assert 0.45 < float(rows[tool][2]) < 0.55  # MACs ratio
            assert re.fullmatch(r"\d+\.\d\d%", rows[tool][6])  # mean fine-tuned accuracy
