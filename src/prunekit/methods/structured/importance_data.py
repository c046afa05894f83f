"""Data-driven and redundancy channel importance: pure maths over a group's tensors and collected evidence.

Every kind computes one value per unit for each member that has evidence, then reduces like the norm kinds
(importance.py): each member's values are divided by their mean over the group's units and a unit's score is the
mean of its normalized member values. A unit owning several indices of a member (a flatten, a head) sums them.

- taylor (first-order Taylor, Molchanov et al. 2019): |sum over the unit's slice of w * g|, g = the loss gradient
  summed over the calibration batches; every parameter member (conv / linear weights in and out, norm gamma/beta).
- hessian (diagonal OBD, LeCun et al. 1990): sum over the unit's slice of 0.5 * w**2 * F, F = sum over batches of
  g_batch**2 (the empirical Fisher standing in for the Hessian diagonal); every parameter member.
- fpgm (Filter Pruning via Geometric Median, He et al. 2019): on each output-producing weight member (the slices
  a unit writes: conv filters, linear rows), a unit's value is sum over other units v of ||f_u - f_v||_2; a unit
  close to all others is replaceable (low score). Needs no data.
- activation (Wanda-sp / FLAP input norm): on each consuming weight member (the input columns a unit feeds), the
  sum over the unit's indices of ||X_i||_2 * ||W_:,i||_2, X_i = the calibration inputs of channel i.
- activation_fluct (FLAP fluctuation): as activation with var(X_i) * ||W_:,i||_2**2 (variance over the rows).
- lamp (Lee et al. 2021) is applied to a group's l2 scores s (see `lamp`): s_u**2 / sum of s_v**2 over the units
  with s_v >= s_u; the best unit scores 1, and scores compare across groups as they are.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

import torch
from torch import Tensor

from prunekit.graph import Group, GroupMember

DATA_KINDS = ("taylor", "hessian", "activation", "activation_fluct")
GRAD_KINDS = ("taylor", "hessian")
ACT_KINDS = ("activation", "activation_fluct")
WEIGHT_KINDS = ("fpgm", "lamp")


@dataclass(frozen=True)
class Evidence:
    """What the data-driven kinds read, keyed by tensor name (or (tensor, dim) for activations).

    Attributes:
        grad: summed gradient over the calibration batches.
        grad_sq: sum over batches of the squared batch gradient.
        act_sq: (weight, input dim) -> per-index sum of x**2 of the input channel feeding that index.
        act_var: (weight, input dim) -> per-index variance of that input channel.
        producers: (weight, output dim) pairs: the slices a unit writes (for fpgm).
    """

    grad: Mapping[str, Tensor] = field(default_factory=dict)
    grad_sq: Mapping[str, Tensor] = field(default_factory=dict)
    act_sq: Mapping[tuple[str, int], Tensor] = field(default_factory=dict)
    act_var: Mapping[tuple[str, int], Tensor] = field(default_factory=dict)
    producers: frozenset[tuple[str, int]] = frozenset()


def rows(t: Tensor, dim: int, indices: tuple[int, ...]) -> Tensor:
    """The slices of `t` at `indices` along `dim`, flattened to (len(indices), rest), float64 on CPU."""
    t = t.detach().to(device="cpu", dtype=torch.float64)
    flat = t.movedim(dim, 0).reshape(t.shape[dim], -1)
    return flat[torch.as_tensor(indices, dtype=torch.long)]


def per_unit(group: Group, member: GroupMember, values: Tensor) -> Tensor:
    """Sum per-index `values` of a member into the group's units (float64)."""
    units = torch.as_tensor(member.units, dtype=torch.long)
    return torch.zeros(group.size, dtype=torch.float64).index_add_(0, units, values.to(torch.float64))


def present(group: Group, member: GroupMember) -> Tensor:
    """Units owning at least one index of `member`."""
    return per_unit(group, member, torch.ones(len(member.units), dtype=torch.float64)) > 0


def reduce_members(group: Group, values: list[tuple[GroupMember, Tensor]]) -> Tensor | None:
    """Mean over members of the per-unit values normalized by their mean (None when no member has values)."""
    if not values:
        return None
    total = torch.zeros(group.size, dtype=torch.float64)
    counted = torch.zeros(group.size, dtype=torch.float64)
    for m, v in values:
        here = present(group, m)
        mean = v[here].mean()
        total[here] += v[here] / mean if float(mean) > 0 else 0.0
        counted += here.to(torch.float64)
    return total / counted.clamp_min(1)


def _member_values(group: Group, m: GroupMember, w: Tensor, kind: str, ev: Evidence) -> Tensor | None:
    if kind == "taylor":
        g = ev.grad.get(m.param)
        return None if g is None else per_unit(group, m, (rows(w, m.dim, m.indices) * rows(g, m.dim, m.indices))
                                               .sum(1)).abs()
    if kind == "hessian":
        f = ev.grad_sq.get(m.param)
        return None if f is None else per_unit(
            group, m, (0.5 * rows(w, m.dim, m.indices).square() * rows(f, m.dim, m.indices)).sum(1))
    if kind in ACT_KINDS:
        act = (ev.act_sq if kind == "activation" else ev.act_var).get((m.param, m.dim))
        if act is None:
            return None
        col = rows(w, m.dim, m.indices).square().sum(1)
        idx = torch.as_tensor(m.indices, dtype=torch.long)
        a = act.to(torch.float64)[idx]
        return per_unit(group, m, a.sqrt() * col.sqrt() if kind == "activation" else a * col)
    if kind == "fpgm":
        return fpgm_values(group, m, w) if (m.param, m.dim) in ev.producers else None
    raise ValueError(kind)


def fpgm_values(group: Group, m: GroupMember, w: Tensor) -> Tensor:
    """Per unit: sum of Euclidean distances from its slice vector to every other unit's (units absent: 0)."""
    r = rows(w, m.dim, m.indices)
    units = torch.as_tensor(m.units, dtype=torch.long)
    width = int(torch.bincount(units, minlength=group.size).max())
    vec = torch.zeros(group.size, width * r.shape[1], dtype=torch.float64)
    slot = [0] * group.size
    for row, u in zip(r, m.units):
        vec[u, slot[u] * r.shape[1]:(slot[u] + 1) * r.shape[1]] = row
        slot[u] += 1
    here = present(group, m)
    out = torch.zeros(group.size, dtype=torch.float64)
    sub = vec[here]
    out[here] = torch.cdist(sub, sub).sum(1)
    return out


def evidence_scores(group: Group, tensor_of: Callable[[str], Tensor], kind: str, ev: Evidence) -> Tensor | None:
    """Scores of `kind` (taylor, hessian, activation, activation_fluct, fpgm) for one group, reduced over its
    parameter members; None when no member has evidence (the caller falls back to l2)."""
    values = []
    for m in group.members:
        if m.is_buffer:
            continue
        w = tensor_of(m.param)
        if kind in ("fpgm", *ACT_KINDS) and w.ndim < 2:
            continue
        v = _member_values(group, m, w, kind, ev)
        if v is not None:
            values.append((m, v))
    return reduce_members(group, values)


def lamp(scores: Tensor) -> Tensor:
    """LAMP of unit scores s: s_u**2 / sum of s_v**2 over v with s_v >= s_u (ties count; float64)."""
    sq = scores.to(torch.float64).square()
    order = torch.argsort(sq, stable=True)
    sorted_sq = sq[order]
    tail = sorted_sq.flip(0).cumsum(0).flip(0)  # sum over the units at or after each sorted position
    # equal scores share the denominator of the first of them (every unit with s_v >= s_u counts)
    first = torch.searchsorted(sorted_sq, sorted_sq, side="left")
    out = torch.zeros_like(sq)
    denom = tail[first]
    out[order] = torch.where(denom > 0, sorted_sq / denom, torch.zeros_like(denom))
    return out
