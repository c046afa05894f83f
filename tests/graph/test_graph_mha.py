"""Whole-head pruning of `torch.nn.MultiheadAttention`: the head split torch writes with constant sizes is read
head-wise, a head owns its q / k / v rows and out_proj columns, surgery updates num_heads / embed_dim / kdim / vdim
and switches to `PrunedMultiheadAttention` when the attention width differs from embed_dim."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

from prunekit.api import stage
from prunekit.graph import DependencyGraph, remove_slices
from prunekit.graph.mha import PrunedMultiheadAttention
from prunekit.methods.base import PruneContext
from prunekit.methods.structured import PruningPlan, apply_plan, get_plan
from prunekit.methods.structured.method import StructuredMethod


class SelfAttention(nn.Module):
    """Embedding -> x + MHA(x) -> head, so both the heads and the residual stream are prunable."""

    def __init__(self, batch_first: bool = True, need_weights: bool = False) -> None:
        super().__init__()
        self.embed = nn.Linear(6, 16)
        self.attn = nn.MultiheadAttention(16, 4, batch_first=batch_first)
        self.head = nn.Linear(16, 3)
        self.need_weights = need_weights

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.embed(x)
        return self.head(h + self.attn(h, h, h, need_weights=self.need_weights)[0])


class Encoder(nn.Module):
    """Two nn.TransformerEncoderLayer blocks between an embedding and a head."""

    def __init__(self, batch_first: bool = True, heads: int = 4) -> None:
        super().__init__()
        self.embed = nn.Linear(6, 16)
        self.layers = nn.ModuleList([nn.TransformerEncoderLayer(16, heads, 32, dropout=0.0, batch_first=batch_first)
                                     for _ in range(2)])
        self.head = nn.Linear(16, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.embed(x)
        for layer in self.layers:
            x = layer(x)
        return self.head(x)


def _model(cls, *args, **kwargs) -> nn.Module:
    torch.manual_seed(0)
    model = cls(*args, **kwargs).eval()
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.1 * torch.randn_like(p))  # non-zero biases everywhere
    return model


def _heads_group(graph: DependencyGraph, path: str):
    return next(g for g in graph.groups if any(m.param == f"{path}.in_proj_weight" and m.dim == 0 for m in g.members))


def _remove_heads(model: nn.Module, graph: DependencyGraph, path: str, heads: list[int]):
    group = _heads_group(graph, path)
    keep = {group.id: torch.tensor([u not in heads for u in range(group.size)])}
    remove_slices(model, graph.removals(keep))
    return keep


def _zero_heads(model: nn.Module, path: str, heads: list[int], head_dim: int = 4) -> nn.Module:
    """The original model with the q, k and v rows (and biases) of `heads` zeroed: those heads output zero."""
    model = copy.deepcopy(model)
    mha = model.get_submodule(path)
    width = mha.in_proj_weight.shape[0] // 3
    with torch.no_grad():
        for h in heads:
            for part in range(3):
                rows = slice(part * width + h * head_dim, part * width + (h + 1) * head_dim)
                mha.in_proj_weight[rows] = 0
                mha.in_proj_bias[rows] = 0
    return model


def test_head_group_owns_qkv_rows_and_out_columns():
    graph = DependencyGraph.build(_model(SelfAttention), torch.randn(2, 5, 6))
    group = _heads_group(graph, "attn")
    assert group.size == 4 and not group.frozen
    members = {(m.param, m.dim): m for m in group.members}
    assert set(members) == {("attn.in_proj_weight", 0), ("attn.in_proj_bias", 0), ("attn.out_proj.weight", 1)}
    rows = members[("attn.in_proj_weight", 0)]
    for unit in range(4):
        expect = [part * 16 + unit * 4 + i for part in range(3) for i in range(4)]
        assert sorted(i for i, u in zip(rows.indices, rows.units) if u == unit) == expect
    assert 4 in graph.fixed_sizes
    stream = next(g for g in graph.groups if any(m.param == "attn.in_proj_weight" and m.dim == 1 for m in g.members))
    assert {m.param for m in stream.members} >= {"embed.weight", "attn.out_proj.weight", "head.weight"}


@pytest.mark.parametrize("batch_first", [True, False])
@pytest.mark.parametrize("need_weights", [False, True])
def test_removed_heads_equal_zeroed_heads(batch_first, need_weights):
    base = _model(SelfAttention, batch_first, need_weights)
    x = torch.randn(2, 5, 6)
    graph = DependencyGraph.build(base, x)
    model = copy.deepcopy(base)
    keep = _remove_heads(model, graph, "attn", [1, 3])
    attn = model.attn
    assert type(attn) is PrunedMultiheadAttention
    assert (attn.num_heads, attn.head_dim, attn.embed_dim, tuple(attn.in_proj_weight.shape)) == (2, 4, 16, (24, 16))
    assert attn.out_proj.in_features == 8 and not attn._qkv_same_embed_dim
    assert graph.verify(model, keep).ok
    with torch.no_grad():
        torch.testing.assert_close(model(x), _zero_heads(base, "attn", [1, 3])(x), rtol=1e-5, atol=1e-6)


def test_pruned_mha_matches_torch_arguments():
    """Masks, weights, unbatched input, bias_kv and zero attention: the pruned forward with every head kept
    computes what torch's MultiheadAttention computes."""
    torch.manual_seed(0)
    for batch_first in (True, False):
        ref = nn.MultiheadAttention(16, 4, batch_first=batch_first, add_bias_kv=True, add_zero_attn=True).eval()
        pruned = copy.deepcopy(ref)
        pruned.__class__ = PrunedMultiheadAttention
        q, kv = torch.randn(2, 5, 16), torch.randn(2, 7, 16)  # batch 2, 5 queries, 7 keys
        if not batch_first:
            q, kv = q.transpose(0, 1), kv.transpose(0, 1)
        kpm = torch.zeros(2, 7, dtype=torch.bool)
        kpm[:, -2:] = True
        mask = torch.triu(torch.ones(5, 7, dtype=torch.bool), 1)
        for kwargs in ({}, {"key_padding_mask": kpm}, {"attn_mask": mask, "need_weights": False},
                       {"attn_mask": mask, "average_attn_weights": False}):
            want, got = ref(q, kv, kv, **kwargs), pruned(q, kv, kv, **kwargs)
            torch.testing.assert_close(got[0], want[0], rtol=1e-5, atol=1e-6)
            if want[1] is not None:
                torch.testing.assert_close(got[1], want[1], rtol=1e-5, atol=1e-6)
        q, kv = q[:, 0] if not batch_first else q[0], kv[:, 0] if not batch_first else kv[0]
        want, got = ref(q, kv, kv), pruned(q, kv, kv)  # unbatched
        torch.testing.assert_close(got[0], want[0], rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("drop_heads", [True, False])
def test_residual_stream_pruned_with_or_without_heads(drop_heads, monkeypatch):
    """Residual 16 -> 8 and heads 4 -> 2: widths equal again, torch's class (and its fused fast path) stays.
    Residual only: attention width 16 != embed_dim 8, PrunedMultiheadAttention."""
    base = _model(Encoder)
    x = torch.randn(2, 5, 6)
    graph = DependencyGraph.build(base, x)
    stream = next(g for g in graph.groups if any(m.param == "layers.0.self_attn.in_proj_weight" and m.dim == 1
                                                  for m in g.members))
    keep = {stream.id: torch.arange(16) % 2 == 0}
    if drop_heads:
        for path in ("layers.0.self_attn", "layers.1.self_attn"):
            keep[_heads_group(graph, path).id] = torch.tensor([True, False, True, False])
    model = copy.deepcopy(base)
    remove_slices(model, graph.removals(keep))
    attn = model.layers[0].self_attn
    want = (nn.MultiheadAttention, 8, 2, 4) if drop_heads else (PrunedMultiheadAttention, 8, 4, 4)
    assert (type(attn), attn.embed_dim, attn.num_heads, attn.head_dim) == want
    assert tuple(attn.in_proj_weight.shape) == ((24, 8) if drop_heads else (48, 8))
    assert graph.verify(model, keep).ok
    calls = []
    fused = torch._transformer_encoder_layer_fwd
    monkeypatch.setattr(torch, "_transformer_encoder_layer_fwd", lambda *a, **k: calls.append(1) or fused(*a, **k))
    with torch.no_grad():
        fast = model(x)  # eval + no_grad + batch_first: torch's fused encoder-layer path, equal widths only
    assert len(calls) == (2 if drop_heads else 0)
    torch.testing.assert_close(fast, model(x).detach(), rtol=1e-4, atol=1e-5)  # grad enabled: slow path


@pytest.mark.parametrize("batch_first", [True, False])
def test_transformer_encoder_layer_prunes_heads(batch_first):
    base = _model(Encoder, batch_first)
    x = torch.randn(2, 5, 6)
    model = copy.deepcopy(base)
    result = StructuredMethod().apply(model, stage("structured", target={"width_ratio": 0.5}).config,
                                      PruneContext(example_inputs=x))
    assert any(n.startswith("verify: ok") for n in result.notes), result.notes
    assert not any(n.startswith("repair") for n in result.notes), result.notes
    for layer in model.layers:
        assert layer.self_attn.num_heads == 2 and layer.linear1.out_features == 16
    with torch.no_grad():
        fused = model(x)  # would take the fused fast path for an unpruned layer
    torch.testing.assert_close(fused, model(x).detach(), rtol=1e-4, atol=1e-5)
    fresh = apply_plan(copy.deepcopy(base), PruningPlan.from_json(get_plan(model).to_json()))
    assert type(fresh.layers[0].self_attn) is type(model.layers[0].self_attn)
    assert fresh.layers[0].self_attn.num_heads == 2
    got, want = fresh.state_dict(), model.state_dict()
    assert all(torch.equal(got[k], want[k]) for k in want)
    torch.testing.assert_close(fresh(x), model(x), rtol=0, atol=0)


class CrossAttention(nn.Module):
    """Separate q / k / v projection weights (kdim, vdim differ from embed_dim)."""

    def __init__(self) -> None:
        super().__init__()
        self.q, self.k, self.v = nn.Linear(6, 16), nn.Linear(6, 12), nn.Linear(6, 10)
        self.attn = nn.MultiheadAttention(16, 4, kdim=12, vdim=10, batch_first=True)
        self.head = nn.Linear(16, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.attn(self.q(x), self.k(x), self.v(x), need_weights=False)[0])


def test_separate_projection_weights_prune_heads_and_inputs():
    base = _model(CrossAttention)
    x = torch.randn(2, 5, 6)
    graph = DependencyGraph.build(base, x)
    heads = next(g for g in graph.groups if any(m.param == "attn.q_proj_weight" and m.dim == 0 for m in g.members))
    assert heads.size == 4 and {(m.param, m.dim) for m in heads.members} >= {
        ("attn.q_proj_weight", 0), ("attn.k_proj_weight", 0), ("attn.v_proj_weight", 0), ("attn.out_proj.weight", 1)}
    model = copy.deepcopy(base)
    result = StructuredMethod().apply(model, stage("structured", target={"width_ratio": 0.5}).config,
                                      PruneContext(example_inputs=x))
    assert any(n.startswith("verify: ok") for n in result.notes), result.notes
    attn = model.attn
    assert (attn.num_heads, attn.kdim, attn.vdim) == (2, 6, 5)
    assert tuple(attn.k_proj_weight.shape) == (8, 6) and tuple(attn.v_proj_weight.shape) == (8, 5)


class PerHeadMask(nn.Module):
    """A 3-D attn_mask sized (batch * heads, L, S): its head count is fixed by the caller."""

    def __init__(self) -> None:
        super().__init__()
        self.embed = nn.Linear(6, 16)
        self.attn = nn.MultiheadAttention(16, 4, batch_first=True)

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        h = self.embed(x)
        return self.attn(h, h, h, attn_mask=mask, need_weights=False)[0].sum(-1)


def test_per_head_mask_freezes_heads():
    mask = torch.zeros(2 * 4, 5, 5)
    graph = DependencyGraph.build(_model(PerHeadMask), (torch.randn(2, 5, 6), mask))
    group = _heads_group(graph, "attn")
    assert group.frozen and all("attention" in why for why in group.frozen.values())


def test_torchvision_vit_prunes_heads():
    torchvision = pytest.importorskip("torchvision")
    torch.manual_seed(0)
    base = torchvision.models.VisionTransformer(image_size=32, patch_size=8, num_layers=2, num_heads=4,
                                                hidden_dim=32, mlp_dim=64, num_classes=10).eval()
    torch.nn.init.normal_(base.heads.head.weight)  # torchvision zero-inits the head: the check would prove nothing
    x = torch.randn(1, 3, 32, 32)
    model = copy.deepcopy(base)
    result = StructuredMethod().apply(model, stage("structured", target={"width_ratio": 0.5}).config,
                                      PruneContext(example_inputs=x))
    assert any(n.startswith("verify: ok") for n in result.notes), result.notes
    assert not any("INCONCLUSIVE" in n for n in result.notes)
    heads = [layer.self_attention.num_heads for layer in model.encoder.layers]
    assert heads == [2, 2], heads


class WindowPad(nn.Module):
    """Windowed attention pads (B, H, W, C) with (0, 0) on C: the channels pass, a real pad on C freezes them."""

    def __init__(self, pad_channels: int) -> None:
        super().__init__()
        self.a, self.b = nn.Linear(6, 8), nn.Linear(8 + pad_channels, 3)
        self.pad_channels = pad_channels

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.b(nn.functional.pad(self.a(x), (0, self.pad_channels, 0, 1, 0, 1)))


@pytest.mark.parametrize("pad_channels", [0, 2])
def test_zero_pad_on_channel_dim_passes_channels(pad_channels):
    model = _model(WindowPad, pad_channels)
    graph = DependencyGraph.build(model, torch.randn(1, 3, 3, 6))
    group = next(g for g in graph.groups if g.modules[0] == "a")
    assert group.size == 8
    if pad_channels:
        assert len(group.frozen) == 8 and "pad" in group.frozen[0]
        return
    assert not group.frozen
    keep = {group.id: torch.arange(8) % 2 == 0}
    remove_slices(model, graph.removals(keep))
    assert model.b.in_features == 4 and graph.verify(model, keep).ok
