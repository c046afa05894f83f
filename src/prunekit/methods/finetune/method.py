"""The `finetune` stage: train the model that earlier stages pruned, on `ctx.data`'s train split, sparsity kept.

Pruned weights stay exactly zero: the masks stay attached (the forward uses `original * mask`) and after every
optimizer step the masked-out entries of the stored weights and of AdamW's state are zeroed. A structurally smaller
model (channels / heads removed) simply trains. With `distill`, the teacher is the dense model of this prune run
(`ctx.dense`, which `prunekit.prune` keeps when a later stage distils), or, when the recipe starts with `finetune`,
the model as it enters the stage. Batches, validation, checkpoint / resume and torchrun support are the shared
`training.finetune_run`, as in `gmp`; the test split is never read.
"""

from __future__ import annotations

from torch import nn

from prunekit.masks import current_mask, masked_modules
from prunekit.methods.base import Method, PruneContext, StageResult, register_method
from prunekit.methods.finetune.config import FinetuneConfig
from prunekit.training.finetune_run import FinetuneRun


def masked_sparsity(model: nn.Module) -> float | None:
    """Fraction of masked-out entries over every masked tensor (None without masks)."""
    zeros = total = 0
    for _name, module, tname in masked_modules(model):
        keep = current_mask(module, tname)
        zeros += int((~keep).sum())  # type: ignore[operator]
        total += keep.numel()  # type: ignore[union-attr]
    return zeros / total if total else None


@register_method
class FinetuneMethod(Method):
    """Fine-tune the pruned model (masks kept, pruned weights stay zero), optionally distilled from the dense one."""

    name = "finetune"
    config_cls = FinetuneConfig

    def apply(self, model: nn.Module, config: FinetuneConfig, ctx: PruneContext) -> StageResult:  # type: ignore
        before = masked_sparsity(model)
        run = FinetuneRun(model, config, ctx, self.name)
        if run.distiller is not None and ctx.dense is None and run.ckpt is None:
            run.notes.append("distill: no stage ran before this one, so the teacher is the model as it entered "
                             "finetune")
        run.train(progress=ctx.progress)
        result = StageResult(method=self.name)
        summary = run.finish(result.notes)
        after = masked_sparsity(model)
        kept = "no masks (dense or structurally pruned model)" if after is None else f"masked sparsity {after:.4f}"
        if before is not None and after != before:
            kept += f" (was {before:.4f})"
        result.notes.append(f"fine-tuned {run.total} steps ({config.epochs} epochs x {run.batches.per_epoch}); "
                            f"{kept}; val accuracy per epoch: {summary}")
        return result
