"""Iterative structured pruning (`steps`): the geometric schedule, re-scoring between steps, and plan replay."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

import prunekit
from prunekit.graph import DependencyGraph
from prunekit.methods.structured import PruningPlan, StructuredConfig, apply_plan, get_plan
from prunekit.methods.structured.schedule import Schedule


def _cnn() -> tuple[nn.Module, torch.Tensor]:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 16, 3, padding=1), nn.BatchNorm2d(16), nn.ReLU(),
                          nn.Conv2d(16, 32, 3, padding=1), nn.BatchNorm2d(32), nn.ReLU(),
                          nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(32, 24), nn.ReLU(), nn.Linear(24, 10))
    return model.eval(), torch.randn(2, 3, 8, 8)


def _stage(**options):
    return {"stages": [{"method": "structured", **options}]}


def _params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def test_schedule_targets_are_geometric_in_the_original_model():
    model, x = _cnn()
    graph = DependencyGraph.build(model, x)
    config = StructuredConfig(target={"width_ratio": 0.25}, steps=2)
    schedule = Schedule("width_ratio", 0.25, 2)
    assert schedule.step_config(config, graph, 0).target.width_ratio == pytest.approx(0.5)
    schedule.advance(0.5)
    assert schedule.step_config(config, graph, 1).target.width_ratio == pytest.approx(0.25 / 0.5)
    schedule.advance(0.5)
    assert schedule.overall == pytest.approx(0.25)
    one = StructuredConfig(target={"width_ratio": 0.25})
    assert Schedule("width_ratio", 0.25, 1).step_config(one, graph, 0) is one  # one step: the config as given


def test_params_steps_reach_the_target_and_record_one_plan_step_each():
    base, x = _cnn()
    dense = _params(base)
    model = copy.deepcopy(base)
    report = prunekit.prune(model, _stage(target={"params_ratio": 0.4}, steps=3), x)
    notes = report.stages[0]["notes"]
    assert len(get_plan(model).steps) == 3
    assert _params(model) / dense == pytest.approx(0.4, abs=0.03)
    overall = next(n for n in notes if n.startswith("target params_ratio 0.4: reached"))
    assert float(overall.split("reached ")[1].split()[0]) == pytest.approx(_params(model) / dense, abs=0.01)
    assert sum(n.startswith("step 2/3: verify: ok") for n in notes) == 1
    first = next(n for n in notes if n.startswith("step 1/3: target params_ratio"))
    assert float(first.split("params_ratio ")[1].split(":")[0]) == pytest.approx(0.4 ** (1 / 3), rel=1e-5)


def test_plan_of_several_steps_replays_bit_identically():
    base, x = _cnn()
    model = copy.deepcopy(base)
    g = torch.Generator().manual_seed(4)
    data = [(torch.randn(8, 3, 8, 8, generator=g), torch.randint(0, 10, (8,), generator=g)) for _ in range(2)]
    prunekit.prune(model, _stage(target={"macs_ratio": 0.5}, steps=2, importance="taylor"), x, data=data)
    replayed = apply_plan(copy.deepcopy(base), PruningPlan.from_json(get_plan(model).to_json()))
    ours, theirs = model.state_dict(), replayed.state_dict()
    assert list(ours) == list(theirs)
    assert all(torch.equal(ours[k], theirs[k]) for k in ours)
    with torch.no_grad():
        assert torch.equal(model(x), replayed(x))


def test_re_scoring_between_steps_changes_the_choice():
    base, x = _cnn()
    one, three = copy.deepcopy(base), copy.deepcopy(base)
    prunekit.prune(one, _stage(target={"width_ratio": 0.5}, importance="fpgm"), x)
    prunekit.prune(three, _stage(target={"width_ratio": 0.5}, importance="fpgm", steps=3), x)
    assert one[3].weight.shape == three[3].weight.shape  # the same counts in the end ...
    assert not torch.equal(one[3].weight, three[3].weight)  # ... but other channels: fpgm depends on the survivors


def test_new_options_are_validated_with_the_valid_choices():
    from prunekit.api import stage
    from prunekit.errors import PrunekitError

    with pytest.raises(PrunekitError, match="key 'steps': 0 is invalid: Input should be greater than or equal to 1"):
        stage("structured", target={"width_ratio": 0.5}, steps=0)
    with pytest.raises(PrunekitError, match="key 'compensate': 'ls' is invalid: .*'none', 'bn' or 'least_squares'"):
        stage("structured", target={"width_ratio": 0.5}, compensate="ls")
    with pytest.raises(PrunekitError, match="key 'importance': 'taylr' is invalid: .*'taylor', 'hessian'"):
        stage("structured", target={"width_ratio": 0.5}, importance="taylr")
