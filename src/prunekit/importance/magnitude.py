"""Magnitude importance: a weight matters as much as its size.

Scores are float32 and elementwise; patterns reduce units by a SUM, so block scores are L1 norms ("l1") or squared
L2 norms ("l2"). Squared L2 ranks blocks exactly as the L2 norm does, without a square root.
"""

from __future__ import annotations

import torch
from torch import Tensor

from prunekit.errors import PrunekitError, choices_text, suggest

NORMS = ("l1", "l2")


def magnitude(weight: Tensor, norm: str = "l1") -> Tensor:
    """Elementwise magnitude scores: |w| for "l1", w**2 for "l2"; float32, same shape, no autograd history.

    Raises:
        PrunekitError: if `norm` is not one of "l1", "l2".
    """
    if norm not in NORMS:
        raise PrunekitError(f"unknown norm {norm!r}.{suggest(str(norm), NORMS)} Valid norms: {choices_text(NORMS)}")
    w = weight.detach().to(torch.float32)
    return w.abs() if norm == "l1" else w.square()


def l1_scores(weight: Tensor, *, generator: torch.Generator | None = None) -> Tensor:
    """|w| (float32); block scores sum to the block's L1 norm. `generator` is unused."""
    return magnitude(weight, "l1")


def l2_scores(weight: Tensor, *, generator: torch.Generator | None = None) -> Tensor:
    """w**2 (float32); block scores sum to the block's squared L2 norm. `generator` is unused."""
    return magnitude(weight, "l2")
