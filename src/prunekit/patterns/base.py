"""The `Pattern` interface: how importance scores become a keep_mask (True = keep), as pure tensor functions.

A pattern sees every weight through its 2-D view: a weight with ndim > 2 (a conv kernel) is viewed as
`(out, in * kh * kw ...)` = `w.reshape(w.shape[0], -1)`, a 1-D tensor as `(1, n)` and a scalar as `(1, 1)`. "Input
dimension" below means the last dimension of that view.

Patterns that can take part in global selection (`supports_global`) split a tensor into *units* (single weights, or
blocks) with one score each (`unit_scores`, a 1-D tensor in the units' row-major order) and map a keep decision per
unit back to weights (`expand`). Their `keep_mask` prunes exactly `n_to_prune(n_units, sparsity)` units, the
lowest-scoring first and, among equal scores, the lower flat index first: the same rule as `select_global`.
"""

from __future__ import annotations

from abc import ABC, abstractmethod

import torch
from torch import Tensor

from prunekit.errors import PrunekitError
from prunekit.patterns.threshold import check_sparsity, n_to_prune, raise_if_nan, select_layer


def view_2d(t: Tensor) -> Tensor:
    """The 2-D view every pattern works on: (out, rest) for ndim >= 2, (1, n) for 1-D, (1, 1) for a scalar."""
    if t.ndim == 0:
        return t.reshape(1, 1)
    if t.ndim == 1:
        return t.reshape(1, -1)
    return t.reshape(t.shape[0], -1)


def shape_2d(shape: torch.Size | tuple[int, ...]) -> tuple[int, int]:
    """Rows and columns of the 2-D view of a tensor of shape `shape`."""
    shape = tuple(shape)
    if len(shape) == 0:
        return 1, 1
    if len(shape) == 1:
        return 1, shape[0]
    cols = 1
    for d in shape[1:]:
        cols *= d
    return shape[0], cols


def nonzero_pattern(t: Tensor) -> Tensor:
    """Boolean "is kept" view of `t`: a bool keep_mask as is, any other tensor as `t != 0`."""
    return t if t.dtype == torch.bool else t != 0


class Pattern(ABC):
    """Turns scores into a keep_mask; checks whether a tensor's zeros follow the pattern.

    Attributes:
        name: canonical spelling, accepted back by `parse_pattern` ("unstructured", "2:4", "block:4x1").
        supports_global: whether `unit_scores` / `expand` exist, so layers can be ranked together.
    """

    name: str
    supports_global: bool = True

    def keep_mask(self, scores: Tensor, sparsity: float | None) -> Tensor:
        """Boolean mask, same shape as `scores`, True = keep.

        Args:
            scores: importance per weight (higher = more important), any shape.
            sparsity: fraction of units to prune, in [0, 1).

        Raises:
            PrunekitError: on NaN scores, a missing or out-of-range sparsity, or a shape the pattern cannot tile.
        """
        s = self._require_sparsity(sparsity)
        raise_if_nan(scores)
        self._raise_if_unsupported(scores.shape)
        units = self.unit_scores(scores)
        return self.expand(select_layer(units, n_to_prune(units.numel(), s)), scores.shape)

    @abstractmethod
    def check(self, t: Tensor) -> bool:
        """Whether the zero pattern of `t` (a weight, or a bool keep_mask) satisfies this pattern."""

    def implied_sparsity(self) -> float | None:
        """The sparsity the pattern fixes by itself (N:M: 1 - N/M), or None when the caller chooses it."""
        return None

    def unsupported_reason(self, shape: torch.Size | tuple[int, ...]) -> str | None:
        """Why a tensor of this shape cannot take the pattern, or None when it can."""
        if shape_2d(shape)[0] * shape_2d(shape)[1] == 0:
            return f"shape {tuple(shape)} has no elements"
        return None

    @abstractmethod
    def unit_scores(self, scores: Tensor) -> Tensor:
        """One score per unit, as a 1-D float tensor in the units' row-major order."""

    @abstractmethod
    def expand(self, unit_keep: Tensor, shape: torch.Size | tuple[int, ...]) -> Tensor:
        """Per-unit keep decisions (any shape with the right number of elements) -> element keep_mask of `shape`."""

    def _require_sparsity(self, sparsity: float | None) -> float:
        if sparsity is None:
            raise PrunekitError(f"pattern {self.name} needs a sparsity in [0, 1), got None")
        return check_sparsity(sparsity)

    def _raise_if_unsupported(self, shape: torch.Size | tuple[int, ...]) -> None:
        reason = self.unsupported_reason(shape)
        if reason is not None:
            raise PrunekitError(f"pattern {self.name} cannot apply to shape {tuple(shape)}: {reason}")

    def __str__(self) -> str:
        return self.name
