"""Patterns: pure functions from importance scores to a keep_mask (True = keep), and exact threshold selection.

`parse_pattern("2:4")` gives a `Pattern`; `pattern.keep_mask(scores, sparsity)` gives the mask. For global pruning,
`select_global` ranks the units of many layers together, streaming, with exact counts. Importing this package
registers the pattern families ("unstructured", "n:m", "block") in `prunekit.registry.PATTERNS`.
"""

from __future__ import annotations

from prunekit.patterns.base import Pattern, shape_2d, view_2d
from prunekit.patterns.block import Block
from prunekit.patterns.nm import NM
from prunekit.patterns.parse import VALID_FORMS, parse_pattern
from prunekit.patterns.threshold import (
    Cut,
    GlobalSelection,
    check_sparsity,
    n_to_prune,
    raise_if_nan,
    select_global,
    select_layer,
)
from prunekit.patterns.unstructured import Unstructured
from prunekit.registry import PATTERNS

__all__ = [
    "NM",
    "VALID_FORMS",
    "Block",
    "Cut",
    "GlobalSelection",
    "Pattern",
    "Unstructured",
    "check_sparsity",
    "n_to_prune",
    "parse_pattern",
    "raise_if_nan",
    "select_global",
    "select_layer",
    "shape_2d",
    "view_2d",
]

PATTERNS.register(
    "unstructured", Unstructured, help="each weight on its own: prune the lowest-scoring fraction (spec 'unstructured')"
)
PATTERNS.register(
    "n:m", NM, help="keep the N highest of every M consecutive input weights; sparsity 1 - N/M (spec 'N:M', e.g. '2:4')"
)
PATTERNS.register(
    "block", Block, help="keep or prune whole R x C blocks, scored by their sum (spec 'block:RxC', e.g. 'block:4x1')"
)
