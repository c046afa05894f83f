"""Random importance: uniform scores, the baseline any real criterion should beat. Seeded, so runs repeat."""

from __future__ import annotations

import torch
from torch import Tensor

from prunekit.errors import PrunekitError


def random_scores(weight: Tensor, generator: torch.Generator | None = None) -> Tensor:
    """Uniform float32 scores in [0, 1) with `weight`'s shape and device, drawn from `generator`.

    The draw happens on the generator's device and moves to the weight's, so the same seed gives the same scores
    whatever device the weight lives on (when the generator is a CPU one).

    Raises:
        PrunekitError: if `generator` is missing or not a `torch.Generator` (unseeded scores would not repeat).
    """
    if not isinstance(generator, torch.Generator):
        raise PrunekitError(
            "random importance needs a seeded torch.Generator (e.g. torch.Generator().manual_seed(0)), "
            f"got {generator!r}"
        )
    return torch.rand(weight.shape, generator=generator, dtype=torch.float32, device=generator.device).to(weight.device)

