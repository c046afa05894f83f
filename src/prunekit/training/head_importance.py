"""Find the attention heads of a model and accumulate their Taylor importance |dL/d gate_h| over batches.

Where the heads are comes from the structured engine's dependency graph, not from per-architecture names: a graph
group is a set of heads when one of its members is the input dim of an attention output projection (each unit owns
several of its input columns: a head's head_dim columns, or with GQA a key-value group's columns) and another
member is the output dim of a projection in which each unit owns several rows (the q / k / v rows of that head).
This finds BERT's `attention.output.dense` (with `attention.self.query/key/value`), Llama's `self_attn.o_proj`
(with q/k/v_proj; GQA: one unit per key-value group with its query heads) and `nn.MultiheadAttention.out_proj`
(with `in_proj_weight`). A conv -> flatten -> Linear group is not heads (one filter row per unit). GPT-2's
`Conv1D` projections are not recognised.

Importance: a forward pre-hook multiplies the output projection's input, head by head, by a gate of ones that
requires grad (one gate per example and head, so one backward gives every example's gradient); after
`loss.backward()` the gate gradient is read and |grad| summed per example (Michel et al. 2019). The first dim of the
projection's input is taken as the example axis (batch-first, as in Hugging Face models). The model's own
parameters do not need gradients for this (they are switched off meanwhile, saving the weight-gradient work).
`nn.MultiheadAttention` calls its `out_proj` weights functionally, so no hook sees that input; there the gate
gradient is computed from the identity dL/d gate_h = sum over the head's columns j of sum_i W[i, j] dL/dW[i, j]
(exact for the batch), with the absolute value per batch instead of per example.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor, nn

from prunekit.errors import PrunekitError
from prunekit.graph import DependencyGraph, Group
from prunekit.importance.head_taylor import gate_importance

LOOKED_FOR = ("an attention output projection whose input columns split into whole heads in the dependency graph "
              "(BERT attention.output.dense, Llama self_attn.o_proj, nn.MultiheadAttention out_proj)")


@dataclass(eq=False)
class HeadBlock:
    """The heads of one attention block.

    Attributes:
        name: module path of the output projection (a Linear, or an nn.MultiheadAttention's `out_proj`).
        group: id of the dependency-graph group whose units are these heads.
        units: head index (ordered by first output-projection column) -> unit of the group.
        head_of_col: (in_features,) head index owning each input column of the output projection.
        frozen: heads the graph says must stay (never chosen for removal).
    """

    name: str
    group: int
    units: list[int]
    head_of_col: Tensor
    frozen: set[int] = field(default_factory=set)

    @property
    def heads(self) -> int:
        """Number of heads (removable units) of this block."""
        return len(self.units)


def _multi_rows(group: Group, skip: str) -> bool:
    """A member other than `skip` on dim 0 in which every unit owns more than one row (q / k / v of a head)."""
    for m in group.members:
        if m.dim == 0 and m.param != skip and m.param.endswith(("weight", "in_proj_weight")) and not m.is_buffer:
            if len(m.indices) >= 2 * group.size:
                return True
    return False


def find_attention_heads(model: nn.Module, graph: DependencyGraph) -> list[HeadBlock]:
    """Every attention block of `model` (graph traced on it) with its heads, in module order.

    Raises:
        PrunekitError: no attention heads found (names what was looked for).
    """
    modules = dict(model.named_modules())
    out = []
    for g in graph.groups:
        for m in g.members:
            owner = m.param.rpartition(".")[0]
            module = modules.get(owner)
            if m.dim != 1 or not m.param.endswith(".weight") or not isinstance(module, nn.Linear):
                continue
            if len(m.indices) != module.in_features or module.in_features < 2 * g.size:
                continue
            if not _multi_rows(g, m.param):
                continue
            first: dict[int, int] = {}
            for col, unit in zip(m.indices, m.units):
                first.setdefault(unit, col)
            units = sorted(first, key=first.__getitem__)
            head = {u: h for h, u in enumerate(units)}
            head_of_col = torch.empty(module.in_features, dtype=torch.long)
            for col, unit in zip(m.indices, m.units):
                head_of_col[col] = head[unit]
            out.append(HeadBlock(owner, g.id, units, head_of_col, {head[u] for u in g.frozen if u in head}))
            break
    if not out:
        raise PrunekitError(f"{type(model).__name__} has no attention heads: looked for {LOOKED_FOR}")
    order = {n: i for i, n in enumerate(modules)}
    return sorted(out, key=lambda b: order[b.name])


def _functional(model: nn.Module, name: str) -> bool:
    """True when the projection is the `out_proj` of an nn.MultiheadAttention (its weights are used functionally)."""
    parent, _, child = name.rpartition(".")
    owner = model.get_submodule(parent) if parent else model
    return child == "out_proj" and isinstance(owner, nn.MultiheadAttention)


class _Gate:
    """The gate of one block: created by the pre-hook on each forward, (examples, heads) or (heads,)."""

    def __init__(self, block: HeadBlock, per_example: bool) -> None:
        self.block, self.per_example, self.value = block, per_example, None

    def __call__(self, module: nn.Module, args: tuple[Any, ...]) -> tuple[Any, ...]:
        x = args[0]
        heads = self.block.heads
        if self.per_example and x.dim() >= 2:
            self.value = torch.ones(x.shape[0], heads, dtype=x.dtype, device=x.device, requires_grad=True)
            cols = self.value[:, self.block.head_of_col.to(x.device)]
            cols = cols.view(x.shape[0], *([1] * (x.dim() - 2)), x.shape[-1])
        else:
            self.value = torch.ones(heads, dtype=x.dtype, device=x.device, requires_grad=True)
            cols = self.value[self.block.head_of_col.to(x.device)]
        return (x * cols, *args[1:])


@contextmanager
def _gradients_only_for(model: nn.Module, keep: Iterable[Tensor]) -> Iterator[None]:
    """Switch requires_grad off on every parameter except `keep` (restored afterwards)."""
    wanted = {id(t) for t in keep}
    flags = [(p, p.requires_grad) for p in model.parameters()]
    try:
        for p, _ in flags:
            p.requires_grad_(id(p) in wanted)
        yield
    finally:
        for p, flag in flags:
            p.requires_grad_(flag)


def head_importance(model: nn.Module, blocks: list[HeadBlock], batches: Iterable[Any],
                    loss_fn: Callable[[nn.Module, Any], Tensor], per_example: bool = True) -> dict[str, Tensor]:
    """Mean |dL/d gate_h| per head over `batches` (model in eval mode: no dropout), {block name: (heads,)}.

    `loss_fn(model, batch)` returns the batch loss, a mean over its examples (the per-example gradients are then
    the gate gradient rows times the batch size).
    """
    functional = [b for b in blocks if _functional(model, b.name)]
    weights = [model.get_submodule(b.name).weight for b in functional]
    totals = {b.name: torch.zeros(b.heads) for b in blocks}
    counts = dict.fromkeys(totals, 0)
    skip = {b.name for b in functional}
    gates = {b.name: _Gate(b, per_example) for b in blocks if b.name not in skip}
    handles = [model.get_submodule(n).register_forward_pre_hook(g) for n, g in gates.items()]
    was_training = model.training
    model.eval()
    try:
        with _gradients_only_for(model, weights):
            for batch in batches:
                for w in weights:
                    w.grad = None
                for g in gates.values():
                    g.value = None
                loss = loss_fn(model, batch)
                loss.backward()
                for name, g in gates.items():
                    if g.value is None or g.value.grad is None:
                        raise PrunekitError(f"head importance: the forward never reached {name!r} (or the loss does "
                                            "not depend on it); give a loss computed from the model's output")
                    rows = g.value.shape[0] if g.value.dim() == 2 else 1
                    totals[name] += gate_importance(g.value.grad, per_example).cpu() * rows
                    counts[name] += rows
                for b, w in zip(functional, weights):
                    per_col = (w.detach() * w.grad).sum(0).float().cpu()
                    gate = torch.zeros(b.heads).index_add_(0, b.head_of_col, per_col)
                    totals[b.name] += gate.abs()
                    counts[b.name] += 1
    finally:
        for h in handles:
            h.remove()
        for w in weights:
            w.grad = None
        model.train(was_training)
    if not any(counts.values()):
        raise PrunekitError("head importance: no batch was given")
    return {n: totals[n] / max(counts[n], 1) for n in totals}


@contextmanager
def zeroed_heads(model: nn.Module, blocks: list[HeadBlock], heads: dict[str, list[int]]) -> Iterator[None]:
    """Within the block, the given heads' outputs are zero (their output-projection input columns are zeroed:
    exactly what removing them computes, bias kept). Weights are restored afterwards."""
    by_name = {b.name: b for b in blocks}
    saved = []
    try:
        with torch.no_grad():
            for name, idx in heads.items():
                w = model.get_submodule(name).weight
                cols = torch.isin(by_name[name].head_of_col, torch.as_tensor(idx, dtype=torch.long))
                saved.append((w, w.detach().clone()))
                w[:, cols.to(w.device)] = 0
        yield
    finally:
        with torch.no_grad():
            for w, value in saved:
                w.copy_(value)
