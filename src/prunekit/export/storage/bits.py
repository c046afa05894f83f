"""Bit packing for the compressed format: unsigned integers of `bits` bits as one LSB-first bit stream in uint8.

Value i occupies stream bits [i*bits, (i+1)*bits), its least significant bit first; stream bit k is bit (k % 8) of
byte k // 8 (the "little" bit order of `numpy.packbits(..., bitorder="little")`). A bitmask is the case bits=1:
element i of the mask is bit i % 8 of byte i // 8. Unused high bits of the last byte are zero.
"""

from __future__ import annotations

import torch
from torch import Tensor

from prunekit.errors import PrunekitError

_CHUNK_VALUES = 1 << 22  # values per chunk: the bit expansion of a chunk stays a few tens of MB


def packed_nbytes(count: int, bits: int) -> int:
    """Bytes of `count` values of `bits` bits packed: ceil(count * bits / 8)."""
    return (count * bits + 7) // 8


def pack_bits(values: Tensor, bits: int) -> Tensor:
    """Pack a flat tensor of non-negative integers < 2**bits (or a bool mask with bits=1) into uint8."""
    if not 1 <= bits <= 8:
        raise PrunekitError(f"bit width {bits} is outside 1..8")
    flat = values.reshape(-1).to(torch.int64)
    if flat.numel() and (int(flat.min()) < 0 or int(flat.max()) >= (1 << bits)):
        raise PrunekitError(f"values do not fit in {bits} bits: range [{int(flat.min())}, {int(flat.max())}]")
    out = torch.zeros(packed_nbytes(flat.numel(), bits), dtype=torch.uint8)
    shifts = torch.arange(bits, dtype=torch.int64)
    weights = torch.tensor([1 << k for k in range(8)], dtype=torch.int64)
    step = _CHUNK_VALUES  # a multiple of 8, so every chunk starts on a byte boundary
    for start in range(0, flat.numel(), step):
        chunk = flat[start : start + step]
        stream = ((chunk.unsqueeze(1) >> shifts) & 1).reshape(-1)
        pad = (-stream.numel()) % 8
        if pad:
            stream = torch.cat([stream, stream.new_zeros(pad)])
        packed = (stream.reshape(-1, 8) * weights).sum(dim=1).to(torch.uint8)
        first = start * bits // 8
        out[first : first + packed.numel()] = packed
    return out


def unpack_bits(packed: Tensor, bits: int, count: int) -> Tensor:
    """Inverse of `pack_bits`: `count` values as int64 (compare with 0 for a bool mask)."""
    if packed.dtype != torch.uint8 or packed.numel() != packed_nbytes(count, bits):
        raise PrunekitError(
            f"packed data has {packed.numel()} {packed.dtype} bytes, expected {packed_nbytes(count, bits)} uint8 "
            f"for {count} values of {bits} bits"
        )
    flat = packed.reshape(-1).to(torch.int64)
    out = torch.empty(count, dtype=torch.int64)
    shifts8 = torch.arange(8, dtype=torch.int64)
    weights = torch.tensor([1 << k for k in range(bits)], dtype=torch.int64)
    step = _CHUNK_VALUES
    for start in range(0, count, step):
        n = min(step, count - start)
        first, last = start * bits // 8, packed_nbytes(start + n, bits)
        stream = ((flat[first:last].unsqueeze(1) >> shifts8) & 1).reshape(-1)[: n * bits]
        out[start : start + n] = (stream.reshape(n, bits) * weights).sum(dim=1)
    return out
