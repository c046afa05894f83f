"""Tracing: one `torch.export.export(..., strict=False)` of the model in eval mode, and what the graph walk needs
from it (which placeholder is which parameter or buffer, the module path of every node, the flat inputs).

Why torch.export (non-strict): it records every ATen op a forward runs, including functional calls, `x.view(...)`,
`torch.cat` and in-place ops, with the static shape of every tensor (`node.meta["val"]`) and the module path that ran
it (`nn_module_stack`). torch.fx symbolic tracing fails on data-dependent Python (shape arithmetic, `if x.size(1)`)
and sees module calls, not ops; autograd tracing misses ops without gradients. Non-strict export runs the model's
Python normally, so it accepts what eager mode accepts.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterator, Mapping
from typing import Any

import torch
from torch import nn
from torch.export import ExportedProgram
from torch.fx import Node

from prunekit.errors import PrunekitError
from prunekit.layers import eval_mode  # noqa: F401  (used by verify through this module)




def split_inputs(example_inputs: Any) -> tuple[tuple[Any, ...], dict[str, Any]]:
    """Example inputs as (args, kwargs): a Tensor, a tuple/list of positional args, or a dict of kwargs."""
    if isinstance(example_inputs, Mapping):
        return (), dict(example_inputs)
    if isinstance(example_inputs, (tuple, list)):
        return tuple(example_inputs), {}
    return (example_inputs,), {}


def export_model(model: nn.Module, example_inputs: Any) -> ExportedProgram:
    """Export `model` (eval mode, no grad) on `example_inputs`; a failure becomes a PrunekitError naming the cause."""
    if example_inputs is None:
        raise PrunekitError("structured pruning needs example_inputs (a Tensor, a tuple of args or a dict of kwargs)")
    args, kwargs = split_inputs(example_inputs)
    with eval_mode(model), torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            return torch.export.export(model, args, kwargs, strict=False)
        except Exception as exc:  # noqa: BLE001 - any tracing failure is reported the same way
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise PrunekitError(
                f"could not trace the model with torch.export ({type(exc).__name__}: {first[:300]}); "
                "structured pruning needs a forward without data-dependent Python control flow"
            ) from exc


def placeholder_targets(ep: ExportedProgram) -> dict[str, tuple[str, str]]:
    """Placeholder node name -> (kind, target): kind is "parameter", "buffer", "constant" or "input"."""
    out: dict[str, tuple[str, str]] = {}
    for spec in ep.graph_signature.input_specs:
        name = getattr(spec.arg, "name", None)
        if name is None:
            continue
        kind = spec.kind.name.lower()
        if kind == "parameter":
            out[name] = ("parameter", spec.target)
        elif kind == "buffer":
            out[name] = ("buffer", spec.target)
        elif kind in ("constant_tensor", "custom_obj"):
            out[name] = ("constant", spec.target or name)
        else:
            out[name] = ("input", name)
    return out


def module_path(node: Node) -> str:
    """The innermost module that ran `node` ("" for the root model)."""
    stack = node.meta.get("nn_module_stack") or {}
    if not stack:
        return ""
    path = list(stack.values())[-1][0]
    return path.removeprefix("L['self'].").removeprefix("L__self__.") if isinstance(path, str) else ""


def module_type(node: Node) -> str:
    """Class name of the innermost module that ran `node` ("" when unknown)."""
    stack = node.meta.get("nn_module_stack") or {}
    if not stack:
        return ""
    kind = list(stack.values())[-1][1]
    name = kind if isinstance(kind, str) else getattr(kind, "__name__", "")
    return name.rsplit(".", 1)[-1]


def flat_graph_inputs(ep: ExportedProgram, example_inputs: Any, state: dict[str, torch.Tensor]) -> list[Any]:
    """The flat argument list of `ep.graph_module` for these inputs, with parameters and buffers from `state`."""
    args, kwargs = split_inputs(example_inputs)
    user = torch.utils._pytree.tree_leaves((args, kwargs))
    flat: list[Any] = []
    it = iter(user)
    for spec in ep.graph_signature.input_specs:
        kind = spec.kind.name.lower()
        if kind in ("parameter", "buffer"):
            flat.append(state[spec.target])
        elif kind in ("constant_tensor", "custom_obj"):
            flat.append(ep.constants[spec.target])
        elif kind == "user_input":
            flat.append(next(it))
        else:  # a token or an unknown kind: nothing we can feed
            raise PrunekitError(f"unsupported exported input kind {kind!r}")
    return flat
