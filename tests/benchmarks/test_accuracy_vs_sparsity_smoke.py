"""Smoke tests of benchmarks/accuracy_vs_sparsity.py: the table, plot and per-run cache (a rerun resumes instead of
training again), first with the training replaced by stand-ins (fast), then a real tiny `--quick` run (slow)."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[2] / "benchmarks"


def _load():
    spec = importlib.util.spec_from_file_location("bench_accuracy_vs_sparsity", ROOT / "accuracy_vs_sparsity.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_imp_rounds_land_on_the_target_sparsities():
    bench = _load()
    for s in bench.SPARSITIES:
        reached = 1 - (1 - bench.IMP_P) ** bench.imp_rounds(s)
        assert abs(reached - s) < 0.0025, (s, reached)
    assert bench.imp_rounds(0.98) == 17


def _fake_runs(bench, monkeypatch, calls: list) -> None:
    """Stand-ins for the training runs: accuracies that depend on variant, sparsity and seed; calls are recorded."""
    from prunekit.data import digits_cnn

    def mask(dataset, variant, sparsity, seed, st):
        calls.append(("mask", variant, sparsity, seed))
        return {"test": 0.9 - 0.1 * sparsity - 0.01 * seed - 0.001 * bench.ROWS.index(variant), "val": 0.9,
                "sparsity": sparsity, "impl": "stand-in"}

    def imp(dataset, distill, seed, rounds, st):
        calls.append(("imp", distill, rounds, seed))
        ctl = None if distill else 0.5
        return {"total_steps": 1, "rounds": [
            {"round": r, "sparsity": 1 - (1 - bench.IMP_P) ** r, "test_accuracy": 0.8 + 0.01 * seed,
             "val_accuracy": 0.8, "control_test_accuracy": ctl if r else None, "control_val_accuracy": ctl}
            for r in range(rounds + 1)]}

    monkeypatch.setattr(bench, "run_mask_variant", mask)
    monkeypatch.setattr(bench, "run_imp_variant", imp)
    def dense(progress):
        torch.manual_seed(0)  # the same untrained stand-in every call
        return digits_cnn(pretrained=False, progress=progress)

    monkeypatch.setattr(bench, "DENSE", {"digits": dense})


def test_table_plot_and_resume_with_stand_in_runs(tmp_path, capsys, monkeypatch):
    bench = _load()
    calls: list = []
    _fake_runs(bench, monkeypatch, calls)
    cache, png = tmp_path / "cache", tmp_path / "avs.png"
    args = ["--datasets", "digits", "--sparsities", "0.5,0.9", "--seeds", "0", "1", "--cache-dir", str(cache),
            "--plot", str(png)]
    assert bench.main(args) == 0
    first = capsys.readouterr().out
    # one-shot without training runs once; six fine-tuned mask variants per sparsity and seed; two IMP runs per seed
    assert len(calls) == 2 + len(bench.MASK_VARIANTS) * 2 * 2 + 2 * 2 and len(bench.MASK_VARIANTS) == 6
    assert {c[2] for c in calls if c[0] == "imp"} == {bench.imp_rounds(0.9)}
    rows = {line.split("|")[1].strip(): [c.strip() for c in line.split("|")[2:4]] for line in first.splitlines()
            if line.startswith("| ") and not line.startswith("| variant")}
    assert list(rows) == list(bench.ROWS)
    assert rows["one-shot, no FT"] == ["85.0", "81.0"]  # one seed: no spread
    assert rows["GMP cubic"] == ["84.3 ±0.5", "80.3 ±0.5"]  # mean of seeds 0 and 1, half the range
    assert rows["IMP ticket"] == ["80.5 ±0.5"] * 2 and rows["IMP control"] == ["50.0 ±0.0"] * 2
    assert "IMP rounds 50.0% / 90.1%" in first and "through: stand-in" in first
    assert png.stat().st_size > 10_000
    stamps = {f: f.stat().st_mtime_ns for f in cache.glob("*.json")}
    assert len(stamps) == len(calls)
    calls.clear()
    assert bench.main(args) == 0  # resumed: every run read back from the cache
    assert calls == [] and capsys.readouterr().out == first
    assert {f: f.stat().st_mtime_ns for f in cache.glob("*.json")} == stamps
    # --no-run reports what is cached and trains nothing: a missing seed-1 GMP run leaves n=1 in its cell
    next(f for f in stamps if f.name.startswith("digits-GMP_cubic-0.9-1-")).unlink()
    assert bench.main(args + ["--no-run"]) == 0
    gmp_row = next(line for line in capsys.readouterr().out.splitlines() if line.startswith("| GMP cubic |"))
    assert calls == [] and gmp_row == "| GMP cubic | 84.3 ±0.5 | 80.8 (n=1) |"
    # --only trains the named variants alone (here: the missing one), the rest is read back
    assert bench.main(args + ["--only", "GMP cubic", "IMP"]) == 0
    assert calls == [("mask", "GMP cubic", 0.9, 1)]


@pytest.mark.slow
def test_quick_run_table_plot_and_resume(tmp_path, capsys):
    bench = _load()
    cache, png = tmp_path / "cache", tmp_path / "img" / "avs.png"
    args = ["--quick", "--datasets", "digits", "--sparsities", "0.5", "--cache-dir", str(cache), "--plot", str(png)]
    assert bench.main(args) == 0
    first = capsys.readouterr().out
    rows = {line.split("|")[1].strip(): line.split("|")[2].strip() for line in first.splitlines()
            if line.startswith("| ") and not line.startswith("| variant")}
    assert list(rows) == list(bench.ROWS)
    for row, cell in rows.items():
        assert 0.0 <= float(cell) <= 100.0, row
    assert "IMP rounds 50.0%" in first and "one-shot / GMP 50.0%" in first  # measured, not requested, sparsity
    assert png.stat().st_size > 10_000
    files = sorted(cache.glob("*.json"))
    assert len(files) == 1 + 5 + 2  # one-shot no FT, five fine-tuned mask variants, two IMP runs
    stamps = {f: f.stat().st_mtime_ns for f in files}
    assert bench.main(args) == 0  # resumed: every run read back from the cache
    assert capsys.readouterr().out == first
    assert {f: f.stat().st_mtime_ns for f in cache.glob("*.json")} == stamps


def test_unknown_dataset_or_variant_is_refused(capsys):
    bench = _load()
    for args in (["--datasets", "cifar"], ["--only", "gmp"]):
        with pytest.raises(SystemExit):
            bench.main(args)
        assert "invalid choice" in capsys.readouterr().err
