"""`MovementScores`: the parametrization movement pruning trains, `w -> w * mask(scores)`.

The scores are a learnable tensor beside the weight; the mask is the top-k (hard) or the scores above a threshold
(soft) and passes its gradient straight through to the scores (`importance.movement.StraightThrough`), so the scores
learn -sum(dL/dW' * W). `MovementPruner` (training/movement.py) attaches one per targeted layer and turns them into
ordinary KeepMasks at `finalize`.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn

from prunekit.importance.movement import StraightThrough, threshold_keep, topk_keep


class MovementScores(nn.Module):
    """Parametrization `w -> w * mask(scores)` with a learnable `scores` tensor (straight-through gradient).

    `base` (optional) is a keep_mask an earlier stage attached: those weights stay pruned whatever their score.
    The boolean mask is cached per (scores version, sparsity / threshold), so evaluation does not re-rank.
    """

    def __init__(self, scores: Tensor, mode: str, base: Tensor | None, min_keep: int, tau: float) -> None:
        super().__init__()
        self.scores = nn.Parameter(scores.detach().clone().float())
        self.register_buffer("base", base.clone() if base is not None else None)
        self.mode, self.min_keep, self.tau = mode, min_keep, tau
        self.sparsity = 0.0
        self._cache: tuple[Any, Tensor] | None = None

    @torch.no_grad()
    def keep(self) -> Tensor:
        """The current boolean keep_mask (True = kept)."""
        key = (self.scores._version, self.scores.data_ptr(), self.sparsity, self.tau)
        if self._cache is not None and self._cache[0] == key:
            return self._cache[1]
        s = self.scores if self.base is None else self.scores.masked_fill(~self.base, float("-inf"))
        if self.mode == "hard":
            keep = topk_keep(s, self.sparsity)
        else:
            keep = threshold_keep(s, self.tau, self.min_keep)
        if self.base is not None:
            keep &= self.base
        self._cache = (key, keep)
        return keep

    def forward(self, weight: Tensor) -> Tensor:
        return weight * StraightThrough.apply(self.scores, self.keep()).to(weight.dtype)

    def extra_repr(self) -> str:
        return f"mode={self.mode}, shape={tuple(self.scores.shape)}, sparsity={self.sparsity:.4f}"
