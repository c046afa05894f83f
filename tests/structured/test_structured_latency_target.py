"""`target: {latency_ratio: x}` selects against the latency model (here with a deterministic fake timer).

The fake timer prices every op by its MACs (FlopCounterMode), so the predicted latency is the MAC count: the
latency target must then pick exactly what the MAC target picks, and reach the ratio within 2%.
"""

from __future__ import annotations

import functools

import pytest
import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from prunekit.api import stage
from prunekit.errors import PrunekitError
from prunekit.graph.latency import latency_model
from prunekit.methods.base import PruneContext
from prunekit.methods.structured import get_plan
from prunekit.methods.structured import target_cost
from prunekit.methods.structured.method import StructuredMethod


def _flop_timer(fn, what: str) -> float:
    with FlopCounterMode(display=False) as fc:
        fn()
    return fc.get_total_flops() / 2 * 1e-9


@pytest.fixture
def fake_latency(monkeypatch, tmp_path):
    monkeypatch.setattr(target_cost, "latency_model",
                        functools.partial(latency_model, timer=_flop_timer, cache_dir=tmp_path))


def _cnn() -> tuple[nn.Module, torch.Tensor]:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 16, 3, padding=1), nn.BatchNorm2d(16), nn.ReLU(),
                          nn.Conv2d(16, 32, 3, padding=1), nn.ReLU(), nn.Conv2d(32, 16, 3, padding=1), nn.ReLU(),
                          nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(16, 10)).eval()
    return model, torch.randn(2, 3, 16, 16)


def _run(target: dict, steps: int = 1):
    model, x = _cnn()
    st = stage("structured", target=target, steps=steps)
    result = StructuredMethod().apply(model, st.config, PruneContext(example_inputs=x))
    return model, result


def test_latency_target_with_a_mac_priced_timer_picks_what_the_macs_target_picks(fake_latency):
    by_latency, result = _run({"latency_ratio": 0.5})
    by_macs, _ = _run({"macs_ratio": 0.5})
    for (name, a), (_, b) in zip(by_latency.state_dict().items(), by_macs.state_dict().items()):
        assert a.shape == b.shape, name
        assert torch.equal(a, b), name
    assert get_plan(by_latency).to_dict()["steps"][0]["groups"] == get_plan(by_macs).to_dict()["steps"][0]["groups"]
    reached = next(n for n in result.notes if n.startswith("target latency_ratio"))
    assert abs(float(reached.split("reached ")[1].split()[0]) - 0.5) <= 0.02
    assert any(n.startswith("latency model: dense") and "predicted" in n for n in result.notes)


def test_latency_target_in_steps_reaches_the_overall_ratio(fake_latency):
    _, result = _run({"latency_ratio": 0.5}, steps=2)
    overall = next(n for n in result.notes if "of the original after 2 steps" in n)
    assert abs(float(overall.split("reached ")[1].split()[0]) - 0.5) <= 0.03


def test_latency_target_is_validated():
    with pytest.raises(PrunekitError, match="latency_ratio"):
        stage("structured", target={"latency_ratio": 0.5, "macs_ratio": 0.5})
    with pytest.raises(PrunekitError, match="latency_ratio"):
        stage("structured", target={"latency_ratio": 1.5})
