"""Importance: pure functions that score weights (higher = more important) for the patterns to rank.

Every entry registered in `prunekit.registry.IMPORTANCE` has the same call form,
`fn(weight, *, generator=None) -> Tensor` (float32, same shape as `weight`); only "random" uses the generator.
"""

from __future__ import annotations

from prunekit.importance.magnitude import NORMS, l1_scores, l2_scores, magnitude
from prunekit.importance.random import random_scores
from prunekit.registry import IMPORTANCE

__all__ = ["NORMS", "l1_scores", "l2_scores", "magnitude", "random_scores"]

IMPORTANCE.register("l1", l1_scores, help="weight magnitude |w|; a block scores its L1 norm")
IMPORTANCE.register("l2", l2_scores, help="squared weight w**2; a block scores its squared L2 norm")
IMPORTANCE.register("random", random_scores, help="uniform random scores from a seeded generator (a baseline)")
