"""The `movement` method: fine-tune on `ctx.data` (train split) while a `MovementPruner` learns the masks.

It runs on the fine-tune loop that `gmp` and `finetune` share (`training.finetune_run`): deterministic batches for a
seed, AdamW with the scores in their own group (`score_lr`, no weight decay) and the soft regulariser added to the
loss, cosine learning rate, optional distillation from the dense model, BatchNorm recalibration at the end,
checkpoint / resume (`checkpoint_every`, `resume_dir`; a resumed run ends with the same masks and weights as an
uninterrupted one) and data parallelism under `torchrun` (the scores are parameters: DDP averages their gradients,
so every rank holds the same scores and masks). Decisions use the train and validation splits only; the test split
is never read. At the end the learned masks are ordinary KeepMasks, as after `magnitude`; `prunekit.finalize` /
export bakes them.
"""

from __future__ import annotations

from torch import nn

from prunekit.methods.base import Method, PruneContext, StageResult, register_method
from prunekit.methods.movement.config import MovementConfig
from prunekit.training.finetune_run import FinetuneRun
from prunekit.training.movement import MovementPruner


@register_method
class MovementMethod(Method):
    """Movement pruning while fine-tuning (Sanh et al. 2020; hard top-k or soft threshold; needs data)."""

    name = "movement"
    config_cls = MovementConfig

    def apply(self, model: nn.Module, config: MovementConfig,  # type: ignore[override]
              ctx: PruneContext) -> StageResult:
        run = FinetuneRun(
            model, config, ctx, self.name,
            make_pruner=lambda total: MovementPruner(model, config.pruner_config(), total_steps=total,
                                                     execution_order=ctx.execution_order),
            param_groups=lambda pruner: pruner.param_groups(config.lr, config.score_lr, config.weight_decay),
            extra_loss=lambda pruner: pruner.regularisation_loss(),
        )
        run.train(progress=ctx.progress)
        result = run.pruner.finalize()
        result.method = self.name
        result.sparsity_history = list(run.pruner.history)
        summary = run.finish(result.notes)
        result.notes.append(f"{config.mode} movement over {run.total} steps ({config.epochs} epochs x "
                            f"{run.batches.per_epoch}); val accuracy per epoch: {summary}")
        return result
