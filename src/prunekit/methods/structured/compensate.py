"""Compensation after surgery: fold what the removed input channels contributed back into the consuming layers.

`least_squares` (per Linear, transformers Conv1D, Conv2d with groups=1 and zero padding, or 1x1 Conv1d / Conv3d,
that lost input channels): with X the layer's dense inputs over the calibration batches (rows = tokens, or output positions with the
conv's input patch unfolded: a channel owns its kh*kw columns), W its weight as (out, columns) and b its bias, the
kept columns K and the bias are refit so the layer's output changes as little as possible:

    [W' b'] = argmin || [X 1] [W b]^T - [X_K 1] [W' b']^T ||^2 + lam ||[W' b']||^2
            = [W b] G[:, K+] (G[K+, K+] + lam I)^-1,   G = [X 1]^T [X 1],  K+ = K and the constant column,

solved in float64 (lam = damp * mean of the diagonal of G[K+, K+]). Without damping the old weights restricted to K
are a feasible point, so the layer's calibration error never grows; its bias part alone is FLAP's compensation
b += W[:, removed] @ mean(X[:, removed]) when the removed channels are uncorrelated with the kept ones. A layer
without bias is refit without the constant column. The statistics come from the dense model before surgery, and
the refit is written after the equivalence check (which compares against the uncompensated pruned model).

`bn`: re-estimate BatchNorm running statistics on the calibration batches (prunekit.training.bn).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from prunekit.errors import PrunekitError
from prunekit.methods.structured.calib import (
    Batch,
    InputStats,
    collect_inputs,
    input_rows,
    model_device,
    output_error,
    run_outputs,
    to_device,
)
from prunekit.training.bn import recalibrate_batchnorm


def refit(
    weight: Tensor, bias: Tensor | None, stats: InputStats, keep: Tensor, damp: float
) -> tuple[Tensor, Tensor | None]:
    """Least-squares refit of a (out, in) weight's kept input columns and its bias (see the module docstring).

    Args:
        weight: the dense weight (out, in); bias: (out,) or None.
        stats: the layer's input statistics with `gram` (in, in), `total` (in,) and `count`.
        keep: (in,) bool, the kept input channels.
        damp: ridge damping relative to the mean diagonal.

    Returns:
        (weight (out, kept), bias (out,) or None), float64.
    """
    if stats.gram is None or stats.total is None or stats.count == 0:
        raise PrunekitError("least_squares compensation: no calibration inputs reached the layer")
    w = weight.detach().to("cpu", torch.float64)
    g = stats.gram
    keep_idx = keep.nonzero().flatten()
    if bias is not None:
        n = g.shape[0]
        aug = torch.zeros(n + 1, n + 1, dtype=torch.float64)
        aug[:n, :n], aug[:n, n], aug[n, :n], aug[n, n] = g, stats.total, stats.total, float(stats.count)
        g = aug
        w = torch.cat([w, bias.detach().to("cpu", torch.float64)[:, None]], 1)
        keep_idx = torch.cat([keep_idx, torch.tensor([n])])
    g_kk = g[keep_idx][:, keep_idx]
    lam = damp * float(g_kk.diagonal().mean()) if g_kk.numel() else 0.0
    rhs = w @ g[:, keep_idx]  # (out, K+)
    eye = torch.eye(len(keep_idx), dtype=torch.float64)
    new = torch.linalg.solve(g_kk + lam * eye, rhs.T).T  # G_kk symmetric: solve(G_kk, rhs^T)^T = rhs G_kk^-1
    if bias is None:
        return new, None
    return new[:, :-1], new[:, -1]


MAX_COLUMNS = 8192  # a layer with more input columns (channels x kernel) is not refit: its Gram matrix is too big


def _is_conv1d(module: nn.Module) -> bool:
    return type(module).__name__ == "Conv1D"  # transformers Conv1D: y = x @ W + b, weight (in, out)


def _refittable(module: nn.Module) -> bool:
    if isinstance(module, nn.Linear) or _is_conv1d(module):
        return module.weight.ndim == 2 and module.weight.shape[_in_dim(module)] <= MAX_COLUMNS
    if not isinstance(module, nn.modules.conv._ConvNd) or module.transposed or module.groups != 1:
        return False
    if module.in_channels * math.prod(module.kernel_size) > MAX_COLUMNS or isinstance(module.padding, str):
        return False
    if isinstance(module, nn.Conv2d):
        return module.padding_mode == "zeros"
    return all(k == 1 for k in module.kernel_size) and all(p == 0 for p in module.padding)


def _in_dim(module: nn.Module) -> int:
    return 0 if _is_conv1d(module) else 1


def patch_rows(module: nn.Module, x: Tensor) -> Tensor:
    """A layer's input as (rows, columns) matching its weight as (out, columns): a Conv2d's unfolded patches (every
    output position a row, channel-major columns), else the channels (`input_rows`)."""
    if isinstance(module, nn.Conv2d) and math.prod(module.kernel_size) > 1:
        cols = F.unfold(x, module.kernel_size, module.dilation, module.padding, module.stride)  # (N, C*k, L)
        return cols.transpose(1, 2).reshape(-1, cols.shape[1])
    return input_rows(module, x)


@dataclass
class Refit:
    """A pending refit: module name, the new (out_full, kept) weight and (out_full,) bias, and the kept out rows."""

    name: str
    weight: Tensor
    bias: Tensor | None
    keep_out: Tensor
    transposed: bool = False  # the module stores its weight as (in, out) (transformers Conv1D)


def plan_refits(model: nn.Module, removals: Mapping[str, Mapping[int, list[int]]], batches: Sequence[Batch],
                damp: float) -> list[Refit]:
    """On the dense model (before surgery): the least-squares refits of every refittable layer (see the module
    docstring) whose input channels `removals` ({tensor: {dim: indices}}) removes. Weights shared with another module
    (tied) and layers with more than MAX_COLUMNS input columns are left alone."""
    owners: dict[int, int] = {}
    for _, p in model.named_parameters(remove_duplicate=False):
        owners[id(p)] = owners.get(id(p), 0) + 1
    targets = {}
    for name, module in model.named_modules():
        dims = removals.get(f"{name}.weight" if name else "weight", {})
        if _refittable(module) and _in_dim(module) in dims and owners.get(id(module.weight), 0) == 1:
            targets[name] = module
    if not targets:
        return []
    stats = collect_inputs(model, batches, targets, gram=frozenset(targets), rows_of=patch_rows)
    out = []
    for name, module in targets.items():
        dims = removals[f"{name}.weight" if name else "weight"]
        flip = _is_conv1d(module)
        w = module.weight.detach().T if flip else module.weight.detach()  # (out, in, *kernel)
        in_dim, out_dim = (0, 1) if flip else (1, 0)
        keep = torch.ones(w.shape[1], dtype=torch.bool)
        keep[torch.as_tensor(dims[in_dim], dtype=torch.long)] = False
        per_channel = w[0, 0].numel()  # kernel positions: each channel owns that many columns
        new_w, new_b = refit(w.reshape(w.shape[0], -1), module.bias, stats[name],
                             keep.repeat_interleave(per_channel), damp)
        keep_out = torch.ones(w.shape[0], dtype=torch.bool)
        if out_dim in dims:
            keep_out[torch.as_tensor(dims[out_dim], dtype=torch.long)] = False
        out.append(Refit(name, new_w, new_b, keep_out, flip))
    return out


def apply_refits(model: nn.Module, refits: Sequence[Refit]) -> int:
    """Write the refits into the pruned model (after surgery); returns how many layers changed."""
    with torch.no_grad():
        for r in refits:
            module = model.get_submodule(r.name)
            w = r.weight[r.keep_out]
            w = w.T if r.transposed else w
            if w.numel() != module.weight.numel():
                raise PrunekitError(f"least_squares compensation: {r.name} has shape {list(module.weight.shape)}, "
                                    f"the refit {list(w.shape)}")
            module.weight.copy_(w.reshape(module.weight.shape).to(module.weight.dtype))
            if r.bias is not None:
                module.bias.copy_(r.bias[r.keep_out].to(module.bias.dtype))
    return len(refits)


def recalibrate_bn(model: nn.Module, batches: Sequence[Batch]) -> int:
    """BatchNorm running statistics re-estimated on the calibration inputs; returns the batches used."""
    device = model_device(model)
    # (inputs, placeholder) pairs: recalibrate_batchnorm drops the second item, so tuple inputs stay positional
    pairs = [(to_device(b.inputs, device), torch.empty(0)) for b in batches]
    try:
        return recalibrate_batchnorm(model, pairs)
    except PrunekitError as exc:
        raise PrunekitError(f"structured compensate: bn: {exc}") from None


def compensate(model: nn.Module, kind: str, batches: Sequence[Batch], reference: Sequence[Tensor],
               pending: Sequence[Refit] | None) -> str:
    """Apply the compensation after surgery and verify; the note with the calibration output error around it."""
    err0, cos0 = output_error(reference, run_outputs(model, batches))
    if kind == "bn":
        what = f"BatchNorm statistics re-estimated on {recalibrate_bn(model, batches)} batch(es)"
    else:
        what = f"{apply_refits(model, pending or [])} layer(s) refit by least squares"
    err1, cos1 = output_error(reference, run_outputs(model, batches))
    return (f"compensate {kind}: {what}; calibration output rel. error {err0:.4g} -> {err1:.4g}, "
            f"cosine {cos0:.4f} -> {cos1:.4f} (vs the model before this step; the plan replays the removal only, "
            "not this weight update)")
