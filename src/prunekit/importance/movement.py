"""Movement pruning maths (Sanh, Wolf & Rush 2020, "Movement Pruning"): masks from learned scores, pure tensors.

Each pruned weight W gets a score S; the forward uses W' = W * M(S). The mask function M is a step (top-k or a
threshold), whose true derivative is zero almost everywhere, so the backward uses the straight-through estimator:
dL/dS = dL/dM = dL/dW' * W. Plain gradient descent on S with learning rate eta therefore gives, after T steps,

    S_T - S_0 = -eta * sum_t (dL/dW')_t * W_t

i.e. a weight's score grows while the weight moves away from zero (its gradient has the opposite sign of the weight)
and falls while it moves toward zero: "movement" rather than magnitude decides what survives.

- hard movement: M = top-k of S per layer, k from the scheduled sparsity (`TopKMask`, exact count);
- soft movement: M = 1[S > tau] (`ThresholdMask`) and the loss gets lambda * R(S) with R the sigmoid "L1"
  `sigmoid_l1(S) = sum(sigmoid(S))`, which pushes every score down until the task gradient holds it up.
No model plumbing here (see `prunekit.training.movement`).
"""

from __future__ import annotations

import torch
from torch import Tensor

from prunekit.errors import PrunekitError
from prunekit.patterns.threshold import n_to_prune

__all__ = ["StraightThrough", "ThresholdMask", "TopKMask", "movement", "sigmoid_l1", "threshold_keep", "topk_keep"]


def topk_keep(scores: Tensor, sparsity: float) -> Tensor:
    """Boolean keep mask (same shape as `scores`) of exactly `n - n_to_prune(n, sparsity)` highest scores.

    Ties are broken by `torch.topk` (deterministic for the same input on the same device).
    """
    n = scores.numel()
    k = n - n_to_prune(n, float(sparsity))
    keep = torch.zeros(n, dtype=torch.bool, device=scores.device)
    if k > 0:
        keep[torch.topk(scores.detach().reshape(-1), k, sorted=False).indices] = True
    return keep.view(scores.shape)


def threshold_keep(scores: Tensor, tau: float, min_keep: int = 0) -> Tensor:
    """Boolean keep mask `scores > tau`; when fewer than `min_keep` pass, the `min_keep` highest are kept."""
    keep = scores.detach() > tau
    if min_keep > 0 and int(keep.sum()) < min_keep:
        keep = topk_keep(scores, 1.0 - min(min_keep, scores.numel()) / scores.numel())
    return keep


class StraightThrough(torch.autograd.Function):
    """Forward: a precomputed 0/1 mask (as `scores`' dtype); backward: the gradient reaches `scores` unchanged."""

    @staticmethod
    def forward(ctx, scores: Tensor, keep: Tensor) -> Tensor:  # type: ignore[override]
        if keep.shape != scores.shape:
            raise PrunekitError(f"mask shape {tuple(keep.shape)} does not match scores {tuple(scores.shape)}")
        return keep.to(dtype=scores.dtype, copy=True)

    @staticmethod
    def backward(ctx, grad: Tensor) -> tuple[Tensor, None]:  # type: ignore[override]
        return grad, None


class TopKMask(torch.autograd.Function):
    """Hard movement: mask = top-k of `scores` (k from `sparsity`, exact); backward passes the gradient through."""

    @staticmethod
    def forward(ctx, scores: Tensor, sparsity: float) -> Tensor:  # type: ignore[override]
        return topk_keep(scores, sparsity).to(scores.dtype)

    @staticmethod
    def backward(ctx, grad: Tensor) -> tuple[Tensor, None]:  # type: ignore[override]
        return grad, None


class ThresholdMask(torch.autograd.Function):
    """Soft movement: mask = 1[scores > tau]; backward passes the gradient through unchanged."""

    @staticmethod
    def forward(ctx, scores: Tensor, tau: float) -> Tensor:  # type: ignore[override]
        return (scores > tau).to(scores.dtype)

    @staticmethod
    def backward(ctx, grad: Tensor) -> tuple[Tensor, None]:  # type: ignore[override]
        return grad, None


def sigmoid_l1(scores: list[Tensor] | Tensor) -> Tensor:
    """R(S) = sum of sigmoid(S) over every score (the soft-movement regulariser; differentiable)."""
    if isinstance(scores, Tensor):
        scores = [scores]
    if not scores:
        raise PrunekitError("sigmoid_l1 needs at least one score tensor")
    return torch.stack([torch.sigmoid(s).sum() for s in scores]).sum()


def movement(grad_effective: Tensor, weight: Tensor) -> Tensor:
    """-dL/dW' * W: how much one gradient step moves each weight away from zero (the score's descent direction)."""
    return -grad_effective * weight
