"""The pieces IMP needs around a training run: a replayable step plan, a step-range trainer, weight snapshots.

Why not `prunekit.data.train_classifier`: lottery tickets with late rewinding must save the weights after exactly k
optimizer steps, and every later round must replay steps k..T of the *same* run (same batches in the same order,
same learning rate at each step). So the batches of all epochs are drawn up front from one seeded generator
(`step_plan`), the learning rate is a pure function of the step (`lr_at`), and `train_range` runs any slice of it.

Snapshots are keyed by "module.tensor" and read a masked tensor's underlying `original`, so a snapshot taken before
masks were attached restores into the parametrized model (and the reverse): rewinding keeps the masks.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable, Iterator

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.nn.utils import parametrize
from torch.utils.data import DataLoader, Dataset

from prunekit.errors import PrunekitError
from prunekit.masks import current_mask

LossFn = Callable[[nn.Module, Tensor, Tensor], Tensor]
WARMUP = 0.2  # fraction of the steps with a rising learning rate, as train_classifier's one-cycle schedule


def lr_at(step: int, total: int, peak: float) -> float:
    """Learning rate at `step` of `total`: linear warm-up from peak/25 over the first 20%, then cosine to ~0."""
    warm = max(1, int(WARMUP * total))
    if step < warm:
        return peak * (0.04 + 0.96 * step / warm)
    frac = (step - warm) / max(1, total - warm)
    return peak * (0.5 * (1 + math.cos(math.pi * min(frac, 1.0))) + 1e-4)


def step_plan(n_samples: int, *, epochs: int, batch_size: int, seed: int) -> list[list[int]]:
    """Sample indices of every optimizer step of the run: `epochs` seeded shuffles cut into batches.

    The last, smaller batch of an epoch is dropped when the set is larger than one batch.
    """
    gen = torch.Generator().manual_seed(seed)
    plan: list[list[int]] = []
    for _ in range(epochs):
        perm = torch.randperm(n_samples, generator=gen).tolist()
        stop = n_samples - n_samples % batch_size if n_samples > batch_size else n_samples
        plan += [perm[i:i + batch_size] for i in range(0, stop, batch_size)]
    return plan


def cross_entropy(model: nn.Module, x: Tensor, y: Tensor) -> Tensor:
    """The default loss: cross-entropy of the model's logits."""
    return F.cross_entropy(model(x), y)


def train_range(model: nn.Module, train_ds: Dataset, plan: list[list[int]], *, start: int, lr: float,
                weight_decay: float, loss_fn: LossFn = cross_entropy, stop: int | None = None,
                on_step: Callable[[int], None] | None = None) -> float:
    """Run steps `start`..`stop` (default: the end) of `plan`: AdamW (fresh state), `lr_at`; return the mean loss.

    `on_step(done)` is called after each optimizer step with the number of steps done so far in the whole plan.
    The model is left in eval mode.
    """
    params = [p for p in model.parameters() if p.requires_grad]
    if not params:
        raise PrunekitError("the model has no trainable parameters")
    device = params[0].device
    opt = torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay)
    loader = DataLoader(train_ds, batch_sampler=plan[start:stop])
    total, seen = 0.0, 0
    model.train()
    try:
        for i, (x, y) in enumerate(loader, start=start):
            for group in opt.param_groups:
                group["lr"] = lr_at(i, len(plan), lr)
            loss = loss_fn(model, x.to(device), y.to(device))
            if not torch.isfinite(loss):
                raise PrunekitError(f"training diverged at step {i} (loss {loss.item()}); lower lr (now {lr})")
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            total += loss.item() * len(y)
            seen += len(y)
            if on_step is not None:
                on_step(i + 1)
    finally:
        model.eval()
    return total / max(seen, 1)


def _named_tensors(model: nn.Module) -> Iterator[tuple[str, Tensor]]:
    """(key, tensor) for every parameter and buffer, a masked tensor as its unmasked `original`, masks excluded."""
    for mod_name, module in model.named_modules():
        if "parametrizations" in mod_name.split("."):
            continue
        prefix = f"{mod_name}." if mod_name else ""
        if parametrize.is_parametrized(module):
            for tname, plist in module.parametrizations.items():  # type: ignore[union-attr]
                yield prefix + tname, plist.original
        for name, t in list(module.named_parameters(recurse=False)) + list(module.named_buffers(recurse=False)):
            yield prefix + name, t


def snapshot(model: nn.Module) -> dict[str, Tensor]:
    """A detached copy of every parameter and buffer (masked tensors: their unmasked values)."""
    return {k: t.detach().clone() for k, t in _named_tensors(model)}


@torch.no_grad()
def restore(model: nn.Module, saved: dict[str, Tensor]) -> None:
    """Copy `saved` back into the model, then zero the underlying values of masked-out entries (masks kept).

    Raises:
        PrunekitError: when the model's tensors and the snapshot's keys differ.
    """
    tensors = dict(_named_tensors(model))
    if tensors.keys() != saved.keys():
        odd = sorted(tensors.keys() ^ saved.keys())
        raise PrunekitError(f"cannot rewind: the model's tensors changed since the snapshot ({', '.join(odd[:4])})")
    for key, t in tensors.items():
        t.copy_(saved[key])
    for module in model.modules():
        if parametrize.is_parametrized(module):
            for tname, plist in module.parametrizations.items():  # type: ignore[union-attr]
                keep = current_mask(module, tname)
                if keep is not None:
                    plist.original.mul_(keep.to(plist.original.dtype))


def reinitialized(template: nn.Module, seed: int) -> nn.Module:
    """A copy of `template` without masks, every parameter freshly drawn by its module's `reset_parameters` (seeded).

    Raises:
        PrunekitError: when a parameter belongs to a module without `reset_parameters` (cannot be re-drawn).
    """
    model = copy.deepcopy(template)
    for module in model.modules():
        if parametrize.is_parametrized(module):
            cls = type(module)  # own class first: a deepcopy shares torch's generated Parametrized<Class>
            module.__class__ = type(cls.__name__, cls.__bases__, dict(cls.__dict__))
            for tname in list(module.parametrizations.keys()):  # type: ignore[union-attr]
                parametrize.remove_parametrizations(module, tname, leave_parametrized=False)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        for mod_name, module in model.named_modules():
            own = list(module.named_parameters(recurse=False))
            if not own:
                continue
            reset = getattr(module, "reset_parameters", None)
            if not callable(reset):
                raise PrunekitError(f"control: cannot re-initialize {mod_name or 'the model'}.{own[0][0]} "
                                    f"({type(module).__name__} has no reset_parameters); pass model_fn or set "
                                    "control: false")
            reset()
    return model
