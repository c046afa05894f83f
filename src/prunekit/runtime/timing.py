"""How `sparsify` times kernels: a `Timer` gets named candidates and returns each one's time in milliseconds.

The default, `InterleavedTimer`, runs the candidates in rotating order, round after round, and keeps the median of
each one's per-round median, so slow load drifts of a shared machine hit every candidate alike. Tests inject a
fixed table instead, which makes the chooser's decisions exact and checkable.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable, Mapping
from typing import Protocol

import torch

Candidates = Mapping[str, Callable[[], object]]


class Timer(Protocol):
    """`timer(scope, candidates) -> {label: ms}`; scope is a layer name, or "<model>" for the end-to-end check."""

    def __call__(self, scope: str, candidates: Candidates) -> Mapping[str, float]: ...


class InterleavedTimer:
    """Wall-clock timer (time.perf_counter under torch.inference_mode): `rounds` rounds of `iters` calls each.

    Every candidate gets `warmup` untimed calls first. Returns the median over rounds of each candidate's per-round
    median, in milliseconds.
    """

    def __init__(self, rounds: int = 5, iters: int = 7, warmup: int = 2):
        self.rounds, self.iters, self.warmup = rounds, iters, warmup

    def __call__(self, scope: str, candidates: Candidates) -> dict[str, float]:
        labels = list(candidates)
        per_round: dict[str, list[float]] = {k: [] for k in labels}
        with torch.inference_mode():
            for label in labels:
                for _ in range(self.warmup):
                    candidates[label]()
            for r in range(self.rounds):
                for i in range(len(labels)):
                    label = labels[(r + i) % len(labels)]
                    fn = candidates[label]
                    times = []
                    for _ in range(self.iters):
                        start = time.perf_counter()
                        fn()
                        times.append((time.perf_counter() - start) * 1000.0)
                    per_round[label].append(statistics.median(times))
        return {k: statistics.median(v) for k, v in per_round.items()}
