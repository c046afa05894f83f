"""Wanda maths as pure tensor functions: input-norm statistics, scores |W| * ||x_j||, and per-row selection.

Wanda (Sun et al., 2023, "A Simple and Effective Pruning Approach for LLMs") scores weight W[i, j] by
|W[i, j]| * ||X_j||_2, the L2 norm of input feature j over every calibration token, and compares scores within each
output row (each row loses the same number of weights), or within each group of M for N:M.
"""

from __future__ import annotations

import torch
from torch import Tensor

from prunekit.errors import PrunekitError
from prunekit.patterns import NM, n_to_prune, raise_if_nan


class InputNormAccumulator:
    """Running sum of squares of each input feature over every token seen: sqrt of it is ||X_j||_2."""

    def __init__(self, in_features: int) -> None:
        self.sum_sq = torch.zeros(in_features, dtype=torch.float64)
        self.tokens = 0

    def add(self, x: Tensor) -> None:
        """Add activations of shape (..., in_features)."""
        flat = x.detach().reshape(-1, x.shape[-1]).to(torch.float64)
        self.sum_sq += flat.pow(2).sum(dim=0).cpu()
        self.tokens += flat.shape[0]

    def norms(self) -> Tensor:
        """||X_j||_2 per input feature, float32."""
        return self.sum_sq.sqrt().to(torch.float32)


def wanda_scores(weight: Tensor, x_norm: Tensor) -> Tensor:
    """|W| * ||x_j||_2 broadcast over rows; `weight` is (out, in), `x_norm` is (in,)."""
    return weight.detach().abs().to(torch.float32) * x_norm.to(weight.device, torch.float32).reshape(1, -1)


def per_row_keep_mask(scores: Tensor, sparsity: float) -> Tensor:
    """Prune the `n_to_prune(in, sparsity)` lowest scores of every row (ties: lower index pruned first)."""
    raise_if_nan(scores)
    rows, cols = scores.shape
    k = n_to_prune(cols, sparsity)
    keep = torch.ones(rows, cols, dtype=torch.bool, device=scores.device)
    if k:
        order = torch.sort(scores, dim=1, stable=True).indices[:, :k]
        keep.scatter_(1, order, False)
    return keep


def wanda_keep_mask(weight: Tensor, x_norm: Tensor, sparsity: float | None = None, nm: NM | None = None) -> Tensor:
    """Wanda's keep_mask of an (out, in) weight: per-row unstructured at `sparsity`, or N:M when `nm` is given."""
    scores = wanda_scores(weight, x_norm)
    if nm is not None:
        return nm.keep_mask(scores)
    if sparsity is None:
        raise PrunekitError("wanda_keep_mask needs a sparsity in [0, 1) or an N:M pattern, got neither")
    return per_row_keep_mask(scores, sparsity)
