"""Latency model: per-op tables interpolated over kept fractions, the remainder, the cache, and the error paths.

Timers are fake and deterministic: `flop_timer` returns an op's MACs (counted by torch's FlopCounterMode, which
knows nothing about prunekit), so the latency model must reproduce the analytic MAC cost model exactly (a product of
two fractions is bilinear, so interpolation and extrapolation are exact). One real-timer test checks only that a
quarter-width Linear is predicted faster than the full one.
"""

from __future__ import annotations

import json

import pytest
import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from prunekit.errors import PrunekitError
from prunekit.graph import DependencyGraph
from prunekit.graph.latency import latency_model

SCALE = 1e-9


class Calls:
    """A fake timer: seconds = MACs * SCALE (+ `extra[what]` for the whole model "model" and its half-width copy
    "model@half"); counts its calls."""

    def __init__(self, **extra: float) -> None:
        self.extra = {k.replace("_", "@"): v for k, v in extra.items()}
        self.calls: list[str] = []

    def __call__(self, fn, what: str) -> float:
        self.calls.append(what)
        with FlopCounterMode(display=False) as fc:
            fn()
        return fc.get_total_flops() / 2 * SCALE + self.extra.get(what, 0.0)


def _cnn() -> tuple[nn.Module, torch.Tensor]:
    torch.manual_seed(0)
    model = nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(),
        nn.Conv2d(8, 16, 3), nn.ReLU(),
        nn.Conv2d(16, 16, 3, groups=16, padding=1),  # depthwise
        nn.Conv2d(16, 16, 1, groups=4),  # grouped
        nn.ConvTranspose2d(16, 12, 2, stride=2),
        nn.Conv2d(12, 6, 1),
        nn.Flatten(), nn.Linear(6 * 20 * 20, 10),
    ).eval()
    return model, torch.randn(2, 3, 12, 12)


def _random_keeps(n: int, count: int = 6) -> list[torch.Tensor]:
    gen = torch.Generator().manual_seed(1)
    return [torch.rand(n, generator=gen) < p for p in torch.linspace(0.2, 0.9, count).tolist()]


def test_flop_timer_reproduces_the_mac_cost_model_exactly(tmp_path):
    model, x = _cnn()
    graph = DependencyGraph.build(model, x)
    cost = graph.cost_model()
    lat = latency_model(graph, model, timer=Calls(), cache_dir=tmp_path)
    assert {o["kind"] for o in lat.ops} == {"conv", "dwconv", "gconv", "convT", "linear"}
    assert lat.fixed == 0.0
    assert lat.dense_latency == pytest.approx(cost.dense_macs * SCALE, rel=1e-12)
    for keep in _random_keeps(cost.n_units):
        assert lat.latency(keep) == pytest.approx(cost.macs(keep) * SCALE, rel=1e-9)


def test_a_remainder_equal_at_both_widths_is_fixed(tmp_path):
    model, x = _cnn()
    graph = DependencyGraph.build(model, x)
    lat = latency_model(graph, model, timer=Calls(model=0.003, model_half=0.003), cache_dir=tmp_path)
    assert lat.fixed == pytest.approx(0.003, rel=1e-9) and lat.per_activation == 0.0
    keep = _random_keeps(graph.cost_model().n_units)[0]
    assert lat.latency(keep) == pytest.approx(0.003 + float(lat.op_latencies(keep).sum()), rel=1e-12)


def test_remainder_reproduces_the_full_and_the_half_width_model(tmp_path):
    model, x = _cnn()
    graph = DependencyGraph.build(model, x)
    cost = graph.cost_model()
    lat = latency_model(graph, model, timer=Calls(model=0.004, model_half=0.0025), cache_dir=tmp_path)
    half = lat.calibration_keep
    assert 0.3 < cost.macs(half) / cost.dense_macs < 0.7
    assert 0 < lat.activation_fraction(half) < 1 and lat.activation_fraction(torch.ones_like(half)) == 1.0
    assert lat.dense_latency == pytest.approx(cost.dense_macs * SCALE + 0.004, rel=1e-9)
    assert lat.latency(half) == pytest.approx(cost.macs(half) * SCALE + 0.0025, rel=1e-9)
    assert lat.fixed > 0 and lat.per_activation > 0


def test_without_calibration_the_remainder_is_fixed(tmp_path):
    model, x = _cnn()
    graph = DependencyGraph.build(model, x)
    calls = Calls(model=0.004, model_half=0.0025)
    lat = latency_model(graph, model, timer=calls, cache_dir=tmp_path, calibrate=False)
    assert "model@half" not in calls.calls and lat.notes == ["calibrate=False: the remainder is a fixed cost"]
    assert lat.fixed == pytest.approx(0.004, rel=1e-9) and lat.per_activation == 0.0


def test_remainder_is_floored_at_zero(tmp_path):
    model, x = _cnn()
    graph = DependencyGraph.build(model, x)
    lat = latency_model(graph, model, timer=Calls(model=-1.0, model_half=-1.0), cache_dir=tmp_path)
    assert lat.fixed == 0.0 and lat.per_activation == 0.0


def _mlp() -> tuple[nn.Module, torch.Tensor]:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 4)).eval(), torch.randn(3, 8)


def _square_timer(fn, what: str) -> float:
    """Nonlinear in the channels: (output numel)**2 (the second Linear's output never shrinks)."""
    return 0.0 if what.startswith("model") else float(fn().numel()) ** 2 * 1e-6


@pytest.mark.parametrize("kept, expected_first", [
    (8, (3 * 8) ** 2),  # a grid point (0.5 of 16)
    (10, (3 * 8) ** 2 + 2 / 4 * ((3 * 12) ** 2 - (3 * 8) ** 2)),  # between 8 and 12: linear
    (3, (3 * 4) ** 2 - 1 / 4 * ((3 * 8) ** 2 - (3 * 4) ** 2)),  # below the grid: the first segment extended
    (1, 0.0),  # extended below zero: floored
])
def test_interpolates_between_grid_points(tmp_path, kept, expected_first):
    model, x = _mlp()
    graph = DependencyGraph.build(model, x)
    lat = latency_model(graph, model, timer=_square_timer, cache_dir=tmp_path)
    (hidden,) = [g for g in graph.groups if g.size == 16]
    mask = torch.zeros(16, dtype=torch.bool)
    mask[:kept] = True
    keep = graph.keep_vector({hidden.id: mask})
    second = (3 * 4) ** 2
    assert lat.latency(keep) == pytest.approx((expected_first + second) * 1e-6, rel=1e-9)


def test_second_build_reads_the_cache_and_times_nothing(tmp_path):
    model, x = _cnn()
    graph = DependencyGraph.build(model, x)
    first = Calls()
    lat1 = latency_model(graph, model, timer=first, cache_dir=tmp_path)
    assert lat1.measured == len(first.calls) > 0 and {"model", "model@half"} <= set(first.calls)
    assert len(list(tmp_path.glob("*.json"))) == 1
    second = Calls()
    lat2 = latency_model(graph, model, timer=second, cache_dir=tmp_path)
    assert second.calls == [] and lat2.measured == 0
    keep = _random_keeps(graph.cost_model().n_units)[2]
    assert lat2.latency(keep) == lat1.latency(keep)


def test_repeated_ops_are_timed_once(tmp_path):
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 16), nn.ReLU(), nn.Linear(16, 16), nn.ReLU(),
                          nn.Linear(16, 4)).eval()
    graph = DependencyGraph.build(model, torch.randn(2, 8))
    calls = Calls()
    latency_model(graph, model, timer=calls, cache_dir=tmp_path)
    assert len(set(calls.calls)) == 3 + 2  # 3 op signatures (the two 16x16 Linears share one), model, model@half
    assert calls.calls.count("model") == 3 and calls.calls.count("model@half") == 3  # rounds=3, alternating
    assert calls.calls[-6:] == ["model", "model@half"] * 3


def test_cache_is_per_thread_count_and_ignores_a_broken_file(tmp_path):
    model, x = _mlp()
    graph = DependencyGraph.build(model, x)
    latency_model(graph, model, timer=Calls(), cache_dir=tmp_path)
    torch.set_num_threads(2)  # the autouse fixture restores it
    other = Calls()
    latency_model(graph, model, timer=other, cache_dir=tmp_path)
    assert other.calls and len(list(tmp_path.glob("*.json"))) == 2
    torch.set_num_threads(1)
    for f in tmp_path.glob("*.json"):
        f.write_text("{not json")
    again = Calls()
    latency_model(graph, model, timer=again, cache_dir=tmp_path)
    assert again.calls
    texts = sorted(f.read_text() for f in tmp_path.glob("*.json"))
    assert texts[1] == "{not json" and "ops" in json.loads(texts[0])  # the 1-thread file was rewritten


def test_cache_dir_from_the_environment_and_use_cache_false(tmp_path, monkeypatch):
    model, x = _mlp()
    graph = DependencyGraph.build(model, x)
    monkeypatch.setenv("PRUNEKIT_CACHE_DIR", str(tmp_path))
    latency_model(graph, model, timer=Calls())
    assert len(list((tmp_path / "latency").glob("*.json"))) == 1
    fresh = tmp_path / "unused"
    calls = Calls()
    latency_model(graph, model, timer=calls, cache_dir=fresh, use_cache=False)
    assert calls.calls and not fresh.exists()


@pytest.mark.parametrize("grid", [(0.0, 0.5), (1.5,), ()])
def test_bad_grid_is_a_user_error(tmp_path, grid):
    model, x = _mlp()
    graph = DependencyGraph.build(model, x)
    with pytest.raises(PrunekitError, match=r"grid fractions must lie in \(0, 1\]"):
        latency_model(graph, model, grid=grid, timer=Calls(), cache_dir=tmp_path)


def test_rounds_below_one_is_a_user_error(tmp_path):
    model, x = _mlp()
    graph = DependencyGraph.build(model, x)
    with pytest.raises(PrunekitError, match="rounds must be an integer >= 1, got 0"):
        latency_model(graph, model, rounds=0, timer=Calls(), cache_dir=tmp_path)


class Bursty(Calls):
    """Whole-model timings: a burst of other work makes the first round 10x slower."""

    def __call__(self, fn, what: str) -> float:
        t = super().__call__(fn, what)
        return t * 10 if what.startswith("model") and self.calls.count(what) == 1 else t


def test_whole_model_timings_keep_the_minimum_of_the_rounds(tmp_path):
    model, x = _cnn()
    graph = DependencyGraph.build(model, x)
    cost = graph.cost_model()
    lat = latency_model(graph, model, timer=Bursty(), cache_dir=tmp_path)
    assert lat.fixed == 0.0 and lat.per_activation == 0.0
    assert lat.dense_latency == pytest.approx(cost.dense_macs * SCALE, rel=1e-9)


def test_keep_vector_of_the_wrong_length_is_refused(tmp_path):
    model, x = _mlp()
    graph = DependencyGraph.build(model, x)
    lat = latency_model(graph, model, timer=Calls(), cache_dir=tmp_path)
    n = graph.cost_model().n_units
    with pytest.raises(PrunekitError, match=f"keep vector has 5 entries, the graph has {n} units"):
        lat.latency(torch.ones(5, dtype=torch.bool))


def test_real_timer_predicts_a_quarter_width_linear_faster(tmp_path):
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(512, 1024), nn.ReLU(), nn.Linear(1024, 16)).eval()
    graph = DependencyGraph.build(model, torch.randn(64, 512))
    lat = latency_model(graph, model, cache_dir=tmp_path)
    (hidden,) = [g for g in graph.groups if g.size == 1024]
    mask = torch.zeros(1024, dtype=torch.bool)
    mask[:256] = True
    quarter = graph.keep_vector({hidden.id: mask})
    assert 0 < lat.latency(quarter) < 0.8 * lat.dense_latency
