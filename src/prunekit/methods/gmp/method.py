"""The `gmp` method: fine-tune on `ctx.data` (train split) while a `Pruner` raises the sparsity on its schedule.

Decisions use the train and validation splits only; the test split is never read. The run is deterministic for a
given seed (its own shuffling generator per epoch, no global-RNG shuffling) and, with `checkpoint_every`, resumable
after `kill -9` to the same final masks and weights as an uninterrupted run. With `distill`, the loss is the
distillation loss from a frozen copy of the dense model (the one of this prune run, else the model as it enters the
stage). Under `torchrun` the steps run data-parallel and the masks are broadcast from rank 0 at every update. Masks
stay attached, as with `magnitude`; `prunekit.finalize` / export bakes them. The loop: `training.finetune_run`.
"""

from __future__ import annotations

from torch import nn

from prunekit.methods.base import Method, PruneContext, StageResult, register_method
from prunekit.methods.gmp.config import GmpConfig
from prunekit.training.finetune_run import FinetuneRun
from prunekit.training.pruner import Pruner


@register_method
class GmpMethod(Method):
    """Gradual magnitude pruning while fine-tuning (Zhu & Gupta cubic schedule by default; needs data)."""

    name = "gmp"
    config_cls = GmpConfig

    def apply(self, model: nn.Module, config: GmpConfig, ctx: PruneContext) -> StageResult:  # type: ignore[override]
        run = FinetuneRun(model, config, ctx, self.name, make_pruner=lambda total: Pruner(
            model, config.pruner_config(), total_steps=total, execution_order=ctx.execution_order))
        run.train(progress=ctx.progress)
        result = run.pruner.finalize()
        result.method = self.name
        result.sparsity_history = list(run.pruner.history)
        summary = run.finish(result.notes)
        result.notes.append(
            f"{config.schedule.kind} schedule to sparsity {config.target_sparsity:g} over {run.total} steps "
            f"({config.epochs} epochs x {run.batches.per_epoch}); val accuracy per epoch: {summary}"
        )
        return result
