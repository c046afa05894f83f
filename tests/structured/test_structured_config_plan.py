"""Config validation and error text of the `structured` method; plan JSON round trip, replay guards, composition."""

from __future__ import annotations

import copy
import json

import pytest
import torch
import yaml
from hard_models import CASES
from torch import nn

import prunekit
from prunekit.api import stage
from prunekit.errors import PrunekitError
from prunekit.masks import attach_mask
from prunekit.methods.base import PruneContext
from prunekit.methods.structured import PruningPlan, apply_plan, get_plan
from prunekit.methods.structured.method import StructuredMethod
from prunekit.recipes import parse_recipe


def test_target_needs_exactly_one_ratio():
    with pytest.raises(PrunekitError, match="target needs exactly one of width_ratio, params_ratio, macs_ratio, latency_ratio "
                                            r"\(got width_ratio, macs_ratio\)"):
        stage("structured", target={"width_ratio": 0.5, "macs_ratio": 0.5})
    with pytest.raises(PrunekitError, match=r"\(got none\)"):
        stage("structured", target={})
    with pytest.raises(PrunekitError, match="key 'target' is required"):
        stage("structured")
    with pytest.raises(PrunekitError, match=r"key 'target.macs_ratio'.*greater than 0"):
        stage("structured", target={"macs_ratio": 0.0})


def test_unknown_keys_suggest_the_right_one():
    with pytest.raises(PrunekitError, match="unknown key 'round_too'.*Did you mean: round_to"):
        stage("structured", target={"macs_ratio": 0.5}, round_too=8)
    with pytest.raises(PrunekitError, match="unknown key 'target.mac_ratio'"):
        stage("structured", target={"mac_ratio": 0.5})
    with pytest.raises(PrunekitError, match="key 'importance'"):
        stage("structured", target={"macs_ratio": 0.5}, importance="taylr")
    with pytest.raises(PrunekitError, match="not a valid regular expression"):
        stage("structured", target={"macs_ratio": 0.5}, ignore=["re:("])


def test_config_round_trips_through_yaml():
    st = stage("structured", target={"params_ratio": 0.4}, scope="global", round_to=8, ignore=["re:head.*"])
    again = parse_recipe(yaml.safe_load(prunekit.Recipe((st,)).to_yaml())).stages[0]
    assert again == st and again.config.target.kind == "params_ratio" and again.config.target.ratio == 0.4


def test_every_option_has_help_text():
    for name, field in stage("structured", target={"width_ratio": 0.5}).config.model_fields.items():
        assert field.description, name


def test_missing_inputs_and_attached_masks_are_user_errors():
    base, x = CASES["mlp"]()
    recipe = {"stages": [{"method": "structured", "target": {"width_ratio": 0.5}}]}
    with pytest.raises(PrunekitError, match="structured pruning needs example_inputs"):
        prunekit.prune(copy.deepcopy(base), recipe)
    masked = copy.deepcopy(base)
    attach_mask(masked.net[0], torch.ones_like(masked.net[0].weight, dtype=torch.bool))
    with pytest.raises(PrunekitError, match=r"'net.0' has a mask attached; call prunekit.finalize\(model\) first"):
        prunekit.prune(masked, recipe, x)


class HiddenCoupling(nn.Module):
    """`c2`'s channel count is also written as an attribute the graph cannot see (`self.width`): pruning `c2`
    breaks the forward, pruning `c1` is fine."""

    def __init__(self) -> None:
        super().__init__()
        self.c1 = nn.Conv2d(3, 8, 1)
        self.c2 = nn.Conv2d(8, 8, 1)
        self.head = nn.Linear(8, 2)
        self.width = 8

    def forward(self, x):
        y = torch.relu(self.c2(torch.relu(self.c1(x))))
        return self.head(y.reshape(y.shape[0], self.width, -1).mean(-1))


def test_failed_verification_without_repair_leaves_the_model_unchanged():
    model, x = HiddenCoupling().eval(), torch.randn(1, 3, 4, 4)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    recipe = {"stages": [{"method": "structured", "target": {"width_ratio": 0.5}, "repair": False}]}
    with pytest.raises(PrunekitError, match="equivalence check failed .*; the model was left unchanged.*set repair"):
        prunekit.prune(model, recipe, x)
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    assert model.c2.out_channels == 8 and model.c2.weight.shape == (8, 8, 1, 1)


def test_repair_keeps_the_breaking_group_whole_and_prunes_the_rest():
    model, x = HiddenCoupling().eval(), torch.randn(1, 3, 4, 4)
    result = StructuredMethod().apply(model, stage("structured", target={"width_ratio": 0.5}).config,
                                      PruneContext(example_inputs=x))
    assert model.c2.out_channels == 8 and model.c1.out_channels == 4
    assert any(n.startswith("repair: 1 group(s) kept whole after a failed check: c2") for n in result.notes)
    assert any(n.startswith("verify: ok") for n in result.notes)


def test_plan_json_round_trip_and_malformed_plans():
    base, x = CASES["concat"]()
    model = copy.deepcopy(base)
    prunekit.prune(model, {"stages": [{"method": "structured", "target": {"width_ratio": 0.5}}]}, x)
    plan = get_plan(model)
    text = plan.to_json(indent=1)
    data = json.loads(text)
    assert data["format"] == "prunekit.structured_plan" and data["version"] == 1
    assert PruningPlan.from_json(text) == plan and plan.channels_removed > 0
    with pytest.raises(PrunekitError, match="not a structured pruning plan"):
        PruningPlan.from_json("{}")
    with pytest.raises(PrunekitError, match="plan version 7 is not supported"):
        PruningPlan.from_dict({**data, "version": 7})
    with pytest.raises(PrunekitError, match="malformed pruning plan: KeyError"):
        PruningPlan.from_dict({"format": data["format"], "version": 1, "steps": [{"groups": []}]})
    with pytest.raises(PrunekitError, match="not valid JSON"):
        PruningPlan.from_json("{")


def test_replay_on_another_model_is_refused():
    base, x = CASES["concat"]()
    model = copy.deepcopy(base)
    prunekit.prune(model, {"stages": [{"method": "structured", "target": {"width_ratio": 0.5}}]}, x)
    with pytest.raises(PrunekitError, match=r"plan step 0: .* has shape .*, the plan expects"):
        apply_plan(model, get_plan(model))  # already pruned: shapes differ


def test_two_stages_compose_into_a_two_step_plan_that_replays():
    base, x = CASES["residual_cnn"]()
    model = copy.deepcopy(base)
    recipe = {"stages": [{"method": "structured", "target": {"width_ratio": 0.75}},
                         {"method": "structured", "target": {"macs_ratio": 0.5}, "scope": "global"}]}
    prunekit.prune(model, recipe, x)
    plan = get_plan(model)
    assert len(plan.steps) == 2
    fresh = apply_plan(copy.deepcopy(base), PruningPlan.from_json(plan.to_json()))
    assert all(torch.equal(a, b) for a, b in zip(fresh.state_dict().values(), model.state_dict().values()))
    with torch.no_grad():
        assert torch.equal(fresh(x), model(x))
