"""The `magnitude` method: scores are weight magnitudes; everything else is the shared mask pipeline."""

from __future__ import annotations

from torch import nn

from prunekit.importance import magnitude
from prunekit.methods.base import Method, PruneContext, StageResult, register_method
from prunekit.methods.magnitude.config import MagnitudeConfig
from prunekit.methods.mask_pipeline import run_mask_pruning


@register_method
class MagnitudeMethod(Method):
    """Zero the smallest-magnitude weights (per layer or global threshold; unstructured, N:M or blocks)."""

    name = "magnitude"
    config_cls = MagnitudeConfig

    def apply(self, model: nn.Module, config: MagnitudeConfig, ctx: PruneContext) -> StageResult:  # type: ignore[override]
        return run_mask_pruning(
            model, config, ctx, self.name, lambda _name, w: magnitude(w, norm=config.importance)
        )
