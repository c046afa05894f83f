"""N:M semi-structured pattern: in every group of M consecutive weights along the input dimension, keep N.

Groups are M consecutive columns of the 2-D view (for a conv, of `w.reshape(out, -1)`), so the input dimension must
be a multiple of M. Within a group the N highest scores are kept; among equal scores the HIGHER index is kept (the
lower index is pruned first, the same tie rule as unstructured and global selection). The rank of each weight in its
group is counted by M vectorised comparisons over chunks of groups, so extra memory stays O(chunk).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import Tensor

from prunekit.errors import PrunekitError
from prunekit.patterns.base import Pattern, nonzero_pattern, shape_2d, view_2d
from prunekit.patterns.threshold import check_sparsity, raise_if_nan

_GROUPS_PER_CHUNK = 1 << 20


@dataclass(frozen=True)
class NM(Pattern):
    """Keep N of every M consecutive input weights (spec "N:M", e.g. "2:4"); sparsity is fixed at 1 - N/M.

    Attributes:
        n: weights kept per group, 0 < n < m.
        m: group size.
    """

    n: int
    m: int
    name: str = field(default="", init=False)
    supports_global: bool = field(default=False, init=False)

    def __post_init__(self) -> None:
        for label, v in (("N", self.n), ("M", self.m)):
            if isinstance(v, bool) or not isinstance(v, int):
                raise PrunekitError(f"N:M pattern needs integers, got {label}={v!r}")
        if not 0 < self.n < self.m:
            raise PrunekitError(f"N:M pattern {self.n}:{self.m} is invalid: it needs 0 < N < M (e.g. 2:4, 4:8, 1:4)")
        object.__setattr__(self, "name", f"{self.n}:{self.m}")

    def implied_sparsity(self) -> float:
        """1 - N/M."""
        return 1 - self.n / self.m

    def unsupported_reason(self, shape: torch.Size | tuple[int, ...]) -> str | None:
        """Why the input dimension (last dim of the 2-D view) cannot be split into groups of M, or None."""
        rows, cols = shape_2d(shape)
        if rows * cols == 0:
            return f"shape {tuple(shape)} has no elements"
        if cols % self.m:
            return f"input dimension {cols} (of the 2-D view {rows}x{cols}) is not divisible by M={self.m}"
        return None

    def keep_mask(self, scores: Tensor, sparsity: float | None = None) -> Tensor:
        """Keep the N highest scores of every group of M; `sparsity` must be None or 1 - N/M."""
        if sparsity is not None and abs(check_sparsity(sparsity) - self.implied_sparsity()) > 1e-9:
            raise PrunekitError(
                f"pattern {self.name} fixes sparsity at {self.implied_sparsity():g} (1 - N/M), "
                f"but sparsity {sparsity!r} was requested; pass None or {self.implied_sparsity():g}"
            )
        raise_if_nan(scores)
        self._raise_if_unsupported(scores.shape)
        groups = view_2d(scores.detach()).reshape(-1, self.m)
        keep = torch.empty(groups.shape, dtype=torch.bool, device=scores.device)
        n_prune = self.m - self.n
        rank_dtype = torch.int16 if self.m < (1 << 15) else torch.int32
        for start in range(0, groups.shape[0], _GROUPS_PER_CHUNK):
            g = groups[start : start + _GROUPS_PER_CHUNK].to(torch.float32)
            rank = torch.zeros(g.shape, dtype=rank_dtype, device=g.device)  # place in a stable ascending sort
            for k in range(self.m):
                col = g[:, k : k + 1]
                rank += col < g  # strictly lower scores rank first
                rank[:, k + 1 :] += col == g[:, k + 1 :]  # an equal score at a lower index ranks first
            torch.ge(rank, n_prune, out=keep[start : start + _GROUPS_PER_CHUNK])
        return keep.reshape(scores.shape)

    def check(self, t: Tensor) -> bool:
        """True when every group of M holds at most N nonzeros (fewer is still valid N:M); False on a bad shape."""
        if self.unsupported_reason(t.shape) is not None:
            return False
        kept = view_2d(nonzero_pattern(t)).reshape(-1, self.m)
        return bool((kept.sum(dim=1) <= self.n).all())

    def unit_scores(self, scores: Tensor) -> Tensor:
        """Not available: N:M fixes the count in every group, so it cannot be ranked globally."""
        raise PrunekitError(self._no_global())

    def expand(self, unit_keep: Tensor, shape: torch.Size | tuple[int, ...]) -> Tensor:
        """Not available: see `unit_scores`."""
        raise PrunekitError(self._no_global())

    def _no_global(self) -> str:
        return f"pattern {self.name} has a fixed count per group and no global selection; use scope='layer'"
