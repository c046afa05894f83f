"""Drop-in sparse replacements for a Linear and a 1x1 Conv2d, holding the weight in a torch.sparse layout.

Each module is built from a finalized dense layer (zeros baked in), computes the same function through
`kernels.sparse_mm_t`, and converts back exactly (`to_dense`): only the zeros are dropped from storage.
The sparse weight is a buffer (inference only: no gradients flow into it), so `.to(device)` moves it.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from prunekit.runtime.kernels import sparse_mm_t, stored_bytes, to_sparse


def _bias(layer: nn.Module) -> Tensor | None:
    bias = getattr(layer, "bias", None)
    return None if bias is None else bias.detach().clone()


class SparseLinear(nn.Module):
    """`nn.Linear` with its (out, in) weight stored as CSR or BSR; input (..., in) -> output (..., out)."""

    def __init__(self, weight: Tensor, bias: Tensor | None, kind: str, block: int | None = None):
        super().__init__()
        self.in_features = weight.shape[1]
        self.out_features = weight.shape[0]
        self.kind = kind
        self.block = block
        self.register_buffer("weight", to_sparse(weight, kind, block))
        self.register_buffer("bias", bias)

    @classmethod
    def from_dense(cls, linear: nn.Linear, kind: str = "csr", block: int | None = None) -> SparseLinear:
        """Build from a plain Linear (its zeros are dropped from storage)."""
        return cls(linear.weight.detach(), _bias(linear), kind, block)

    def forward(self, x: Tensor) -> Tensor:
        lead = x.shape[:-1]
        out = sparse_mm_t(self.weight, x.reshape(-1, self.in_features), self.bias)
        return out.reshape(*lead, self.out_features)

    def to_dense(self) -> nn.Linear:
        """The equivalent plain `nn.Linear` (exact: the stored values and zeros give back the same weight)."""
        w = self.weight.to_dense()
        linear = nn.Linear(self.in_features, self.out_features, bias=self.bias is not None,
                           device=w.device, dtype=w.dtype)
        with torch.no_grad():
            linear.weight.copy_(w)
            if self.bias is not None:
                linear.bias.copy_(self.bias)
        return linear

    def weight_bytes(self) -> int:
        """Bytes of the stored sparse weight (values + indices) and bias."""
        return stored_bytes(self.weight) + (0 if self.bias is None else self.bias.numel() * self.bias.element_size())

    def extra_repr(self) -> str:
        block = f", block={self.block}x{self.block}" if self.block else ""
        return f"in_features={self.in_features}, out_features={self.out_features}, kind={self.kind}{block}"


def is_pointwise_conv(module: nn.Module) -> bool:
    """True for a Conv2d that is a per-pixel matmul over channels: 1x1 kernel, stride 1, no padding, one group."""
    return (
        isinstance(module, nn.Conv2d)
        and tuple(module.kernel_size) == (1, 1)
        and tuple(module.stride) == (1, 1)
        and module.padding in ((0, 0), "valid")
        and module.groups == 1
    )


class SparseConv1x1(nn.Module):
    """A 1x1 `nn.Conv2d` (stride 1, no padding, one group) as a sparse matmul over channels: (N, C, H, W) inputs."""

    def __init__(self, weight: Tensor, bias: Tensor | None, kind: str, block: int | None = None):
        super().__init__()
        self.in_channels = weight.shape[1]
        self.out_channels = weight.shape[0]
        self.kind = kind
        self.block = block
        self.register_buffer("weight", to_sparse(weight.reshape(weight.shape[0], -1), kind, block))
        self.register_buffer("bias", bias)

    @classmethod
    def from_dense(cls, conv: nn.Conv2d, kind: str = "csr", block: int | None = None) -> SparseConv1x1:
        """Build from a plain pointwise Conv2d (see `is_pointwise_conv`)."""
        if not is_pointwise_conv(conv):
            raise ValueError("SparseConv1x1 needs a 1x1 Conv2d with stride 1, no padding and groups=1")
        return cls(conv.weight.detach(), _bias(conv), kind, block)

    def forward(self, x: Tensor) -> Tensor:
        n, c, h, w = x.shape
        # (N, C, H, W) -> (N*H*W, C) tokens; channels-last rows, then back to NCHW (views where the layout allows).
        tokens = x.permute(0, 2, 3, 1).reshape(n * h * w, c)
        out = sparse_mm_t(self.weight, tokens, self.bias)
        return out.reshape(n, h, w, self.out_channels).permute(0, 3, 1, 2)

    def to_dense(self) -> nn.Conv2d:
        """The equivalent plain 1x1 `nn.Conv2d`."""
        w = self.weight.to_dense()
        conv = nn.Conv2d(self.in_channels, self.out_channels, 1, bias=self.bias is not None,
                         device=w.device, dtype=w.dtype)
        with torch.no_grad():
            conv.weight.copy_(w.reshape(conv.weight.shape))
            if self.bias is not None:
                conv.bias.copy_(self.bias)
        return conv

    def weight_bytes(self) -> int:
        """Bytes of the stored sparse weight (values + indices) and bias."""
        return stored_bytes(self.weight) + (0 if self.bias is None else self.bias.numel() * self.bias.element_size())

    def extra_repr(self) -> str:
        block = f", block={self.block}x{self.block}" if self.block else ""
        return f"in_channels={self.in_channels}, out_channels={self.out_channels}, kind={self.kind}{block}"


SPARSE_MODULES = (SparseLinear, SparseConv1x1)


def make_sparse(layer: nn.Module, kind: str, block: int | None = None) -> nn.Module:
    """The sparse replacement of a Linear or pointwise Conv2d in layout `kind`."""
    if isinstance(layer, nn.Linear):
        return SparseLinear.from_dense(layer, kind, block)
    return SparseConv1x1.from_dense(layer, kind, block)  # type: ignore[arg-type]


def revert(model: nn.Module) -> int:
    """Replace every sparse runtime module in `model` by its exact dense equivalent, in place; returns the count."""
    swaps = [(name, m) for name, m in model.named_modules() if isinstance(m, SPARSE_MODULES)]
    for name, module in swaps:
        set_submodule(model, name, module.to_dense())  # type: ignore[union-attr]
    return len(swaps)


def set_submodule(model: nn.Module, name: str, module: nn.Module) -> None:
    """Put `module` at dotted path `name` inside `model` (the path must already exist)."""
    parent_name, _, child = name.rpartition(".")
    parent = model.get_submodule(parent_name) if parent_name else model
    setattr(parent, child, module)
