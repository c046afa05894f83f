"""Calibration plumbing: turn `ctx.data` into batches, and collect gradients / input statistics over them.

Accepted data (the `data=` of `prunekit.prune`, or the CLI's `--data`):
- a Tensor (one batch of inputs), a dict (one batch of Hugging Face kwargs, optional "labels") or a tuple
  `(inputs, targets)` (one batch);
- a list / iterable / DataLoader whose items are batches: a Tensor, an `(inputs, targets)` pair (a 2-tuple whose
  second item is a Tensor, as a DataLoader yields it), or a dict of kwargs (with optional "labels");
- a DatasetSplits-like object (has `.train`, a dataset of `(x, y)` samples): a seeded sample of its train split,
  stacked into batches of `batch_size`.
Only the first `calib_batches` batches are used. Everything here is plumbing (hooks, forward / backward passes);
the maths over what it collects lives in importance.py, importance_data.py and compensate.py.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from prunekit.errors import PrunekitError
from prunekit.layers import call_model, eval_mode

DATA_FORMS = ("a Tensor, a dict of model kwargs, a list or DataLoader of such batches or of (inputs, targets) "
              "pairs, or a DatasetSplits (its train split is used)")


@dataclass(frozen=True)
class Batch:
    """One calibration batch: model inputs (Tensor, tuple of positional args, or dict of kwargs) and targets."""

    inputs: Any
    target: Tensor | None = None


def _is_pair(item: Any) -> bool:
    return isinstance(item, (tuple, list)) and len(item) == 2 and isinstance(item[1], Tensor)


def _as_batch(item: Any) -> Batch:
    if _is_pair(item):
        return Batch(item[0], item[1])
    if isinstance(item, (Tensor, Mapping)) or isinstance(item, (tuple, list)):
        return Batch(item)
    raise PrunekitError(f"calibration data: a batch is a {type(item).__name__}; expected {DATA_FORMS}")


def _from_splits(train: Any, n: int, batch_size: int, seed: int) -> list[Batch]:
    size = len(train)
    if size == 0:
        raise PrunekitError("calibration data: the train split is empty")
    order = torch.randperm(size, generator=torch.Generator().manual_seed(seed))[: n * batch_size].tolist()
    out = []
    for start in range(0, len(order), batch_size):
        items = [train[i] for i in order[start:start + batch_size]]
        first = items[0]
        if not (isinstance(first, (tuple, list)) and isinstance(first[0], Tensor)):
            raise PrunekitError(f"calibration data: the train split yields {type(first).__name__} items, not (x, y) "
                                "tensor pairs; pass tokenized batches (dicts of tensors) instead")
        x = torch.stack([it[0] for it in items])
        y = torch.as_tensor([int(it[1]) for it in items]) if len(first) > 1 else None
        out.append(Batch(x, y))
    return out


def calibration_batches(data: Any, n: int, batch_size: int = 32, seed: int = 0) -> list[Batch]:
    """The first `n` calibration batches of `data` (see the module docstring for the accepted forms).

    Raises:
        PrunekitError: data of an unknown form, or no batch at all.
    """
    if not isinstance(data, (Tensor, Mapping)) and hasattr(data, "train") and not callable(data.train):
        return _from_splits(data.train, n, batch_size, seed)
    if isinstance(data, (Tensor, Mapping)) or (isinstance(data, tuple) and _is_pair(data)):
        return [_as_batch(data)]
    if not isinstance(data, Iterable) or isinstance(data, (str, bytes)):
        raise PrunekitError(f"calibration data is a {type(data).__name__}; expected {DATA_FORMS}")
    out = []
    for item in data:
        if len(out) >= n:
            break
        out.append(_as_batch(item))
    if not out:
        raise PrunekitError("calibration data is empty")
    return out


def require_batches(data: Any, n: int, batch_size: int, why: str) -> list[Batch]:
    """`calibration_batches`, or a PrunekitError telling how to pass data when there is none."""
    if data is None:
        raise PrunekitError(f"structured: {why} needs calibration data; pass data=... to prunekit.prune "
                            "(a DataLoader, a list of batches or (inputs, targets) pairs) or --data on the CLI")
    return calibration_batches(data, n, batch_size)


def to_device(obj: Any, device: torch.device) -> Any:
    """Move every tensor in a (nested) batch to `device`."""
    if isinstance(obj, Tensor):
        return obj.to(device)
    if isinstance(obj, Mapping):
        return {k: to_device(v, device) for k, v in obj.items()}
    if isinstance(obj, (tuple, list)):
        return type(obj)(to_device(v, device) for v in obj)
    return obj


def model_device(model: nn.Module) -> torch.device:
    """Device of the model's first parameter (CPU for a parameterless model)."""
    return next((p.device for p in model.parameters()), torch.device("cpu"))


def main_output(out: Any) -> Tensor:
    """The main tensor of a forward's output: a Tensor, else `logits` / `last_hidden_state` / the first tensor."""
    if isinstance(out, Tensor):
        return out
    for key in ("logits", "last_hidden_state"):
        value = getattr(out, key, None)
        if isinstance(value, Tensor):
            return value
    if isinstance(out, Mapping):
        out = list(out.values())
    if isinstance(out, (tuple, list)) and out and isinstance(out[0], Tensor):
        return out[0]
    raise PrunekitError(f"structured: cannot find the output tensor in a {type(out).__name__}")


def batch_loss(model: nn.Module, batch: Batch) -> Tensor:
    """Loss of one batch: cross-entropy on integer targets (MSE on float targets of the output's shape), else the
    `.loss` a Hugging Face model returns for "labels" in its inputs."""
    out = call_model(model, batch.inputs)
    if batch.target is not None:
        logits = main_output(out)
        target = batch.target.to(logits.device)
        if target.is_floating_point():
            if target.shape != logits.shape:
                raise PrunekitError(f"calibration targets of shape {list(target.shape)} do not match the output "
                                    f"{list(logits.shape)} (float targets are regression targets)")
            return F.mse_loss(logits, target)
        return F.cross_entropy(logits.flatten(0, -2).float(), target.flatten())
    loss = getattr(out, "loss", None)
    if isinstance(loss, Tensor):
        return loss
    raise PrunekitError("structured: gradient importance needs a loss: give (inputs, targets) batches, or dict "
                        "batches with 'labels' for a Hugging Face model (which then returns .loss)")


@dataclass
class GradStats:
    """Per tensor name: the gradient summed over batches, and the sum of squared per-batch gradients."""

    grad: dict[str, Tensor] = field(default_factory=dict)
    grad_sq: dict[str, Tensor] = field(default_factory=dict)


def collect_gradients(model: nn.Module, batches: Sequence[Batch], tensors: Mapping[str, Tensor]) -> GradStats:
    """Backward every batch (model in eval mode) and accumulate the gradients of `tensors` (name -> parameter).

    The model's existing `.grad` and `requires_grad` flags are restored afterwards."""
    params = list(model.parameters())
    saved = [(p, p.grad, p.requires_grad) for p in params]
    stats = GradStats()
    device = model_device(model)
    try:
        for p in params:
            p.grad = None
            p.requires_grad_(True)
        with eval_mode(model), torch.enable_grad():
            for batch in batches:
                loss = batch_loss(model, Batch(to_device(batch.inputs, device), batch.target))
                loss.backward()
                for name, t in tensors.items():
                    if t.grad is None:
                        continue
                    g = t.grad.detach().to("cpu", torch.float64)
                    stats.grad[name] = stats.grad.get(name, 0) + g
                    stats.grad_sq[name] = stats.grad_sq.get(name, 0) + g.square()
                for p in params:
                    p.grad = None
    finally:
        for p, grad, flag in saved:
            p.grad = grad
            p.requires_grad_(flag)
    return stats


@dataclass
class InputStats:
    """Per-channel statistics of a module's input over the calibration batches (float64, on CPU).

    `count` rows were seen (tokens, or pixels for a conv); `total` / `total_sq` sum x and x**2 per channel;
    `gram` (channels x channels, sum of x x^T) only when asked for."""

    count: int = 0
    total: Tensor | None = None
    total_sq: Tensor | None = None
    gram: Tensor | None = None

    def add(self, rows: Tensor, with_gram: bool) -> None:
        rows = rows.detach().to("cpu", torch.float64)
        self.count += rows.shape[0]
        self.total = rows.sum(0) + (0 if self.total is None else self.total)
        self.total_sq = rows.square().sum(0) + (0 if self.total_sq is None else self.total_sq)
        if with_gram:
            self.gram = rows.T @ rows + (0 if self.gram is None else self.gram)


def input_rows(module: nn.Module, x: Tensor) -> Tensor:
    """A module's input as (rows, channels): the last dim for Linear, dim 1 for a conv (every position a row)."""
    if isinstance(module, nn.modules.conv._ConvNd):
        return x.movedim(1, -1).reshape(-1, x.shape[1])
    return x.reshape(-1, x.shape[-1])


def collect_inputs(model: nn.Module, batches: Sequence[Batch], modules: Mapping[str, nn.Module],
                   gram: frozenset[str] = frozenset(),
                   rows_of: Callable[[nn.Module, Tensor], Tensor] = input_rows) -> dict[str, InputStats]:
    """Forward every batch (no grad, eval mode) and gather the input statistics of `modules` (name -> module);
    the Gram matrix only for the names in `gram`. `rows_of(module, input)` gives the (rows, columns) view."""
    stats = {name: InputStats() for name in modules}
    hooks = []
    tokens: list[Tensor | None] = [None]  # the current batch's attention mask (B, T), when it has one

    def hook_for(name: str):
        def hook(module: nn.Module, args: tuple, kwargs: dict) -> None:
            x = args[0] if args else next(iter(kwargs.values()))
            mask = tokens[0]
            if (mask is not None and x.dim() == 3 and tuple(x.shape[:2]) == tuple(mask.shape)
                    and not isinstance(module, nn.modules.conv._ConvNd)):
                x = x[mask.to(device=x.device, dtype=torch.bool)]  # padding tokens are not data: leave them out
            stats[name].add(rows_of(module, x), name in gram)
        return hook

    for name, module in modules.items():
        hooks.append(module.register_forward_pre_hook(hook_for(name), with_kwargs=True))
    try:
        for batch in batches:
            inputs = batch.inputs
            tokens[0] = inputs.get("attention_mask") if isinstance(inputs, Mapping) else None
            run_outputs(model, [batch])
    finally:
        for h in hooks:
            h.remove()
    return stats


def run_outputs(model: nn.Module, batches: Sequence[Batch]) -> list[Tensor]:
    """The main output tensor of every batch (no grad, eval mode), detached on CPU."""
    device = model_device(model)
    outs = []
    with eval_mode(model), torch.no_grad():
        for batch in batches:
            outs.append(main_output(call_model(model, to_device(batch.inputs, device))).detach().to("cpu"))
    return outs


def output_error(reference: Sequence[Tensor], outputs: Sequence[Tensor]) -> tuple[float, float]:
    """(relative L2 error ||y - ref|| / ||ref||, mean cosine similarity per row) over all batches."""
    num = den = 0.0
    cos = []
    for r, y in zip(reference, outputs):
        r64, y64 = r.double(), y.double()
        num += float((y64 - r64).square().sum())
        den += float(r64.square().sum())
        cos.append(F.cosine_similarity(y64.reshape(-1, r64.shape[-1]), r64.reshape(-1, r64.shape[-1]), dim=-1))
    return (num / den) ** 0.5 if den > 0 else 0.0, float(torch.cat(cos).mean())
