"""The `random` method: seeded uniform scores, one generator per layer so repeated reads give the same scores."""

from __future__ import annotations

import zlib

import torch
from torch import Tensor, nn

from prunekit.importance import random_scores
from prunekit.methods.base import Method, PruneContext, StageResult, register_method
from prunekit.methods.mask_pipeline import run_mask_pruning
from prunekit.methods.random.config import RandomConfig


def _layer_generator(seed: int, name: str) -> torch.Generator:
    # Seeded from (seed, layer name): independent of layer order and stable when the global pass re-reads a layer.
    return torch.Generator().manual_seed((seed * 1_000_003 + zlib.crc32(name.encode())) % (2**63))


@register_method
class RandomMethod(Method):
    """Zero weights chosen at random (seeded); the baseline every criterion must beat."""

    name = "random"
    config_cls = RandomConfig

    def apply(self, model: nn.Module, config: RandomConfig, ctx: PruneContext) -> StageResult:  # type: ignore[override]
        def scores(name: str, w: Tensor) -> Tensor:
            return random_scores(w, _layer_generator(config.seed, name))

        return run_mask_pruning(model, config, ctx, self.name, scores)
