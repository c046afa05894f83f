"""Atoms: one integer per channel index, merged by a union-find when two channels must be removed together.

Every channel the dependency graph knows about (a conv's output channel, a linear's output feature, an index of a
bare parameter) is an atom. Rules of the graph walk union atoms that are the same channel seen from two places
(conv out-channel 5 == BN channel 5 == next conv's in-channel 5). A class of atoms (a root) is one prunable unit.

A class can be frozen, with a reason: it must stay (a model output, an op the graph cannot map). Freezing is a flag
on the root, so frozen classes stay distinct and every frozen channel keeps its own explanation.
"""

from __future__ import annotations

import torch
from torch import Tensor

from prunekit.errors import PrunekitError


class AtomTable:
    """Union-find over atom ids with a frozen reason per class.

    Args:
        limit: the most atoms one analysis may create; past it a `PrunekitError` stops the analysis (bounded work).
    """

    def __init__(self, limit: int = 50_000_000) -> None:
        self._parent: list[int] = []
        self._size: list[int] = []
        self._frozen: dict[int, str] = {}
        self.limit = limit

    def __len__(self) -> int:
        return len(self._parent)

    def new(self, n: int) -> Tensor:
        """Create `n` fresh atoms and return their ids (int64, 1-D)."""
        start = len(self._parent)
        if start + n > self.limit:
            raise PrunekitError(
                f"dependency graph: more than {self.limit} channel atoms; the model is too large for one analysis "
                "(raise the limit with max_atoms=...)"
            )
        self._parent.extend(range(start, start + n))
        self._size.extend([1] * n)
        return torch.arange(start, start + n, dtype=torch.int64)

    def find(self, a: int) -> int:
        """The root of atom `a` (path halving)."""
        parent = self._parent
        while parent[a] != a:
            parent[a] = parent[parent[a]]
            a = parent[a]
        return a

    def union(self, a: int, b: int) -> int:
        """Merge the classes of `a` and `b`; a frozen reason survives the merge. Returns the new root."""
        ra, rb = self.find(a), self.find(b)
        if ra == rb:
            return ra
        if self._size[ra] < self._size[rb]:
            ra, rb = rb, ra
        self._parent[rb] = ra
        self._size[ra] += self._size[rb]
        reason = self._frozen.pop(rb, None)
        if reason is not None and ra not in self._frozen:
            self._frozen[ra] = reason
        return ra

    def union_pairs(self, a: Tensor, b: Tensor) -> None:
        """Union `a[i]` with `b[i]` for every position (tensors of the same shape)."""
        if a.shape != b.shape:
            raise RuntimeError(f"union of atom tensors with shapes {tuple(a.shape)} and {tuple(b.shape)}")
        pairs = torch.stack([a.reshape(-1), b.reshape(-1)], dim=1)
        pairs = pairs[pairs[:, 0] != pairs[:, 1]]
        if pairs.numel() == 0:
            return
        for x, y in torch.unique(pairs, dim=0).tolist():
            self.union(x, y)

    def union_all(self, ids: Tensor) -> None:
        """Put every atom of `ids` in one class."""
        uniq = torch.unique(ids).tolist()
        for other in uniq[1:]:
            self.union(uniq[0], other)

    def freeze(self, ids: Tensor, reason: str) -> None:
        """Mark the classes of `ids` as frozen (kept); the first reason given to a class is the one it keeps."""
        for a in torch.unique(ids).tolist():
            root = self.find(a)
            self._frozen.setdefault(root, reason)

    def frozen_reason(self, root: int) -> str | None:
        """Why the class rooted at `root` is frozen, or None when it may be pruned."""
        return self._frozen.get(root)

    def roots_of(self, ids: Tensor) -> Tensor:
        """The root of every atom in `ids` (same shape)."""
        if ids.numel() == 0:
            return ids.clone()
        uniq, inverse = torch.unique(ids, return_inverse=True)
        roots = torch.tensor([self.find(a) for a in uniq.tolist()], dtype=torch.int64)
        return roots[inverse]

    def all_roots(self) -> Tensor:
        """The root of every atom, indexed by atom id."""
        return torch.tensor([self.find(a) for a in range(len(self._parent))], dtype=torch.int64)
