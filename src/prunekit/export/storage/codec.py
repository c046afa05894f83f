"""Encode / decode one weight matrix in the compressed format: dense, bitmask or packed N:M, with fp32 / fp16 /
INT8 / INT4 values. Pure tensor functions; the file layout around them is in `io.py`, the spec in docs/storage.md.

Every encoded tensor is handled through its 2-D matrix view (rows = output channels, cols = inputs). Values first
become *codes*: the fp32 or fp16 values themselves, or INT8 / INT4 codes with fp32 scales (`prunekit.quant`). The
zeros of the codes decide the sparse layout, so a weight that quantizes to zero costs nothing, and decoding gives
exactly the codes back, hence exactly `dequantize(quantize(w))`.

Parts stored per tensor (key `NAME::PART`):
- dense:   values (all codes, row-major)
- bitmask: mask (1 bit per element, LSB-first, see bits.py), values (the non-zero codes in row-major order)
- nm:      values (N codes per group of M consecutive columns, group by group, in ascending position), indices:
           per group, the rank of its set of N positions among all C(M, N) sets in lexicographic order
           (itertools.combinations(range(M), N)), packed in ceil(log2 C(M, N)) bits: 3 bits per group for 2:4, 7 for
           4:8, 2 for 1:4 (M > 16: each position in ceil(log2 M) bits instead). A group with fewer than N non-zeros is
           padded with zero values at its lowest unused positions.
- int8 / int4 values add scales (fp32, rows x cols / group_size); INT4 values are nibble-packed (prunekit.quant).
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

import torch
from torch import Tensor

from prunekit.errors import PrunekitError, choices_text, suggest
from prunekit.export.storage.bits import pack_bits, packed_nbytes, unpack_bits
from prunekit.quant import check_group_size, dequantize, pack_int4, quantize, unpack_int4

VALUE_BITS = {"fp32": 32, "fp16": 16, "int8": 8, "int4": 4}
FLOAT_KINDS = {"fp32": torch.float32, "fp16": torch.float16}
ENCODINGS = ("auto", "dense", "bitmask", "N:M (e.g. 2:4)")


def check_values(kind: object) -> str:
    """Return a valid values kind or raise naming the choices."""
    if kind not in VALUE_BITS:
        raise PrunekitError(
            f"unknown values kind {kind!r}; choose one of: {choices_text(VALUE_BITS)}.{suggest(str(kind), VALUE_BITS)}"
        )
    return str(kind)


def parse_encoding(text: object, what: str) -> str | tuple[int, int]:
    """'auto' / 'dense' / 'bitmask' as is, 'N:M' as (n, m) with 0 < n < m <= 256."""
    if text in ("auto", "dense", "bitmask"):
        return str(text)
    if isinstance(text, str) and text.count(":") == 1:
        a, b = text.split(":")
        if a.strip().isdigit() and b.strip().isdigit() and 0 < int(a) < int(b) <= 256:
            return int(a), int(b)
    raise PrunekitError(f"encoding {text!r} for {what} is not valid; choose one of: {', '.join(ENCODINGS)}")


def to_codes(matrix: Tensor, kind: str, group_size: int | None, what: str) -> tuple[Tensor, Tensor | None]:
    """The codes of a matrix for a values kind: (fp values or int8 codes, fp32 scales or None)."""
    if kind in FLOAT_KINDS:
        return matrix.detach().to(FLOAT_KINDS[kind]), None
    check_group_size(group_size, matrix.shape[1], what)
    return quantize(matrix, VALUE_BITS[kind], group_size)


def _store_values(codes: Tensor, kind: str) -> Tensor:
    return pack_int4(codes) if kind == "int4" else codes.contiguous()


def _load_values(stored: Tensor, kind: str, count: int) -> Tensor:
    if kind == "int4":
        return unpack_int4(stored, count)
    want = FLOAT_KINDS.get(kind, torch.int8)
    if stored.dtype != want or stored.numel() != count:
        raise PrunekitError(f"stored values are {stored.numel()} x {stored.dtype}, expected {count} x {want}")
    return stored.reshape(-1)


def nm_counts(codes: Tensor, m: int) -> Tensor:
    """Non-zeros in every group of m consecutive columns, one row per group."""
    return (codes != 0).reshape(-1, m).sum(dim=1)


def theoretical_bytes(encoding: str, kind: str, rows: int, cols: int, nnz: int, n_scales: int,
                      n: int = 0, m: int = 0) -> float:
    """Exact payload bits / 8 of an encoding, with no byte padding or header."""
    vb = VALUE_BITS[kind]
    scales = 4 * n_scales
    if encoding == "dense":
        return rows * cols * vb / 8 + scales
    if encoding == "bitmask":
        return rows * cols / 8 + nnz * vb / 8 + scales
    groups = rows * cols // m
    return groups * (n * vb + group_index_bits(n, m)) / 8 + scales


_MAX_COMBINATION_M = 16


def group_index_bits(n: int, m: int) -> int:
    """Index bits per group of M: ceil(log2 C(m, n)) (combination rank), or n * ceil(log2 m) when m > 16."""
    if m <= _MAX_COMBINATION_M:
        return max(1, (math.comb(m, n) - 1).bit_length())
    return n * max(1, (m - 1).bit_length())


@lru_cache(maxsize=16)
def _combination_tables(n: int, m: int) -> tuple[Tensor, Tensor]:
    """(combos (C, n) in lexicographic order, rank of each position bitmask 0..2^m-1 (-1 if not n bits))."""
    combos = torch.tensor(list(itertools.combinations(range(m), n)), dtype=torch.int64)
    ranks = torch.full((1 << m,), -1, dtype=torch.int64)
    ranks[(torch.ones_like(combos) << combos).sum(dim=1)] = torch.arange(combos.shape[0])
    return combos, ranks


def pack_nm_indices(idx: Tensor, n: int, m: int) -> Tensor:
    """Pack ascending positions (groups, n) into the stored index bytes (see the module docstring)."""
    if m > _MAX_COMBINATION_M:
        return pack_bits(idx.reshape(-1), max(1, (m - 1).bit_length()))
    _, ranks = _combination_tables(n, m)
    return pack_bits(ranks[(torch.ones_like(idx) << idx).sum(dim=1)], group_index_bits(n, m))


def unpack_nm_indices(packed: Tensor, n: int, m: int, groups: int) -> Tensor:
    """Inverse of `pack_nm_indices`: positions (groups, n)."""
    if m > _MAX_COMBINATION_M:
        idx = unpack_bits(packed, max(1, (m - 1).bit_length()), groups * n).reshape(groups, n)
        if idx.numel() and int(idx.max()) >= m:
            raise PrunekitError(f"N:M index {int(idx.max())} is out of range for M={m}")
        return idx
    combos, _ = _combination_tables(n, m)
    rank = unpack_bits(packed, group_index_bits(n, m), groups)
    if rank.numel() and int(rank.max()) >= combos.shape[0]:
        raise PrunekitError(f"N:M index rank {int(rank.max())} is out of range for {n}:{m}")
    return combos[rank]


@dataclass
class Encoded:
    """One encoded matrix: JSON-able `entry` fields and the stored parts (part name -> tensor)."""

    entry: dict[str, Any]
    parts: dict[str, Tensor]


def _candidates(codes: Tensor, kind: str, n_scales: int) -> list[tuple[float, str, int, int]]:
    rows, cols = codes.shape
    nnz = int((codes != 0).sum())
    out = [(theoretical_bytes("dense", kind, rows, cols, nnz, n_scales), "dense", 0, 0),
           (theoretical_bytes("bitmask", kind, rows, cols, nnz, n_scales), "bitmask", 0, 0)]
    for m in (4, 8):
        if cols % m == 0 and codes.numel():  # ties go to the earlier candidate: dense, then bitmask
            n = int(nm_counts(codes, m).max())
            if 0 < n < m:
                out.append((theoretical_bytes("nm", kind, rows, cols, nnz, n_scales, n, m), "nm", n, m))
    return out


def encode_matrix(matrix: Tensor, kind: str, group_size: int | None = None,
                  encoding: str | tuple[int, int] = "auto", what: str = "tensor") -> Encoded:
    """Encode a 2-D matrix; `encoding` 'auto' picks the smallest of dense, bitmask and the N:M patterns (M = 4, 8)
    its zeros follow, dense on a tie. A forced (n, m) raises when a group holds more than n non-zeros."""
    rows, cols = matrix.shape
    codes, scales = to_codes(matrix, kind, group_size, what)
    n_scales = 0 if scales is None else scales.numel()
    nnz = int((codes != 0).sum())
    if encoding == "auto":
        _, enc, n, m = min(_candidates(codes, kind, n_scales), key=lambda c: c[0])
    elif isinstance(encoding, tuple):
        enc, (n, m) = "nm", encoding
        _check_nm(codes, n, m, what)
    else:
        enc, n, m = encoding, 0, 0
    flat = codes.reshape(-1)
    parts: dict[str, Tensor] = {}
    entry: dict[str, Any] = {"encoding": enc, "values": kind, "matrix": [rows, cols], "nnz": nnz}
    if enc == "dense":
        parts["values"] = _store_values(flat, kind)
    elif enc == "bitmask":
        keep = flat != 0
        parts["mask"] = pack_bits(keep, 1)
        parts["values"] = _store_values(flat[keep], kind)
    else:
        groups = codes.reshape(-1, m)
        empty_first = (groups == 0).to(torch.int8)  # non-zeros sort first, then the lowest unused positions
        idx = torch.argsort(empty_first, dim=1, stable=True)[:, :n].sort(dim=1).values
        parts["values"] = _store_values(torch.gather(groups, 1, idx).reshape(-1), kind)
        parts["indices"] = pack_nm_indices(idx, n, m)
        entry.update(n=n, m=m, index_bits_per_group=group_index_bits(n, m))
    if scales is not None:
        parts["scales"] = scales.contiguous()
        entry["group_size"] = cols // scales.shape[1]
    entry["theoretical_bytes"] = theoretical_bytes(enc, kind, rows, cols, nnz, n_scales, n, m)
    return Encoded(entry, parts)


def _check_nm(codes: Tensor, n: int, m: int, what: str) -> None:
    rows, cols = codes.shape
    if cols % m:
        raise PrunekitError(f"{what} cannot be stored as {n}:{m}: its input dimension {cols} is not divisible by {m}")
    counts = nm_counts(codes, m)
    bad = int(torch.argmax((counts > n).to(torch.int8))) if counts.numel() else 0
    if counts.numel() and int(counts[bad]) > n:
        per_row = cols // m
        r, g = divmod(bad, per_row)
        raise PrunekitError(
            f"{what} is not {n}:{m} sparse: row {r}, columns {g * m}..{g * m + m - 1} hold {int(counts[bad])} "
            f"non-zeros (at most {n} allowed); store it as 'bitmask' or 'auto'"
        )


def decode_codes(entry: dict[str, Any], parts: dict[str, Tensor]) -> tuple[Tensor, Tensor | None]:
    """Decoded (codes (rows, cols), scales or None) of one entry; raises PrunekitError on inconsistent parts."""
    rows, cols = (int(v) for v in entry["matrix"])
    kind, enc = entry["values"], entry["encoding"]
    if kind not in VALUE_BITS:
        raise PrunekitError(f"unknown values kind {kind!r}")
    numel = rows * cols
    if enc == "dense":
        flat = _load_values(parts["values"], kind, numel)
    elif enc == "bitmask":
        keep = unpack_bits(parts["mask"], 1, numel).to(torch.bool)
        vals = _load_values(parts["values"], kind, int(keep.sum()))
        flat = torch.zeros(numel, dtype=vals.dtype)
        flat[keep] = vals
    elif enc == "nm":
        n, m = int(entry["n"]), int(entry["m"])
        count = numel // m * n
        idx = unpack_nm_indices(parts["indices"], n, m, numel // m)
        vals = _load_values(parts["values"], kind, count).reshape(-1, n)
        flat = torch.zeros(numel // m, m, dtype=vals.dtype).scatter_(1, idx, vals).reshape(-1)
    else:
        raise PrunekitError(f"unknown encoding {enc!r}")
    scales = parts.get("scales") if kind in ("int8", "int4") else None
    if kind in ("int8", "int4") and scales is None:
        raise PrunekitError("quantized values without scales")
    return flat.reshape(rows, cols), scales


def decode_matrix(entry: dict[str, Any], parts: dict[str, Tensor]) -> Tensor:
    """The matrix as floating point: fp values as stored, INT codes dequantized (fp32)."""
    codes, scales = decode_codes(entry, parts)
    return codes if scales is None else dequantize(codes, scales)


def stored_nbytes(parts: dict[str, Tensor]) -> int:
    """Bytes of the stored parts."""
    return sum(t.numel() * t.element_size() for t in parts.values())


__all__ = [
    "Encoded", "VALUE_BITS", "check_values", "decode_codes", "decode_matrix", "encode_matrix", "group_index_bits",
    "packed_nbytes", "parse_encoding", "theoretical_bytes",
]
