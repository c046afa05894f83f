"""Count a model: parameters, non-zero weights and multiply-accumulates (MACs), per layer and in total.

`count_model(model, example_inputs)` gives one `LayerCount` row per module that owns parameters (Linear, Conv,
ConvTranspose, transformers' Conv1D, Embedding, norms, ...) and one row per module whose forward multiplies two
activations (attention: Q@K^T and attn@V, via `scaled_dot_product_attention`, `torch.matmul`/`bmm` in eager attention
code, or `nn.MultiheadAttention`).

How MACs are found: one forward pass on the example inputs under a `TorchDispatchMode` that sees every aten op.
Each matmul / convolution / attention op is counted from its shapes (`prunekit.eval._macs`) and attributed to
1. the layer that owns the weight operand (matched by tensor storage, so tied weights and functional calls such as
   `nn.MultiheadAttention`'s `F.linear(x, out_proj.weight)` land on the right row), else
2. the innermost running module when that is a weight layer (a parametrized weight is a fresh tensor each forward),
3. else an activation-matmul row named `"<module>::matmul"` for the innermost running module.
MACs are for the whole example batch as given (batch and tokens included), not per sample.
"""

from __future__ import annotations

import contextlib
from collections import defaultdict
from collections.abc import Iterable, Iterator
from dataclasses import asdict, dataclass, field
from typing import Any

import torch
from torch import nn
from torch.nn.utils import parametrize
from torch.utils._python_dispatch import TorchDispatchMode

from prunekit.errors import PrunekitError, suggest
from prunekit.eval._inputs import call_model, check_inputs, describe_inputs, eval_mode
from prunekit.eval._macs import ATTENTION_OPS, op_macs, weight_operand_positions
from prunekit.eval._tensors import storage_ptr, tensor_key

MATMUL_SUFFIX = "::matmul"
"""Suffix of the rows that hold a module's activation-by-activation matmuls (attention)."""


@dataclass(frozen=True)
class LayerCount:
    """Counts for one module (or one module's activation matmuls).

    Attributes:
        name: module name as in `model.named_modules()`; activation-matmul rows end in `::matmul`.
        type: the module's class name, or "attention" / "matmul" for activation-matmul rows.
        shape: shape of the module's `weight` (its first parameter when it has no `weight`), None for matmul rows.
        params: elements in the module's own parameters (effective tensors for parametrized ones).
        nonzeros: how many of those elements are not zero.
        macs: dense multiply-accumulates for the example inputs, None when no inputs were given.
        effective_macs: `macs` scaled by the weight's density (what a kernel that skips zeros would do).
    """

    name: str
    type: str
    shape: tuple[int, ...] | None
    params: int
    nonzeros: int
    macs: int | None
    effective_macs: int | None

    @property
    def sparsity(self) -> float:
        """Fraction of the parameters that are zero (0.0 for a row without parameters)."""
        return 1.0 - self.nonzeros / self.params if self.params else 0.0

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-ready dict."""
        data = asdict(self)
        data["shape"] = list(self.shape) if self.shape is not None else None
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> LayerCount:
        """Inverse of `to_dict`."""
        shape = data.get("shape")
        return cls(**{**data, "shape": tuple(shape) if shape is not None else None})


@dataclass
class ModelCount:
    """Per-layer rows and totals; shared (tied) parameters are counted once in the totals.

    Attributes:
        layers: one row per parameter-owning module, plus activation-matmul rows.
        params: total parameter elements, each shared tensor once.
        nonzeros: total non-zero parameter elements, each shared tensor once.
        macs: total dense MACs for `inputs`, None when no example inputs were given.
        effective_macs: total MACs after scaling each weight op by its weight's density.
        inputs: the shapes the MACs were counted for (whole batch), e.g. "(8, 3, 32, 32)".
    """

    layers: list[LayerCount] = field(default_factory=list)
    params: int = 0
    nonzeros: int = 0
    macs: int | None = None
    effective_macs: int | None = None
    inputs: str | None = None

    @property
    def sparsity(self) -> float:
        """Fraction of all parameters that are zero."""
        return 1.0 - self.nonzeros / self.params if self.params else 0.0

    def layer(self, name: str) -> LayerCount:
        """The row called `name`; raises `PrunekitError` with close names when there is none."""
        for row in self.layers:
            if row.name == name:
                return row
        raise PrunekitError(f"no layer named {name!r} in the count.{suggest(name, [r.name for r in self.layers])}")

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-ready dict."""
        data = {k: v for k, v in asdict(self).items() if k != "layers"}
        return {**data, "layers": [row.to_dict() for row in self.layers]}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ModelCount:
        """Inverse of `to_dict`."""
        layers = [LayerCount.from_dict(row) for row in data.get("layers", [])]
        return cls(**{**{k: v for k, v in data.items() if k != "layers"}, "layers": layers})


@dataclass
class _Layer:
    """A parameter-owning module and its effective tensors (kept alive while tracing so storages stay unique)."""

    name: str
    module: nn.Module
    tensors: dict[str, torch.Tensor]
    keys: dict[str, tuple]
    storages: dict[str, set[int]]
    nonzeros: dict[str, int] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.nonzeros = {pname: int(torch.count_nonzero(t)) for pname, t in self.tensors.items()}

    def density(self, pname: str) -> float:
        """Fraction of non-zeros in parameter `pname` (1.0 for an empty tensor)."""
        numel = self.tensors[pname].numel()
        return self.nonzeros[pname] / numel if numel else 1.0

    @property
    def weight_name(self) -> str:
        """'weight' when the module has one, else its first parameter."""
        return "weight" if "weight" in self.tensors else next(iter(self.tensors))


def _type_name(module: nn.Module) -> str:
    """Class name, seeing through the `Parametrized<Class>` subclass that torch's parametrize injects."""
    cls = type(module)
    if parametrize.is_parametrized(module) and cls.__name__.startswith("Parametrized") and cls.__bases__:
        cls = cls.__bases__[0]
    return cls.__name__


def _is_weight_layer(module: nn.Module) -> bool:
    return isinstance(module, (nn.Linear, nn.Bilinear, nn.modules.conv._ConvNd)) or _type_name(module) == "Conv1D"


def _collect_layers(model: nn.Module) -> list[_Layer]:
    """Every module with own parameters, with parametrized weights replaced by their effective value."""
    inside_parametrizations: set[int] = set()
    for module in model.modules():
        if parametrize.is_parametrized(module):
            inside_parametrizations.update(id(m) for m in module.parametrizations.modules())
    layers = []
    for name, module in model.named_modules():
        if id(module) in inside_parametrizations:
            continue
        tensors: dict[str, torch.Tensor] = {}
        keys: dict[str, tuple] = {}
        storages: dict[str, set[int]] = {}
        for pname, param in module.named_parameters(recurse=False):
            tensors[pname], keys[pname], storages[pname] = param.detach(), tensor_key(param), {storage_ptr(param)}
        if parametrize.is_parametrized(module):
            for pname, plist in module.parametrizations.items():
                originals = [p for _, p in plist.named_parameters(recurse=False)]
                tensors[pname] = getattr(module, pname).detach()
                keys[pname] = tuple(tensor_key(p) for p in originals) or tensor_key(tensors[pname])
                storages[pname] = {storage_ptr(p) for p in originals} | {storage_ptr(tensors[pname])}
        if tensors:
            layers.append(_Layer(name, module, tensors, keys, storages))
    return layers


class _MacCounter(TorchDispatchMode):
    """Counts MACs of every aten op and attributes them to a layer row or to an activation-matmul row."""

    def __init__(
        self,
        stack: list[str],
        owners: dict[int, list[tuple[str, float]]],
        weight_layers: dict[str, float],
        type_names: dict[str, str],
    ):
        super().__init__()
        self.stack = stack
        self.owners = owners
        self.weight_layers = weight_layers
        self.type_names = type_names
        self.macs: dict[str, int] = defaultdict(int)
        self.effective: dict[str, float] = defaultdict(float)
        self.matmul: dict[str, int] = defaultdict(int)
        self.attention: set[str] = set()

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        macs = op_macs(func, args, kwargs, out)
        if macs:
            self._attribute(func, args, macs)
        return out

    def _attribute(self, func: Any, args: tuple, macs: int) -> None:
        inner = self.stack[-1] if self.stack else ""
        for pos in weight_operand_positions(func):
            arg = args[pos] if pos < len(args) else None
            owners = self.owners.get(storage_ptr(arg)) if isinstance(arg, torch.Tensor) else None
            if owners:
                name, density = next(((n, d) for n, d in owners if n == inner), owners[0])
                self.macs[name] += macs
                self.effective[name] += macs * density
                return
        if inner in self.weight_layers:
            self.macs[inner] += macs
            self.effective[inner] += macs * self.weight_layers[inner]
            return
        self.matmul[inner] += macs
        if func.overloadpacket in ATTENTION_OPS or "attention" in self.type_names.get(inner, "").lower():
            self.attention.add(inner)


@contextlib.contextmanager
def _no_fused_mha() -> Iterator[None]:
    """Turn off the fused `nn.MultiheadAttention` / `nn.TransformerEncoderLayer` inference kernels for the block.

    The fused kernels hide their projections inside one op; the Python path computes the same result with plain
    linear / bmm ops whose weights can be attributed to `in_proj_weight` and `out_proj`.
    """
    mha = getattr(torch.backends, "mha", None)
    if mha is None or not hasattr(mha, "set_fastpath_enabled"):
        yield
        return
    previous = mha.get_fastpath_enabled()
    mha.set_fastpath_enabled(False)
    try:
        yield
    finally:
        mha.set_fastpath_enabled(previous)


def _trace_macs(model: nn.Module, example_inputs: Any, layers: list[_Layer]) -> _MacCounter:
    """One forward pass with a module stack (pre/post hooks, removed afterwards) and the MAC-counting mode."""
    owners: dict[int, list[tuple[str, float]]] = defaultdict(list)
    weight_layers: dict[str, float] = {}
    for layer in layers:
        for pname in layer.tensors:
            for ptr in layer.storages[pname] - {0}:
                owners[ptr].append((layer.name, layer.density(pname)))
        if _is_weight_layer(layer.module):
            weight_layers[layer.name] = layer.density(layer.weight_name)
    names: dict[int, str] = {}
    for name, module in model.named_modules():
        names.setdefault(id(module), name)
    stack: list[str] = []
    type_names = {name: type(module).__name__ for name, module in model.named_modules()}
    counter = _MacCounter(stack, dict(owners), weight_layers, type_names)

    def push(module: nn.Module, args: Any) -> None:
        stack.append(names.get(id(module), ""))

    def pop(module: nn.Module, args: Any, output: Any) -> None:
        if stack:
            stack.pop()

    handles = []
    try:
        for module in model.modules():
            handles.append(module.register_forward_pre_hook(push))
            handles.append(module.register_forward_hook(pop, always_call=True))
        with eval_mode(model), torch.no_grad(), _no_fused_mha(), counter:
            call_model(model, example_inputs)
    finally:
        for handle in handles:
            handle.remove()
    return counter


def _place_matmul_rows(rows: list[LayerCount], matmul_rows: list[LayerCount]) -> list[LayerCount]:
    """Insert each activation-matmul row after the last row of its module's subtree (forward-ish order)."""
    out = list(rows)
    for row in matmul_rows:
        owner = row.name[: -len(MATMUL_SUFFIX)]
        index = len(out)
        if owner:
            inside = [i for i, r in enumerate(out) if r.name == owner or r.name.startswith(owner + ".")]
            if inside:
                index = inside[-1] + 1
        out.insert(index, row)
    return out


def _unique_totals(layers: list[_Layer], names: set[str] | None = None) -> tuple[int, int]:
    seen: set[tuple] = set()
    params = nonzeros = 0
    for layer in layers:
        if names is not None and layer.name not in names:
            continue
        for pname, tensor in layer.tensors.items():
            if layer.keys[pname] not in seen:
                seen.add(layer.keys[pname])
                params += tensor.numel()
                nonzeros += layer.nonzeros[pname]
    return params, nonzeros


def count_params(model: nn.Module, names: Iterable[str] | None = None) -> tuple[int, int]:
    """Parameters and non-zeros over the own parameters of the named modules (all when None), shared ones once.

    Parametrized weights count by their effective value, as in `count_model`.

    Args:
        model: any `nn.Module`.
        names: module names as in `model.named_modules()`; names without own parameters contribute nothing.

    Returns:
        `(params, nonzeros)`.
    """
    with torch.no_grad():
        layers = _collect_layers(model)
    return _unique_totals(layers, set(names) if names is not None else None)


def count_model(model: nn.Module, example_inputs: Any = None) -> ModelCount:
    """Count parameters, non-zeros and MACs of `model`, per layer and in total.

    The model is run once (eval mode, `torch.no_grad`) when `example_inputs` is given; every module's training flag
    is restored and every hook removed afterwards, so the model is left as it was.

    Args:
        model: any `nn.Module`; parametrized weights (`torch.nn.utils.parametrize`) are counted by their effective
            value (e.g. original * mask), not by `parametrizations.<name>.original`.
        example_inputs: a Tensor (`model(x)`), a tuple (`model(*x)`) or a dict (`model(**x)`); None skips MACs.

    Returns:
        A `ModelCount`; MACs are for the inputs exactly as given (whole batch).

    Raises:
        PrunekitError: if `model` is not an `nn.Module` or `example_inputs` has an unsupported type.
    """
    if not isinstance(model, nn.Module):
        raise PrunekitError(f"count_model expects an nn.Module, got {type(model).__name__}")
    if example_inputs is not None:
        check_inputs(example_inputs)
    with torch.no_grad():
        layers = _collect_layers(model)
    counter = _trace_macs(model, example_inputs, layers) if example_inputs is not None else None

    traced = counter is not None
    rows = [
        LayerCount(
            name=layer.name,
            type=_type_name(layer.module),
            shape=tuple(layer.tensors[layer.weight_name].shape),
            params=sum(t.numel() for t in layer.tensors.values()),
            nonzeros=sum(layer.nonzeros.values()),
            macs=counter.macs.get(layer.name, 0) if traced else None,
            effective_macs=round(counter.effective.get(layer.name, 0.0)) if traced else None,
        )
        for layer in layers
    ]
    if traced:
        matmul_rows = [
            LayerCount(owner + MATMUL_SUFFIX, "attention" if owner in counter.attention else "matmul", None, 0, 0, m, m)
            for owner, m in counter.matmul.items()
        ]
        rows = _place_matmul_rows(rows, matmul_rows)

    params, nonzeros = _unique_totals(layers)
    return ModelCount(
        layers=rows,
        params=params,
        nonzeros=nonzeros,
        macs=sum(r.macs for r in rows) if traced else None,  # type: ignore[misc]
        effective_macs=sum(r.effective_macs for r in rows) if traced else None,  # type: ignore[misc]
        inputs=describe_inputs(example_inputs) if example_inputs is not None else None,
    )
