"""Plain training and evaluation loops for the small classifiers (also used to fine-tune pruned models).

`train_classifier` is an ordinary loop over `model.parameters()` (AdamW, one-cycle learning rate, cross-entropy), so
it works unchanged on models whose weights carry `torch.nn.utils.parametrize` masks: the optimizer updates the
parametrization's `original` tensor and the mask is applied on every forward. It is seeded: the same model, data and
arguments give the same weights.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset

from prunekit.errors import PrunekitError, choices_text

Augment = Callable[[torch.Tensor, torch.Generator], torch.Tensor]


def random_shift(x: torch.Tensor, gen: torch.Generator, max_shift: int = 1) -> torch.Tensor:
    """Translate each sample by a random integer offset in [-max_shift, max_shift] along every spatial axis.

    Zero padding; works for (B, C, L) signals and (B, C, H, W) images.
    """
    spatial = x.shape[2:]
    pad = [max_shift] * (2 * len(spatial))
    padded = nn.functional.pad(x, pad)
    offsets = torch.randint(0, 2 * max_shift + 1, (x.shape[0], len(spatial)), generator=gen)
    out = torch.empty_like(x)
    # One slice per distinct offset (at most (2*max_shift+1)**dims of them), not one per sample.
    for combo in torch.unique(offsets, dim=0):
        rows = torch.all(offsets == combo, dim=1)
        idx = (rows, slice(None)) + tuple(slice(int(o), int(o) + s) for o, s in zip(combo, spatial))
        out[rows] = padded[idx]
    return out


AUGMENTS: dict[str, Augment] = {"none": lambda x, gen: x, "random-shift": random_shift}


def _device_of(model: nn.Module) -> torch.device:
    p = next(iter(model.parameters()), None)
    return p.device if p is not None else torch.device("cpu")


def train_classifier(model: nn.Module, train_ds: Dataset, *, epochs: int, lr: float, batch_size: int = 64,
                     seed: int = 0, progress: bool = True, weight_decay: float = 1e-4, label_smoothing: float = 0.0,
                     augment: str = "none", device: str | torch.device | None = None) -> list[float]:
    """Train a classifier with AdamW and a one-cycle learning rate; return the mean loss of each epoch.

    Args:
        model: Maps a batch of inputs to logits (B, num_classes). Trained in place; left in eval mode.
        train_ds: Yields `(x, y)` pairs.
        epochs: Passes over `train_ds`.
        lr: Peak learning rate of the one-cycle schedule.
        batch_size: Samples per step (the last, smaller batch of an epoch is dropped when the set is larger).
        seed: Seeds the shuffling and the augmentation (not the model's initialisation).
        progress: Show a tqdm bar with the running loss.
        weight_decay: AdamW weight decay.
        label_smoothing: Cross-entropy label smoothing.
        augment: "none" or "random-shift" (±1 step translation, zero padded).
        device: Where to train; default: where the model's parameters are.
    """
    from tqdm.auto import tqdm

    if not isinstance(epochs, int) or epochs < 1:
        raise PrunekitError(f"epochs must be a positive integer, got {epochs!r}")
    if not lr > 0:
        raise PrunekitError(f"lr must be positive, got {lr!r}")
    if not isinstance(batch_size, int) or batch_size < 1:
        raise PrunekitError(f"batch_size must be a positive integer, got {batch_size!r}")
    if augment not in AUGMENTS:
        raise PrunekitError(f"unknown augment {augment!r}; valid: {choices_text(AUGMENTS)}")
    params = [p for p in model.parameters() if p.requires_grad]
    if not params:
        raise PrunekitError("the model has no trainable parameters")
    device = torch.device(device) if device is not None else _device_of(model)
    model.to(device)
    gen = torch.Generator().manual_seed(seed)
    loader = DataLoader(train_ds, batch_size=batch_size, shuffle=True, generator=gen,
                        drop_last=len(train_ds) > batch_size)
    opt = torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=lr, total_steps=epochs * len(loader), pct_start=0.2)
    loss_fn = nn.CrossEntropyLoss(label_smoothing=label_smoothing)
    history = []
    bar = tqdm(total=epochs * len(loader), desc="train", disable=not progress, leave=False)
    model.train()
    try:
        for _ in range(epochs):
            total, n = 0.0, 0
            for x, y in loader:
                x = AUGMENTS[augment](x, gen).to(device)
                y = y.to(device)
                loss = loss_fn(model(x), y)
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                sched.step()
                value = loss.detach().item()
                total += value * len(y)
                n += len(y)
                bar.update(1)
                bar.set_postfix(loss=f"{value:.3f}")
            history.append(total / n)
    finally:
        bar.close()
        model.eval()
    return history


@torch.no_grad()
def evaluate_classifier(model: nn.Module, dataset: Dataset, batch_size: int = 512,
                        device: str | torch.device | None = None) -> float:
    """Return the top-1 accuracy of `model` on `dataset` (pairs `(x, y)`), in eval mode; the mode is restored."""
    if len(dataset) == 0:
        raise PrunekitError("cannot evaluate on an empty dataset")
    device = torch.device(device) if device is not None else _device_of(model)
    was_training = model.training
    model.eval()
    correct = 0
    try:
        for x, y in DataLoader(dataset, batch_size=batch_size):
            pred = model(x.to(device)).argmax(dim=-1)
            correct += int((pred.cpu() == y).sum())
    finally:
        model.train(was_training)
    return correct / len(dataset)
