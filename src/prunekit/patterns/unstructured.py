"""Unstructured pattern: every weight is its own unit, so any zero pattern is valid."""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import Tensor

from prunekit.errors import PrunekitError
from prunekit.patterns.base import Pattern


@dataclass(frozen=True)
class Unstructured(Pattern):
    """Prune the lowest-scoring weights, each on its own (spec: "unstructured").

    With sparsity s over n weights, exactly floor(s * n + 0.5) weights are pruned; equal scores are pruned lower
    flat index first.
    """

    name: str = field(default="unstructured", init=False)

    def check(self, t: Tensor) -> bool:
        """Always True: any set of zeros is an unstructured pattern."""
        return True

    def unit_scores(self, scores: Tensor) -> Tensor:
        """The scores, flattened (row-major)."""
        return scores.reshape(-1)

    def expand(self, unit_keep: Tensor, shape: torch.Size | tuple[int, ...]) -> Tensor:
        """The per-weight decisions reshaped to `shape`."""
        shape = torch.Size(shape)
        if unit_keep.numel() != shape.numel():
            raise PrunekitError(f"{unit_keep.numel()} unit decisions cannot fill shape {tuple(shape)}")
        return unit_keep.reshape(shape).to(torch.bool)
