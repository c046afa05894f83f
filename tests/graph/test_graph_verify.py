"""The equivalence check catches mis-pruning; the cost model matches prunekit.eval.count_model exactly."""

from __future__ import annotations

import copy

import pytest
import torch
from hard_models import CASES

from prunekit.eval import count_model
from prunekit.graph import DependencyGraph, remove_slices


def half_keep(graph):
    """Remove the first half of every group's prunable units."""
    keep = {}
    for g in graph.groups:
        mask = torch.ones(g.size, dtype=torch.bool)
        prunable = g.prunable
        mask[prunable[: len(prunable) // 2]] = False
        keep[g.id] = mask
    return keep


@pytest.mark.parametrize("case", list(CASES))
def test_cost_model_matches_count_model_before_and_after(case):
    base, x = CASES[case]()
    graph = DependencyGraph.build(base, x)
    cost = graph.cost_model()
    dense = count_model(base, x)
    assert (cost.dense_params, cost.dense_macs) == (dense.params, dense.macs)
    keep = half_keep(graph)
    model = copy.deepcopy(base)
    remove_slices(model, graph.removals(keep))
    pruned = count_model(model, x)
    vec = graph.keep_vector(keep)
    assert (cost.params(vec), cost.macs(vec)) == (pruned.params, pruned.macs)
    assert graph.verify(model, keep).ok


def test_wrong_consumer_slice_is_caught():
    base, x = CASES["residual_cnn"]()
    graph = DependencyGraph.build(base, x)
    keep = half_keep(graph)
    removals = graph.removals(keep)
    right = removals["b2.0.0.weight"][1]  # in-channels of b2's first conv (the stream's channels)
    removals["b2.0.0.weight"][1] = [(i + 1) % 16 for i in right]  # off by one: a plausible, silent bug
    model = copy.deepcopy(base)
    remove_slices(model, removals)
    result = graph.verify(model, keep)
    assert not result.ok and result.max_abs_error > 1e-3
    assert result.detail.startswith("max |pruned - reference| =")


def test_identity_mapping_through_a_channel_shuffle_is_caught():
    """Treating the shuffle as if channels kept their positions (what a naive pruner does) must fail."""
    base, x = CASES["channel_shuffle"]()
    graph = DependencyGraph.build(base, x)
    g1 = next(g for g in graph.groups if g.modules[0] == "g1.0")
    keep = {g1.id: torch.tensor([False] + [True] * 7)}  # unit 0 = g1 channels 0, 8, 16
    removals = graph.removals(keep)
    assert removals["c2.0.weight"][1] == [0, 1, 2]  # after the shuffle they sit at positions 0, 1, 2
    removals["c2.0.weight"][1] = [0, 8, 16]  # the naive identity mapping
    model = copy.deepcopy(base)
    remove_slices(model, removals)
    assert not graph.verify(model, keep).ok
    exact = copy.deepcopy(base)
    remove_slices(exact, graph.removals(keep))
    assert graph.verify(exact, keep).ok


def test_stale_attribute_shows_up_as_a_forward_failure():
    base, x = CASES["rmsnorm_mlp"]()
    graph = DependencyGraph.build(base, x)
    keep = half_keep(graph)
    model = copy.deepcopy(base)
    undo = remove_slices(model, graph.removals(keep))
    model.fc1.in_features = 32  # harmless for F.linear, so break a module that reads its attribute instead
    model.rms.normalized_shape = (32,)
    result = graph.verify(model, keep)
    assert not result.ok and result.detail.startswith("the pruned model's forward failed")
    undo.restore()
    assert all(torch.equal(a, b) for a, b in zip(model.state_dict().values(), base.state_dict().values()))
    assert model.rms.normalized_shape == (32,) and model.fc1.weight.shape == (64, 32)
