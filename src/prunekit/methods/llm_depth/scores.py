"""Pure maths of depth pruning: how much a block (or a window of blocks) changes the hidden states, and which
blocks to remove.

For hidden states x (input of block l) and y (output of block l + n - 1), per token:

    angular distance    d = arccos(cos(x, y)) / pi     (Gromov et al. 2024, "The unreasonable ineffectiveness of
                                                        the deeper layers"), in [0, 1]
    block influence     BI = 1 - cos(x, y)             (Men et al. 2024, ShortGPT)

averaged over the scored tokens of all calibration sequences. Small = the block(s) barely change the residual
stream, so removing them changes the model least.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor


def token_cosine(x: Tensor, y: Tensor) -> Tensor:
    """Cosine similarity of x and y along the last dim, per token, in float64 (0 where a vector is zero)."""
    x64, y64 = x.to(torch.float64), y.to(torch.float64)
    num = (x64 * y64).sum(-1)
    den = x64.norm(dim=-1) * y64.norm(dim=-1)
    return torch.where(den > 0, num / den.clamp_min(1e-300), torch.zeros_like(num))


def token_distance(x: Tensor, y: Tensor, metric: str) -> Tensor:
    """Per-token distance of hidden states x -> y: "angular" arccos(cos) / pi or "block_influence" 1 - cos."""
    cos = token_cosine(x, y).clamp(-1.0, 1.0)
    if metric == "angular":
        return torch.arccos(cos) / math.pi
    if metric == "block_influence":
        return 1.0 - cos
    raise ValueError(f"unknown metric {metric!r}")


def blocks_to_drop(scores: list[float], n: int, contiguous: bool) -> list[int]:
    """Indices of the blocks to remove, ascending.

    Args:
        scores: contiguous: one score per window start l (the window l .. l+n-1), else one score per block.
        n: how many blocks to remove.
        contiguous: remove the window with the smallest score, else the n smallest blocks (ties: lower index).
    """
    if contiguous:
        start = min(range(len(scores)), key=lambda i: (scores[i], i))
        return list(range(start, start + n))
    return sorted(sorted(range(len(scores)), key=lambda i: (scores[i], i))[:n])
