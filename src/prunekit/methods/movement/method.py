"""The `movement` method: fine-tune on `ctx.data` (train split) while a `MovementPruner` learns the masks.

Decisions use the train and validation splits only (validation accuracy per epoch is reported); the test split is
never read. Batches are deterministic for a seed (the same per-epoch permutations as `gmp`). At the end the learned
masks are ordinary KeepMasks, as after `magnitude`; `prunekit.finalize` / export bakes them.
"""

from __future__ import annotations

import torch
from torch import nn

from prunekit.data.loops import evaluate_classifier
from prunekit.methods.base import Method, PruneContext, StageResult, register_method
from prunekit.methods.movement.config import MovementConfig
from prunekit.training import finetune_loop as loop
from prunekit.training.movement import MovementPruner


@register_method
class MovementMethod(Method):
    """Movement pruning while fine-tuning (Sanh et al. 2020; hard top-k or soft threshold; needs data)."""

    name = "movement"
    config_cls = MovementConfig

    def apply(self, model: nn.Module, config: MovementConfig,  # type: ignore[override]
              ctx: PruneContext) -> StageResult:
        from tqdm.auto import tqdm

        train, val = loop.require_splits(ctx.data, self.name)
        batches = loop.Batches(train, config.batch_size, config.seed, loop.model_device(model))
        total = config.epochs * batches.per_epoch
        torch.manual_seed(config.seed)  # dropout and any other global-RNG use inside the model
        pruner = MovementPruner(model, config.pruner_config(), total_steps=total,
                                execution_order=ctx.execution_order).prepare()
        opt = torch.optim.AdamW(pruner.param_groups(config.lr, config.score_lr, config.weight_decay))
        sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=total)
        loss_fn = nn.CrossEntropyLoss()
        val_acc: list[float] = []
        bar = tqdm(total=total, desc="movement", disable=not ctx.progress, leave=False)
        model.train()
        try:
            for g in range(total):
                epoch, b = divmod(g, batches.per_epoch)
                x, y = batches.get(epoch, b)
                loss = loss_fn(model(x), y)
                full = loss + pruner.regularisation_loss()
                opt.zero_grad(set_to_none=True)
                full.backward()
                opt.step()
                sched.step()
                pruner.step(g + 1)
                bar.update(1)
                bar.set_postfix(loss=f"{loss.item():.3f}", sparsity=f"{_sparsity(pruner):.3f}")
                if b == batches.per_epoch - 1:
                    val_acc.append(evaluate_classifier(model, val))
                    model.train()
        finally:
            bar.close()
            model.eval()
        result = pruner.finalize()
        result.method = self.name
        summary = ", ".join(f"{a:.4f}" for a in val_acc)
        result.notes.append(f"{config.mode} movement over {total} steps ({config.epochs} epochs x "
                            f"{batches.per_epoch}); val accuracy per epoch: {summary}")
        return result


def _sparsity(pruner: MovementPruner) -> float:
    masks = pruner.masks().values()
    return 1.0 - sum(int(m.sum()) for m in masks) / max(1, sum(m.numel() for m in masks))
