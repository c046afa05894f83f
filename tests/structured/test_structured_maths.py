"""Pure maths of the structured method: group importance against a naive loop, and selection rules."""

from __future__ import annotations

import math

import pytest
import torch

from prunekit.errors import PrunekitError
from prunekit.graph import Group, GroupMember
from prunekit.methods.structured.importance import group_scores
from prunekit.methods.structured.select import candidate, clamp_count, layer_masks, select, threshold_masks


def _group() -> tuple[Group, dict[str, torch.Tensor]]:
    torch.manual_seed(0)
    tensors = {"conv.weight": torch.randn(4, 3, 2, 2), "bn.weight": torch.rand(4) + 0.1,
               "bn.running_var": torch.rand(4), "fc.weight": torch.randn(5, 8)}
    members = (
        GroupMember("conv.weight", 0, (0, 1, 2, 3), (0, 1, 2, 3)),
        GroupMember("bn.weight", 0, (0, 1, 2, 3), (0, 1, 2, 3)),
        GroupMember("bn.running_var", 0, (0, 1, 2, 3), (0, 1, 2, 3), is_buffer=True),
        GroupMember("fc.weight", 1, tuple(range(8)), (0, 0, 1, 1, 2, 2, 3, 3)),  # flatten: 2 features per channel
    )
    return Group(0, 4, members, {}, ("conv", "bn", "fc")), tensors


def _naive(group: Group, tensors: dict[str, torch.Tensor], norm: str) -> list[float]:
    per_member = []
    for m in group.members:
        if m.is_buffer:
            continue
        t = tensors[m.param]
        values = [0.0] * group.size
        for idx, unit in zip(m.indices, m.units):
            sl = t.select(m.dim, idx).double()
            values[unit] += float(sl.abs().sum()) if norm == "l1" else float(sl.square().sum())
        if norm == "l2":
            values = [math.sqrt(v) for v in values]
        mean = sum(values) / len(values)
        per_member.append([v / mean for v in values])
    return [sum(col) / len(col) for col in zip(*per_member)]


@pytest.mark.parametrize("norm", ["l1", "l2"])
def test_group_scores_match_a_naive_loop(norm):
    group, tensors = _group()
    got = group_scores(group, tensors.__getitem__, norm)
    assert got.tolist() == pytest.approx(_naive(group, tensors, norm), rel=1e-6)  # float32 sums
    assert float(got.mean()) == pytest.approx(1.0)  # every member normalized by its mean: scores average 1


def test_bn_scale_and_random_scores():
    group, tensors = _group()
    bn = group_scores(group, tensors.__getitem__, "bn_scale", norm_weights=frozenset({"bn.weight"}))
    gamma = tensors["bn.weight"].double()
    assert bn.tolist() == pytest.approx((gamma / gamma.mean()).tolist())
    fallback = group_scores(group, tensors.__getitem__, "bn_scale")  # no norm weight known: l2
    assert fallback.tolist() == pytest.approx(_naive(group, tensors, "l2"))
    a = group_scores(group, tensors.__getitem__, "random", generator=torch.Generator().manual_seed(3))
    b = group_scores(group, tensors.__getitem__, "random", generator=torch.Generator().manual_seed(3))
    assert torch.equal(a, b)
    with pytest.raises(PrunekitError, match="random importance needs a seeded torch.Generator"):
        group_scores(group, tensors.__getitem__, "random")
    with pytest.raises(PrunekitError, match="unknown importance 'l3'; valid: bn_scale, l1, l2, random"):
        group_scores(group, tensors.__getitem__, "l3")


def test_counts_respect_frozen_min_channels_and_round_to():
    c = candidate(torch.arange(10.0), torch.tensor([True, True, True] + [False] * 7))
    assert clamp_count(0, c, 1, 1) == 3  # three frozen units always stay
    assert clamp_count(4, c, 8, 1) == 8 and clamp_count(9, c, 8, 1) == 10  # rounded up, capped at the size
    assert clamp_count(1, candidate(torch.ones(4), torch.zeros(4, dtype=torch.bool)), 1, 6) == 4
    mask = layer_masks([c], 0.5, 1, 1)[0]
    assert mask.tolist() == [True, True, True, False, False, False, False, False, True, True]  # frozen + best 2


def test_threshold_keeps_scores_at_or_above():
    c = candidate(torch.tensor([0.5, 2.0, 1.0, 3.0]), torch.zeros(4, dtype=torch.bool))
    assert threshold_masks([c], 1.0, 1, 1)[0].tolist() == [False, True, True, True]
    assert threshold_masks([c], 10.0, 1, 1)[0].tolist() == [False, False, False, True]  # floor of one unit


def _cands(sizes):
    g = torch.Generator().manual_seed(0)
    return [candidate(torch.rand(n, generator=g, dtype=torch.float64), torch.zeros(n, dtype=torch.bool))
            for n in sizes]


@pytest.mark.parametrize("scope", ["layer", "global"])
def test_select_reaches_a_cost_target_closely(scope):
    cands = _cands([64, 128, 256, 32])
    weights = [4.0, 1.0, 2.0, 8.0]  # cost per kept unit differs per group
    total = sum(w * c.size for w, c in zip(weights, cands))

    def cost(masks):
        return sum(w * float(m.sum()) for w, m in zip(weights, masks)) / total

    masks, reached = select(cands, cost, 0.5, scope=scope)
    assert abs(reached - 0.5) < 0.01 and reached == cost(masks)
    masks, reached = select(cands, cost, 0.5, scope=scope, round_to=8)
    assert all(int(m.sum()) % 8 == 0 for m in masks)
    assert abs(reached - 0.5) < 0.05


def test_select_unreachable_target_returns_the_closest_point():
    cands = [candidate(torch.rand(4, dtype=torch.float64), torch.tensor([True, True, True, False]))]
    masks, reached = select(cands, lambda ms: float(ms[0].sum()) / 4, 0.1, scope="layer")
    assert reached == 0.75 and masks[0][:3].all()
