"""Selection: which channels each group keeps, to reach a target ratio. Pure maths over scores and a cost function.

- Counts: a group of n units keeps k, with k >= max(frozen units, min(min_channels, n), 1), rounded UP to a
  multiple of `round_to` (capped at n). The kept units are the k highest-scoring ones (frozen units first).
- scope "layer": every group keeps round(r * n) units; r is the width ratio itself, or is bisected (60 steps on
  [0, 1]) until the cost (params or MACs) is closest to the target; then the groups whose count differs between
  the two ratios around the target move up one at a time (each group stays within one step of the common ratio).
- scope "global": one threshold t on the normalized scores; a group keeps its units scoring >= t. t is found by
  binary search over the sorted distinct scores, keeping the candidate whose cost is closest to the target.
- `classes` (uniform layers): candidates with the same class id keep the same count (the rounded mean of their
  counts, at least every member's floor); each still keeps its own best units (ranked within its block).
Costs are monotone in r and t up to rounding, so the search returns the closest reachable point; the caller reports
the ratio actually reached.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
from torch import Tensor


@dataclass(frozen=True)
class Candidate:
    """One group's input to selection: its unit scores (higher = keep) and which units are frozen.

    `order` ranks the units best first (frozen units first, ties to the lower index); build with `candidate()`.
    `multiple`: the group's own count step (e.g. what a Hugging Face config can express), combined with round_to.
    """

    scores: Tensor
    frozen: Tensor
    order: Tensor
    multiple: int = 1

    @property
    def size(self) -> int:
        return int(self.scores.numel())


def candidate(scores: Tensor, frozen: Tensor, multiple: int = 1) -> Candidate:
    """A Candidate with its ranking computed once."""
    key = scores.to(torch.float64).clone()
    key[frozen] = math.inf
    order = torch.sort(-key, stable=True).indices
    return Candidate(scores.to(torch.float64), frozen.to(torch.bool), order, multiple)


def clamp_count(k: int, cand: Candidate, round_to: int, min_channels: int) -> int:
    """Apply the floor (frozen, min_channels, 1) and round up to a multiple of `round_to`, capped at the size."""
    n = cand.size
    floor = max(int(cand.frozen.sum()), min(min_channels, n), 1)
    k = max(k, floor)
    step = math.lcm(round_to, cand.multiple)
    if step > 1:
        k = int(math.ceil(k / step) * step)
    return min(k, n)


def top_k_mask(cand: Candidate, k: int) -> Tensor:
    """Keep mask of the `k` best units; frozen units are kept first, ties go to the lower index."""
    mask = torch.zeros(cand.size, dtype=torch.bool)
    mask[cand.order[:k]] = True
    return mask


def layer_counts(cands: Sequence[Candidate], ratio: float, round_to: int, min_channels: int) -> list[int]:
    """Every group keeps round(ratio * size) units (then floors and rounding)."""
    return [clamp_count(int(math.floor(ratio * c.size + 0.5)), c, round_to, min_channels) for c in cands]


def layer_masks(cands: Sequence[Candidate], ratio: float, round_to: int, min_channels: int) -> list[Tensor]:
    """Keep masks of `layer_counts`."""
    return [top_k_mask(c, k) for c, k in zip(cands, layer_counts(cands, ratio, round_to, min_channels))]


def threshold_masks(cands: Sequence[Candidate], t: float, round_to: int, min_channels: int) -> list[Tensor]:
    """Every group keeps its units scoring >= t (then floors and rounding)."""
    out = []
    for c in cands:
        k = int(((c.scores >= t) | c.frozen).sum())
        out.append(top_k_mask(c, clamp_count(k, c, round_to, min_channels)))
    return out


def tie_counts(counts: Sequence[int], cands: Sequence[Candidate], classes: Sequence[int] | None,
               round_to: int, min_channels: int) -> list[int]:
    """Candidates of one class get one count: the rounded mean of their counts, raised to every member's floor."""
    if classes is None:
        return list(counts)
    members: dict[int, list[int]] = {}
    for i, c in enumerate(classes):
        members.setdefault(c, []).append(i)
    out = list(counts)
    for idx in members.values():
        mean = int(math.floor(sum(counts[i] for i in idx) / len(idx) + 0.5))
        k = max(clamp_count(mean, cands[i], round_to, min_channels) for i in idx)
        for i in idx:
            out[i] = min(k, cands[i].size)
    return out


def select(
    cands: Sequence[Candidate],
    cost: Callable[[list[Tensor]], float],
    target: float,
    *,
    scope: str,
    round_to: int = 1,
    min_channels: int = 1,
    width_direct: bool = False,
    classes: Sequence[int] | None = None,
) -> tuple[list[Tensor], float]:
    """Keep masks whose cost is closest to `target` (a fraction of the unpruned cost).

    Args:
        cands: one Candidate per group.
        cost: masks -> cost as a fraction of the unpruned model (1.0 = nothing removed).
        target: the fraction to reach.
        scope: "layer" or "global".
        round_to, min_channels: count constraints (see module docstring).
        width_direct: layer scope with a width target: use `target` as the per-group ratio without searching.
        classes: optional class id per candidate; candidates of one class keep the same count (uniform layers).

    Returns:
        (masks, the cost fraction they reach).
    """
    if scope == "layer":
        if width_direct:
            counts = tie_counts(layer_counts(cands, target, round_to, min_channels), cands, classes, round_to,
                                min_channels)
            masks = [top_k_mask(c, k) for c, k in zip(cands, counts)]
            return masks, cost(masks)
        return _layer_search(cands, cost, target, round_to, min_channels, classes)
    scores = torch.cat([c.scores[~c.frozen].to(torch.float64) for c in cands]) if cands else torch.zeros(0)
    levels = torch.unique(scores).tolist()
    if not levels:
        masks = [torch.ones(c.size, dtype=torch.bool) for c in cands]
        return masks, cost(masks)
    levels.append(math.inf)  # keep-only-the-floors point
    best = None
    lo, hi = 0, len(levels) - 1  # cost(levels[lo]) is the largest, cost(levels[hi]) the smallest
    seen: dict[int, tuple[list[Tensor], float]] = {}

    def at(i: int) -> tuple[list[Tensor], float]:
        if i not in seen:
            masks = threshold_masks(cands, levels[i], round_to, min_channels)
            if classes is not None:
                counts = tie_counts([int(m.sum()) for m in masks], cands, classes, round_to, min_channels)
                masks = [top_k_mask(c, k) for c, k in zip(cands, counts)]
            seen[i] = (masks, cost(masks))
        return seen[i]

    for i in (lo, hi):
        best = _closer(best, at(i), target)
    while hi - lo > 1:
        mid = (lo + hi) // 2
        masks, c = at(mid)
        best = _closer(best, (masks, c), target)
        if c > target:
            lo = mid
        else:
            hi = mid
    return best  # type: ignore[return-value]


def _layer_search(cands: Sequence[Candidate], cost: Callable[[list[Tensor]], float], target: float,
                  round_to: int, min_channels: int, classes: Sequence[int] | None = None,
                  steps: int = 60) -> tuple[list[Tensor], float]:
    """Bisect the common ratio r, then refine between the two counts around the target one group (or one class of
    tied groups) at a time (groups of equal size change count at the same r, so plain bisection makes coarse steps)."""

    def counts_at(r: float) -> list[int]:
        return tie_counts(layer_counts(cands, r, round_to, min_channels), cands, classes, round_to, min_channels)

    def evaluate(counts: list[int]) -> tuple[list[Tensor], float]:
        masks = [top_k_mask(c, k) for c, k in zip(cands, counts)]
        return masks, cost(masks)

    lo, hi = 0.0, 1.0
    lo_counts, hi_counts = counts_at(lo), counts_at(hi)
    best = _closer(None, evaluate(lo_counts), target)
    best = _closer(best, evaluate(hi_counts), target)
    for _ in range(steps):
        mid = (lo + hi) / 2
        counts = counts_at(mid)
        found = evaluate(counts)
        best = _closer(best, found, target)
        if found[1] > target:
            hi, hi_counts = mid, counts
        else:
            lo, lo_counts = mid, counts
        if hi - lo < 1e-9:
            break
    current = list(lo_counts)
    tied = list(classes) if classes is not None else list(range(len(cands)))
    for i, (a, b) in enumerate(zip(lo_counts, hi_counts)):
        if b > a and current[i] != b:
            for j, cls in enumerate(tied):
                if cls == tied[i]:
                    current[j] = hi_counts[j]
            found = evaluate(current)
            best = _closer(best, found, target)
            if found[1] > target:
                break
    return best  # type: ignore[return-value]


def _closer(best: tuple[list[Tensor], float] | None, new: tuple[list[Tensor], float],
            target: float) -> tuple[list[Tensor], float]:
    if best is None or abs(new[1] - target) < abs(best[1] - target) - 1e-12:
        return new
    return best
