"""Analytic cost model: parameters and MACs of the pruned model as a function of which units are kept.

Every term is `base * prod(kept fraction of each factor)`, where a factor is the vector of units along one sliced
dim. A parameter's factors are its sliced dims (a conv weight: out and in channels; a depthwise weight: out only,
its input being the same unit), so the term is exactly the parameter's kept numel. A matmul / conv's MAC term uses
the same factors (MACs = kept weight numel x output positions), an activation matmul the factors of M, N, K and
batch dims. Counting matches `prunekit.eval.count_model`: matrix products and convolutions only.

Evaluation is vectorized (one gather, one index_add, one scatter product), so selection can bisect on it.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor


class CostModel:
    """Params and MACs as functions of a keep vector over units (True = kept).

    Args:
        n_units: number of units (the keep vector's length).
        param_terms: (numel, factors) per parameter; a factor is a LongTensor of unit indices, where `n_units`
            stands for "always kept" (an index no group owns).
        mac_terms: (MACs, factors) per matmul-like op, same convention.
    """

    def __init__(
        self, n_units: int, param_terms: Sequence[tuple[int, list[Tensor]]], mac_terms: Sequence[tuple[int, list[Tensor]]]
    ) -> None:
        self.n_units = n_units
        self._params = _Terms(param_terms)
        self._macs = _Terms(mac_terms)
        full = torch.ones(n_units, dtype=torch.bool)
        self.dense_params = self.params(full)
        self.dense_macs = self.macs(full)

    def params(self, keep: Tensor) -> float:
        """Parameter count with units `keep` (bool, length n_units)."""
        return self._params.evaluate(keep)

    def macs(self, keep: Tensor) -> float:
        """MACs of one forward on the example inputs with units `keep`."""
        return self._macs.evaluate(keep)


class _Terms:
    def __init__(self, terms: Sequence[tuple[int, list[Tensor]]]) -> None:
        self.base = torch.tensor([float(b) for b, _ in terms], dtype=torch.float64)
        idx, seg, owner, lengths = [], [], [], []
        for t, (_, factors) in enumerate(terms):
            for f in factors:
                if f.numel() == 0:
                    continue
                seg.append(torch.full((f.numel(),), len(lengths), dtype=torch.int64))
                idx.append(f.to(torch.int64))
                owner.append(t)
                lengths.append(f.numel())
        self.idx = torch.cat(idx) if idx else torch.zeros(0, dtype=torch.int64)
        self.seg = torch.cat(seg) if seg else torch.zeros(0, dtype=torch.int64)
        self.owner = torch.tensor(owner, dtype=torch.int64)
        self.lengths = torch.tensor(lengths, dtype=torch.float64)

    def evaluate(self, keep: Tensor) -> float:
        ext = torch.cat([keep.to(torch.float64), torch.ones(1, dtype=torch.float64)])
        if self.idx.numel() == 0:
            return float(self.base.sum())
        kept = torch.zeros(len(self.lengths), dtype=torch.float64).index_add_(0, self.seg, ext[self.idx])
        frac = kept / self.lengths
        prod = torch.ones(len(self.base), dtype=torch.float64).scatter_reduce_(0, self.owner, frac, reduce="prod")
        return float((self.base * prod).sum())
