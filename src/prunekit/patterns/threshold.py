"""Exact, streaming selection of the lowest-scoring units: per layer, or across many layers (global pruning).

Why not `torch.quantile`, `kthvalue` or `sort`: all three need the scores of the whole model concatenated, plus a
sorted or partitioned copy (and int64 indices for kthvalue and sort): 3x to 6x the model's size in extra memory;
quantile also refused inputs past 2**24 elements before torch 2.x lifted that limit. And none of them says which
units to prune when scores tie at the threshold.

How (see `_radix`): every float32 score maps to an order-preserving int32 key, and a radix select finds the value
`v` of the n-th smallest unit in two streaming passes, each asking a layer for its scores again and reading them in
chunks: (1) per layer, a histogram of the high 16 key bits -> the bucket holding the n-th smallest key; (2) per layer
with keys in that bucket, a histogram of the low 16 bits inside it -> `v`, and each layer's count below and equal.

Units below `v` are pruned; the units equal to `v` are pruned in (layer index, flat index) order until the count is
exact. The result is therefore identical to pruning the first n entries of a *stable* ascending sort of the
concatenation of all layers' scores. Extra memory is O(chunk) plus sparse per-layer histograms (a few thousand
occupied bins per layer for real weights), plus whatever one score function allocates for its layer; the kept
histograms let a re-solve after clamping a capped layer skip pass 1. Scores are compared as float32 (other dtypes
are converted chunk by chunk); -0.0 and +0.0 tie, as in a float comparison.

Counting convention: pruning a fraction `s` of `n` units prunes `n_to_prune(n, s) = floor(s * n + 0.5)` units
(round half up); every pattern and the global selection use this one function.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

from prunekit.errors import PrunekitError
from prunekit.patterns._radix import RadixSolver, ScoreFn, chunks, in_layer, nan_error, raise_if_nan_in


def check_sparsity(sparsity: float) -> float:
    """Return `sparsity` as a float after checking it lies in [0, 1).

    Raises:
        PrunekitError: if it is not a real number in [0, 1).
    """
    if isinstance(sparsity, bool) or not isinstance(sparsity, numbers.Real) or not 0 <= sparsity < 1:
        raise PrunekitError(
            f"sparsity {sparsity!r} is out of range: it must be a number in [0, 1) (the fraction of zeros; "
            "0 keeps everything, 1 would remove every weight)"
        )
    return float(sparsity)


def n_to_prune(n_units: int, sparsity: float) -> int:
    """Number of units that sparsity `sparsity` prunes out of `n_units`: floor(s * n + 0.5), i.e. round half up."""
    return min(n_units, math.floor(check_sparsity(sparsity) * n_units + 0.5))


@dataclass(frozen=True)
class Cut:
    """Where one layer is cut: units below `value` are pruned, then the first `quota` (by flat index) equal to it.

    Attributes:
        value: the threshold score (a float32 value).
        n_below: how many of the layer's units score strictly below `value`.
        quota: how many of the units equal to `value` are pruned, lowest flat index first.
    """

    value: float
    n_below: int
    quota: int

    @property
    def count(self) -> int:
        """Units this cut prunes."""
        return self.n_below + self.quota


_PRUNE_NOTHING = Cut(-math.inf, 0, 0)


@dataclass(frozen=True)
class GlobalSelection:
    """The result of `select_global`: how many units each layer loses, and where each layer is cut.

    Attributes:
        counts: units to prune in each layer (sums to the requested total).
        cuts: the per-layer `Cut` that `keep_mask` applies.
        names: layer labels used in error messages (quoted names, "#i", or None for an unnamed single layer).
        chunk_size: elements read at a time when building masks.
    """

    counts: list[int]
    cuts: list[Cut]
    names: list[str | None]
    chunk_size: int = 1 << 22

    @property
    def n_pruned(self) -> int:
        """Total units pruned over all layers."""
        return sum(self.counts)

    def keep_mask(self, i: int, unit_scores: Tensor) -> Tensor:
        """Boolean keep_mask (True = keep) over layer `i`'s units, with exactly `counts[i]` False.

        Args:
            i: layer index, as in the `score_fns` given to `select_global`.
            unit_scores: the same scores that `score_fns[i]()` returned (any shape).

        Raises:
            PrunekitError: if the scores hold NaN or differ from the ones the selection was computed on.
        """
        cut = self.cuts[i]
        out = torch.ones(unit_scores.shape, dtype=torch.bool, device=unit_scores.device)
        flat_out = out.view(-1)
        quota = cut.quota
        for start, x in chunks(unit_scores, self.chunk_size):
            raise_if_nan_in(x, unit_scores, self.names[i])
            keep = flat_out[start : start + x.numel()]
            torch.ge(x, cut.value, out=keep)  # keeps ties for now; the quota below prunes the first ones
            if quota > 0:
                ties = x == cut.value
                n_ties = int(torch.count_nonzero(ties))
                if n_ties <= quota:
                    keep &= ~ties
                    quota -= n_ties
                else:
                    keep[torch.nonzero(ties).view(-1)[:quota]] = False
                    quota = 0
        pruned = out.numel() - int(torch.count_nonzero(out))
        if pruned != self.counts[i]:
            raise PrunekitError(
                f"unit scores{in_layer(self.names[i])} differ from the ones the selection was computed on: "
                f"they prune {pruned} units, expected {self.counts[i]}"
            )
        return out


def select_global(
    score_fns: Sequence[ScoreFn],
    n_prune: int,
    *,
    max_prune: Sequence[int] | None = None,
    names: Sequence[str] | None = None,
    chunk_size: int = 1 << 22,
) -> GlobalSelection:
    """Choose exactly `n_prune` units to prune across layers: the lowest scores, ties in (layer, flat index) order.

    Args:
        score_fns: one function per layer returning that layer's unit scores (any shape, real dtype). Each is called
            once or twice per solve (plus once per clamp) and must return the same scores every time. Only one
            layer's scores are in use at a time, so every function may return a view of one reused buffer (the
            fastest form: no allocation per call). A non-contiguous result is copied once per call.
        n_prune: total units to prune.
        max_prune: optional per-layer cap (e.g. from a minimum density). A layer the uncapped selection would cut
            past its cap is clamped to its cap (its own lowest units), removed from the pool, and the rest re-solved.
        names: layer names for error messages (default "#0", "#1", ...).
        chunk_size: elements read at a time; extra memory is a few times this in int32.

    Returns:
        A `GlobalSelection`; `keep_mask(i, scores)` turns it into layer i's mask.

    Raises:
        PrunekitError: on NaN scores (naming the layer), a bad argument, or an `n_prune` the caps cannot reach.
    """
    n_layers = len(score_fns)
    labels: list[str | None] = [f"#{i}" for i in range(n_layers)] if names is None else [repr(str(n)) for n in names]
    if len(labels) != n_layers:
        raise PrunekitError(f"names has {len(labels)} entries but there are {n_layers} score functions")
    _check_int("n_prune", n_prune, 0)
    _check_int("chunk_size", chunk_size, 1)
    return _select(score_fns, n_prune, _check_caps(max_prune, n_layers), labels, chunk_size)


def _select(
    score_fns: Sequence[ScoreFn], n_prune: int, caps: list[int] | None, labels: list[str | None], chunk_size: int
) -> GlobalSelection:
    n_layers = len(score_fns)
    solver = RadixSolver(score_fns, labels, chunk_size)
    counts = [0] * n_layers
    cuts = [_PRUNE_NOTHING] * n_layers
    pool = [i for i in range(n_layers) if caps is None or caps[i] > 0]
    clamped: list[int] = []
    n_left = n_prune
    if n_left > 0:
        solver.read_high(pool)  # pass 1 for every layer; later rounds reuse these histograms
        _check_reachable(n_prune, pool, solver.sizes, caps)
    while n_left > 0:  # each round either finishes or clamps >= 1 layer, so it runs at most n_layers + 1 times
        value, below, equal = solver.solve(pool, n_left)
        ties_left = n_left - sum(below.values())
        layer_counts = {}
        for i in pool:  # ties go to earlier layers first, as in a stable sort of the concatenation
            quota = min(equal[i], ties_left)
            ties_left -= quota
            layer_counts[i] = below[i] + quota
            cuts[i] = Cut(value, below[i], quota)
        over = [i for i in pool if caps is not None and layer_counts[i] > caps[i]]
        if not over:
            for i in pool:
                counts[i] = layer_counts[i]
            break
        for i in over:
            counts[i] = caps[i]  # type: ignore[index]
            n_left -= counts[i]
            clamped.append(i)
        pool = [i for i in pool if i not in over]
    for i in clamped:
        value, below, _ = solver.solve([i], counts[i])  # the layer's own lowest units, from its kept histograms
        cuts[i] = Cut(value, below[i], counts[i] - below[i])
    return GlobalSelection(counts, cuts, labels, chunk_size)


def select_layer(scores: Tensor, n_prune: int, *, name: str | None = None, chunk_size: int = 1 << 22) -> Tensor:
    """Keep_mask over `scores` (same shape) pruning exactly the `n_prune` lowest, lower flat index first on ties."""
    labels: list[str | None] = [None if name is None else repr(str(name))]
    _check_int("n_prune", n_prune, 0)
    _check_int("chunk_size", chunk_size, 1)
    return _select([lambda: scores], n_prune, None, labels, chunk_size).keep_mask(0, scores)


def raise_if_nan(scores: Tensor, name: str | None = None) -> None:
    """Raise PrunekitError("scores contain NaN ...") with the count, and the layer when `name` is given."""
    if scores.is_floating_point() and bool(torch.isnan(scores).any()):
        raise nan_error(scores, None if name is None else repr(str(name)))


def _check_caps(max_prune: Sequence[int] | None, n_layers: int) -> list[int] | None:
    if max_prune is None:
        return None
    caps = list(max_prune)
    if len(caps) != n_layers:
        raise PrunekitError(f"max_prune has {len(caps)} entries but there are {n_layers} score functions")
    for i, c in enumerate(caps):
        _check_int(f"max_prune[{i}]", c, 0)
    return caps


def _check_int(what: str, value: object, minimum: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise PrunekitError(f"{what} = {value!r} must be an integer >= {minimum}")


def _check_reachable(n: int, pool: list[int], sizes: dict[int, int], caps: list[int] | None) -> None:
    total = sum(sizes[i] for i in pool)
    reachable = total if caps is None else sum(min(caps[i], sizes[i]) for i in pool)
    if n > reachable:
        capped = reachable < total
        why = f"the per-layer caps allow at most {reachable}" if capped else f"the layers hold {total} units"
        raise PrunekitError(f"cannot prune {n} units: {why} (achievable maximum: {reachable})")
