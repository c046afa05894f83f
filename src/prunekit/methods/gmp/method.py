"""The `gmp` method: fine-tune on `ctx.data` (train split) while a `Pruner` raises the sparsity on its schedule.

Decisions use the train and validation splits only; the test split is never read. The run is deterministic for a
given seed (its own shuffling generator per epoch, no global-RNG shuffling) and, with `checkpoint_every`, resumable
after `kill -9` to the same final masks and weights as an uninterrupted run. Masks stay attached, as with
`magnitude`; `prunekit.finalize` / export bakes them.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn
from torch.utils.data import Dataset, default_collate

from prunekit.data.loops import evaluate_classifier
from prunekit.errors import PrunekitError
from prunekit.methods.base import Method, PruneContext, StageResult, register_method
from prunekit.methods.gmp.config import GmpConfig
from prunekit.training.bn import recalibrate_batchnorm
from prunekit.training.checkpoint import latest_checkpoint, load_checkpoint, save_checkpoint
from prunekit.training.pruner import Pruner

BN_BATCHES = 20


def _splits(data: Any) -> tuple[Dataset, Dataset]:
    if data is None:
        raise PrunekitError(
            "gmp fine-tunes the model and needs data: pass prunekit.prune(..., data=load_dataset('digits')) "
            "or `prunekit prune --data NAME`"
        )
    train, val = getattr(data, "train", None), getattr(data, "val", None)
    if train is None or val is None:
        raise PrunekitError(f"gmp needs data with .train and .val splits of (x, y) pairs, got {type(data).__name__}")
    if len(train) == 0 or len(val) == 0:
        raise PrunekitError(f"gmp: empty split (train {len(train)}, val {len(val)} samples)")
    return train, val


def _batch(ds: Dataset, idx: torch.Tensor) -> Any:
    tensors = getattr(ds, "tensors", None)
    if tensors is not None:
        return tuple(t[idx] for t in tensors)
    return default_collate([ds[int(i)] for i in idx])


class _Batches:
    """Batch `b` of epoch `e`, from a permutation seeded by (seed, e): any step can be re-made after a resume."""

    def __init__(self, ds: Dataset, batch_size: int, seed: int, device: torch.device) -> None:
        self.ds, self.seed, self.device = ds, seed, device
        self.batch_size = min(batch_size, len(ds))
        self.per_epoch = len(ds) // self.batch_size  # the last partial batch is dropped
        self._epoch, self._perm = -1, torch.empty(0)

    def get(self, epoch: int, b: int) -> Any:
        if epoch != self._epoch:
            gen = torch.Generator().manual_seed(self.seed * 1_000_003 + epoch)
            self._epoch, self._perm = epoch, torch.randperm(len(self.ds), generator=gen)
        batch = _batch(self.ds, self._perm[b * self.batch_size:(b + 1) * self.batch_size])
        return tuple(t.to(self.device) for t in batch)


@register_method
class GmpMethod(Method):
    """Gradual magnitude pruning while fine-tuning (Zhu & Gupta cubic schedule by default; needs data)."""

    name = "gmp"
    config_cls = GmpConfig

    def apply(self, model: nn.Module, config: GmpConfig, ctx: PruneContext) -> StageResult:  # type: ignore[override]
        from tqdm.auto import tqdm

        train, val = _splits(ctx.data)
        first = next(iter(model.parameters()), None)
        device = first.device if first is not None else torch.device("cpu")
        batches = _Batches(train, config.batch_size, config.seed, device)
        total = config.epochs * batches.per_epoch
        save_dir = config.checkpoint_dir or config.resume_dir
        notes: list[str] = []
        pruner = Pruner(model, config.pruner_config(), total_steps=total, execution_order=ctx.execution_order)
        ckpt = None
        if config.resume_dir is not None:
            path = latest_checkpoint(config.resume_dir)
            if path is None:
                notes.append(f"resume_dir {config.resume_dir} holds no checkpoint yet; started at step 0")
            else:
                ckpt = load_checkpoint(path)
                ckpt.restore(pruner=pruner, model=model)
        if ckpt is None:
            torch.manual_seed(config.seed)  # dropout and any other global-RNG use inside the model
            pruner.prepare()
        params = [p for p in model.parameters() if p.requires_grad]  # after the masks: the order a resume sees
        opt = torch.optim.AdamW(params, lr=config.lr, weight_decay=config.weight_decay)
        sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=total)
        pruner.attach_optimizer(opt)
        start, val_acc = 0, []
        if ckpt is not None:
            ckpt.restore(optimizer=opt, scheduler=sched, rng=True)
            start, val_acc = ckpt.step, list(ckpt.extra.get("val_accuracy", []))
            notes.append(f"resumed from {ckpt.path} at step {start} of {total}")
        loss_fn = nn.CrossEntropyLoss()
        bar = tqdm(total=total, initial=start, desc="gmp", disable=not ctx.progress, leave=False)
        model.train()
        try:
            for g in range(start, total):
                epoch, b = divmod(g, batches.per_epoch)
                x, y = batches.get(epoch, b)
                loss = loss_fn(model(x), y)
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                sched.step()
                pruner.step(g + 1)
                bar.update(1)
                bar.set_postfix(loss=f"{loss.item():.3f}", sparsity=f"{pruner.applied:.3f}")
                if b == batches.per_epoch - 1:
                    val_acc.append(evaluate_classifier(model, val))
                    model.train()
                if config.checkpoint_every and (g + 1) % config.checkpoint_every == 0 and g + 1 < total:
                    save_checkpoint(save_dir, g + 1, model=model, optimizer=opt, scheduler=sched, pruner=pruner,
                                    extra={"val_accuracy": val_acc})
        finally:
            bar.close()
            model.eval()
        result = pruner.finalize()
        result.method = self.name
        result.notes[:0] = notes
        recalibrated = False
        if config.recalibrate_bn:
            if any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in model.modules()):
                n = min(BN_BATCHES, batches.per_epoch)
                used = recalibrate_batchnorm(model, (batches.get(config.epochs, b)[0] for b in range(n)))
                recalibrated = True
                result.notes.append(f"BatchNorm statistics re-estimated on {used} train batches")
            else:
                result.notes.append("no BatchNorm layer: recalibrate_bn had nothing to do")
        summary = ", ".join(f"{a:.4f}" for a in val_acc)
        if recalibrated:
            summary += f"; after BN recalibration: {evaluate_classifier(model, val):.4f}"
        result.notes.append(
            f"{config.schedule.kind} schedule to sparsity {config.target_sparsity:g} over {total} steps "
            f"({config.epochs} epochs x {batches.per_epoch}); val accuracy per epoch: {summary}"
        )
        return result
