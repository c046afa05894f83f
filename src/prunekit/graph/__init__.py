"""Dependency graph for structured pruning: which parameter slices must be removed together, and surgery.

    from prunekit.graph import DependencyGraph, remove_slices
    graph = DependencyGraph.build(model, example_inputs)   # one torch.export trace, every op mapped or frozen
    graph.groups                                           # [Group]: coupled (tensor, dim, indices) slices
    removals = graph.removals({g.id: keep_mask_of_g})      # {tensor: {dim: indices}}
    remove_slices(model, removals)                         # physically smaller dense layers
    graph.verify(model, keep)                              # pruned == original with removed channels zeroed

Import layer 1: torch, the standard library, `prunekit.errors` and `prunekit.layers` only.
"""

from __future__ import annotations

from prunekit.graph._walk import Unsupported
from prunekit.graph.analysis import RULES, DependencyGraph
from prunekit.graph.cost import CostModel
from prunekit.graph.groups import Group, GroupMember
from prunekit.graph.mha import PrunedMultiheadAttention
from prunekit.graph.surgery import Undo, get_tensor, remove_slices, sliceable_dims
from prunekit.graph.verify import VerifyResult

__all__ = [
    "RULES",
    "CostModel",
    "DependencyGraph",
    "Group",
    "GroupMember",
    "PrunedMultiheadAttention",
    "Undo",
    "Unsupported",
    "VerifyResult",
    "get_tensor",
    "remove_slices",
    "sliceable_dims",
]
