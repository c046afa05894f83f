"""OWL maths as pure functions: block outlier ratios and the outlier-weighted layerwise sparsity allocation.

OWL (Yin et al., 2024, "Outlier Weighed Layerwise Sparsity") scores every weight of a block with the Wanda metric
A_ij = |W_ij| * ||X_j||_2 and measures the block's layerwise outlier distribution D_l: the fraction of the block's
scores (all its pruned layers together) above M times their mean. Blocks with more outliers are pruned less:

    norm_l     = (D_l - min D) / (max D - min D)                  (0 when every D_l is equal)
    sparsity_l = c + 2 * lambda * (1 - norm_l)                    (a range of width 2 * lambda)

and the offset c makes the parameter-weighted mean of sparsity_l equal the target exactly, so the global sparsity of
the pruned layers is the target (with equal-sized blocks this is the paper's plain mean). Sparsities are clamped to
[lo, hi] (default [0, 0.99]); c is then solved again over the unclamped blocks, so the mean stays exact.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from prunekit.errors import PrunekitError


def outlier_ratio(scores: Sequence[Tensor], m: float) -> float:
    """Fraction of all entries of `scores` (one tensor per layer of a block) above `m` times their joint mean."""
    if not scores:
        raise PrunekitError("outlier_ratio needs the scores of at least one layer")
    total = sum(s.numel() for s in scores)
    mean = sum(float(s.double().sum()) for s in scores) / total
    above = sum(int((s.double() > m * mean).sum()) for s in scores)
    return above / total


def _clamped_mean(a: Tensor, p: Tensor, c: float, lo: float, hi: float) -> float:
    return float((p * (a + c).clamp(lo, hi)).sum() / p.sum())


def owl_sparsities(
    ratios: Sequence[float],
    params: Sequence[float],
    target: float,
    lam: float,
    *,
    lo: float = 0.0,
    hi: float = 0.99,
) -> list[float]:
    """Per-block sparsities from outlier ratios `ratios`, weighted by `params`, with mean exactly `target`.

    Raises:
        PrunekitError: inputs of different lengths, a non-positive parameter count, or a target outside [lo, hi].
    """
    if len(ratios) != len(params) or not ratios:
        raise PrunekitError(f"owl: {len(ratios)} outlier ratios for {len(params)} blocks; need one per block")
    if not lo <= target <= hi:
        raise PrunekitError(f"owl: target sparsity {target} is outside [{lo}, {hi}]")
    d = torch.tensor([float(r) for r in ratios], dtype=torch.float64)
    p = torch.tensor([float(n) for n in params], dtype=torch.float64)
    if (p <= 0).any():
        raise PrunekitError(f"owl: every block needs a positive parameter count, got {p.tolist()}")
    span = float(d.max() - d.min())
    norm = (d - d.min()) / span if span > 0 else torch.zeros_like(d)
    a = 2.0 * lam * (1.0 - norm)
    # f(c) = weighted mean of clamp(a + c) is non-decreasing in c: bisect to find which blocks clamp, then solve
    # c exactly over the free ones.
    left, right = lo - float(a.max()), hi - float(a.min())
    for _ in range(200):
        mid = 0.5 * (left + right)
        if _clamped_mean(a, p, mid, lo, hi) < target:
            left = mid
        else:
            right = mid
    c = 0.5 * (left + right)
    s = a + c
    at_lo, at_hi = s <= lo, s >= hi
    free = ~(at_lo | at_hi)
    if free.any():
        fixed = float((p[at_lo] * lo).sum() + (p[at_hi] * hi).sum())
        c = (target * float(p.sum()) - fixed - float((p[free] * a[free]).sum())) / float(p[free].sum())
    return [float(v) for v in torch.where(free, a + c, s.clamp(lo, hi))]
