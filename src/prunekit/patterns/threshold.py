"""Exact, streaming selection of the lowest-scoring units: per layer, or across many layers (global pruning).

Why not `torch.quantile`, `kthvalue` or `sort`: quantile refuses inputs past 2**24 elements, and all three need the
scores of the whole model concatenated (plus, for kthvalue and sort, a copy and int64 indices: ~4x the model's size),
and none of them gives an exact count when scores tie.

How: every float32 score maps to an order-preserving int32 key (sign-magnitude -> two's complement; -0.0 and +0.0
share key 0, so they tie as in a float comparison). A radix select then finds the value of the n-th smallest unit in
three streaming passes, each asking every layer for its scores again and reading them in chunks:

1. a histogram of the high 16 key bits over all layers -> the bucket that holds the n-th smallest key;
2. a histogram of the low 16 bits inside that bucket -> the exact value `v` of the n-th smallest unit;
3. per layer, the number of units below `v` and equal to `v`.

Units below `v` are pruned; the units equal to `v` are pruned in (layer index, flat index) order until the count is
exact. The result is therefore identical to pruning the first n entries of a *stable* ascending sort of the
concatenation of all layers' scores. Extra memory is O(chunk + 2**16 bins), plus whatever one score function
allocates for its layer. Scores are compared as float32 (other dtypes are converted chunk by chunk).

Counting convention: pruning a fraction `s` of `n` units prunes `n_to_prune(n, s) = floor(s * n + 0.5)` units
(round half up); every pattern and the global selection use this one function.
"""

from __future__ import annotations

import math
import struct
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

from prunekit.errors import PrunekitError

_BITS = 16
_BINS = 1 << _BITS
_OFFSET = 1 << (_BITS - 1)  # shifts the signed high digit into [0, _BINS)
_INF_HIGH = 0x7F80  # high digit of the +inf key; beyond it (or below its negation) lie only NaNs

ScoreFn = Callable[[], Tensor]


def check_sparsity(sparsity: float) -> float:
    """Return `sparsity` as a float after checking it lies in [0, 1).

    Raises:
        PrunekitError: if it is not a real number in [0, 1).
    """
    if isinstance(sparsity, bool) or not isinstance(sparsity, (int, float)) or not 0 <= sparsity < 1:
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
    """Where one layer is cut: units scoring below `value` are pruned, then the first `quota` (by flat index) equal to it.

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
        for start, x in _chunks(unit_scores, self.chunk_size):
            _raise_if_nan(x, unit_scores, self.names[i])
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
                f"unit scores{_in_layer(self.names[i])} differ from the ones the selection was computed on: "
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
            up to three times per solve and must return the same scores every time; only one layer's scores need
            to exist at once.
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
    solver = _Solver(score_fns, labels, chunk_size)
    counts = [0] * n_layers
    cuts = [_PRUNE_NOTHING] * n_layers
    pool = [i for i in range(n_layers) if caps is None or caps[i] > 0]
    clamped: list[int] = []
    n_left = n_prune
    first = True
    while n_left > 0:  # each round either finishes or clamps >= 1 layer, so it runs at most n_layers + 1 times
        high = solver.high_histogram(pool)
        if first:
            _check_reachable(n_prune, pool, solver.sizes, caps)
            first = False
        value, below, equal = solver.finish(pool, n_left, high)
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
        cuts[i] = solver.layer_cut(i, counts[i])
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
        _raise_nan(scores, None if name is None else repr(str(name)))


class _Solver:
    """The three radix-select passes over a pool of layers; remembers each layer's unit count."""

    def __init__(self, score_fns: Sequence[ScoreFn], names: list[str | None], chunk_size: int) -> None:
        self.fns = score_fns
        self.names = names
        self.chunk = chunk_size
        self.sizes: dict[int, int] = {}
        self._buffers: dict[torch.device, tuple[Tensor, Tensor]] = {}

    def scores(self, i: int) -> Tensor:
        t = self.fns[i]()
        if not isinstance(t, Tensor) or t.is_complex():
            raise PrunekitError(f"score function{_in_layer(self.names[i], 'for')} must return a real tensor, got {t!r:.60}")
        if self.sizes.setdefault(i, t.numel()) != t.numel():
            raise PrunekitError(
                f"score function{_in_layer(self.names[i], 'for')} returned {t.numel()} units, earlier {self.sizes[i]}: "
                "score functions must return the same scores on every call"
            )
        return t

    def keys(self, x: Tensor) -> Tensor:
        """Order-preserving int32 keys of a float32 chunk, written into a reused buffer."""
        device = x.device
        if device not in self._buffers:
            self._buffers[device] = (
                torch.empty(self.chunk, dtype=torch.int32, device=device),
                torch.empty(self.chunk, dtype=torch.int32, device=device),
            )
        key, tmp = (b[: x.numel()] for b in self._buffers[device])
        bits = x.view(torch.int32)
        torch.bitwise_right_shift(bits, 31, out=tmp)  # -1 where the sign bit is set, else 0
        torch.bitwise_and(bits, 0x7FFFFFFF, out=key)  # magnitude bits
        key.bitwise_xor_(tmp).sub_(tmp)  # (m ^ -1) - (-1) = -m for negatives: sign-magnitude -> two's complement
        return key

    def high_histogram(self, pool: list[int]) -> Tensor:
        """Pass 1: histogram of the high 16 key bits; raises on NaN, naming the layer."""
        hist = torch.zeros(_BINS, dtype=torch.int64)
        for i in pool:
            t = self.scores(i)
            for _, x in _chunks(t, self.chunk):
                key = self.keys(x)
                digit = self._buffers[x.device][1][: x.numel()]
                torch.bitwise_right_shift(key, _BITS, out=digit).add_(_OFFSET)
                h = torch.bincount(digit, minlength=_BINS).cpu()
                # NaN keys lie beyond +-inf's digit; the +inf digit itself is shared with some NaNs
                if h[: _OFFSET - _INF_HIGH].any() or h[_OFFSET + _INF_HIGH :].any():
                    _raise_if_nan(x, t, self.names[i])
                hist += h
        return hist

    def finish(self, pool: list[int], n: int, high: Tensor) -> tuple[float, dict[int, int], dict[int, int]]:
        """Passes 2 and 3: the value of the n-th smallest unit (1-based), and per layer the counts below / equal."""
        digit, rank = _find_bin(high, n)
        base = (digit - _OFFSET) << _BITS  # smallest key in the bucket
        low = torch.zeros(_BINS, dtype=torch.int64)
        for i in pool:
            for _, x in _chunks(self.scores(i), self.chunk):
                key = self.keys(x)
                # key - (base - 1) is in [1, _BINS] exactly for keys in the bucket. int32 may wrap, but finite keys
                # lie within +-0x7F800000, so a wrapped difference never lands in [1, _BINS]; clamp sends the rest
                # to the two discarded edge bins.
                rel = key.sub_(base - 1).clamp_(0, _BINS + 1)
                low += torch.bincount(rel, minlength=_BINS + 2)[1 : _BINS + 1].cpu()
        value = _key_to_float(base + _find_bin(low, rank)[0])
        below: dict[int, int] = {}
        equal: dict[int, int] = {}
        for i in pool:
            below[i] = equal[i] = 0
            for _, x in _chunks(self.scores(i), self.chunk):
                below[i] += int(torch.count_nonzero(x < value))
                equal[i] += int(torch.count_nonzero(x == value))
        if not sum(below.values()) < n <= sum(below.values()) + sum(equal.values()):
            raise PrunekitError("score functions returned different scores on different calls; they must be deterministic")
        return value, below, equal

    def layer_cut(self, i: int, n: int) -> Cut:
        """The cut that prunes the `n` lowest units of layer i alone."""
        value, below, equal = self.finish([i], n, self.high_histogram([i]))
        return Cut(value, below[i], n - below[i])


def _find_bin(hist: Tensor, rank: int) -> tuple[int, int]:
    """Index of the bin holding the `rank`-th smallest element (1-based) and its rank inside that bin."""
    cum = hist.cumsum(0)
    b = int(torch.searchsorted(cum, torch.tensor([rank], dtype=cum.dtype))[0])
    if b >= hist.numel():
        raise PrunekitError("score functions returned different scores on different calls; they must be deterministic")
    return b, rank - (int(cum[b - 1]) if b > 0 else 0)


def _key_to_float(key: int) -> float:
    bits = key if key >= 0 else (-key) | 0x80000000
    return struct.unpack("<f", struct.pack("<I", bits))[0]


def _chunks(t: Tensor, chunk: int) -> Iterator[tuple[int, Tensor]]:
    """(start, contiguous float32 1-D chunk) pairs covering `t` in flat (row-major) order."""
    flat = t.detach().reshape(-1)
    for start in range(0, flat.numel(), chunk):
        x = flat[start : start + chunk]
        yield start, (x if x.dtype == torch.float32 else x.to(torch.float32)).contiguous()


def _raise_if_nan(x: Tensor, whole: Tensor, name: str | None) -> None:
    if bool(torch.isnan(x).any()):
        _raise_nan(whole, name)


def _raise_nan(whole: Tensor, name: str | None) -> None:
    n_nan = int(torch.isnan(whole).sum())
    raise PrunekitError(f"scores contain NaN{_in_layer(name)} ({n_nan} of {whole.numel()} values); NaN has no rank to prune by")


def _in_layer(label: str | None, preposition: str = "in") -> str:
    return "" if label is None else f" {preposition} layer {label}"


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
        why = f"the layers hold {total} units" if reachable == total else f"the per-layer caps allow at most {reachable}"
        raise PrunekitError(f"cannot prune {n} units: {why} (achievable maximum: {reachable})")
