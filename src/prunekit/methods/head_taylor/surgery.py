"""Removing chosen attention heads physically, and `HeadPruner`: Taylor head pruning in your own training loop.

`remove_heads` cuts the heads' slices with the dependency graph's groups (`graph.remove_slices`, the same PlanStep
the `structured` method records, so `get_plan(model)` / plan.json / `prunekit.load` replay it) and checks that the
cut model equals the uncut one with those heads zeroed. `HeadPruner` wraps the whole step for a user loop:

    hp = HeadPruner(model, example_inputs)            # finds the heads from the dependency graph
    scores = hp.score(batches, loss_fn)               # mean |dL/d gate_h| per head, l2-normalised per layer
    removed, notes = hp.remove(scores, 2)             # 2 heads per layer, physically; HF config edited if it can
    optimizer = torch.optim.AdamW(model.parameters())  # rebuild: the attention projections changed shape
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from typing import Any

import torch
from torch import Tensor, nn

from prunekit.errors import PrunekitError
from prunekit.graph import DependencyGraph, get_tensor, remove_slices
from prunekit.importance.head_taylor import heads_to_remove, normalize_layers
from prunekit.methods.structured.hf_config import apply_config_edit, find_config_edit, is_hf_model, state_shapes
from prunekit.methods.structured.plan import PlanGroup, PlanSlice, PlanStep, record_step
from prunekit.training.head_importance import HeadBlock, find_attention_heads, head_importance


def remove_heads(model: nn.Module, graph: DependencyGraph, blocks: list[HeadBlock], remove: dict[str, list[int]],
                 verify: bool = True) -> tuple[PlanStep, str | None]:
    """Cut the given heads ({block name: head indices}) with the graph's groups; returns the plan step (recorded by
    the caller) and the verify note. On a failed check the model is restored and PrunekitError raised."""
    by_name = {b.name: b for b in blocks}
    step, keep = PlanStep(), {}
    for name, heads in remove.items():
        block = by_name[name]
        group = graph.groups[block.group]
        units = [block.units[h] for h in heads]
        mask = torch.ones(group.size, dtype=torch.bool)
        mask[units] = False
        keep[group.id] = mask
        slices = tuple(PlanSlice(t, d, tuple(ix)) for t, d, ix in group.slices(units))
        step.groups.append(PlanGroup(group.name, group.size, group.size - len(units), slices))
    for tensor in step.removals():
        step.shapes[tensor] = list(get_tensor(model, tensor).shape)
    undo = remove_slices(model, step.removals())
    if not verify:
        return step, None
    verdict = graph.verify(model, keep)
    if not verdict.ok:
        undo.restore()
        raise PrunekitError(f"head_taylor: equivalence check failed after removing heads ({verdict.detail}); the "
                            "model was left unchanged")
    return step, f"verify: ok, max |pruned - reference| {verdict.max_abs_error:.2g}"


def _edit_config(model: nn.Module, graph: DependencyGraph, step: PlanStep) -> str:
    edit = find_config_edit(model, state_shapes(model), fixed=graph.fixed_sizes)
    if edit is None:
        return ("hf_config: the config cannot express these sizes (per-layer head counts, or a head size derived "
                "from hidden_size / num_attention_heads as in BERT); NOT edited: the plan rebuilds the model "
                "(prunekit.load, apply_plan)")
    step.config = dict(edit)
    changes = apply_config_edit(model, edit)
    return "hf_config: " + (", ".join(changes) if changes else "unchanged") + "; from_pretrained rebuilds these shapes"


class HeadPruner:
    """Score and remove attention heads of `model` between the steps of your own training loop.

    Args:
        model: a model with attention blocks (BERT / Llama-style Hugging Face models, nn.MultiheadAttention).
        example_inputs: inputs to trace the dependency graph (a tensor, a tuple, or a dict of keyword inputs).
        verify: check after each removal that the cut model equals the uncut one with those heads zeroed.

    Raises:
        PrunekitError: when the model has no attention heads (naming what was looked for).
    """

    def __init__(self, model: nn.Module, example_inputs: Any, *, verify: bool = True) -> None:
        self.model, self.example_inputs, self.verify = model, example_inputs, verify
        self._graph: DependencyGraph | None = None
        self._blocks: list[HeadBlock] = []
        self._trace()

    def _trace(self) -> None:
        self._graph = DependencyGraph.build(self.model, self.example_inputs)
        self._blocks = find_attention_heads(self.model, self._graph)

    @property
    def graph(self) -> DependencyGraph:
        """The dependency graph of the model as it is now (re-traced after a removal, when next needed)."""
        if self._graph is None:
            self._trace()
        return self._graph  # type: ignore[return-value]

    @property
    def blocks(self) -> list[HeadBlock]:
        """The attention blocks and their heads now."""
        if self._graph is None:
            self._trace()
        return self._blocks

    @property
    def heads(self) -> dict[str, int]:
        """Heads per attention block now, by the output projection's module name."""
        return {b.name: b.heads for b in self.blocks}

    def score(self, batches: Iterable[Any], loss_fn: Callable[[nn.Module, Any], Tensor], *,
              per_example: bool = True, normalize: str = "l2") -> dict[str, Tensor]:
        """Mean |dL/d gate_h| per head over `batches` (`loss_fn(model, batch)` -> the batch's mean loss)."""
        return normalize_layers(head_importance(self.model, self.blocks, batches, loss_fn, per_example), normalize)

    def remove(self, scores: dict[str, Tensor], count: int, *, uniform: bool = True,
               min_heads: int = 1) -> tuple[dict[str, list[int]], list[str]]:
        """Remove the `count` lowest-scoring heads (per layer when `uniform`, else in total), physically.

        The plan step is recorded on the model and a Hugging Face config is edited when it can express the new
        sizes. Returns the heads removed ({block: head indices, as numbered before the removal}) and notes. Build
        a new optimizer afterwards: the attention projections are new, smaller parameters.
        """
        if isinstance(count, bool) or not isinstance(count, int) or count < 1:
            raise PrunekitError(f"count {count!r} is invalid: give the number of heads to remove (an integer >= 1)")
        scores = {k: v.clone() for k, v in scores.items()}
        graph, blocks = self.graph, self.blocks
        for b in blocks:  # heads the graph froze are never chosen
            if b.name not in scores:
                raise PrunekitError(f"no scores for attention block {b.name!r}; score every block of hp.heads")
            scores[b.name][list(b.frozen)] = math.inf
        remove = heads_to_remove(scores, count, uniform, min_heads)
        step, verified = remove_heads(self.model, graph, blocks, remove, self.verify)
        hf_note = _edit_config(self.model, graph, step) if is_hf_model(self.model) else None
        record_step(self.model, step)
        self._graph = None  # shapes changed: trace again when next needed
        return remove, [n for n in (verified, hf_note) if n]

