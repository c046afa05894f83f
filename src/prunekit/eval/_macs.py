"""Multiply-accumulate (MAC) counts of single aten ops, from tensor shapes only.

Pure maths, no model plumbing: `op_macs(func, args, kwargs, out)` returns how many MACs one call of a matmul-like or
convolution op performs, and `weight_operand_positions(func)` says which positional arguments may hold a layer's
weight (so the caller can attribute the op to the layer that owns that weight). Element-wise ops, reductions,
softmax, norms and lookups count 0 MACs by design: MACs here mean the multiply-adds of matrix products and
convolutions, the usual meaning in pruning papers.

Formulas (one MAC = one multiply plus one add):
- mm (M,K)@(K,N): M*K*N; bmm adds the batch; addmm/baddbmm ignore the bias add; mv/dot likewise.
- convolution: out.numel() * (C_in / groups) * prod(kernel); transposed convolution: in.numel() * (C_out / groups)
  * prod(kernel) (each input element is scattered to that many outputs).
- scaled-dot-product attention kernels: batch * heads_q * L * S * (E + E_v), i.e. Q@K^T plus attn@V.
- anything else that `torch.utils.flop_counter` knows: its FLOPs / 2.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

import torch

aten = torch.ops.aten


def _numel(shape: Sequence[int]) -> int:
    return int(math.prod(int(s) for s in shape))


def _mm(a: torch.Tensor, b: torch.Tensor) -> int:
    return _numel(a.shape) * int(b.shape[-1])


def _bmm(a: torch.Tensor, b: torch.Tensor) -> int:
    return _numel(a.shape) * int(b.shape[-1])


def _mv(a: torch.Tensor, b: torch.Tensor) -> int:
    return _numel(a.shape)


def _conv(x: torch.Tensor, w: torch.Tensor, transposed: bool, out: torch.Tensor) -> int:
    # weight is (C_out, C_in/groups, *k) for a convolution and (C_in, C_out/groups, *k) when transposed.
    per_element = _numel(w.shape[1:])
    return (_numel(x.shape) if transposed else _numel(out.shape)) * per_element


def _sdpa(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> int:
    length, dim = int(q.shape[-2]), int(q.shape[-1])
    source, dim_v = int(k.shape[-2]), int(v.shape[-1])
    return _numel(q.shape[:-2]) * length * source * (dim + dim_v)


def _conv_from_args(args: Sequence[Any], out: Any) -> int:
    transposed = bool(args[6]) if len(args) > 6 else False
    result = out[0] if isinstance(out, (tuple, list)) else out
    return _conv(args[0], args[1], transposed, result)


# op overload packet -> (MAC formula over (args, out), positions of args that may be a layer's weight)
_FORMULAS: dict[Any, tuple[Callable[[Sequence[Any], Any], int], tuple[int, ...]]] = {
    aten.mm: (lambda a, o: _mm(a[0], a[1]), (0, 1)),
    aten.addmm: (lambda a, o: _mm(a[1], a[2]), (1, 2)),
    aten.bmm: (lambda a, o: _bmm(a[0], a[1]), (0, 1)),
    aten.baddbmm: (lambda a, o: _bmm(a[1], a[2]), (1, 2)),
    aten.addbmm: (lambda a, o: _bmm(a[1], a[2]), (1, 2)),
    aten.mv: (lambda a, o: _mv(a[0], a[1]), (0, 1)),
    aten.addmv: (lambda a, o: _mv(a[1], a[2]), (1, 2)),
    aten.dot: (lambda a, o: _numel(a[0].shape), (0, 1)),
    aten.convolution: (_conv_from_args, (1,)),
    aten._convolution: (_conv_from_args, (1,)),
}

_SDPA_OPS = [
    "_scaled_dot_product_flash_attention_for_cpu",
    "_scaled_dot_product_flash_attention",
    "_scaled_dot_product_efficient_attention",
    "_scaled_dot_product_cudnn_attention",
    "_scaled_dot_product_fused_attention_overrideable",
]
for _name in _SDPA_OPS:
    if hasattr(aten, _name):
        _FORMULAS[getattr(aten, _name)] = (lambda a, o: _sdpa(a[0], a[1], a[2]), ())

ATTENTION_OPS = frozenset(getattr(aten, n) for n in _SDPA_OPS if hasattr(aten, n))
"""The fused attention kernels: MACs counted from Q, K and V shapes."""


def _fallback_registry() -> dict[Any, Callable[..., int]]:
    try:
        from torch.utils.flop_counter import flop_registry
    except ImportError:  # very old torch: only the formulas above
        return {}
    return dict(flop_registry)


_FALLBACK = _fallback_registry()


def op_macs(func: Any, args: Sequence[Any], kwargs: dict[str, Any] | None, out: Any) -> int:
    """MACs of one call of an aten op.

    Args:
        func: the aten OpOverload seen by a dispatch mode.
        args: its positional arguments (tensors keep their shapes).
        kwargs: its keyword arguments.
        out: what the op returned.

    Returns:
        The number of multiply-accumulates, 0 for ops that are not matrix products or convolutions.
    """
    packet = getattr(func, "overloadpacket", func)
    entry = _FORMULAS.get(packet)
    if entry is not None:
        return int(entry[0](args, out))
    fallback = _FALLBACK.get(packet)
    if fallback is None or "backward" in str(packet):
        return 0
    try:
        return int(fallback(*args, **(kwargs or {}), out_val=out)) // 2
    except Exception:  # noqa: BLE001 - an op whose formula cannot read these args counts as 0, never crashes
        return 0


def weight_operand_positions(func: Any) -> tuple[int, ...]:
    """Positional arguments of `func` that can be a layer's weight (empty for attention kernels and unknown ops)."""
    entry = _FORMULAS.get(getattr(func, "overloadpacket", func))
    return entry[1] if entry is not None else ()
