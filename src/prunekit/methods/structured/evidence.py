"""Gather the evidence of the data-driven importance kinds from a model and its dependency graph (plumbing).

taylor / hessian: gradients of every parameter the graph attached, over the calibration batches.
activation / activation_fluct: input statistics of every Linear / conv (groups=1) whose input channels belong to a
group (the consuming members: weight dim 1, or dim 0 of a transformers Conv1D). fpgm: which (weight, dim) pairs are a layer's outputs.
"""

from __future__ import annotations

from collections.abc import Sequence

from torch import Tensor, nn

from prunekit.graph import DependencyGraph, get_tensor
from prunekit.methods.structured.calib import Batch, collect_gradients, collect_inputs
from prunekit.methods.structured.importance_data import ACT_KINDS, GRAD_KINDS, Evidence


def _module_of(model: nn.Module, param: str) -> tuple[str, nn.Module | None, str]:
    owner, _, leaf = param.rpartition(".")
    try:
        return owner, model.get_submodule(owner), leaf
    except AttributeError:
        return owner, None, leaf


def _output_dim(module: nn.Module) -> int | None:
    """The weight dim a layer writes its output channels along (None: not a layer fpgm knows)."""
    if isinstance(module, nn.modules.conv._ConvNd):
        return 1 if module.transposed else 0
    if isinstance(module, nn.Linear):
        return 0
    if isinstance(module, nn.Embedding) or type(module).__name__ == "Conv1D":  # transformers Conv1D: (in, out)
        return 1
    return None


def input_dim(module: nn.Module) -> int | None:
    """The weight dim indexing a layer's input channels (fed as the input's last dim for Linear / transformers Conv1D,
    dim 1 for a conv); None for layers the activation kinds do not read."""
    if isinstance(module, nn.Linear):
        return 1
    if type(module).__name__ == "Conv1D":  # transformers Conv1D: weight (in, out)
        return 0
    if isinstance(module, nn.modules.conv._ConvNd) and not module.transposed and module.groups == 1:
        return 1
    return None


def producers(model: nn.Module, graph: DependencyGraph) -> frozenset[tuple[str, int]]:
    """(weight, output dim) pairs among the graph's group members."""
    out = set()
    for g in graph.groups:
        for m in g.members:
            _, module, leaf = _module_of(model, m.param)
            if module is not None and leaf == "weight" and _output_dim(module) == m.dim:
                out.add((m.param, m.dim))
    return frozenset(out)


def build_evidence(model: nn.Module, graph: DependencyGraph, kind: str, batches: Sequence[Batch]) -> Evidence:
    """The Evidence `kind` reads (gradients, input statistics, producing members)."""
    prod = producers(model, graph)
    if kind in GRAD_KINDS:
        tensors = {}
        for name in graph.attached_tensors:
            t = get_tensor(model, name)
            if isinstance(t, nn.Parameter):
                tensors[name] = t
        stats = collect_gradients(model, batches, tensors)
        return Evidence(grad=stats.grad, grad_sq=stats.grad_sq, producers=prod)
    if kind in ACT_KINDS:
        consumers: dict[str, nn.Module] = {}
        keys: dict[str, list[tuple[str, int]]] = {}
        for g in graph.groups:
            for m in g.members:
                owner, module, leaf = _module_of(model, m.param)
                if module is not None and leaf == "weight" and m.dim == input_dim(module):
                    consumers[owner] = module
                    keys.setdefault(owner, []).append((m.param, m.dim))
        stats = collect_inputs(model, batches, consumers)
        act_sq: dict[tuple[str, int], Tensor] = {}
        act_var: dict[tuple[str, int], Tensor] = {}
        for owner, st in stats.items():
            if st.count == 0 or st.total is None or st.total_sq is None:
                continue
            mean = st.total / st.count
            var = (st.total_sq / st.count - mean.square()).clamp_min(0.0) * st.count / max(st.count - 1, 1)
            for key in keys[owner]:
                act_sq[key] = st.total_sq
                act_var[key] = var
        return Evidence(act_sq=act_sq, act_var=act_var, producers=prod)
    return Evidence(producers=prod)

