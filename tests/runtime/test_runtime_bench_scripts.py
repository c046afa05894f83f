"""The runtime benchmark scripts: the crossover table is well formed; the GPU script stops at once without CUDA."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[2] / "benchmarks"


def _load(name: str):
    spec = importlib.util.spec_from_file_location(f"bench_{name}", ROOT / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_crossover_table_has_a_cell_per_sparsity(capsys, tmp_path):
    bench = _load("sparse_runtime")
    out = tmp_path / "table.md"
    args = ["--part", "crossover", "--shapes", "32x16", "--tokens", "1x4", "--sparsities", "0.5", "0.99",
            "--rounds", "1", "--iters", "1", "--out", str(out)]
    assert bench.main(args) == 0
    rows = [line for line in capsys.readouterr().out.splitlines() if line.startswith("| 32x16 | 1x4 |")]
    assert len(rows) == 1
    cells = [c.strip() for c in rows[0].strip("|").split("|")]
    assert len(cells) == 3 + 2 + 2  # shape, tokens, dense ms, two sparsities, two crossovers
    for cell in cells[3:5]:
        csr, bsr = (float(v.rstrip("x")) for v in cell.split(" / "))
        assert csr > 0 and bsr > 0
    assert cells[5] in ("50%", "99%", "none")
    assert "python benchmarks/sparse_runtime.py --part crossover" in out.read_text()


def test_zero_helpers_hit_the_exact_sparsity():
    bench = _load("sparse_runtime")
    w = bench.random_zeros(16, 32, 0.75, seed=0).weight
    assert int((w == 0).sum()) == 384
    b = bench.block_zeros(16, 32, 0.5, seed=0).weight
    assert int((b == 0).sum()) == 256 and int((b.reshape(4, 4, 8, 4) != 0).any(3).any(1).sum()) == 16


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the fail-fast path without CUDA")
def test_gpu_script_fails_fast_without_cuda(capsys):
    assert _load("gpu_24").main([]) == 2
    assert "2:4 semi-structured kernels need CUDA" in capsys.readouterr().err
