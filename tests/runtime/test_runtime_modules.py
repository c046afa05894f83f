"""SparseLinear / SparseConv1x1 compute what the dense layer computes, and convert back exactly."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from prunekit.runtime import SparseConv1x1, SparseLinear, revert
from prunekit.runtime.kernels import block_sparsity, bsr_blocks, sparsity, stored_bytes


def _pruned_linear(out_f: int, in_f: int, zeros: float, bias: bool = True, seed: int = 0) -> nn.Linear:
    torch.manual_seed(seed)
    layer = nn.Linear(in_f, out_f, bias=bias)
    with torch.no_grad():
        layer.weight[torch.rand_like(layer.weight) < zeros] = 0
    return layer


@pytest.mark.parametrize("kind,block", [("csr", None), ("bsr", 4), ("bsr", 8)])
@pytest.mark.parametrize("bias", [True, False])
@pytest.mark.parametrize("shape", [(5,), (2, 7), (2, 3, 4)])
def test_sparse_linear_equals_dense(kind, block, bias, shape):
    dense = _pruned_linear(24, 16, 0.8, bias=bias)
    sparse = SparseLinear.from_dense(dense, kind, block)
    x = torch.randn(*shape, 16)
    out = sparse(x)
    assert out.shape == (*shape, 24)
    torch.testing.assert_close(out, dense(x).detach(), rtol=1e-5, atol=1e-5)


def test_sparse_linear_stores_only_non_zeros_and_round_trips():
    dense = _pruned_linear(32, 64, 0.9)
    sparse = SparseLinear.from_dense(dense, "csr")
    nnz = int(torch.count_nonzero(dense.weight))
    assert sparse.weight.layout == torch.sparse_csr and sparse.weight.values().numel() == nnz
    assert stored_bytes(sparse.weight) < dense.weight.numel() * 4
    back = sparse.to_dense()
    assert type(back) is nn.Linear
    assert torch.equal(back.weight, dense.weight) and torch.equal(back.bias, dense.bias)
    assert "kind=csr" in repr(sparse)


def test_sparse_linear_float64_and_no_grad_needed():
    dense = _pruned_linear(8, 8, 0.5).double()
    x = torch.randn(3, 8, dtype=torch.float64)
    torch.testing.assert_close(SparseLinear.from_dense(dense)(x), dense(x).detach())


@pytest.mark.parametrize("kind,block", [("csr", None), ("bsr", 4)])
@pytest.mark.parametrize("bias", [True, False])
def test_sparse_conv1x1_equals_dense(kind, block, bias):
    torch.manual_seed(1)
    conv = nn.Conv2d(8, 12, 1, bias=bias)
    with torch.no_grad():
        conv.weight[torch.rand_like(conv.weight) < 0.7] = 0
    sparse = SparseConv1x1.from_dense(conv, kind, block)
    x = torch.randn(2, 8, 5, 3)
    torch.testing.assert_close(sparse(x), conv(x).detach(), rtol=1e-5, atol=1e-5)
    back = sparse.to_dense()
    assert torch.equal(back.weight, conv.weight)


def test_sparse_conv_rejects_non_pointwise():
    with pytest.raises(ValueError, match="1x1 Conv2d with stride 1"):
        SparseConv1x1.from_dense(nn.Conv2d(4, 4, 3))
    with pytest.raises(ValueError, match="1x1 Conv2d with stride 1"):
        SparseConv1x1.from_dense(nn.Conv2d(4, 4, 1, stride=2))


def test_revert_restores_dense_modules():
    model = nn.Sequential(_pruned_linear(8, 8, 0.9), nn.ReLU(), _pruned_linear(4, 8, 0.9, seed=1))
    x = torch.randn(3, 8)
    expected = model(x).detach()
    model[0] = SparseLinear.from_dense(model[0])
    model[2] = SparseLinear.from_dense(model[2], "bsr", 4)
    assert revert(model) == 2
    assert all(type(m) in (nn.Linear, nn.ReLU) for m in model)
    torch.testing.assert_close(model(x), expected)


def test_kernel_helpers():
    m = torch.zeros(8, 8)
    m[0, 0] = 1.0  # one non-zero: one of four 4x4 tiles holds it
    assert sparsity(m) == pytest.approx(63 / 64)
    assert block_sparsity(m, 4) == pytest.approx(0.75)
    assert bsr_blocks(torch.zeros(12, 8), (4, 8, 16)) == [4]


@pytest.mark.parametrize("kind,block", [("csr", None), ("bsr", 4)])
def test_many_tokens_run_in_chunks_and_match_dense(kind, block):
    from prunekit.runtime.kernels import sparse_mm_t

    dense = _pruned_linear(8, 16, 0.8)
    sparse = SparseLinear.from_dense(dense, kind, block)
    x = torch.randn(2, 150, 16)  # 300 tokens: chunks of 128, 128 and 44
    torch.testing.assert_close(sparse(x), dense(x).detach(), rtol=1e-5, atol=1e-5)
    out = sparse_mm_t(sparse.weight, x.reshape(-1, 16), sparse.bias, chunk=7)
    assert out.is_contiguous()
    torch.testing.assert_close(out, dense(x).detach().reshape(-1, 8), rtol=1e-5, atol=1e-5)
