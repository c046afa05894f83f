"""Exact, streaming selection of the lowest-scoring units: per layer, or across many layers (global pruning).

Why not `torch.quantile`, `kthvalue` or `sort`: all three need the scores of the whole model concatenated, plus a
sorted or partitioned copy (and int64 indices for kthvalue and sort): 3x to 6x the model's size in extra memory;
quantile also refused inputs past 2**24 elements before torch 2.x lifted that limit. And none of them says which
units to prune when scores tie at the threshold.

How: every float32 score maps to an order-preserving int32 key (sign-magnitude -> two's complement; -0.0 and +0.0
share key 0, so they tie as in a float comparison; for non-negative scores the float bits already are the key). A
radix select then finds the value of the n-th smallest unit with two streaming passes, each asking a layer for its
scores again and reading them in chunks:

1. per layer, a histogram of the high 16 key bits -> summed, the bucket that holds the n-th smallest key;
2. per layer holding keys in that bucket, a histogram of the low 16 bits inside it -> the exact value `v` of the
   n-th smallest unit, and from both histograms each layer's count of units below and equal to `v`.

Units below `v` are pruned; the units equal to `v` are pruned in (layer index, flat index) order until the count is
exact. The result is therefore identical to pruning the first n entries of a *stable* ascending sort of the
concatenation of all layers' scores. Extra memory is O(chunk + n_layers * 2**16 counts), plus whatever one score
function allocates for its layer; the kept per-layer histograms let a re-solve after clamping a capped layer run
without reading any scores for pass 1. Scores are compared as float32 (other dtypes are converted chunk by chunk).

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
            once or twice per solve (plus once per clamp) and must return the same scores every time; only one
            layer's scores need to exist at once. A non-contiguous result is copied once per call.
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
    """The radix-select passes over layers, with each layer's digit histograms kept for re-solves and clamped layers.

    Per layer it keeps the high-digit histogram (2**16 counts) and, for the current bucket only, the low-digit
    histogram: O(n_layers * 2**16) integers, which is what lets a re-solve after clamping (or a single clamped layer)
    skip reading the scores again.
    """

    def __init__(self, score_fns: Sequence[ScoreFn], names: list[str | None], chunk_size: int) -> None:
        self.fns = score_fns
        self.names = names
        self.chunk = chunk_size
        self.sizes: dict[int, int] = {}
        self.high: dict[int, Tensor] = {}
        self._low: dict[int, Tensor] = {}
        self._low_bucket: int | None = None
        self._buffers: dict[torch.device, tuple[Tensor, Tensor]] = {}

    def solve(self, pool: list[int], n: int) -> tuple[float, dict[int, int], dict[int, int]]:
        """Value of the n-th smallest unit (1-based) over `pool`, and per layer the counts below / equal to it."""
        self.read_high(pool)
        total = torch.zeros(_BINS, dtype=torch.int64)
        for i in pool:
            total += self.high[i]
        bucket, rank = _find_bin(total, n)
        if bucket != self._low_bucket:
            self._low, self._low_bucket = {}, bucket
        low_total = torch.zeros(_BINS, dtype=torch.int64)
        for i in pool:
            if self.high[i][bucket] > 0:  # layers with nothing in the bucket are not read again
                if i not in self._low:
                    self._low[i] = self._low_histogram(i, bucket)
                low_total += self._low[i]
        digit = _find_bin(low_total, rank)[0]
        below, equal = {}, {}
        for i in pool:
            below[i] = int(self.high[i][:bucket].sum())
            equal[i] = 0
            if i in self._low and self.high[i][bucket] > 0:
                below[i] += int(self._low[i][:digit].sum())
                equal[i] = int(self._low[i][digit])
        return _key_to_float(((bucket - _OFFSET) << _BITS) + digit), below, equal

    def layer_cut(self, i: int, n: int) -> Cut:
        """The cut that prunes the `n` lowest units of layer i alone."""
        value, below, _ = self.solve([i], n)
        return Cut(value, below[i], n - below[i])

    def read_high(self, pool: list[int]) -> None:
        """Pass 1 for layers not read yet: histogram of the high 16 key bits; raises on NaN, naming the layer."""
        for i in pool:
            if i in self.high:
                continue
            t = self._scores(i)
            hist = torch.zeros(_BINS, dtype=torch.int64)
            for _, x in _chunks(t, self.chunk):
                key, tmp, signed = self._keys(x)
                torch.bitwise_right_shift(key, _BITS, out=tmp)
                if signed:  # shift signed digits into [0, _BINS); a chunk without sign bits starts at _OFFSET
                    tmp.add_(_OFFSET)
                start = 0 if signed else _OFFSET
                h = torch.bincount(tmp).cpu()
                hist[start : start + h.numel()] += h
                # NaN keys lie beyond the digits of +-inf; the +inf digit itself is shared with some NaNs
                if h[: max(0, _OFFSET - _INF_HIGH - start)].any() or h[_OFFSET + _INF_HIGH - start :].any():
                    _raise_if_nan(x, t, self.names[i])
            self.high[i] = hist.to(torch.int32) if t.numel() < 2**31 else hist

    def _low_histogram(self, i: int, bucket: int) -> Tensor:
        """Pass 2 for one layer: histogram of the low 16 key bits of its units inside `bucket`."""
        base = (bucket - _OFFSET) << _BITS  # smallest key in the bucket
        hist = torch.zeros(_BINS, dtype=torch.int64)
        for _, x in _chunks(self._scores(i), self.chunk):
            key, tmp, _ = self._keys(x)
            # key - (base - 1) is in [1, _BINS] exactly for keys in the bucket. int32 may wrap, but finite keys lie
            # within +-0x7F800000, so a wrapped difference never lands in [1, _BINS]; clamp sends the rest to the
            # two discarded edge bins.
            rel = torch.sub(key, base - 1, out=tmp).clamp_(0, _BINS + 1)
            hist += torch.bincount(rel, minlength=_BINS + 2)[1 : _BINS + 1].cpu()
        return hist.to(torch.int32) if self.sizes[i] < 2**31 else hist

    def _scores(self, i: int) -> Tensor:
        t = self.fns[i]()
        if not isinstance(t, Tensor) or t.is_complex():
            raise PrunekitError(f"score function{_in_layer(self.names[i], 'for')} must return a real tensor, got {t!r:.60}")
        if self.sizes.setdefault(i, t.numel()) != t.numel():
            raise PrunekitError(
                f"score function{_in_layer(self.names[i], 'for')} returned {t.numel()} units, earlier {self.sizes[i]}: "
                "score functions must return the same scores on every call"
            )
        return t

    def _keys(self, x: Tensor) -> tuple[Tensor, Tensor, bool]:
        """Order-preserving int32 keys of a float32 chunk, a scratch buffer of the same length, and whether any key
        is negative.

        For a chunk without sign bits (magnitudes, most importance scores) the float bits already are the keys, so
        the chunk's own int32 view is returned without any arithmetic.
        """
        if x.device not in self._buffers:
            self._buffers[x.device] = tuple(  # type: ignore[assignment]
                torch.empty(self.chunk, dtype=torch.int32, device=x.device) for _ in range(2)
            )
        key, tmp = (b[: x.numel()] for b in self._buffers[x.device])
        bits = x.view(torch.int32)
        if int(bits.min()) >= 0:
            return bits, tmp, False
        torch.bitwise_right_shift(bits, 31, out=tmp)  # -1 where the sign bit is set, else 0
        torch.bitwise_and(bits, 0x7FFFFFFF, out=key)  # magnitude bits
        key.bitwise_xor_(tmp).sub_(tmp)  # (m ^ -1) - (-1) = -m for negatives: sign-magnitude -> two's complement
        return key, tmp, True


def _find_bin(hist: Tensor, rank: int) -> tuple[int, int]:
    """Index of the bin holding the `rank`-th smallest element (1-based) and its rank inside that bin."""
    cum = hist.cumsum(0)
    b = int(torch.searchsorted(cum, torch.tensor([rank], dtype=cum.dtype))[0])
    if b >= hist.numel():  # only when a layer's scores changed between the passes
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
