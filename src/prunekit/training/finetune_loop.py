"""The fine-tuning loop that the `gmp`, `movement` and `finetune` stages share: deterministic batches, AdamW +
cosine learning rate, resume from a checkpoint, an optional distillation teacher, per-epoch validation accuracy,
data parallelism.

Determinism: batch `b` of epoch `e` is cut from a permutation seeded by (seed, e), so any step can be re-made after a
resume, and the run never touches the global RNG for shuffling. Under `torchrun` each rank keeps its slice of that
same batch (`distributed.shard`), so the union over ranks is the single-process batch.

These are the pieces; `training.finetune_run.FinetuneRun` puts them together in the order a stage needs
(checkpoint, teacher before any mask, masks, optimizer, resume, steps, BN) for `gmp`, `movement` and `finetune`.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.utils.data import Dataset, default_collate

from prunekit._atomic import atomic_write_bytes
from prunekit.data.loops import evaluate_classifier
from prunekit.errors import PrunekitError
from prunekit.masks import current_mask, masked_modules
from prunekit.training import distributed
from prunekit.training.bn import recalibrate_batchnorm
from prunekit.training.checkpoint import Checkpoint, latest_checkpoint, load_checkpoint
from prunekit.training.distill import Distiller
from prunekit.training.finetune_config import FinetuneFields

BN_BATCHES = 20
TEACHER_FILE = "teacher.safetensors"
AfterStep = Callable[[int], dict[str, str]]


def require_splits(data: Any, who: str) -> tuple[Dataset, Dataset]:
    """The train and val splits of `data`, or a one-line error saying what `who` (the stage) needs."""
    if data is None:
        raise PrunekitError(
            f"{who} fine-tunes the model and needs data: pass prunekit.prune(..., data=load_dataset('digits')) "
            "or `prunekit prune --data NAME`"
        )
    train, val = getattr(data, "train", None), getattr(data, "val", None)
    if train is None or val is None:
        raise PrunekitError(f"{who} needs data with .train and .val splits of (x, y) pairs, got {type(data).__name__}")
    if len(train) == 0 or len(val) == 0:
        raise PrunekitError(f"{who}: empty split (train {len(train)}, val {len(val)} samples)")
    return train, val


def model_device(model: nn.Module) -> torch.device:
    """The device of the model's first parameter (CPU for a model without any)."""
    first = next(iter(model.parameters()), None)
    return first.device if first is not None else torch.device("cpu")


class Batches:
    """Batch `b` of epoch `e`, from a permutation seeded by (seed, e): any step can be re-made after a resume."""

    def __init__(self, ds: Dataset, batch_size: int, seed: int, device: torch.device) -> None:
        self.ds, self.seed, self.device = ds, seed, device
        self.batch_size = min(batch_size, len(ds))
        self.per_epoch = len(ds) // self.batch_size  # the last partial batch is dropped
        self._epoch, self._perm = -1, torch.empty(0)

    def get(self, epoch: int, b: int, *, full: bool = False) -> tuple[Tensor, ...]:
        """The batch (this rank's shard of it under torchrun, unless `full`), on the model's device."""
        if epoch != self._epoch:
            gen = torch.Generator().manual_seed(self.seed * 1_000_003 + epoch)
            self._epoch, self._perm = epoch, torch.randperm(len(self.ds), generator=gen)
        idx = self._perm[b * self.batch_size:(b + 1) * self.batch_size]
        tensors = getattr(self.ds, "tensors", None)
        if tensors is not None:
            batch = tuple(t[idx] for t in tensors)
        else:
            batch = default_collate([self.ds[int(i)] for i in idx])
        batch = tuple(t.to(self.device) for t in batch)
        return batch if full else distributed.shard(batch)


@torch.no_grad()
def zero_pruned(model: nn.Module, optimizer: torch.optim.Optimizer | None = None) -> None:
    """Zero every masked-out entry of the stored weights and of the optimizer's same-shaped per-weight state.

    The forward already multiplies by the mask; this keeps `original` exactly zero too (no momentum, no stale value
    coming back if a mask is ever removed), as the Pruner does for the layers it owns.
    """
    state = optimizer.state if optimizer is not None else {}
    for _name, module, tname in masked_modules(model):
        pruned = ~current_mask(module, tname)  # type: ignore[operator]
        stored = module.parametrizations[tname].original  # type: ignore[index]
        for t in (stored, *state.get(stored, {}).values()):
            if isinstance(t, Tensor) and t.shape == pruned.shape:
                t.masked_fill_(pruned, 0)


def resync_masks(model: nn.Module, optimizer: torch.optim.Optimizer | None) -> int:
    """Under torchrun: broadcast rank 0's masks; when any rank's had drifted (the return value, the same on every
    rank), broadcast the weights and optimizer state too. Then re-zero the pruned entries. A no-op otherwise."""
    if not distributed.is_distributed():
        return 0
    drifted = distributed.broadcast_masks(model)
    if drifted:
        distributed.broadcast_module(model)
        if optimizer is not None:
            distributed.broadcast_optimizer(optimizer)
    zero_pruned(model, optimizer)
    return drifted


def teacher_source(model: nn.Module, ctx: Any) -> nn.Module:
    """The dense model of this prune run (`ctx.dense`, kept by `prunekit.prune` when a later stage distils), else
    the model as it enters the stage."""
    dense = getattr(ctx, "dense", None)
    return dense if dense is not None else model


def make_distiller(source: nn.Module, cfg: FinetuneFields, ckpt: Checkpoint | None,
                   notes: list[str], checkpointing: bool | None = None) -> Distiller | None:
    """A Distiller whose frozen teacher is a copy of `source`, or None when `cfg.distill` is unset.

    A resumed run's teacher must be the one the interrupted run had, whatever model the resumed run was handed (a
    checkpoint restores the student's weights, not the teacher's): so a checkpointing run writes the teacher's
    weights once, atomically, to `<checkpoint folder>/teacher.safetensors`, and a resume loads them from there.
    `checkpointing` says whether the run writes checkpoints (default: `cfg.checkpoint_every` is set; `iterative`
    checkpoints after every step whenever it has a folder).
    """
    if cfg.distill is None:
        return None
    distiller = Distiller(source, cfg.distill)
    if ckpt is not None:
        path = Path(ckpt.path).parent / TEACHER_FILE
        if not path.is_file():
            raise PrunekitError(f"resuming with distill, but {path} is missing (was the checkpoint made without "
                                "distill?); resume with the config that made it")
        from safetensors.torch import load_file

        _load_into(distiller.teacher, load_file(str(path)), path)
        notes.append(f"distillation teacher restored from {path}")
    distributed.broadcast_module(distiller.teacher)
    if checkpointing is None:
        checkpointing = getattr(cfg, "checkpoint_every", None) is not None
    if checkpointing and cfg.save_dir is not None and distributed.is_main():
        from safetensors.torch import save

        Path(cfg.save_dir).mkdir(parents=True, exist_ok=True)
        tensors = {k: v.detach().cpu().clone().contiguous() for k, v in distiller.teacher.state_dict().items()}
        atomic_write_bytes(Path(cfg.save_dir) / TEACHER_FILE, save(tensors))
    return distiller


def _load_into(module: nn.Module, tensors: dict[str, Tensor], path: Path) -> None:
    try:
        module.load_state_dict(tensors, strict=True)
    except RuntimeError as exc:
        first = str(exc).strip().splitlines()[0]
        raise PrunekitError(f"{path} does not fit this model's teacher ({first}); use the same model") from None


def find_checkpoint(cfg: FinetuneFields, notes: list[str]) -> Checkpoint | None:
    """The latest checkpoint of `cfg.resume_dir` (None, with a note, when it holds none yet)."""
    if cfg.resume_dir is None:
        return None
    path = latest_checkpoint(cfg.resume_dir)
    if path is None:
        notes.append(f"resume_dir {cfg.resume_dir} holds no checkpoint yet; started at step 0")
        return None
    return load_checkpoint(path)


def make_optimizer(model: nn.Module, cfg: FinetuneFields, total: int,
                   groups: list[dict[str, Any]] | None = None) -> tuple[Any, Any]:
    """AdamW over the trainable parameters (after the masks: the order a resume sees), or over `groups` (each may
    set its own lr / weight_decay; cfg's are the defaults), and cosine decay to 0."""
    if groups is None:
        groups = [{"params": [p for p in model.parameters() if p.requires_grad]}]
    if not any(g["params"] for g in groups):
        raise PrunekitError("the model has no trainable parameters to fine-tune")
    opt = torch.optim.AdamW(groups, lr=cfg.lr, weight_decay=cfg.weight_decay)
    return opt, torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=total)


def resume_point(ckpt: Checkpoint | None, opt: Any, sched: Any, notes: list[str], total: int) -> tuple[int, list]:
    """(first step, val accuracies so far): restores optimizer, scheduler and RNG from `ckpt`, or (0, [])."""
    if ckpt is None:
        return 0, []
    ckpt.restore(optimizer=opt, scheduler=sched, rng=True)
    notes.append(f"resumed from {ckpt.path} at step {ckpt.step} of {total}")
    return ckpt.step, list(ckpt.extra.get("val_accuracy", []))


class _Student:
    """The Distiller's view of a DDP-wrapped student: the bare model's module names (for the hidden-state hooks),
    the wrapper's forward (for the gradient all-reduce)."""

    def __init__(self, net: nn.Module, model: nn.Module) -> None:
        self.net, self.model = net, model

    def named_modules(self) -> Any:
        return self.model.named_modules()

    def __call__(self, x: Tensor) -> Tensor:
        return self.net(x)


def train_steps(model: nn.Module, batches: Batches, val: Dataset, *, opt: Any, sched: Any, start: int, total: int,
                val_acc: list[float], distiller: Distiller | None, after_step: AfterStep,
                save: Callable[[int], None] | None, checkpoint_every: int | None, desc: str, progress: bool,
                extra_loss: Callable[[], Tensor] | None = None) -> None:
    """Run optimizer steps `start`..`total`; validation accuracy is appended to `val_acc` after every epoch.

    `after_step(done)` runs after each optimizer step (e.g. the pruner's step) and returns progress-bar fields;
    `save(done)` writes a checkpoint every `checkpoint_every` steps (rank 0 only); `extra_loss()`, when given, is
    added to the loss that is back-propagated (the progress bar shows the task / distillation loss). Under torchrun
    the forward and backward run through DistributedDataParallel. The model is left in eval mode.
    """
    from tqdm.auto import tqdm

    net = distributed.wrap(model)
    student = _Student(net, model)
    bar = tqdm(total=total, initial=start, desc=desc, disable=not (progress and distributed.is_main()), leave=False)
    net.train()
    try:
        for g in range(start, total):
            epoch, b = divmod(g, batches.per_epoch)
            x, y = batches.get(epoch, b)
            if distiller is not None:
                loss = distiller.loss(student, x, y)  # type: ignore[arg-type]
            else:
                loss = F.cross_entropy(net(x), y)
            full = loss + extra_loss() if extra_loss is not None else loss
            if not torch.isfinite(full):
                raise PrunekitError(f"{desc}: training diverged at step {g} (loss {full.item()}); lower lr")
            opt.zero_grad(set_to_none=True)
            full.backward()
            opt.step()
            sched.step()
            fields = after_step(g + 1)
            bar.update(1)
            bar.set_postfix(loss=f"{loss.item():.3f}", **fields)
            if b == batches.per_epoch - 1:
                distributed.broadcast_module(model, parameters=False)  # rank 0's BN statistics everywhere
                val_acc.append(evaluate_classifier(model, val))
                net.train()
            if save is not None and checkpoint_every and (g + 1) % checkpoint_every == 0 and g + 1 < total:
                if distributed.is_main():
                    save(g + 1)
    finally:
        bar.close()
        model.eval()


def finish(model: nn.Module, cfg: FinetuneFields, batches: Batches, val: Dataset, val_acc: list[float],
           notes: list[str]) -> str:
    """Optional BatchNorm recalibration (noted), then the per-epoch validation summary text."""
    recalibrated = False
    if cfg.recalibrate_bn:
        if any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in model.modules()):
            n = min(BN_BATCHES, batches.per_epoch)  # full (unsharded) batches: identical statistics on every rank
            used = recalibrate_batchnorm(model, (batches.get(cfg.epochs, b, full=True)[0] for b in range(n)))
            recalibrated = True
            notes.append(f"BatchNorm statistics re-estimated on {used} train batches")
        else:
            notes.append("no BatchNorm layer: recalibrate_bn had nothing to do")
    summary = ", ".join(f"{a:.4f}" for a in val_acc)
    if recalibrated:
        summary += f"; after BN recalibration: {evaluate_classifier(model, val):.4f}"
    return summary

