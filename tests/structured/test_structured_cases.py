"""Structured pruning of the hand-written hard cases: 50% runs, the forward works, params and MACs drop, the
equivalence check passes, and the plan replays bit-identically on a fresh copy of the base model."""

from __future__ import annotations

import copy

import pytest
import torch
from hard_models import CASES
from torch import nn

import prunekit
from prunekit.api import stage
from prunekit.eval import count_model
from prunekit.graph import DependencyGraph
from prunekit.methods.base import PruneContext
from prunekit.methods.structured import PruningPlan, apply_plan, get_plan
from prunekit.methods.structured.method import StructuredMethod

TARGETS = [{"width_ratio": 0.5}, {"macs_ratio": 0.5}]


def run(model, inputs, **options):
    """Apply one structured stage directly (the StageResult keeps the notes that prunekit.prune folds away)."""
    return StructuredMethod().apply(model, stage("structured", **options).config, PruneContext(example_inputs=inputs))


@pytest.mark.parametrize("target", TARGETS, ids=lambda t: next(iter(t)))
@pytest.mark.parametrize("case", list(CASES))
def test_half_pruning(case, target):
    base, x = CASES[case]()
    model = copy.deepcopy(base)
    result = run(model, x, target=target)
    assert any(n.startswith("verify: ok") for n in result.notes), result.notes
    before, after = count_model(base, x), count_model(model, x)
    assert after.params < before.params and after.macs < before.macs
    if "macs_ratio" in target:  # tiny models: whole channels are coarse steps, so the tolerance is wider here
        assert abs(after.macs / before.macs - 0.5) < 0.1
    with torch.no_grad():
        y = model(x)
    assert y.shape == base(x).shape and torch.isfinite(y).all()
    assert any(info["status"] == "pruned" for info in result.layers.values())
    # the plan replays on a fresh base copy: bit-identical tensors and the same forward
    plan = PruningPlan.from_json(get_plan(model).to_json())
    fresh = apply_plan(copy.deepcopy(base), plan)
    got, want = fresh.state_dict(), model.state_dict()
    assert got.keys() == want.keys()
    assert all(torch.equal(got[k], want[k]) for k in want)
    with torch.no_grad():
        assert torch.equal(fresh(x), y)


def test_independent_check_zeroing_equals_removal_on_residual_cnn():
    """Without the graph's reference: zero the removed out-channel slices of every conv and BatchNorm (weights and
    biases) in the original model; in eval mode each removed channel is then exactly 0 after BN and ReLU, so the
    zeroed original must equal the pruned model."""
    base, x = CASES["residual_cnn"]()
    model = copy.deepcopy(base)
    run(model, x, target={"width_ratio": 0.5})
    zeroed = copy.deepcopy(base)
    with torch.no_grad():
        for group in get_plan(model).steps[0].groups:
            for s in group.removed:
                module_name, _, local = s.tensor.rpartition(".")
                module = zeroed.get_submodule(module_name)
                if s.dim == 0 and local in ("weight", "bias") and isinstance(module, (nn.Conv2d, nn.BatchNorm2d)):
                    getattr(module, local).index_fill_(0, torch.tensor(s.indices), 0.0)
        torch.testing.assert_close(model(x), zeroed(x), rtol=1e-5, atol=1e-6)


def test_prune_api_end_to_end_reports_shapes_and_real_savings():
    base, x = CASES["residual_cnn"]()
    model = copy.deepcopy(base)
    report = prunekit.prune(model, {"stages": [{"method": "structured", "target": {"macs_ratio": 0.5}}]}, x)
    rows = {row.name: row for row in report.layers}
    assert rows["stem.0"].status == "pruned"
    assert rows["stem.0"].reason.startswith("out channels 16 -> ")
    assert rows["head"].status == "pruned" and "out features" not in rows["head"].reason  # classifier keeps 10
    assert model.head.out_features == 10
    assert abs(count_model(model, x).macs / count_model(base, x).macs - 0.5) < 0.05


def test_shared_layer_is_pruned_once_for_both_calls():
    base, x = CASES["shared_layer"]()
    model = copy.deepcopy(base)
    run(model, x, target={"width_ratio": 0.5})
    w = model.shared.weight
    assert w.shape[0] == w.shape[1] == model.shared.out_channels == model.shared.in_channels < 16
    assert model.bn1.num_features == model.bn2.num_features == w.shape[0]


def test_depthwise_groups_follow_and_grouped_conv_keeps_groups():
    base, x = CASES["depthwise_grouped"]()
    model = copy.deepcopy(base)
    run(model, x, target={"width_ratio": 0.5})
    dw = model.dw[0]
    assert dw.groups == dw.in_channels < 32 and dw.out_channels == 2 * dw.groups  # multiplier 2 kept
    g = model.grouped[0]
    assert g.groups == 4 and g.in_channels % 4 == 0 and g.out_channels % 4 == 0


def test_channel_shuffle_is_coupled_across_groups():
    """A shuffle keeps the same positions in each of its groups (the only exact way), so kept counts are multiples
    of the group count: 24 channels in 3 groups are 8 units of 3, 12 channels in 4 groups are 3 units of 4."""
    base, x = CASES["channel_shuffle"]()
    graph = DependencyGraph.build(base, x)
    sizes = {g.modules[0]: g.size for g in graph.groups}
    assert sizes["g1.0"] == 8 and sizes["c2.0"] == 3
    g1 = next(g for g in graph.groups if g.modules[0] == "g1.0")
    member = next(m for m in g1.members if m.param == "g1.0.weight" and m.dim == 0)
    assert [member.units.count(u) for u in range(8)] == [3] * 8
    model = copy.deepcopy(base)
    run(model, x, target={"width_ratio": 0.5})
    assert model.g1[0].out_channels % 3 == 0 and model.c2[0].out_channels % 4 == 0
    assert model.g1[0].out_channels < 24 and model.c2[0].out_channels < 12


def test_round_to_and_min_channels():
    base, x = CASES["mlp"]()
    model = copy.deepcopy(base)
    run(model, x, target={"width_ratio": 0.3}, round_to=8)
    assert model.net[0].out_features % 8 == 0 and model.net[2].out_features % 8 == 0
    model = copy.deepcopy(base)
    run(model, x, target={"width_ratio": 0.01}, min_channels=5)
    assert model.net[0].out_features == 5 and model.net[2].out_features == 5
    assert model.net[4].out_features == 10  # the output layer never loses its out-features


def test_ignore_keeps_a_module_whole_and_is_reported():
    base, x = CASES["residual_cnn"]()
    model = copy.deepcopy(base)
    result = run(model, x, target={"width_ratio": 0.5}, ignore=["re:b1\\.0\\..*"])
    assert model.b1[0][0].weight.shape == (16, 16, 3, 3)  # its in-channels tie it to the stem's outputs: kept too
    assert model.stem[0].out_channels == 16
    assert model.b2[0][0].out_channels == 16  # other groups still pruned
    assert result.layers["b1.0.0"] == {"status": "skipped", "reason": "ignored by 're:b1\\\\.0\\\\..*'"}
    with pytest.raises(prunekit.PrunekitError, match="ignore entry 'b1.9' matches no module"):
        run(copy.deepcopy(base), x, target={"width_ratio": 0.5}, ignore=["b1.9"])


@pytest.mark.parametrize("importance", ["l1", "l2", "bn_scale", "random"])
@pytest.mark.parametrize("scope", ["layer", "global"])
def test_importance_and_scope_reach_the_macs_target(importance, scope):
    base, x = CASES["residual_cnn"]()
    model = copy.deepcopy(base)
    result = run(model, x, target={"macs_ratio": 0.6}, importance=importance, scope=scope)
    assert any(n.startswith("verify: ok") for n in result.notes)
    assert abs(count_model(model, x).macs / count_model(base, x).macs - 0.6) < 0.05


def test_same_config_same_plan_and_seeds_differ():
    base, x = CASES["concat"]()
    plans = []
    for seed in (0, 0, 1):
        model = copy.deepcopy(base)
        run(model, x, target={"width_ratio": 0.5}, importance="random", seed=seed)
        plans.append(get_plan(model).to_json())
    assert plans[0] == plans[1] and plans[0] != plans[2]
