"""Pure maths of symmetric weight-only quantization: INT8 / INT4 codes with per-channel or group-wise scales.

A weight is quantized through its 2-D matrix view (out, in): every output row (per-channel, `group_size=None`) or
every run of `group_size` consecutive input columns of a row (group-wise) gets one fp32 scale
`scale = max|w| / qmax` (qmax = 127 for INT8, 7 for INT4), and `q = clamp(round(w / scale), -qmax, qmax)`.
Symmetric with no zero point, so a pruned (zero) weight stays exactly zero and a group of zeros gets scale 0.
`dequantize(q, scales) = q * scale` in fp32 is the exact value every consumer (QuantLinear, compressed storage)
reproduces.

INT4 codes are held one per int8 element while computing; `pack_int4` stores two per byte (two's complement nibbles,
element 2i in the low nibble, 2i+1 in the high nibble, an odd count padded with a zero nibble).
"""

from __future__ import annotations

import torch
from torch import Tensor

from prunekit.errors import PrunekitError, choices_text

QMAX = {8: 127, 4: 7}


def check_bits(bits: object) -> int:
    """Return `bits` when it is 8 or 4; raise PrunekitError otherwise."""
    if isinstance(bits, bool) or bits not in QMAX:
        raise PrunekitError(
            f"quantization bits {bits!r} is not supported; choose one of: {choices_text(map(str, QMAX))}"
        )
    return int(bits)  # type: ignore[call-overload]


def check_group_size(group_size: object, cols: int, what: str = "weight") -> int:
    """Return the effective group size (cols for per-channel `None`); raise unless it is positive and divides cols."""
    if group_size is None:
        return cols
    if isinstance(group_size, bool) or not isinstance(group_size, int) or group_size <= 0:
        raise PrunekitError(f"group_size must be a positive integer or None (per-channel), got {group_size!r}")
    if cols % group_size:
        raise PrunekitError(
            f"group_size {group_size} does not divide the input dimension {cols} of {what}; "
            f"use a divisor of {cols} or group_size=None (one scale per output channel)"
        )
    return group_size


def quantize(matrix: Tensor, bits: int, group_size: int | None = None) -> tuple[Tensor, Tensor]:
    """Symmetric quantization of a 2-D (out, in) matrix -> (codes int8 (out, in), scales fp32 (out, in // group)).

    Args:
        matrix: floating-point 2-D tensor (a weight's matrix view).
        bits: 8 (codes in [-127, 127]) or 4 (codes in [-7, 7]).
        group_size: input columns per scale; None = one scale per output row.
    """
    bits = check_bits(bits)
    if matrix.ndim != 2 or not matrix.is_floating_point():
        raise PrunekitError(
            f"quantize needs a 2-D floating-point matrix, got shape {tuple(matrix.shape)} {matrix.dtype}"
        )
    rows, cols = matrix.shape
    g = check_group_size(group_size, cols)
    qmax = QMAX[bits]
    groups = matrix.detach().to(torch.float32).reshape(rows, cols // g, g)
    scales = groups.abs().amax(dim=-1) / qmax
    safe = torch.where(scales > 0, scales, torch.ones_like(scales))
    codes = torch.round(groups / safe.unsqueeze(-1)).clamp_(-qmax, qmax).to(torch.int8)
    return codes.reshape(rows, cols), scales


def dequantize(codes: Tensor, scales: Tensor) -> Tensor:
    """fp32 (out, in) matrix `codes * scale`; the group size is in // scales.shape[1]."""
    rows, cols = codes.shape
    n_groups = scales.shape[1]
    if scales.shape[0] != rows or n_groups == 0 or cols % n_groups:
        raise PrunekitError(f"scales of shape {tuple(scales.shape)} do not fit codes of shape {tuple(codes.shape)}")
    groups = codes.to(torch.float32).reshape(rows, n_groups, cols // n_groups)
    return (groups * scales.to(torch.float32).unsqueeze(-1)).reshape(rows, cols)


def fake_quantize(matrix: Tensor, bits: int, group_size: int | None = None) -> Tensor:
    """quantize then dequantize: the fp32 values a quantized weight really has."""
    return dequantize(*quantize(matrix, bits, group_size))


def pack_int4(codes: Tensor) -> Tensor:
    """Pack int8 codes in [-8, 7] two per byte (low nibble first) into a flat uint8 tensor of ceil(n / 2) bytes."""
    flat = codes.reshape(-1)
    if flat.numel() and (int(flat.min()) < -8 or int(flat.max()) > 7):
        raise PrunekitError(f"int4 codes must lie in [-8, 7], got [{int(flat.min())}, {int(flat.max())}]")
    nib = (flat.to(torch.int16) & 0xF).to(torch.uint8)
    if nib.numel() % 2:
        nib = torch.cat([nib, nib.new_zeros(1)])
    pairs = nib.reshape(-1, 2)
    return pairs[:, 0] | (pairs[:, 1] << 4)


def unpack_int4(packed: Tensor, numel: int) -> Tensor:
    """Inverse of `pack_int4`: the first `numel` codes as a flat int8 tensor."""
    if packed.dtype != torch.uint8 or packed.numel() != (numel + 1) // 2:
        raise PrunekitError(
            f"packed int4 data has {packed.numel()} {packed.dtype} bytes, expected {(numel + 1) // 2} uint8"
        )
    nib = torch.stack([packed & 0xF, packed >> 4], dim=1).reshape(-1)[:numel].to(torch.int8)
    return torch.where(nib > 7, nib - 16, nib)
