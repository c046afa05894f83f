"""`prunekit report DIR` prints the bench table and the advice made from DIR's bench.json after the report."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from prunekit.cli.main import main
from prunekit.eval.bench import BenchResult, VariantResult

HERE = Path(__file__).parent


@pytest.fixture(autouse=True)
def _toy_models_importable(monkeypatch):
    monkeypatch.syspath_prepend(str(HERE))
    monkeypatch.setenv("COLUMNS", "250")  # advice lines unwrapped


def _v(name, p50, acc, *, params=1000, file=4000):
    return VariantResult(name=name, note="", latency_p50_ms=p50, latency_p90_ms=p50 * 1.5, latency_mean_ms=p50,
                         latency_min_ms=p50, throughput_per_s=32000 / p50, peak_memory_bytes=100, file_bytes=file,
                         file_source="", weight_bytes=file, params=params, nonzeros=params, quantized=False,
                         metrics={"accuracy": acc})


def _write_bench(folder: Path, pruned_p50: float, pruned_acc: float) -> BenchResult:
    result = BenchResult(variants=[_v("dense", 2.0, 0.98), _v("pruned", pruned_p50, pruned_acc, params=500, file=2000)],
                         baseline="dense", threads=1, device="cpu", cuda_available=False, torch_version="x",
                         inputs="(32, 1, 8, 8)", batch_size=32, warmup=1, runs=10, rounds=2,
                         higher_is_better={"accuracy": True})
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "bench.json").write_text(json.dumps(result.to_dict()))
    return result


def _report(capsys, folder: Path) -> str:
    assert main(["report", str(folder)]) == 0
    return capsys.readouterr().out


def test_bench_json_alone_prints_table_and_advice(tmp_path, capsys):
    fast = _report_of(tmp_path / "fast", capsys, pruned_p50=1.0, pruned_acc=0.979)
    assert "deploy on CPU: pruned (2.00x faster, metric kept)" in fast
    assert "| pruned " not in fast and "2.00x" in fast  # the rich table, not markdown
    lost = _report_of(tmp_path / "lost", capsys, pruned_p50=1.0, pruned_acc=0.90)
    assert "deploy on CPU: dense: no variant was >= 1.10x faster with the task metric kept" in lost
    assert "accuracy 0.98 -> 0.9 (-8.2%, lost)" in lost
    slow = _report_of(tmp_path / "slow", capsys, pruned_p50=3.0, pruned_acc=0.98)
    assert "pruned (structured (0.50x params)): 1.50x slower measured here" in slow
    assert _deploy(lost).endswith("; closest: pruned (2.00x faster, task metric 8.2% worse)")
    assert _deploy(slow) == "deploy on CPU: dense: no variant was >= 1.10x faster with the task metric kept"
    assert len({_deploy(fast), _deploy(lost), _deploy(slow)}) == 3


def _report_of(folder: Path, capsys, **numbers) -> str:
    result = _write_bench(folder, **numbers)
    printed = _report(capsys, folder)
    for line in result.advice():  # every advice line, made from these numbers, is printed
        assert line.strip() in printed, line
    return printed


def _deploy(printed: str) -> str:
    return next(t.strip() for t in printed.splitlines() if "deploy on CPU" in t)


def test_bench_is_printed_after_the_report(tmp_path, capsys):
    recipe = tmp_path / "r.yaml"
    recipe.write_text("stages:\n  - method: magnitude\n    sparsity: 0.5\n")
    out = tmp_path / "pruned"
    assert main(["prune", str(recipe), "--model", "toy_models:mlp", "--out", str(out), "--no-measure",
                 "--input-shape", "2,16"]) == 0
    capsys.readouterr()
    without = _report(capsys, out)
    assert "deploy on CPU" not in without
    _write_bench(out, pruned_p50=1.0, pruned_acc=0.979)
    printed = _report(capsys, out)
    assert printed.startswith(without)  # the report first, unchanged
    assert "deploy on CPU: pruned (2.00x faster" in printed[len(without):]


def test_missing_and_corrupt_bench(tmp_path, capsys):
    empty = tmp_path / "empty"
    empty.mkdir()
    assert main(["report", str(empty)]) == 2
    assert "has no report.json or bench.json" in capsys.readouterr().err
    (empty / "bench.json").write_text("{not json")
    assert main(["report", str(empty)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "not a readable bench.json" in err
    (empty / "bench.json").write_text(json.dumps({"variants": []}))
    assert main(["report", str(empty)]) == 2
    assert "bench result keys differ: missing" in capsys.readouterr().err
