"""Attention heads in the dependency graph: a `view(..., -1, head_dim)` makes each head one whole unit, fused
attention couples q / k / v / output head by head (GQA: a key-value head with its query heads), head_dim is fixed."""

from __future__ import annotations

import copy

import torch
import torch.nn.functional as F
from torch import nn

from prunekit.api import stage
from prunekit.graph import DependencyGraph
from prunekit.graph._atoms import AtomTable
from prunekit.graph._labels import reshape_label
from prunekit.methods.base import PruneContext
from prunekit.methods.structured.method import StructuredMethod


def test_dynamic_leading_factor_makes_whole_heads():
    atoms = AtomTable()
    ids = atoms.new(8)
    fixed: set[int] = set()
    out = reshape_label(atoms, {2: ids}, (1, 3, 8), (1, 3, 2, 4), "test", dynamic=2, fixed=fixed)
    assert set(out) == {2} and fixed == {4}
    roots = atoms.roots_of(ids).tolist()
    assert len(set(roots[:4])) == 1 and len(set(roots[4:])) == 1 and roots[0] != roots[4]
    assert out[2].tolist() == [roots[0], roots[4]]


def test_constant_factors_couple_positions_across_groups():
    atoms = AtomTable()
    ids = atoms.new(8)
    out = reshape_label(atoms, {2: ids}, (1, 3, 8), (1, 3, 2, 4), "test")  # channel-shuffle reading
    roots = atoms.roots_of(ids).tolist()
    assert set(out) == {3} and roots[0] == roots[4] and roots[0] != roots[1]


class Attention(nn.Module):
    """Self-attention with GQA written like Hugging Face: view(B, T, -1, head_dim), repeat, sdpa, o_proj."""

    def __init__(self, dim: int = 32, heads: int = 4, kv_heads: int = 2, head_dim: int = 4) -> None:
        super().__init__()
        self.head_dim, self.rep = head_dim, heads // kv_heads
        self.q = nn.Linear(dim, heads * head_dim)
        self.k = nn.Linear(dim, kv_heads * head_dim)
        self.v = nn.Linear(dim, kv_heads * head_dim)
        self.o = nn.Linear(heads * head_dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, t, _ = x.shape
        q = self.q(x).view(b, t, -1, self.head_dim).transpose(1, 2)
        k = self._repeat(self.k(x).view(b, t, -1, self.head_dim).transpose(1, 2))
        v = self._repeat(self.v(x).view(b, t, -1, self.head_dim).transpose(1, 2))
        out = F.scaled_dot_product_attention(q, k, v).transpose(1, 2).reshape(b, t, -1)
        return x + self.o(out)

    def _repeat(self, kv: torch.Tensor) -> torch.Tensor:  # Hugging Face's repeat_kv
        b, h, t, d = kv.shape
        return kv[:, :, None].expand(b, h, self.rep, t, d).reshape(b, h * self.rep, t, d)


def test_gqa_head_group_spans_q_k_v_o():
    model = Attention().eval()
    graph = DependencyGraph.build(model, torch.randn(2, 5, 32))
    heads = next(g for g in graph.groups if g.modules[0] == "q")
    assert heads.size == 2 and not heads.frozen  # two key-value groups, each with its two query heads
    sizes = {(m.param, m.dim): len(m.indices) for m in heads.members}
    assert sizes == {("q.weight", 0): 16, ("q.bias", 0): 16, ("k.weight", 0): 8, ("k.bias", 0): 8,
                     ("v.weight", 0): 8, ("v.bias", 0): 8, ("o.weight", 1): 16}
    assert 4 in graph.fixed_sizes


def test_head_pruning_passes_the_equivalence_check():
    base = Attention().eval()
    x = torch.randn(2, 5, 32)
    model = copy.deepcopy(base)
    result = StructuredMethod().apply(model, stage("structured", target={"width_ratio": 0.5}).config,
                                      PruneContext(example_inputs=x))
    assert any(n.startswith("verify: ok") for n in result.notes), result.notes
    assert (model.q.out_features, model.k.out_features, model.o.in_features) == (8, 4, 8)
