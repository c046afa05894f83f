"""SparseGPT maths as pure tensor functions: the calibration Hessian and the blockwise OBS prune-and-update sweep.

SparseGPT (Frantar & Alistarh, 2023) prunes a layer W (out, in) given H = 2 X X^T / n over its calibration inputs.
Columns are visited left to right in blocks; each block's mask is chosen from w^2 / [H^-1]_cc (the OBS saliency, where
[H^-1]_cc is the diagonal after the earlier columns were eliminated, i.e. the squared diagonal of the upper Cholesky
factor of H^-1); for N:M the mask of each group of M columns is chosen when the sweep reaches it. Each pruned weight's
error is spread over the not-yet-visited columns of its row by the OBS update.
"""

from __future__ import annotations

import warnings

import torch
from torch import Tensor

from prunekit.errors import PrunekitError
from prunekit.patterns import NM, check_sparsity, n_to_prune

_MAX_DAMP_RETRIES = 6


class HessianAccumulator:
    """Running H = 2 X X^T / n in float64 over batches of inputs of shape (..., in_features)."""

    def __init__(self, in_features: int) -> None:
        self.h = torch.zeros(in_features, in_features, dtype=torch.float64)
        self.tokens = 0

    def add(self, x: Tensor) -> None:
        """Add activations of shape (..., in_features)."""
        flat = x.detach().reshape(-1, x.shape[-1]).to(torch.float64).cpu()
        n_new = flat.shape[0]
        total = self.tokens + n_new
        self.h *= self.tokens / total
        self.h += (2.0 / total) * flat.t() @ flat
        self.tokens = total

    def hessian(self) -> Tensor:
        """H as float32."""
        return self.h.to(torch.float32)


def _block_counts(rows: int, cols: int, blocksize: int, sparsity: float) -> list[int]:
    """Weights to prune per column block so that the layer total is exactly n_to_prune(rows * cols, sparsity)."""
    counts, done_prune = [], 0
    for i1 in range(0, cols, blocksize):
        i2 = min(i1 + blocksize, cols)
        upto = n_to_prune(rows * i2, sparsity)
        counts.append(upto - done_prune)
        done_prune = upto
    return counts


def inverse_hessian_factor(h: Tensor, percdamp: float, layer: str = "layer") -> tuple[Tensor, float]:
    """Upper Cholesky factor of (H + damp I)^-1, damp = percdamp * mean(diag H); H must have no zero diagonal.

    On a Cholesky failure the dampening is multiplied by 10 and the factorization retried, with a warning naming
    `layer`. Returns the factor and the percdamp that worked.

    Raises:
        PrunekitError: when no dampening up to percdamp * 10**6 makes H positive definite.
    """
    damp_frac = percdamp
    mean_diag = torch.mean(torch.diag(h))
    eye = torch.eye(h.shape[0], dtype=h.dtype, device=h.device)
    for _ in range(_MAX_DAMP_RETRIES + 1):
        damped = h + damp_frac * mean_diag * eye
        lower, info = torch.linalg.cholesky_ex(damped)
        if int(info) == 0:
            inv = torch.cholesky_inverse(lower)
            upper, info = torch.linalg.cholesky_ex(inv, upper=True)
            if int(info) == 0 and torch.isfinite(upper).all():
                return upper, damp_frac
        warnings.warn(
            f"sparsegpt: Cholesky failed for layer {layer!r} with percdamp={damp_frac:g}; retrying with "
            f"percdamp={damp_frac * 10:g}",
            RuntimeWarning,
            stacklevel=2,
        )
        damp_frac *= 10
    raise PrunekitError(
        f"sparsegpt: layer {layer!r} has a Hessian that stays singular up to percdamp={damp_frac / 10:g}; "
        "check the calibration data (NaN / inf activations?) or ignore this layer"
    )


def sparsegpt_prune(
    weight: Tensor,
    hessian: Tensor,
    sparsity: float | None = None,
    nm: NM | None = None,
    *,
    blocksize: int = 128,
    percdamp: float = 0.01,
    layer: str = "layer",
) -> tuple[Tensor, Tensor]:
    """Prune an (out, in) weight with SparseGPT; return (updated weight, keep_mask), in the weight's dtype / device.

    Args:
        weight: the layer's weight as an (out, in) matrix.
        hessian: H = 2 X X^T / n (in, in) from the layer's calibration inputs.
        sparsity: fraction to prune (unstructured); exactly n_to_prune(out * in, sparsity) weights over the layer.
        nm: an N:M pattern instead of `sparsity`; groups of M input columns, chosen inside the sweep.
        blocksize: columns per lazy-update block (unstructured masks are chosen per block).
        percdamp: dampening as a fraction of mean(diag H).
        layer: the layer's name, for warnings and errors.
    """
    if (sparsity is None) == (nm is None):
        raise PrunekitError("sparsegpt_prune needs exactly one of sparsity (unstructured) or nm (an N:M pattern)")
    if blocksize < 1:
        raise PrunekitError(f"blocksize must be a positive integer, got {blocksize}")
    rows, cols = weight.shape
    if nm is not None:
        if cols % nm.m:
            raise PrunekitError(f"layer {layer!r}: input dimension {cols} is not divisible by M={nm.m}")
        if blocksize % nm.m:
            raise PrunekitError(f"blocksize {blocksize} must be a multiple of M={nm.m} for pattern {nm.name}")
    else:
        sparsity = check_sparsity(sparsity)
    if tuple(hessian.shape) != (cols, cols):
        raise PrunekitError(f"layer {layer!r}: Hessian shape {tuple(hessian.shape)} does not match {cols} inputs")
    w = weight.detach().to(torch.float32).clone(memory_format=torch.contiguous_format)  # GPT-2 Conv1D gives W.T
    h = hessian.detach().to(w.device, torch.float32).clone()
    dead = torch.diag(h) == 0
    h[dead, dead] = 1.0  # an input never active: nothing to preserve, its weights go first
    w[:, dead] = 0.0
    hinv, _ = inverse_hessian_factor(h, percdamp, layer)
    keep = torch.ones(rows, cols, dtype=torch.bool, device=w.device)
    counts = _block_counts(rows, cols, blocksize, sparsity) if nm is None else []
    for b, i1 in enumerate(range(0, cols, blocksize)):
        i2 = min(i1 + blocksize, cols)
        w1 = w[:, i1:i2].clone()
        hinv1 = hinv[i1:i2, i1:i2]
        d1 = torch.diag(hinv1)
        keep1 = torch.ones_like(w1, dtype=torch.bool)
        if nm is None and counts[b]:
            saliency = (w1.pow(2) / d1.reshape(1, -1).pow(2)).reshape(-1)
            order = torch.sort(saliency, stable=True).indices[: counts[b]]
            keep1.view(-1)[order] = False
        err1 = torch.zeros_like(w1)
        for i in range(i2 - i1):
            if nm is not None and i % nm.m == 0:
                group = w1[:, i : i + nm.m].pow(2) / d1[i : i + nm.m].reshape(1, -1).pow(2)
                keep1[:, i : i + nm.m] = nm.keep_mask(group)
            col = w1[:, i]
            q = torch.where(keep1[:, i], col, torch.zeros_like(col))
            err = (col - q) / hinv1[i, i]
            w1[:, i:] -= err.unsqueeze(1) @ hinv1[i, i:].unsqueeze(0)
            w1[:, i] = q
            err1[:, i] = err
        w[:, i1:i2] = w1
        keep[:, i1:i2] = keep1
        w[:, i2:] -= err1 @ hinv[i1:i2, i2:]
    return w.to(weight.dtype), keep
