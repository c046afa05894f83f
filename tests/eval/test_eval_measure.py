"""Latency, peak memory, weight memory and file size: sane values, exact where the arithmetic is known."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from prunekit.errors import PrunekitError
from prunekit.eval import (
    compare_models,
    file_size,
    measure_latency,
    measure_peak_memory,
    state_dict_bytes,
    weight_bytes,
)


class _Kwargs(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(8, 4)

    def forward(self, x, scale=1.0):
        return self.fc(x) * scale


def test_latency_stats_are_sane_and_threads_restored():
    model = nn.Sequential(nn.Linear(32, 64), nn.ReLU(), nn.Linear(64, 8))
    threads_before = torch.get_num_threads()
    stats = measure_latency(model, torch.randn(4, 32), warmup=1, iters=7, threads=1)
    assert stats.p50_ms > 0 and stats.p90_ms >= stats.p50_ms >= stats.min_ms
    assert stats.mean_ms > 0 and stats.iters == 7 and stats.warmup == 1
    assert stats.threads == 1 and stats.device == "cpu"
    assert torch.get_num_threads() == threads_before
    assert type(stats).from_dict(stats.to_dict()) == stats


def test_latency_accepts_tuple_and_dict_inputs():
    model = _Kwargs()
    assert measure_latency(model, (torch.randn(2, 8),), warmup=0, iters=2, threads=1).p50_ms > 0
    assert measure_latency(model, {"x": torch.randn(2, 8), "scale": 2.0}, warmup=0, iters=2, threads=1).p50_ms > 0


def test_latency_rejects_bad_counts():
    model = nn.Linear(2, 2)
    with pytest.raises(PrunekitError, match="iters must be an integer >= 1, got 0"):
        measure_latency(model, torch.randn(1, 2), iters=0)
    with pytest.raises(PrunekitError, match="threads must be an integer >= 1, got -1"):
        measure_latency(model, torch.randn(1, 2), threads=-1)
    with pytest.raises(PrunekitError, match="example_inputs must be"):
        measure_latency(model, "x")


def test_peak_memory_counts_the_output_and_not_the_weights():
    model = nn.Linear(64, 256)
    x = torch.randn(32, 64)
    peak = measure_peak_memory(model, x)
    output_bytes = 32 * 256 * 4
    assert peak >= output_bytes
    assert peak < output_bytes + 64 * 256 * 4  # weights existed before: not part of the peak


def test_peak_memory_sees_a_temporary_that_is_freed_before_the_end():
    class Temp(nn.Module):
        def forward(self, x):
            big = x.repeat(100, 1)  # 100x the input, dropped before returning
            return big.sum(0, keepdim=True)

    x = torch.randn(10, 50)
    peak = measure_peak_memory(Temp(), x)
    assert peak >= 100 * x.numel() * 4


def test_peak_memory_releases_freed_temporaries():
    class Loop(nn.Module):
        def forward(self, x):
            total = torch.zeros(())
            for _ in range(10):
                total = total + (x * 2.0).sum()  # each temporary dies before the next is made
            return total

    x = torch.randn(1000)
    peak = measure_peak_memory(Loop(), x)
    assert 4000 <= peak < 3 * 4000  # not 10 temporaries at once


def test_weight_and_file_sizes_count_tied_tensors_once():
    class Tied(nn.Module):
        def __init__(self):
            super().__init__()
            self.embed = nn.Embedding(100, 16)
            self.head = nn.Linear(16, 100, bias=False)
            self.head.weight = self.embed.weight

    model = Tied()
    assert weight_bytes(model) == 100 * 16 * 4
    assert state_dict_bytes(model) == 100 * 16 * 4
    size = file_size(model)
    assert 100 * 16 * 4 < size < 100 * 16 * 4 + 1024  # payload + a small JSON header


def test_file_size_does_not_shrink_for_zeros():
    model = nn.Linear(100, 100)
    dense = file_size(model)
    with torch.no_grad():
        model.weight[:, :90] = 0.0
    assert file_size(model) == dense
    assert state_dict_bytes(model) == (100 * 100 + 100) * 4


def test_compare_models_measures_both_sides():
    dense = nn.Sequential(nn.Linear(16, 32), nn.ReLU(), nn.Linear(32, 4))
    small = nn.Sequential(nn.Linear(16, 8), nn.ReLU(), nn.Linear(8, 4))
    pairs = {p.name: p for p in compare_models(dense, small, torch.randn(2, 16), warmup=0, iters=3, threads=1)}
    assert set(pairs) == {"latency_p50_ms", "peak_memory_bytes", "file_bytes", "weight_bytes"}
    assert pairs["weight_bytes"].before == (16 * 32 + 32 + 32 * 4 + 4) * 4
    assert pairs["weight_bytes"].after == (16 * 8 + 8 + 8 * 4 + 4) * 4
    assert pairs["file_bytes"].ratio < 1.0
    assert pairs["latency_p50_ms"].before > 0 and pairs["latency_p50_ms"].unit == "ms"
