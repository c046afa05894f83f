"""The graph walk: visit every node of the exported graph once, in order, and apply its op's channel rule.

The walk owns the state the rules share: the atom table, each node's output label, the attachments (which atom each
index of a parameter / buffer dim belongs to), the channel statistics the equivalence check must mask, the MAC
terms of the cost model, and every op that had no rule. Rules live in `_rules_*.py` and are looked up by ATen name.
"""

from __future__ import annotations

import operator
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor
from torch.export import ExportedProgram
from torch.fx import Node

from prunekit.errors import PrunekitError
from prunekit.graph._atoms import AtomTable
from prunekit.graph._labels import FREE, Label
from prunekit.graph._trace import module_path, module_type, placeholder_targets

Rule = Callable[["Walk", Node], Any]


@dataclass(frozen=True)
class Unsupported:
    """An op the graph has no channel rule for: its channels were frozen (or, with strict, it raised)."""

    op: str
    module: str
    module_type: str
    channels: int


@dataclass
class MacTerm:
    """MACs of one matmul-like op: `base` times the kept fraction of each id vector in `factors`."""

    base: int
    factors: list[Tensor] = field(default_factory=list)


def op_key(target: Any) -> str:
    """The rule-table key of a call_function target: the ATen name ("conv2d", "add_") or "getitem"."""
    if target is operator.getitem:
        return "getitem"
    schema = getattr(target, "_schema", None)
    if schema is not None:
        name = schema.name
        return name.removeprefix("aten::") if name.startswith("aten::") else name
    return getattr(target, "__name__", str(target))


class Walk:
    """State of one pass over an exported graph (see module docstring).

    Args:
        ep: the exported program.
        rules: op key -> rule function.
        strict: raise on the first op without a rule that touches channels, instead of freezing them.
        max_nodes: bound on the graph size; past it a `PrunekitError` stops the analysis.
        max_atoms: bound on the channel atoms one analysis may create.
        head_dims: module path -> (num_heads, head_dim) of each `nn.MultiheadAttention` (its head split is written
            with constant sizes; see `graph.mha`).
    """

    def __init__(
        self, ep: ExportedProgram, rules: dict[str, Rule], *, strict: bool, max_nodes: int, max_atoms: int,
        head_dims: dict[str, tuple[int, int]] | None = None,
    ) -> None:
        self.ep = ep
        self.rules = rules
        self.strict = strict
        self.max_nodes = max_nodes
        self.atoms = AtomTable(limit=max_atoms)
        self.places = placeholder_targets(ep)
        self.state: dict[str, Tensor] = {**ep.state_dict, **{k: v for k, v in ep.constants.items() if isinstance(v, Tensor)}}
        self.labels: dict[str, Any] = {}
        self.attachments: dict[tuple[str, int], Tensor] = {}
        self.statistics: dict[str, tuple[str, tuple[int, ...]]] = {}
        self.mac_terms: list[MacTerm] = []
        self.head_dims: dict[str, tuple[int, int]] = dict(head_dims or {})
        self.fixed_sizes: set[int] = set()  # per-head sizes (head_dim) that head-wise reshapes rely on
        self.unsupported: list[Unsupported] = []
        self._lazy: dict[str, Label] = {}
        self.node: Node | None = None

    # ----------------------------------------------------------------- reading the graph
    def run(self) -> None:
        """Visit every node once (bounded by `max_nodes`)."""
        nodes = list(self.ep.graph.nodes)
        if len(nodes) > self.max_nodes:
            raise PrunekitError(
                f"dependency graph: the traced model has {len(nodes)} ops, more than max_nodes={self.max_nodes}"
            )
        for node in nodes:
            self.node = node
            if node.op == "placeholder":
                continue
            if node.op == "output":
                for leaf in _leaves(node.args):
                    for ids in self._labels_in(leaf):
                        self.atoms.freeze(ids, "model output")
                continue
            if node.op != "call_function":
                self.labels[node.name] = self.no_rule(node, f"{node.op} node")
                continue
            rule = self.rules.get(op_key(node.target))
            self.labels[node.name] = rule(self, node) if rule is not None else self.no_rule(node)
        self.node = None

    def where(self, node: Node | None = None) -> str:
        """'module path (Type)' of a node, for messages."""
        node = node or self.node
        if node is None:
            return "?"
        path = module_path(node) or "<model>"
        kind = module_type(node)
        return f"{path!r} ({kind})" if kind else repr(path)

    def shape(self, arg: Any) -> tuple[int, ...] | None:
        """Static shape of a tensor argument (None for non-tensors)."""
        if isinstance(arg, Node):
            val = arg.meta.get("val")
            if isinstance(val, Tensor):
                return tuple(int(s) for s in val.shape)
        return None

    def out_shape(self, node: Node) -> tuple[int, ...]:
        """Static shape of a single-tensor node's output."""
        shape = self.shape(node)
        if shape is None:
            raise RuntimeError(f"node {node.name} has no tensor output")
        return shape

    def param(self, arg: Any) -> str | None:
        """Name of the parameter / buffer a placeholder argument is, else None."""
        if isinstance(arg, Node) and arg.op == "placeholder":
            kind, target = self.places.get(arg.name, ("input", ""))
            if kind in ("parameter", "buffer"):
                return target
        return None

    def label(self, arg: Any) -> Label | None:
        """Label of a tensor argument: its rule's output, a lazy label for a bare parameter, FREE for inputs."""
        if not isinstance(arg, Node):
            return None
        if arg.op == "placeholder":
            name = self.param(arg)
            if name is None:
                return dict(FREE) if self.shape(arg) is not None else None
            if name not in self._lazy:
                self._lazy[name] = self._bare_param_label(name, self.shape(arg) or ())
                self.labels[arg.name] = self._lazy[name]  # so the equivalence check masks it like an activation
            return self._lazy[name]
        value = self.labels.get(arg.name)
        return value if isinstance(value, dict) else None

    def _bare_param_label(self, name: str, shape: tuple[int, ...]) -> Label:
        # A parameter used as an activation (layer scale, positional embedding, class token): each dim of size > 1
        # gets fresh atoms attached to that dim, so slicing follows whatever channels it meets.
        label: Label = {}
        for d, size in enumerate(shape):
            if size > 1:
                label[d] = self.atoms.new(size)
                self.attach(name, d, label[d])
        return label

    def _labels_in(self, arg: Any) -> Iterable[Tensor]:
        if isinstance(arg, Node):
            value = self.labels.get(arg.name) if arg.op != "placeholder" else self.label(arg)
            for lab in value if isinstance(value, (list, tuple)) else [value]:
                if isinstance(lab, dict):
                    yield from lab.values()

    # ----------------------------------------------------------------- recording
    def attach(self, param: str, dim: int, ids: Tensor) -> None:
        """Index i of `param` along `dim` belongs to atom ids[i]; a second attachment unions with the first."""
        key = (param, dim)
        old = self.attachments.get(key)
        if old is None:
            self.attachments[key] = ids
        else:
            self.atoms.union_pairs(old, ids)

    def freeze(self, ids: Tensor, why: str) -> None:
        """Freeze channels, naming the op and module that forced it."""
        self.atoms.freeze(ids, f"{why} at {self.where()}")

    def statistic(self, node: Node, kind: str, dims: Iterable[int]) -> None:
        """Record that `node` computes statistics over channel dims (masked in the equivalence check)."""
        self.statistics[node.name] = (kind, tuple(dims))

    def macs(self, base: int, factors: list[Tensor]) -> None:
        """Record a MAC term of the cost model."""
        if base > 0:
            self.mac_terms.append(MacTerm(int(base), list(factors)))

    def no_rule(self, node: Node, what: str | None = None) -> Any:
        """Default for an op without a rule: freeze every channel it touches, outputs carry no channels."""
        op = what or op_key(node.target)
        ids = [t for arg in _leaves((node.args, node.kwargs)) for t in self._labels_in(arg)]
        if ids:
            channels = sum(int(t.numel()) for t in ids)
            if self.strict:
                raise PrunekitError(
                    f"strict: op {op!r} at module {self.where(node)} has no channel rule and touches {channels} "
                    "channel index(es); drop strict to freeze them, or ignore the module"
                )
            for t in ids:
                self.atoms.freeze(t, f"op {op} has no channel rule at {self.where(node)}")
            self.unsupported.append(Unsupported(op, module_path(node), module_type(node), channels))
        return free_like(node)

    def freeze_args(self, node: Node, why: str) -> Any:
        """Freeze every channel an op touches for a known reason (not an unknown op); outputs carry no channels."""
        for arg in _leaves((node.args, node.kwargs)):
            for t in self._labels_in(arg):
                self.freeze(t, why)
        return free_like(node)


def free_like(node: Node) -> Any:
    """FREE labels shaped like the node's output (a list for tuple outputs, None for non-tensors)."""
    val = node.meta.get("val")
    if isinstance(val, Tensor):
        return dict(FREE)
    if isinstance(val, (list, tuple)):
        return [dict(FREE) if isinstance(v, Tensor) else None for v in val]
    return None


def _leaves(obj: Any) -> Iterable[Any]:
    if isinstance(obj, (list, tuple)):
        for item in obj:
            yield from _leaves(item)
    elif isinstance(obj, dict):
        for item in obj.values():
            yield from _leaves(item)
    else:
        yield obj


def arg(node: Node, index: int, name: str, default: Any = None) -> Any:
    """Positional-or-keyword argument of an op node."""
    if len(node.args) > index:
        return node.args[index]
    return node.kwargs.get(name, default)


def tensor_size(t: Tensor | None) -> int:
    """numel of a tensor, 0 for None."""
    return int(t.numel()) if isinstance(t, torch.Tensor) else 0
