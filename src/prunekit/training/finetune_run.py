"""`FinetuneRun`: one training stage's fine-tuning, put together from `finetune_loop`'s pieces in the safe order.

    run = FinetuneRun(model, cfg, ctx, "gmp", make_pruner=lambda total: Pruner(model, ..., total_steps=total))
    run.train(progress=ctx.progress)        # steps start..total; pruner.step + mask sync after each, checkpoints
    result = run.pruner.finalize(); summary = run.finish(result.notes)

The order matters for resume and for the teacher: the checkpoint is found first; the distillation teacher is copied
before any mask is attached (it is the dense model); then the pruner's state (which attaches the masks) and the
model are restored, or, on a fresh start, the global RNG is seeded and the pruner prepared; only then is the
optimizer built (its parameter order is the masked model's) and its state, the scheduler's and the RNG restored.
`movement` passes two hooks: `param_groups` (its scores get their own learning rate) and `extra_loss` (the soft
regulariser). Without a pruner (`finetune`) the masks that earlier stages attached stay as they are and pruned
entries are re-zeroed after every step.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from prunekit.training import distributed
from prunekit.training import finetune_loop as loop
from prunekit.training.checkpoint import save_checkpoint
from prunekit.training.finetune_config import FinetuneFields


class FinetuneRun:
    """Data, teacher, masks, optimizer and resume point of one stage; `train` runs its steps, `finish` ends it.

    Args:
        model: the model the stage trains in place.
        cfg: the stage's config (FinetuneFields plus a `seed`).
        ctx: the PruneContext (`data`, `dense`, `execution_order`, `progress`).
        who: the stage's name, for messages and the progress bar.
        make_pruner: total steps -> a Pruner (anything with prepare / step / attach_optimizer / state_dict /
            load_state_dict / applied), or None for plain fine-tuning.
        param_groups: pruner -> the optimizer's parameter groups (e.g. movement scores at their own lr); default:
            every trainable parameter at `cfg.lr` / `cfg.weight_decay`. Called after the pruner is prepared.
        extra_loss: pruner -> a term added to the training loss at every step (e.g. movement's regulariser).
    """

    def __init__(self, model: nn.Module, cfg: FinetuneFields, ctx: Any, who: str,
                 make_pruner: Callable[[int], Any] | None = None,
                 param_groups: Callable[[Any], list[dict[str, Any]]] | None = None,
                 extra_loss: Callable[[Any], torch.Tensor] | None = None) -> None:
        self.model, self.cfg, self.who = model, cfg, who
        self.train_ds, self.val = loop.require_splits(ctx.data, who)
        distributed.join_from_env()
        seed = int(cfg.seed)  # type: ignore[attr-defined]
        self.batches = loop.Batches(self.train_ds, cfg.batch_size, seed, loop.model_device(model))
        self.total = cfg.epochs * self.batches.per_epoch
        self.notes: list[str] = []
        self.ckpt = loop.find_checkpoint(cfg, self.notes)
        self.distiller = loop.make_distiller(loop.teacher_source(model, ctx), cfg, self.ckpt, self.notes)
        self.pruner = make_pruner(self.total) if make_pruner is not None else None
        if self.ckpt is not None:
            self.ckpt.restore(pruner=self.pruner, model=model)
        else:
            torch.manual_seed(seed)  # dropout and any other global-RNG use inside the model
            if self.pruner is not None:
                self.pruner.prepare()
        groups = param_groups(self.pruner) if param_groups is not None else None
        self.opt, self.sched = loop.make_optimizer(model, cfg, self.total, groups)
        self.extra_loss = (lambda: extra_loss(self.pruner)) if extra_loss is not None else None
        if self.pruner is not None:
            self.pruner.attach_optimizer(self.opt)
        self.drifted = loop.resync_masks(model, self.opt)  # torchrun: rank 0's masks everywhere from the start
        loop.zero_pruned(model, self.opt)
        self.start, self.val_acc = loop.resume_point(self.ckpt, self.opt, self.sched, self.notes, self.total)

    def _after_step(self, done: int) -> dict[str, str]:
        if self.pruner is None:
            loop.zero_pruned(self.model, self.opt)
            return {}
        if self.pruner.step(done):
            self.drifted += loop.resync_masks(self.model, self.opt)
        return {"sparsity": f"{self.pruner.applied:.3f}"}

    def _save(self, done: int) -> None:
        save_checkpoint(self.cfg.save_dir, done, model=self.model, optimizer=self.opt,  # type: ignore[arg-type]
                        scheduler=self.sched, pruner=self.pruner, extra={"val_accuracy": self.val_acc})

    def train(self, progress: bool = False) -> None:
        """Run the remaining optimizer steps (checkpointing every `checkpoint_every` on rank 0)."""
        loop.train_steps(self.model, self.batches, self.val, opt=self.opt, sched=self.sched, start=self.start,
                         total=self.total, val_acc=self.val_acc, distiller=self.distiller, extra_loss=self.extra_loss,
                         after_step=self._after_step, save=self._save, checkpoint_every=self.cfg.checkpoint_every,
                         desc=self.who, progress=progress)

    def finish(self, notes: list[str]) -> str:
        """Sync masks once more (torchrun), add this run's notes, recalibrate BN; return the val-accuracy summary."""
        self.drifted += loop.resync_masks(self.model, self.opt)  # e.g. finalize() pruned at once
        notes[:0] = self.notes
        if self.distiller is not None:
            d = self.distiller.config
            notes.append(f"distilled from the dense model (T={d.temperature:g}, alpha={d.alpha:g})")
        if distributed.is_distributed():
            notes.append(f"data-parallel on {distributed.world_size()} ranks; masks broadcast from rank 0 "
                         f"({self.drifted} mask(s) had drifted on some rank)")
        return loop.finish(self.model, self.cfg, self.batches, self.val, self.val_acc, notes)
