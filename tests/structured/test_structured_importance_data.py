"""Data-driven and redundancy importance of the structured method: maths against naive loops, the calibration
plumbing (accepted data forms, gradients, input statistics), and end-to-end behaviour and errors."""

from __future__ import annotations

import copy
import math
from types import SimpleNamespace

import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

import prunekit
from prunekit.errors import PrunekitError
from prunekit.graph import DependencyGraph, Group, GroupMember
from prunekit.methods.structured import get_plan
from prunekit.methods.structured.calib import calibration_batches, collect_gradients, collect_inputs
from prunekit.methods.structured.evidence import build_evidence
from prunekit.methods.structured.importance import KINDS, unit_scores
from prunekit.methods.structured.importance_data import Evidence, lamp


def _group() -> tuple[Group, dict[str, torch.Tensor]]:
    g = torch.Generator().manual_seed(0)
    tensors = {"conv.weight": torch.randn(4, 3, 2, 2, generator=g), "bn.weight": torch.rand(4, generator=g) + 0.1,
               "bn.running_var": torch.rand(4, generator=g), "fc.weight": torch.randn(5, 8, generator=g)}
    members = (
        GroupMember("conv.weight", 0, (0, 1, 2, 3), (0, 1, 2, 3)),
        GroupMember("bn.weight", 0, (0, 1, 2, 3), (0, 1, 2, 3)),
        GroupMember("bn.running_var", 0, (0, 1, 2, 3), (0, 1, 2, 3), is_buffer=True),
        GroupMember("fc.weight", 1, tuple(range(8)), (0, 0, 1, 1, 2, 2, 3, 3)),  # flatten: 2 features per channel
    )
    return Group(0, 4, members, {}, ("conv", "bn", "fc")), tensors


def _evidence(tensors: dict[str, torch.Tensor]) -> Evidence:
    g = torch.Generator().manual_seed(1)
    grad = {k: torch.randn(v.shape, generator=g, dtype=torch.float64)
            for k, v in tensors.items() if k != "bn.running_var"}
    grad_sq = {k: torch.rand(v.shape, generator=g, dtype=torch.float64) for k, v in grad.items()}
    act = torch.rand(8, generator=g, dtype=torch.float64) * 3
    var = torch.rand(8, generator=g, dtype=torch.float64)
    return Evidence(grad, grad_sq, {("fc.weight", 1): act}, {("fc.weight", 1): var},
                    frozenset({("conv.weight", 0)}))


def _reduce(per_member: list[list[float]]) -> list[float]:
    normed = [[v / (sum(vals) / len(vals)) for v in vals] for vals in per_member]
    return [sum(col) / len(col) for col in zip(*normed)]


def _naive(group: Group, tensors: dict[str, torch.Tensor], ev: Evidence, kind: str) -> list[float]:
    per_member = []
    for m in group.members:
        if m.is_buffer:
            continue
        w = tensors[m.param].double()
        if kind in ("fpgm", "activation", "activation_fluct") and w.ndim < 2:
            continue
        if kind == "fpgm":
            if (m.param, m.dim) not in ev.producers:
                continue
            f = [w.select(m.dim, u).flatten() for u in range(group.size)]
            per_member.append([sum(float((f[u] - f[v]).norm()) for v in range(group.size)) for u in range(group.size)])
            continue
        if kind.startswith("activation") and (m.param, m.dim) not in ev.act_sq:
            continue
        values = [0.0] * group.size
        for idx, unit in zip(m.indices, m.units):
            sl = w.select(m.dim, idx)
            if kind == "taylor":
                values[unit] += float((sl * ev.grad[m.param].select(m.dim, idx)).sum())
            elif kind == "hessian":
                values[unit] += float((0.5 * sl.square() * ev.grad_sq[m.param].select(m.dim, idx)).sum())
            elif kind == "activation":
                values[unit] += math.sqrt(float(ev.act_sq[(m.param, m.dim)][idx])) * float(sl.norm())
            else:
                values[unit] += float(ev.act_var[(m.param, m.dim)][idx]) * float(sl.square().sum())
        per_member.append([abs(v) for v in values] if kind == "taylor" else values)
    return _reduce(per_member)


@pytest.mark.parametrize("kind", ["taylor", "hessian", "fpgm", "activation", "activation_fluct"])
def test_evidence_kinds_match_a_naive_loop(kind):
    group, tensors = _group()
    ev = _evidence(tensors)
    got = unit_scores(group, tensors.__getitem__, kind, evidence=ev)
    assert got.tolist() == pytest.approx(_naive(group, tensors, ev, kind), rel=1e-6)


def test_lamp_matches_its_definition_including_ties():
    s = torch.tensor([0.5, 2.0, 1.0, 1.0, 3.0], dtype=torch.float64)
    naive = [float(s[u] ** 2 / sum(s[v] ** 2 for v in range(5) if s[v] >= s[u])) for u in range(5)]
    assert lamp(s).tolist() == pytest.approx(naive)
    assert float(lamp(s).max()) == 1.0  # the best unit of every group scores 1
    group, tensors = _group()
    l2 = unit_scores(group, tensors.__getitem__, "l2")
    assert unit_scores(group, tensors.__getitem__, "lamp").tolist() == pytest.approx(lamp(l2).tolist())


def test_no_evidence_falls_back_to_l2_and_unknown_kind_lists_all():
    group, tensors = _group()
    assert unit_scores(group, tensors.__getitem__, "taylor").tolist() == pytest.approx(
        unit_scores(group, tensors.__getitem__, "l2").tolist())
    with pytest.raises(PrunekitError, match="unknown importance 'tailor'; valid: activation, .*taylor"):
        unit_scores(group, tensors.__getitem__, "tailor")
    assert {"taylor", "hessian", "fpgm", "lamp", "activation", "activation_fluct"} <= set(KINDS)


# ----------------------------------------------------------------- calibration plumbing
def test_calibration_batches_accept_every_documented_form():
    x, y = torch.randn(10, 4), torch.randint(0, 3, (10,))
    assert [b.target for b in calibration_batches([x, x], 8)] == [None, None]
    pairs = calibration_batches([(x, y)] * 5, 3)
    assert len(pairs) == 3 and torch.equal(pairs[0].target, y)
    single = calibration_batches({"input_ids": x.long(), "labels": y}, 8)
    assert len(single) == 1 and set(single[0].inputs) == {"input_ids", "labels"}
    loader = calibration_batches(DataLoader(TensorDataset(x, y), batch_size=4), 8)
    assert [b.inputs.shape[0] for b in loader] == [4, 4, 2]
    splits = SimpleNamespace(train=TensorDataset(x, y), val=None, test=None)
    batches = calibration_batches(splits, 2, batch_size=3)
    assert [b.inputs.shape for b in batches] == [torch.Size([3, 4])] * 2 and batches[0].target.dtype == torch.long
    assert calibration_batches(splits, 2, batch_size=3)[0].inputs.equal(batches[0].inputs)  # seeded sample
    with pytest.raises(PrunekitError, match="calibration data is a str; expected a Tensor"):
        calibration_batches("digits", 2)
    with pytest.raises(PrunekitError, match="calibration data is empty"):
        calibration_batches([], 2)
    text = SimpleNamespace(train=["some text", "more"])
    with pytest.raises(PrunekitError, match="train split yields str items"):
        calibration_batches(text, 2)


def _mlp() -> tuple[nn.Module, torch.Tensor, list]:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(6, 12), nn.ReLU(), nn.Linear(12, 12), nn.ReLU(), nn.Linear(12, 3)).eval()
    g = torch.Generator().manual_seed(2)
    data = [(torch.randn(8, 6, generator=g), torch.randint(0, 3, (8,), generator=g)) for _ in range(3)]
    return model, torch.randn(4, 6), data


def test_gradients_and_input_statistics_match_autograd_and_hooks():
    model, _, data = _mlp()
    batches = calibration_batches(data, 8)
    stats = collect_gradients(model, batches, {"2.weight": model[2].weight})
    grads = []
    for x, y in data:
        model.zero_grad()
        nn.functional.cross_entropy(model(x), y).backward()
        grads.append(model[2].weight.grad.double().clone())
    model.zero_grad(set_to_none=True)
    assert torch.allclose(stats.grad["2.weight"], sum(grads))
    assert torch.allclose(stats.grad_sq["2.weight"], sum(g.square() for g in grads))
    assert model[2].weight.grad is None  # the model's gradients are left as they were
    inputs = collect_inputs(model, batches, {"2": model[2]}, gram=frozenset({"2"}))["2"]
    with torch.no_grad():
        h = torch.cat([model[1](model[0](x)) for x, _ in data]).double()
    assert inputs.count == 24
    assert torch.allclose(inputs.total_sq, h.square().sum(0)) and torch.allclose(inputs.gram, h.T @ h)


def test_build_evidence_maps_consumers_and_producers():
    model, x, data = _mlp()
    graph = DependencyGraph.build(model, x)
    ev = build_evidence(model, graph, "activation", calibration_batches(data, 8))
    assert ("2.weight", 1) in ev.act_sq and ("4.weight", 1) in ev.act_sq
    assert ("0.weight", 0) in ev.producers and ("2.weight", 0) in ev.producers and ("2.weight", 1) not in ev.producers


# ----------------------------------------------------------------- end to end
def _prune(model, x, data=None, **options):
    options.setdefault("target", {"width_ratio": 0.5})
    return prunekit.prune(model, {"stages": [{"method": "structured", **options}]}, x, data=data)


def _kept(model) -> list[tuple[int, ...]]:
    return [tuple(s.indices) for step in get_plan(model).steps for g in step.groups for s in g.removed]


@pytest.mark.parametrize("kind", ["taylor", "hessian", "fpgm", "lamp", "activation", "activation_fluct"])
def test_each_kind_prunes_verifies_and_differs_from_random(kind):
    base, x, data = _mlp()
    chosen, rand = copy.deepcopy(base), copy.deepcopy(base)
    report = _prune(chosen, x, data, importance=kind)
    _prune(rand, x, importance="random", seed=5)
    notes = report.stages[0]["notes"]
    assert any(n.startswith(f"importance: {kind};") for n in notes)
    assert any(n.startswith("verify: ok") for n in notes)
    assert _kept(chosen) != _kept(rand)
    assert chosen[2].weight.shape == (6, 6)


def test_data_kinds_without_data_or_loss_say_what_is_missing():
    model, x, data = _mlp()
    with pytest.raises(PrunekitError, match="importance taylor needs calibration data; pass data=.*--data"):
        _prune(copy.deepcopy(model), x, importance="taylor")
    with pytest.raises(PrunekitError, match="gradient importance needs a loss: give \\(inputs, targets\\) batches"):
        _prune(copy.deepcopy(model), x, [d[0] for d in data], importance="taylor")
    _prune(copy.deepcopy(model), x, [d[0] for d in data], importance="activation")  # no targets needed


def test_taylor_uses_hugging_face_labels():
    from zoo import build_bert

    model, inputs = build_bert()
    g = torch.Generator().manual_seed(3)
    data = [{"input_ids": torch.randint(0, 128, (4, 8), generator=g), "labels": torch.randint(0, 3, (4,), generator=g)}
            for _ in range(2)]
    report = _prune(model, inputs, data, importance="taylor", target={"params_ratio": 0.8})
    assert any(n.startswith("verify: ok") for n in report.stages[0]["notes"])
    assert model.config.intermediate_size < 64
