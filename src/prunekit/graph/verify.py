"""Equivalence check: the pruned model must compute what the original computes with the removed channels zeroed.

The reference runs the ORIGINAL exported graph (original weights) node by node and zeroes, after every node, the
elements whose channels were removed (from the node's label). That is exactly the original network restricted to
the kept channels, wherever removal is exact: a zero input channel contributes nothing to a conv, a linear or a
matmul, and element-wise ops keep zeros where they are masked again. The only ops whose restriction is not
"zero and carry on" are statistics over channels; the reference computes them over the kept channels only:
mean (divides by the kept count), LayerNorm / RMSNorm / GroupNorm (mean and variance over kept channels).
Every other op over channels (softmax over channels, max, var, ...) is frozen by the graph, so never reaches here.

The pruned model runs its own eager code on the smaller tensors, so a mis-mapped reshape, a stale module attribute
or a wrong slice shows up as a mismatch (or a forward error), independently of the labels the reference uses.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn
from torch.fx import Interpreter, Node

from prunekit.graph._labels import Label, keep_mask
from prunekit.graph._trace import eval_mode, flat_graph_inputs, split_inputs
from prunekit.graph._walk import op_key
from prunekit.layers import call_model


@dataclass(frozen=True)
class VerifyResult:
    """Outcome of the equivalence check.

    Attributes:
        ok: every output matched within tolerance.
        max_abs_error: the largest |pruned - reference| over all outputs.
        scale: the largest |reference| value (the error is judged relative to it).
        outputs: how many output tensors were compared.
        detail: a one-line explanation when not ok.
    """

    ok: bool
    max_abs_error: float
    scale: float
    outputs: int
    detail: str = ""


class _MaskedInterpreter(Interpreter):
    def __init__(self, gm: Any, labels: dict[str, Any], stats: dict[str, tuple[str, tuple[int, ...]]],
                 keep_atom: Tensor) -> None:
        super().__init__(gm)
        self.labels = labels
        self.stats = stats
        self.keep_atom = keep_atom

    def _mask(self, label: Any, value: Any) -> Tensor | None:
        if not isinstance(label, dict) or not isinstance(value, Tensor) or not value.is_floating_point():
            return None
        return keep_mask(label, self.keep_atom, value.ndim)

    def run_node(self, n: Node) -> Any:
        if n.op == "call_function" and n.name in self.stats:
            args, kwargs = self.fetch_args_kwargs_from_env(n)
            result = _masked_statistic(self, n, args, kwargs)
        else:
            result = super().run_node(n)
        if n.op not in ("call_function", "placeholder"):
            return result
        label = self.labels.get(n.name)
        inplace = n.op == "call_function" and op_key(n.target).endswith("_")
        if isinstance(result, Tensor):
            return _apply(result, self._mask(label, result), inplace)
        if isinstance(result, (list, tuple)) and isinstance(label, (list, tuple)):
            out = [_apply(r, self._mask(lab, r), inplace) if isinstance(r, Tensor) else r
                   for r, lab in zip(result, label)]
            return type(result)(out) if isinstance(result, tuple) else out
        return result

    def input_mask(self, node: Any, value: Tensor) -> Tensor:
        """Float mask of an op input, expanded to its shape (all ones when nothing is removed)."""
        label: Label | None = self.labels.get(node.name) if isinstance(node, Node) else None
        mask = self._mask(label, value)
        if mask is None:
            return torch.ones_like(value)
        return mask.to(value.device).expand(value.shape).to(value.dtype)


def _apply(value: Tensor, mask: Tensor | None, inplace: bool) -> Tensor:
    if mask is None:
        return value
    mask = mask.to(value.device)
    return value.masked_fill_(~mask, 0) if inplace else value.masked_fill(~mask, 0)


def _masked_statistic(interp: _MaskedInterpreter, n: Node, args: tuple, kwargs: dict) -> Any:
    kind, _ = interp.stats[n.name]
    key = op_key(n.target)
    x = args[0]
    m = interp.input_mask(n.args[0], x)
    if kind == "sum":
        return n.target(*args, **kwargs)
    if kind == "mean":
        ndim = x.ndim
        dims = args[1] if len(args) > 1 else kwargs.get("dim")
        dims = list(range(ndim)) if dims is None or dims == [] else ([dims] if isinstance(dims, int) else list(dims))
        keepdim = bool(args[2] if len(args) > 2 else kwargs.get("keepdim", False))
        return (x * m).sum(dims, keepdim=keepdim) / m.sum(dims, keepdim=keepdim).clamp_min(1)
    if kind in ("layer_norm", "native_layer_norm", "rms_norm", "_fused_rms_norm"):
        shape = list(args[1])
        dims = list(range(x.ndim - len(shape), x.ndim))
        weight = args[2] if len(args) > 2 else kwargs.get("weight")
        if key == "rms_norm":
            eps = args[3] if len(args) > 3 else kwargs.get("eps")
            eps = torch.finfo(x.dtype).eps if eps is None else eps
            count = m.sum(dims, keepdim=True).clamp_min(1)
            y = x * torch.rsqrt((x * x * m).sum(dims, keepdim=True) / count + eps)
            return y * weight if weight is not None else y
        bias = args[3] if len(args) > 3 else kwargs.get("bias")
        eps = args[4] if len(args) > 4 else kwargs.get("eps", 1e-5)
        y, mean, rstd = _masked_normalize(x, m, dims, eps)
        y = y * weight if weight is not None else y
        y = y + bias if bias is not None else y
        return (y, mean, rstd) if key == "native_layer_norm" else y
    if kind == "group_norm":
        if key == "native_group_norm":
            weight, bias, groups, eps = args[1], args[2], int(args[6]), args[7]
        else:
            groups, weight = int(args[1]), args[2] if len(args) > 2 else kwargs.get("weight")
            bias = args[3] if len(args) > 3 else kwargs.get("bias")
            eps = args[4] if len(args) > 4 else kwargs.get("eps", 1e-5)
        n_, c = x.shape[0], x.shape[1]
        xs = x.reshape(n_, groups, c // groups, *x.shape[2:])
        ms = m.reshape(xs.shape)
        y, mean, rstd = _masked_normalize(xs, ms, list(range(2, xs.ndim)), eps)
        y = y.reshape(x.shape)
        shape = [1, c] + [1] * (x.ndim - 2)
        y = y * weight.reshape(shape) if weight is not None else y
        y = y + bias.reshape(shape) if bias is not None else y
        return (y, mean.reshape(n_, groups), rstd.reshape(n_, groups)) if key == "native_group_norm" else y
    raise RuntimeError(f"no masked implementation for statistic {kind!r}")


def _masked_normalize(x: Tensor, m: Tensor, dims: list[int], eps: float) -> tuple[Tensor, Tensor, Tensor]:
    count = m.sum(dims, keepdim=True).clamp_min(1)
    mean = (x * m).sum(dims, keepdim=True) / count
    var = (((x - mean) * m) ** 2).sum(dims, keepdim=True) / count
    rstd = torch.rsqrt(var + eps)
    return (x - mean) * rstd, mean, rstd


def reference_outputs(ep: Any, labels: dict[str, Any], stats: dict[str, tuple[str, tuple[int, ...]]],
                      keep_atom: Tensor, example_inputs: Any) -> list[Tensor]:
    """Outputs of the original exported graph with removed channels zeroed at every node (user outputs only)."""
    args, kwargs = split_inputs(example_inputs)
    if hasattr(ep, "_graph_module_flat_inputs"):  # torch's own flattening (kwargs order, constants)
        flat = ep._graph_module_flat_inputs(args, kwargs)
    else:
        flat = flat_graph_inputs(ep, example_inputs, ep.state_dict)
    with torch.no_grad():
        outs = _MaskedInterpreter(ep.graph_module, labels, stats, keep_atom).run(*flat)
    outs = list(outs) if isinstance(outs, (list, tuple)) else [outs]
    specs = ep.graph_signature.output_specs
    return [o for o, s in zip(outs, specs) if s.kind.name == "USER_OUTPUT"]


def compare(pruned: nn.Module, reference: list[Tensor], example_inputs: Any, rtol: float, atol: float) -> VerifyResult:
    """Run `pruned` on the inputs and compare its flat outputs with `reference`."""
    with eval_mode(pruned), torch.no_grad():
        try:
            out = call_model(pruned, example_inputs)
        except Exception as exc:  # noqa: BLE001 - a forward that fails after surgery is a verification failure
            return VerifyResult(False, math.inf, 0.0, 0, f"the pruned model's forward failed: {type(exc).__name__}: "
                                                        f"{str(exc).splitlines()[0] if str(exc) else ''}")
    got = [t for t in torch.utils._pytree.tree_leaves(out) if isinstance(t, Tensor)]
    want = [t for t in reference if isinstance(t, Tensor)]
    if len(got) != len(want):
        return VerifyResult(False, math.inf, 0.0, len(got), f"{len(got)} outputs, the reference has {len(want)}")
    worst, scale = 0.0, 0.0
    for i, (a, b) in enumerate(zip(got, want)):
        if a.shape != b.shape:
            return VerifyResult(False, math.inf, 0.0, len(got),
                                f"output {i} has shape {tuple(a.shape)}, the reference {tuple(b.shape)}")
        if not a.is_floating_point():
            if not torch.equal(a, b):
                return VerifyResult(False, math.inf, 0.0, len(got), f"integer output {i} differs")
            continue
        if not torch.isfinite(a).all():
            return VerifyResult(False, math.inf, 0.0, len(got), f"output {i} has NaN or inf values")
        worst = max(worst, float((a.double() - b.double()).abs().max()) if a.numel() else 0.0)
        scale = max(scale, float(b.double().abs().max()) if b.numel() else 0.0)
    ok = worst <= atol + rtol * scale
    detail = "" if ok else f"max |pruned - reference| = {worst:.3g} on outputs of scale {scale:.3g}"
    return VerifyResult(ok, worst, scale, len(got), detail)
