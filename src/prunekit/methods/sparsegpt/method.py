"""The `sparsegpt` method: Hessians gathered block by block, then the OBS sweep of solver.py on each layer."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from prunekit.layers import matrix_to_weight, own_weight, weight_as_matrix
from prunekit.llm.oneshot import run_oneshot
from prunekit.methods.base import Method, PruneContext, StageResult, register_method
from prunekit.methods.sparsegpt.config import SparseGPTConfig
from prunekit.methods.sparsegpt.solver import HessianAccumulator, sparsegpt_prune


@register_method
class SparseGPTMethod(Method):
    """SparseGPT: prune each layer and update its remaining weights to reconstruct its calibration outputs."""

    name = "sparsegpt"
    config_cls = SparseGPTConfig

    def apply(  # type: ignore[override]
        self, model: nn.Module, config: SparseGPTConfig, ctx: PruneContext
    ) -> StageResult:
        def prune_layer(name: str, module: nn.Module, stats: HessianAccumulator, sparsity: float | None) -> Tensor:
            with torch.no_grad():
                matrix = weight_as_matrix(module, module.weight)  # effective weight: earlier zeros stay zero
                new_w, keep = sparsegpt_prune(
                    matrix, stats.hessian(), sparsity, config.nm,
                    blocksize=config.blocksize, percdamp=config.percdamp, layer=name,
                )
                stored = own_weight(module)
                stored.copy_(matrix_to_weight(module, new_w, stored.shape).to(stored.dtype))
            return keep

        def make_stats(module: nn.Module) -> HessianAccumulator:
            return HessianAccumulator(weight_as_matrix(module, module.weight).shape[1])

        return run_oneshot(model, config, ctx, self.name, make_stats, prune_layer)
