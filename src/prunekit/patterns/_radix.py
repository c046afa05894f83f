"""Radix select over float32 scores streamed from many layers: the machinery behind `threshold.select_global`.

Scores map to order-preserving int32 keys (sign-magnitude -> two's complement, so -0.0 and +0.0 share key 0; for
non-negative scores the float bits already are the key). Pass 1 histograms the high 16 key bits of every layer;
pass 2 histograms the low 16 bits of the units inside the bucket that holds the n-th smallest key. Together they
give the exact n-th smallest value and each layer's count of units below and equal to it.

Per-layer histograms are kept sparse (occupied bins only: a few thousand for real weights, never more than the
layer's unit count) and packed into one growing buffer per pass rather than one small tensor per layer: small
long-lived allocations made between the score functions' large transient ones fragment glibc's heap (measured at
1B parameters: the process grew by up to 2.4 GB with one small tensor per layer, by nothing with one buffer).
"""

from __future__ import annotations

import struct
from collections.abc import Callable, Iterator, Sequence

import torch
from torch import Tensor

from prunekit.errors import PrunekitError

BITS = 16
BINS = 1 << BITS
OFFSET = 1 << (BITS - 1)  # shifts the signed high digit into [0, BINS)
INF_HIGH = 0x7F80  # high digit of the +inf key; beyond it (or below its negation) lie only NaNs

ScoreFn = Callable[[], Tensor]


class _Packed:
    """Sparse histograms (occupied bins ascending, then their counts) appended to one int64 buffer."""

    def __init__(self) -> None:
        self.buf = torch.empty(1 << 16, dtype=torch.int64)
        self.used = 0
        self.where: dict[int, tuple[int, int]] = {}  # layer -> (start, number of occupied bins)

    def add(self, i: int, dense: Tensor) -> None:
        bins = torch.nonzero(dense).view(-1)
        k = bins.numel()
        if self.used + 2 * k > self.buf.numel():  # grow geometrically: few, large (mmapped) allocations
            grown = torch.empty(max(self.used + 2 * k, 2 * self.buf.numel()), dtype=torch.int64)
            grown[: self.used] = self.buf[: self.used]
            self.buf = grown
        self.buf[self.used : self.used + k] = bins
        self.buf[self.used + k : self.used + 2 * k] = dense[bins]
        self.where[i] = (self.used, k)
        self.used += 2 * k

    def clear(self) -> None:
        self.used = 0
        self.where = {}

    def __contains__(self, i: object) -> bool:
        return i in self.where

    def parts(self, i: int) -> tuple[Tensor, Tensor]:
        start, k = self.where[i]
        return self.buf[start : start + k], self.buf[start + k : start + 2 * k]

    def at(self, i: int, b: int) -> int:
        bins, counts = self.parts(i)
        return int(counts[bins == b].sum())

    def below(self, i: int, b: int) -> int:
        bins, counts = self.parts(i)
        return int(counts[bins < b].sum())

    def total(self, pool: list[int]) -> Tensor:
        out = torch.zeros(BINS, dtype=torch.int64)
        for i in pool:
            if i in self.where:
                out.index_add_(0, *self.parts(i))
        return out


class RadixSolver:
    """The two radix-select passes over layers; keeps each layer's histograms for re-solves and clamped layers."""

    def __init__(self, score_fns: Sequence[ScoreFn], names: list[str | None], chunk_size: int) -> None:
        self.fns = score_fns
        self.names = names
        self.chunk = chunk_size
        self.sizes: dict[int, int] = {}
        self._high = _Packed()
        self._low = _Packed()  # for the bucket `_low_bucket` only
        self._low_bucket: int | None = None
        self._buffers: dict[torch.device, tuple[Tensor, Tensor]] = {}
        self._dense = torch.zeros(BINS + 2, dtype=torch.int64)  # one layer's histogram while it is being read

    def solve(self, pool: list[int], n: int) -> tuple[float, dict[int, int], dict[int, int]]:
        """Value of the n-th smallest unit (1-based) over `pool`, and per layer the counts below / equal to it."""
        self.read_high(pool)
        bucket, rank = find_bin(self._high.total(pool), n)
        if bucket != self._low_bucket:
            self._low.clear()
            self._low_bucket = bucket
        for i in pool:
            if i not in self._low and self._high.at(i, bucket) > 0:  # layers with nothing there are not read again
                self._low.add(i, self._low_histogram(i, bucket))
        digit = find_bin(self._low.total(pool), rank)[0]
        below, equal = {}, {}
        for i in pool:
            below[i] = self._high.below(i, bucket)
            equal[i] = 0
            if i in self._low:
                below[i] += self._low.below(i, digit)
                equal[i] = self._low.at(i, digit)
        return key_to_float(((bucket - OFFSET) << BITS) + digit), below, equal

    def read_high(self, pool: list[int]) -> None:
        """Pass 1 for layers not read yet; raises on NaN, naming the layer."""
        for i in pool:
            if i not in self._high:  # one layer at a time: its scores are released before the next are asked for
                self._high.add(i, self._high_histogram(i))

    def _high_histogram(self, i: int) -> Tensor:
        """Pass 1 for one layer: dense histogram of the high 16 key bits of its units."""
        t = self._scores(i)
        hist = self._dense.zero_()
        for _, x in chunks(t, self.chunk):
            key, tmp, signed = self._keys(x)
            torch.bitwise_right_shift(key, BITS, out=tmp)
            if signed:  # shift signed digits into [0, BINS); a chunk without sign bits starts at OFFSET
                tmp.add_(OFFSET)
            start = 0 if signed else OFFSET
            h = torch.bincount(tmp).cpu()
            hist[start : start + h.numel()] += h
            # NaN keys lie beyond the digits of +-inf; the +inf digit itself is shared with some NaNs
            if h[: max(0, OFFSET - INF_HIGH - start)].any() or h[OFFSET + INF_HIGH - start :].any():
                raise_if_nan_in(x, t, self.names[i])
        return hist[:BINS]

    def _low_histogram(self, i: int, bucket: int) -> Tensor:
        """Pass 2 for one layer: dense histogram of the low 16 key bits of its units inside `bucket`."""
        base = (bucket - OFFSET) << BITS  # smallest key in the bucket
        hist = self._dense.zero_()
        for _, x in chunks(self._scores(i), self.chunk):
            key, tmp, _ = self._keys(x)
            # key - (base - 1) is in [1, BINS] exactly for keys in the bucket. int32 may wrap, but finite keys lie
            # within +-0x7F800000, so a wrapped difference never lands in [1, BINS]; clamp sends the rest to the
            # two discarded edge bins.
            rel = torch.sub(key, base - 1, out=tmp).clamp_(0, BINS + 1)
            hist += torch.bincount(rel, minlength=BINS + 2).cpu()
        return hist[1 : BINS + 1]

    def _scores(self, i: int) -> Tensor:
        t = self.fns[i]()
        if not isinstance(t, Tensor) or t.is_complex():
            raise PrunekitError(
                f"score function{in_layer(self.names[i], 'for')} must return a real tensor, got {t!r:.60}"
            )
        if self.sizes.setdefault(i, t.numel()) != t.numel():
            raise PrunekitError(
                f"score function{in_layer(self.names[i], 'for')} returned {t.numel()} units, earlier {self.sizes[i]}: "
                "score functions must return the same scores on every call"
            )
        return t

    def _keys(self, x: Tensor) -> tuple[Tensor, Tensor, bool]:
        """Order-preserving int32 keys of a float32 chunk, a same-length scratch buffer, and whether any key is < 0.

        For a chunk without sign bits (magnitudes, most importance scores) the float bits already are the keys, so
        the chunk's own int32 view is returned without any arithmetic.
        """
        if x.device not in self._buffers:
            self._buffers[x.device] = (
                torch.empty(self.chunk, dtype=torch.int32, device=x.device),
                torch.empty(self.chunk, dtype=torch.int32, device=x.device),
            )
        key, tmp = (b[: x.numel()] for b in self._buffers[x.device])
        bits = x.view(torch.int32)
        if int(bits.min()) >= 0:
            return bits, tmp, False
        torch.bitwise_right_shift(bits, 31, out=tmp)  # -1 where the sign bit is set, else 0
        torch.bitwise_and(bits, 0x7FFFFFFF, out=key)  # magnitude bits
        key.bitwise_xor_(tmp).sub_(tmp)  # (m ^ -1) - (-1) = -m for negatives: sign-magnitude -> two's complement
        return key, tmp, True


def find_bin(hist: Tensor, rank: int) -> tuple[int, int]:
    """Index of the bin holding the `rank`-th smallest element (1-based) and its rank inside that bin."""
    cum = hist.cumsum(0)
    b = int(torch.searchsorted(cum, torch.tensor([rank], dtype=cum.dtype))[0])
    if b >= hist.numel():  # only when a layer's scores changed between the passes
        raise PrunekitError("score functions returned different scores on different calls; they must be deterministic")
    return b, rank - (int(cum[b - 1]) if b > 0 else 0)


def key_to_float(key: int) -> float:
    """The float32 value (as a Python float) whose order-preserving key is `key`."""
    bits = key if key >= 0 else (-key) | 0x80000000
    return struct.unpack("<f", struct.pack("<I", bits))[0]


def chunks(t: Tensor, chunk: int) -> Iterator[tuple[int, Tensor]]:
    """(start, contiguous float32 1-D chunk) pairs covering `t` in flat (row-major) order."""
    flat = t.detach().reshape(-1)
    for start in range(0, flat.numel(), chunk):
        x = flat[start : start + chunk]
        yield start, (x if x.dtype == torch.float32 else x.to(torch.float32)).contiguous()


def raise_if_nan_in(x: Tensor, whole: Tensor, label: str | None) -> None:
    """If chunk `x` holds NaN, raise the NaN error counting over `whole`."""
    if bool(torch.isnan(x).any()):
        raise nan_error(whole, label)


def nan_error(whole: Tensor, label: str | None) -> PrunekitError:
    n_nan = int(torch.isnan(whole).sum())
    return PrunekitError(
        f"scores contain NaN{in_layer(label)} ({n_nan} of {whole.numel()} values); NaN has no rank to prune by"
    )


def in_layer(label: str | None, preposition: str = "in") -> str:
    """' in layer 'fc1'' for a labelled layer, '' for an unnamed one."""
    return "" if label is None else f" {preposition} layer {label}"
