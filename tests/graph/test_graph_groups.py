"""Groups found by the dependency graph on small models: exact members, coupling, freezing, errors and limits."""

from __future__ import annotations

import pytest
import torch
from hard_models import CASES
from torch import nn

from prunekit.errors import PrunekitError
from prunekit.graph import DependencyGraph


def members(group):
    return {(m.param, m.dim): len(m.indices) for m in group.members}


def by_first_module(graph):
    return {g.modules[0]: g for g in graph.groups}


def test_conv_bn_conv_is_one_group_with_every_slice():
    model = nn.Sequential(nn.Conv2d(3, 8, 3), nn.BatchNorm2d(8), nn.ReLU(), nn.Conv2d(8, 4, 1)).eval()
    graph = DependencyGraph.build(model, torch.randn(1, 3, 6, 6))
    first = by_first_module(graph)["0"]
    assert first.size == 8 and not first.frozen
    assert members(first) == {("0.weight", 0): 8, ("0.bias", 0): 8, ("1.weight", 0): 8, ("1.bias", 0): 8,
                              ("1.running_mean", 0): 8, ("1.running_var", 0): 8, ("3.weight", 1): 8}
    assert {m.param for m in first.members if m.is_buffer} == {"1.running_mean", "1.running_var"}
    last = by_first_module(graph)["3"]
    assert set(last.frozen.values()) == {"model output"}
    assert len(last.prunable) == 0


def test_residual_partners_share_one_group():
    base, x = CASES["residual_cnn"]()
    groups = by_first_module(DependencyGraph.build(base, x))
    stream = groups["stem.0"]  # stem, b1's last conv/BN and the projection's input are one stream
    params = {m.param for m in stream.members}
    assert {"stem.0.weight", "b1.1.weight", "b1.2.weight", "b1.0.0.weight", "proj.0.weight"} <= params
    wide = next(g for g in groups.values() if "proj.0.weight" in {m.param for m in g.members if m.dim == 0})
    assert {"b2.1.weight", "b2.2.weight", "head.weight"} <= {m.param for m in wide.members}
    head = next(m for m in wide.members if m.param == "head.weight")
    assert head.dim == 1 and len(head.indices) == 32 * 4  # flatten(1) of a 2x2 pool: 4 in-features per channel
    assert [head.units.count(u) for u in range(32)] == [4] * 32


def test_concat_offsets_map_each_branch_to_its_slice_of_the_consumer():
    base, x = CASES["concat"]()
    groups = by_first_module(DependencyGraph.build(base, x))
    mix_a = next(m for m in groups["a.0"].members if m.param == "mix.0.weight")
    mix_b = next(m for m in groups["b.1.0"].members if m.param == "mix.0.weight")
    assert mix_a.dim == mix_b.dim == 1
    assert mix_a.indices == tuple(range(12)) and mix_b.indices == tuple(range(12, 32))


def test_chunk_couples_positions_and_swapped_cat_maps_them():
    for case in ("chunk_cat", "chunk_cat_swapped"):
        base, x = CASES[case]()
        stem = by_first_module(DependencyGraph.build(base, x))["stem.0"]
        assert stem.size == 8  # 16 channels in 2 equal chunks: position k of both chunks is one unit
        conv = next(m for m in stem.members if m.param == "conv.0.weight")
        expected = list(range(8)) * 2
        assert list(conv.units) == expected


def test_depthwise_couples_input_and_output_and_grouped_couples_positions():
    base, x = CASES["depthwise_grouped"]()
    groups = by_first_module(DependencyGraph.build(base, x))
    expand = groups["expand.0"]
    # expand (32) -> depthwise x2 (64 filters, input channel g feeds filters 2g, 2g+1) -> grouped conv with 4 groups
    # of 16 inputs: input position k of every group is one unit, so 16 positions x 4 groups; each position holds
    # 2 filters of one depthwise group, so 8 units of 4 expand channels and 8 depthwise filters each.
    dw = next(m for m in expand.members if m.param == "dw.0.weight")
    ex = next(m for m in expand.members if m.param == "expand.0.weight")
    assert expand.size == 8 and dw.dim == 0 and len(dw.indices) == 64
    assert [dw.units.count(u) for u in range(8)] == [8] * 8 and [ex.units.count(u) for u in range(8)] == [4] * 8
    assert all(dw.units[2 * g] == dw.units[2 * g + 1] == ex.units[g] for g in range(32))
    assert not any(m.param == "dw.0.weight" and m.dim == 1 for m in expand.members)
    into = next(m for m in expand.members if m.param == "grouped.0.weight")
    assert into.dim == 1 and len(into.indices) == 16
    assert groups["grouped.0"].size == 8  # 32 outputs in 4 groups: 8 positions


def test_shared_layer_called_twice_is_one_set_of_slices():
    base, x = CASES["shared_layer"]()
    graph = DependencyGraph.build(base, x)
    owners = [g for g in graph.groups if any(m.param == "shared.weight" and m.dim == 0 for m in g.members)]
    assert len(owners) == 1
    params = {m.param for m in owners[0].members}
    assert {"shared.weight", "shared.bias", "bn1.weight", "bn2.weight"} <= params


class IndexSelect(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.a = nn.Conv2d(3, 8, 1)
        self.block = nn.Sequential(nn.Conv2d(8, 8, 1), nn.ReLU())
        self.b = nn.Conv2d(8, 2, 1)

    def forward(self, x):
        y = self.block(self.a(x))
        y = torch.index_select(y, 1, torch.tensor([1, 0, 2, 3, 4, 5, 6, 7]))
        return self.b(y)


def test_op_without_rule_freezes_with_its_name_and_strict_raises():
    model, x = IndexSelect().eval(), torch.randn(1, 3, 4, 4)
    graph = DependencyGraph.build(model, x)
    assert [u.op for u in graph.unsupported] == ["index_select"]
    frozen = by_first_module(graph)["block.0"]
    assert not frozen.prunable
    assert next(iter(frozen.frozen.values())).startswith("op index_select has no channel rule at")
    assert by_first_module(graph)["a"].prunable  # the rest stays prunable
    with pytest.raises(PrunekitError, match=r"strict: op 'index_select' at module .* has no channel rule and "
                                            r"touches 8 channel index\(es\)"):
        DependencyGraph.build(model, x, strict=True)


class Sliced(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.a = nn.Conv2d(3, 8, 1)
        self.b = nn.Conv2d(4, 2, 1)

    def forward(self, x):
        return self.b(self.a(x)[:, :4])


def test_constant_slice_of_channels_freezes_them():
    graph = DependencyGraph.build(Sliced().eval(), torch.randn(1, 3, 4, 4))
    group = by_first_module(graph)["a"]
    assert not group.prunable
    assert any("slice [0:4:1] of the channel dim" in r for r in group.frozen.values())


def test_limits_stop_the_analysis_with_a_clear_error():
    model, x = CASES["residual_cnn"]()
    with pytest.raises(PrunekitError, match="more than max_nodes=5"):
        DependencyGraph.build(model, x, max_nodes=5)
    with pytest.raises(PrunekitError, match="more than 20 channel atoms"):
        DependencyGraph.build(model, x, max_atoms=20)


def test_untraceable_model_and_missing_inputs_raise_prunekit_errors():
    class DataDependent(nn.Module):
        def forward(self, x):
            return x * 2 if float(x.sum()) > 0 else x

    with pytest.raises(PrunekitError, match="could not trace the model with torch.export"):
        DependencyGraph.build(DataDependent(), torch.randn(2, 3))
    with pytest.raises(PrunekitError, match="needs example_inputs"):
        DependencyGraph.build(nn.Linear(2, 2), None)
