"""Channel importance per group: pure tensor maths over a group's members (higher = more important).

Reduction (documented in docs, tested against a naive loop):
- For each parameter member (buffers such as running statistics never count), each unit's slice norm: L1 = sum of
  |w| over the unit's indices, L2 = sqrt of the sum of w**2.
- Each member's unit norms are divided by their mean over the group's units, so a conv weight with large values
  and a BatchNorm bias with small ones weigh the same.
- A unit's score is the mean of its normalized member norms. Scores of every group average 1, which is what makes
  a global threshold across groups meaningful.
`bn_scale` uses only the norm layers' weights (|gamma|, network slimming), and falls back to L2 in a group
without one. `random` draws uniform scores from a generator seeded per group.
The data-driven kinds (taylor, hessian, activation, activation_fluct) and fpgm / lamp are in importance_data.py;
a group without evidence for them (no gradient, no captured input) falls back to l2.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

import torch
from torch import Tensor

from prunekit.errors import PrunekitError, choices_text
from prunekit.graph import Group
from prunekit.methods.structured.importance_data import DATA_KINDS, WEIGHT_KINDS, Evidence, evidence_scores, lamp

NORM_KINDS = ("l1", "l2", "bn_scale", "random")
KINDS = (*NORM_KINDS, *WEIGHT_KINDS, *DATA_KINDS)


def slice_norms(tensor: Tensor, dim: int, indices: list[int], norm: str) -> Tensor:
    """Per-index |.|-sum ("l1") or sum of squares ("l2") of `tensor`'s slices along `dim` (float64)."""
    t = tensor.detach()
    others = [d for d in range(t.ndim) if d != dim]
    per_index = t.abs().sum(others) if norm == "l1" else t.square().sum(others)
    if not others:
        per_index = t.abs() if norm == "l1" else t.square()
    return per_index.to(device="cpu", dtype=torch.float64)[torch.as_tensor(indices, dtype=torch.long)]


def _per_unit(group: Group, member_index: int, values: Tensor) -> Tensor:
    units = torch.as_tensor(group.members[member_index].units, dtype=torch.long)
    return torch.zeros(group.size, dtype=torch.float64).index_add_(0, units, values)


def _normalized(v: Tensor) -> Tensor:
    mean = v.mean()
    return v / mean if float(mean) > 0 else torch.zeros_like(v)


def group_scores(
    group: Group,
    tensor_of: Callable[[str], Tensor],
    kind: str,
    *,
    norm_weights: frozenset[str] = frozenset(),
    generator: torch.Generator | None = None,
) -> Tensor:
    """Scores (float64, one per unit) of a group's channels, for the weight-norm kinds (NORM_KINDS).

    Args:
        group: the group.
        tensor_of: name -> the current tensor (parameter or buffer).
        kind: "l1", "l2", "bn_scale" or "random".
        norm_weights: names of norm-layer weights (BatchNorm / GroupNorm / LayerNorm / RMSNorm gamma), for bn_scale.
        generator: seeded generator, for random.

    Raises:
        PrunekitError: unknown kind, or random without a generator.
    """
    if kind not in NORM_KINDS:
        raise PrunekitError(f"unknown importance {kind!r}; valid: {choices_text(NORM_KINDS)}")
    if kind == "random":
        if generator is None:
            raise PrunekitError("random importance needs a seeded torch.Generator")
        return torch.rand(group.size, generator=generator, dtype=torch.float64)
    members = [(i, m) for i, m in enumerate(group.members) if not m.is_buffer]
    norm = "l1" if kind == "l1" else "l2"
    if kind == "bn_scale":
        gammas = [(i, m) for i, m in members if m.param in norm_weights]
        if gammas:
            members, norm = gammas, "l1"
        else:
            norm = "l2"
    total = torch.zeros(group.size, dtype=torch.float64)
    counted = torch.zeros(group.size, dtype=torch.float64)
    for i, m in members:
        values = _per_unit(group, i, slice_norms(tensor_of(m.param), m.dim, list(m.indices), norm))
        if norm == "l2":
            values = values.sqrt()
        present = _per_unit(group, i, torch.ones(len(m.indices), dtype=torch.float64)) > 0
        if kind == "bn_scale":  # mean |gamma| over the unit's entries
            values = values / _per_unit(group, i, torch.ones(len(m.indices), dtype=torch.float64)).clamp_min(1)
        total[present] += _normalized(values[present])
        counted += present.to(torch.float64)
    return total / counted.clamp_min(1)


def unit_scores(
    group: Group,
    tensor_of: Callable[[str], Tensor],
    kind: str,
    *,
    norm_weights: frozenset[str] = frozenset(),
    generator: torch.Generator | None = None,
    evidence: Evidence | None = None,
) -> Tensor:
    """Scores of any kind in KINDS: the norm kinds via `group_scores`, lamp on the l2 scores, the others from
    `evidence` (gradients, input statistics, producing members; see importance_data.py), l2 where it has none."""
    if kind not in KINDS:
        raise PrunekitError(f"unknown importance {kind!r}; valid: {choices_text(KINDS)}")
    if kind in NORM_KINDS:
        return group_scores(group, tensor_of, kind, norm_weights=norm_weights, generator=generator)
    if kind == "lamp":
        return lamp(group_scores(group, tensor_of, "l2"))
    scores = evidence_scores(group, tensor_of, kind, evidence or Evidence())
    return scores if scores is not None else group_scores(group, tensor_of, "l2")


def all_scores(
    groups: list[Group], tensor_of: Callable[[str], Tensor], kind: str, *, norm_weights: frozenset[str] = frozenset(),
    seed: int = 0, evidence: Evidence | None = None,
) -> Mapping[int, Tensor]:
    """Scores of every group with at least one prunable unit; random draws from `seed` + group id."""
    out = {}
    for g in groups:
        if not g.prunable:
            continue
        gen = torch.Generator().manual_seed(seed * 1_000_003 + g.id) if kind == "random" else None
        out[g.id] = unit_scores(g, tensor_of, kind, norm_weights=norm_weights, generator=gen, evidence=evidence)
    return out
