"""Model plumbing shared by every engine: which layers are prunable, their weights as 2-D matrices, how to call a
model on example inputs, the order layers execute in, and which weights are tied.

Pure model inspection: nothing here changes a model.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Mapping
from typing import Any

import torch
from torch import Tensor, nn

# Layer types whose `weight` mask pruning handles. transformers' GPT-2 style Conv1D is added lazily (optional dep).
_PRUNABLE: tuple[type[nn.Module], ...] = (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d)


def prunable_types() -> tuple[type[nn.Module], ...]:
    """The module types whose weights mask pruning can target."""
    try:
        from transformers.pytorch_utils import Conv1D
    except Exception:  # transformers missing or moved: plain torch types only
        return _PRUNABLE
    return (*_PRUNABLE, Conv1D)


def is_prunable(module: nn.Module) -> bool:
    """True for a layer type mask pruning handles that has a floating-point weight."""
    w = getattr(module, "weight", None)
    return isinstance(module, prunable_types()) and isinstance(w, Tensor) and w.is_floating_point()


def is_hf_conv1d(module: nn.Module) -> bool:
    """True for transformers' GPT-2 style Conv1D (weight stored (in, out)), also once parametrized."""
    return any(c.__name__ == "Conv1D" for c in type(module).__mro__)


def weight_as_matrix(module: nn.Module, weight: Tensor) -> Tensor:
    """View a weight as (out, in*kh*kw) so N:M and blocks run along the input dimension.

    transformers' Conv1D stores (in, out); it is transposed to (out, in). The result is a view where possible.
    """
    if is_hf_conv1d(module) and weight.ndim == 2:
        return weight.t()
    if weight.ndim == 1:
        return weight.reshape(1, -1)
    return weight.reshape(weight.shape[0], -1)


def matrix_to_weight(module: nn.Module, matrix: Tensor, shape: torch.Size) -> Tensor:
    """Inverse of `weight_as_matrix` for a tensor of the matrix's shape (e.g. a keep_mask)."""
    if is_hf_conv1d(module) and len(shape) == 2:
        return matrix.t().contiguous()
    return matrix.reshape(shape)


def call_model(model: nn.Module, inputs: Any) -> Any:
    """Call `model` on example inputs given as a Tensor, a tuple/list of positional args, or a dict of kwargs."""
    if isinstance(inputs, Mapping):
        return model(**inputs)
    if isinstance(inputs, (tuple, list)):
        return model(*inputs)
    return model(inputs)


@contextlib.contextmanager
def eval_mode(model: nn.Module) -> Iterator[None]:
    """Put every submodule in eval mode for the block, then restore each module's own `training` flag."""
    flags = [(module, module.training) for module in model.modules()]
    model.eval()
    try:
        yield
    finally:
        for module, flag in flags:
            module.training = flag


def execution_order(model: nn.Module, example_inputs: Any) -> list[str]:
    """Names of prunable modules in the order a forward pass first calls them (one no-grad forward, hooks removed)."""
    names = {m: n for n, m in model.named_modules()}
    order: list[str] = []
    seen: set[str] = set()

    def hook(module: nn.Module, _args: Any, _out: Any) -> None:
        name = names.get(module)
        if name is not None and name not in seen:
            seen.add(name)
            order.append(name)

    handles = [m.register_forward_hook(hook) for m in model.modules() if is_prunable(m)]
    was_training = model.training
    try:
        model.eval()
        with torch.no_grad():
            call_model(model, example_inputs)
    finally:
        for h in handles:
            h.remove()
        model.train(was_training)
    return order


def own_weight(module: nn.Module) -> Tensor | None:
    """The stored weight tensor itself: under a mask parametrization or a torch prune hook, the original."""
    params = getattr(module, "parametrizations", None)
    if params is not None and "weight" in params:
        return params["weight"].original
    w = module._parameters.get("weight_orig", module._parameters.get("weight"))
    return w if isinstance(w, Tensor) else None


def tied_weights(model: nn.Module) -> dict[str, list[str]]:
    """Map each module name whose stored weight is shared with another module to the other names.

    Identity is the stored tensor (not `module.weight`, which a parametrization recomputes at a reused address).
    """
    by_id: dict[int, list[str]] = {}
    for name, module in model.named_modules(remove_duplicate=False):
        w = own_weight(module)
        if w is not None and w.numel() > 0:
            by_id.setdefault(id(w), []).append(name)
    out: dict[str, list[str]] = {}
    for names in by_id.values():
        uniq = sorted(set(names))
        if len(uniq) > 1:
            for n in uniq:
                out[n] = [o for o in uniq if o != n]
    return out


def output_layer_names(model: nn.Module) -> set[str]:
    """Names of the model's output heads as Hugging Face declares them (`get_output_embeddings`), if any."""
    getter = getattr(model, "get_output_embeddings", None)
    head = None
    if callable(getter):
        try:
            head = getter()
        except Exception:  # some HF models raise NotImplementedError here
            head = None
    if head is None:
        return set()
    return {n for n, m in model.named_modules() if m is head}
