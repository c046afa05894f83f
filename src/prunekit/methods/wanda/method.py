"""The `wanda` method: input norms gathered block by block, then the per-row Wanda mask (see scores.py)."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from prunekit.layers import weight_as_matrix
from prunekit.llm.oneshot import run_oneshot
from prunekit.masks import current_mask
from prunekit.methods.base import Method, PruneContext, StageResult, register_method
from prunekit.methods.wanda.config import WandaConfig
from prunekit.methods.wanda.scores import InputNormAccumulator, per_row_keep_mask, wanda_scores


def _in_features(module: nn.Module) -> int:
    return weight_as_matrix(module, module.weight).shape[1]


@register_method
class WandaMethod(Method):
    """Wanda: zero the weights with the lowest |W| * input norm in each output row (unstructured or N:M)."""

    name = "wanda"
    config_cls = WandaConfig

    def apply(self, model: nn.Module, config: WandaConfig, ctx: PruneContext) -> StageResult:  # type: ignore[override]
        def prune_layer(_name: str, module: nn.Module, stats: InputNormAccumulator, sparsity: float | None) -> Tensor:
            with torch.no_grad():
                scores = wanda_scores(weight_as_matrix(module, module.weight), stats.norms())
                earlier = current_mask(module)
                if earlier is not None:  # weights an earlier stage pruned stay pruned and count toward the sparsity
                    scores = scores.masked_fill(~weight_as_matrix(module, earlier), float("-inf"))
            if config.nm is not None:
                return config.nm.keep_mask(scores)
            return per_row_keep_mask(scores, float(sparsity or 0.0))

        return run_oneshot(
            model, config, ctx, self.name, lambda m: InputNormAccumulator(_in_features(m)), prune_layer
        )
