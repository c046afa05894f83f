"""Per-layer sparsity allocation as pure maths: ERK, LAMP and the sensitivity solver.

Every function returns per-layer sparsities whose parameter-weighted mean equals the global `target` exactly
(up to float rounding, 1e-9), each in [0, 1):

- ERK (Evci et al. 2020, "Rigging the Lottery", RigL): the density of a layer is proportional to
  (sum of its weight's dims) / (product of its weight's dims), kernel dims of convolutions included (Erdős–Rényi
  for a Linear: (n_in + n_out) / (n_in * n_out)), optionally raised to a power (RigL's erk_power_scale). The
  factor eps is solved so the mean density is 1 - target; a layer whose density would exceed 1 is kept dense and
  eps is solved again over the others (RigL's dense-layer loop).
- LAMP (Lee et al. 2021, "Layer-adaptive sparsity for the magnitude-based pruning"): each weight u of a layer, with
  the layer's weights sorted by ascending |w|, scores w_u^2 / sum_{v >= u} w_v^2; one global threshold on these
  scores prunes the lowest ones and implies per-layer sparsities. Each layer's largest weight scores 1 and is never
  pruned (sparsity < 1). The fractional remainder of target * N (N = total weights) goes to the layer holding the
  next weight in the global order, so the mean is exact rather than off by up to 1/N.
- Sensitivity: each layer has a measured curve metric(sparsity) (pruned alone). The drop d_l(s) = dense - metric
  (or metric - dense when lower is better, e.g. perplexity), linearly interpolated between grid points with
  d_l(0) = 0 and made non-decreasing (running maximum), is the predicted cost of sparsity s in layer l. The solver
  equalises the drop: for an allowed drop delta every layer takes the largest sparsity whose predicted drop is
  <= delta (at most the largest analysed sparsity); delta is bisected until the parameter-weighted mean reaches the
  target, and the final sparsities interpolate linearly between the two bracketing deltas so the mean is exact.
  Robust layers (flat curves) thus get high sparsity and fragile ones low sparsity.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import Tensor

from prunekit.errors import PrunekitError

__all__ = ["erk_sparsities", "lamp_scores", "lamp_sparsities", "sensitivity_sparsities", "weighted_mean"]


def _check(target: float, params: Sequence[float]) -> None:
    if not params:
        raise PrunekitError("allocation needs at least one layer")
    if not 0.0 <= target < 1.0:
        raise PrunekitError(f"allocation target sparsity {target!r} must be in [0, 1)")
    if any(p <= 0 for p in params):
        raise PrunekitError(f"allocation: every layer needs a positive parameter count, got {list(params)}")


def weighted_mean(sparsities: Sequence[float], params: Sequence[float]) -> float:
    """The parameter-weighted mean sparsity: sum(p * s) / sum(p)."""
    return math.fsum(p * s for p, s in zip(params, sparsities, strict=True)) / math.fsum(params)


def erk_sparsities(shapes: Sequence[Sequence[int]], target: float, power: float = 1.0) -> list[float]:
    """ERK sparsities for weights of the given shapes (see the module docstring); dense layers get 0.

    Raises:
        PrunekitError: no layers, a target outside [0, 1), or an empty shape.
    """
    params = [float(math.prod(s)) for s in shapes]
    _check(target, params)
    raw = [(sum(s) / math.prod(s)) ** power for s in shapes]
    total_dense = (1.0 - target) * math.fsum(params)
    dense: set[int] = set()
    while True:
        free = [i for i in range(len(shapes)) if i not in dense]
        budget = total_dense - math.fsum(params[i] for i in dense)
        eps = budget / math.fsum(params[i] * raw[i] for i in free)
        over = {i for i in free if eps * raw[i] > 1.0}
        if not over:
            break
        dense |= over  # RigL: layers that would exceed density 1 stay dense; solve eps again over the rest
    return [0.0 if i in dense else 1.0 - eps * raw[i] for i in range(len(shapes))]


def lamp_scores(weight: Tensor) -> Tensor:
    """LAMP score of every entry of `weight` (same shape): w_u^2 / sum of w_v^2 over v at least as large as u."""
    sq = weight.detach().double().flatten() ** 2
    order = torch.argsort(sq, stable=True)
    sorted_sq = sq[order]
    suffix = torch.flip(torch.cumsum(torch.flip(sorted_sq, [0]), 0), [0])
    scores_sorted = torch.where(suffix > 0, sorted_sq / suffix.clamp_min(1e-300), torch.zeros_like(sorted_sq))
    out = torch.empty_like(sq)
    out[order] = scores_sorted
    return out.view(weight.shape)


def lamp_sparsities(weights: Sequence[Tensor], target: float) -> list[float]:
    """Per-layer sparsities implied by one global threshold on the LAMP scores (module docstring).

    Raises:
        PrunekitError: no layers, a target outside [0, 1), or a target that would prune a layer completely.
    """
    sizes = [w.numel() for w in weights]
    _check(target, [float(n) for n in sizes])
    total = sum(sizes)
    want = target * total
    n_prune = int(math.floor(want + 1e-9))
    prunable = total - len(weights)  # each layer's largest weight (score 1) stays
    if want > prunable + 1e-9:
        raise PrunekitError(f"lamp: target {target:g} would prune every weight of some layer; lower the target")
    scores, owner = [], []
    for i, w in enumerate(weights):
        s = lamp_scores(w).flatten()
        keep_top = torch.argsort(s, stable=True)[:-1]  # drop the largest (never pruned)
        scores.append(s[keep_top])
        owner.append(torch.full((keep_top.numel(),), i, dtype=torch.long))
    all_scores, all_owner = torch.cat(scores), torch.cat(owner)
    order = torch.argsort(all_scores, stable=True)
    counts = torch.bincount(all_owner[order[:n_prune]], minlength=len(weights)).double()
    frac = want - n_prune
    if frac > 1e-12 and n_prune < order.numel():
        counts[int(all_owner[order[n_prune]])] += frac  # the remainder: the next weight's layer, fractionally
    return [float(counts[i]) / sizes[i] for i in range(len(weights))]


def _drop_curve(grid: Sequence[float], metric: Sequence[float], dense: float, higher_is_better: bool
                ) -> tuple[list[float], list[float]]:
    xs = [0.0] + [float(s) for s in grid]
    drops = [0.0] + [(dense - m) if higher_is_better else (m - dense) for m in metric]
    out, running = [], 0.0
    for d in drops:
        running = max(running, d)
        out.append(running)
    return xs, out


def _sparsity_at(xs: list[float], ds: list[float], delta: float) -> float:
    """The largest s with interpolated drop <= delta (drops non-decreasing)."""
    if delta >= ds[-1]:
        return xs[-1]
    for j in range(len(xs) - 1):
        if ds[j + 1] > delta:  # delta in [ds[j], ds[j+1]): interpolate inside this segment
            if ds[j] > delta:
                return xs[j]
            t = (delta - ds[j]) / (ds[j + 1] - ds[j])
            return xs[j] + t * (xs[j + 1] - xs[j])
    return xs[-1]


def sensitivity_sparsities(grid: Sequence[float], curves: Sequence[Sequence[float]], dense: float,
                           params: Sequence[float], target: float, *, higher_is_better: bool = True) -> list[float]:
    """Per-layer sparsities that meet `target` while equalising the predicted metric drop (module docstring).

    Args:
        grid: the analysed sparsities, ascending in (0, 1).
        curves: per layer, the metric measured with only that layer pruned at each grid sparsity.
        dense: the dense model's metric.
        params: per layer, its weight count (the weights of the mean).
        target: the global sparsity of these layers.
        higher_is_better: True for accuracy, False for perplexity / loss.

    Raises:
        PrunekitError: malformed curves, or a target above the largest analysed sparsity.
    """
    _check(target, params)
    if not grid or any(not 0.0 < s < 1.0 for s in grid) or list(grid) != sorted(set(grid)):
        raise PrunekitError(f"sensitivity grid must be distinct ascending sparsities in (0, 1), got {list(grid)}")
    if len(curves) != len(params) or any(len(c) != len(grid) for c in curves):
        raise PrunekitError("sensitivity: every layer needs one metric per grid sparsity")
    if target > grid[-1] + 1e-12:
        raise PrunekitError(f"sensitivity: target {target:g} is above the largest analysed sparsity {grid[-1]:g}; "
                            "run `prunekit analyze` with higher --sparsities")
    lines = [_drop_curve(grid, c, dense, higher_is_better) for c in curves]

    def alloc(delta: float) -> list[float]:
        return [_sparsity_at(xs, ds, delta) for xs, ds in lines]

    lo = min(0.0, *(min(ds) for _, ds in lines)) - 1.0
    hi = max(ds[-1] for _, ds in lines) + 1.0
    for _ in range(200):
        mid = 0.5 * (lo + hi)
        if weighted_mean(alloc(mid), params) < target:
            lo = mid
        else:
            hi = mid
    s_lo, s_hi = alloc(lo), alloc(hi)
    m_lo, m_hi = weighted_mean(s_lo, params), weighted_mean(s_hi, params)
    t = 0.0 if m_hi - m_lo <= 0 else (target - m_lo) / (m_hi - m_lo)
    t = min(1.0, max(0.0, t))
    return [a + t * (b - a) for a, b in zip(s_lo, s_hi, strict=True)]
