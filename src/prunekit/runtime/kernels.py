"""Pure tensor maths of the sparse CPU runtime: dense weight -> torch.sparse layout, and sparse @ dense products.

torch's CPU sparse kernels (MKL) compute `sparse @ dense` with the sparse operand on the LEFT. A Linear computes
`x @ W.T`, so the runtime evaluates `(W_sparse @ x.T).T`: the weight stays (out, in) in CSR / BSR, the activations are
viewed as (in, tokens) and the result is viewed back as (tokens, out) without a copy. Measured on torch 2.14 CPU (one
thread): `torch.mm(csr, x.T)` is the fast path; `x @ csr.T` (dense @ sparse), COO and `F.linear(x, csr)` are 5-50x
slower; BSR on CPU supports square blocks only ("MKL Sparse doesn't support matrices with non-square blocks") and
only float32 / float64 (bf16 / fp16 raise "not implemented").
"""

from __future__ import annotations

import warnings

import torch
from torch import Tensor

# Layouts the runtime can store a weight in; "dense" means "keep the ordinary layer".
SPARSE_KINDS = ("csr", "bsr")
KINDS = ("dense", *SPARSE_KINDS)
# dtypes the CPU sparse kernels implement (measured: bf16 / fp16 raise NotImplementedError in addmm for CSR).
CPU_SPARSE_DTYPES = (torch.float32, torch.float64)


def sparsity(matrix: Tensor) -> float:
    """Fraction of exact zeros in `matrix` (0.0 for an empty tensor)."""
    n = matrix.numel()
    return 0.0 if n == 0 else 1.0 - int(torch.count_nonzero(matrix)) / n


def block_sparsity(matrix: Tensor, block: int) -> float:
    """Fraction of all-zero `block` x `block` tiles of a 2-D matrix whose sides `block` divides."""
    rows, cols = matrix.shape
    tiles = (matrix != 0).reshape(rows // block, block, cols // block, block).any(dim=3).any(dim=1)
    return 1.0 - int(tiles.sum()) / tiles.numel()


def bsr_blocks(matrix: Tensor, sizes: tuple[int, ...]) -> list[int]:
    """The square block sizes from `sizes` that divide both sides of the 2-D `matrix` (MKL needs square blocks)."""
    rows, cols = matrix.shape
    return [b for b in sizes if b > 1 and rows % b == 0 and cols % b == 0]


def to_sparse(matrix: Tensor, kind: str, block: int | None = None) -> Tensor:
    """The 2-D dense `matrix` in the `kind` layout ("csr", or "bsr" with square `block`); zeros are not stored."""
    with warnings.catch_warnings():  # "Sparse CSR tensor support is in beta state": said once in the docs instead
        warnings.simplefilter("ignore", UserWarning)
        if kind == "csr":
            return matrix.detach().contiguous().to_sparse_csr()
        if kind == "bsr":
            if block is None:
                raise ValueError("bsr needs a block size")
            return matrix.detach().contiguous().to_sparse_bsr((block, block))
    raise ValueError(f"unknown sparse kind {kind!r}")


# Token rows per sparse product. Measured (torch 2.14 CPU, one thread, 90% CSR, 1024 tokens): one product over all
# tokens was 0.8-1.6x dense, the same tokens in chunks of 128 1.5-5x (MKL's sparse kernel loses its cache reuse on
# a wide dense operand); chunking also makes the output contiguous.
CHUNK_TOKENS = 128


def _product(weight: Tensor, x2d: Tensor, bias: Tensor | None) -> Tensor:
    if bias is None:
        return torch.mm(weight, x2d.t()).t()
    return torch.addmm(bias.unsqueeze(1), weight, x2d.t()).t()


def sparse_mm_t(weight: Tensor, x2d: Tensor, bias: Tensor | None, chunk: int = CHUNK_TOKENS) -> Tensor:
    """`x2d @ weight.T + bias` for a sparse (out, in) `weight` and dense (tokens, in) `x2d`; result (tokens, out).

    Computed as `(weight @ x2d.T).T` (sparse on the left, the layout MKL implements), `chunk` token rows at a time;
    up to `chunk` tokens the result is a transposed view, above it a contiguous tensor.
    """
    if x2d.shape[0] <= chunk:
        return _product(weight, x2d, bias)
    return torch.cat([_product(weight, part, bias) for part in x2d.split(chunk)])


def stored_bytes(weight: Tensor) -> int:
    """Bytes a (sparse or dense) weight tensor holds: values plus CSR / BSR index arrays."""
    if weight.layout == torch.sparse_csr or weight.layout == torch.sparse_bsr:
        parts = (weight.values(), weight.crow_indices(), weight.col_indices())
        return int(sum(p.numel() * p.element_size() for p in parts))
    return weight.numel() * weight.element_size()
