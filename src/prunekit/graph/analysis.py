"""`DependencyGraph`: trace a model once, map every channel dependency, and hand out groups, a cost model, the
slices a keep decision removes, and the equivalence check.

    graph = DependencyGraph.build(model, example_inputs)
    for g in graph.groups: ...                       # Group: units (channels) and the slices each owns
    keep = {g.id: torch.ones(g.size, dtype=torch.bool) for g in graph.groups}
    removals = graph.removals(keep)                  # {tensor name: {dim: [indices]}}
    undo = remove_slices(model, removals)            # surgery (prunekit.graph.surgery)
    graph.verify(model, keep)                        # VerifyResult
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

import torch
from torch import Tensor, nn

from prunekit.errors import PrunekitError
from prunekit.graph._rules_layers import layer_rules
from prunekit.graph._rules_shape import shape_rules
from prunekit.graph._trace import export_model
from prunekit.graph._walk import Unsupported, Walk
from prunekit.graph.cost import CostModel
from prunekit.graph.groups import Group, form_groups
from prunekit.graph.mha import head_dims
from prunekit.graph.surgery import owner, remove_slices, sliceable_dims
from prunekit.graph.verify import VerifyResult, compare, reference_outputs

RULES = {**shape_rules(), **layer_rules()}
"""Op key (ATen name without overload, e.g. "conv2d", "add_") -> channel rule."""


class DependencyGraph:
    """Channel dependencies of one model, traced once on example inputs. Build it with `DependencyGraph.build`."""

    def __init__(self, walk: Walk, model: nn.Module, example_inputs: Any) -> None:
        self._walk = walk
        self.example_inputs = example_inputs
        self.unsupported: list[Unsupported] = list(walk.unsupported)
        self.buffers = {t for k, t in walk.places.values() if k == "buffer"}
        self.parameters = {t for k, t in walk.places.values() if k == "parameter"}
        self._check_sliceable(model)
        self._groups: list[Group] | None = None
        self._roots: Tensor | None = None
        self._unit_roots: list[int] = []

    @classmethod
    def build(
        cls,
        model: nn.Module,
        example_inputs: Any,
        *,
        strict: bool = False,
        max_nodes: int = 200_000,
        max_atoms: int = 20_000_000,
    ) -> DependencyGraph:
        """Trace `model` on `example_inputs` and map its channel dependencies.

        Args:
            model: the model (traced in eval mode; its training flags are restored).
            example_inputs: a Tensor, a tuple of positional args or a dict of kwargs.
            strict: raise on an op without a channel rule instead of freezing the channels it touches.
            max_nodes: the most ops a traced graph may have (bounded work).
            max_atoms: the most channel indices one analysis may track.

        Raises:
            PrunekitError: the model cannot be traced, a limit is passed, or (strict) an op has no rule.
        """
        ep = export_model(model, example_inputs)
        walk = Walk(ep, RULES, strict=strict, max_nodes=max_nodes, max_atoms=max_atoms, head_dims=head_dims(model))
        walk.run()
        return cls(walk, model, example_inputs)

    def _check_sliceable(self, model: nn.Module) -> None:
        # A dim the owning module cannot update its size attributes for stays whole.
        for (name, dim), ids in self._walk.attachments.items():
            module, local = owner(model, name)
            tensor = self._walk.state.get(name)
            allowed = sliceable_dims(module, local, tensor.ndim if tensor is not None else 0)
            if allowed is not None and dim not in allowed:
                self._walk.atoms.freeze(ids, f"dim {dim} of {name} ({type(module).__name__}) cannot be sliced")

    # ----------------------------------------------------------------- groups
    @property
    def groups(self) -> list[Group]:
        """Every group, in graph order (frozen units included, marked in `Group.frozen`)."""
        if self._groups is None:
            self._groups, self._roots, self._unit_roots = form_groups(
                self._walk.atoms, self._walk.attachments, self.buffers
            )
        return self._groups

    def freeze_tensors(self, names: Iterable[str], reason: str) -> int:
        """Freeze every channel attached to the named parameters / buffers (e.g. an ignored module's). Returns how
        many (tensor, dim) attachments were frozen."""
        wanted = set(names)
        hits = 0
        for (name, _dim), ids in self._walk.attachments.items():
            if name in wanted:
                self._walk.atoms.freeze(ids, reason)
                hits += 1
        self._groups = None
        return hits

    def freeze_groups(self, ids: Iterable[int], reason: str) -> None:
        """Freeze every unit of the given groups (they keep all their channels)."""
        wanted = set(ids)
        offset = 0
        roots: list[int] = []
        for g in self.groups:
            if g.id in wanted:
                roots.extend(self._unit_roots[offset:offset + g.size])
            offset += g.size
        self._walk.atoms.freeze(torch.tensor(roots, dtype=torch.int64), reason)
        self._groups = None

    @property
    def fixed_sizes(self) -> frozenset[int]:
        """Per-head sizes (head_dim) that the head-wise reshapes of the model's code keep constant: pruning never
        changes them, so a config field holding one of these values must not be edited."""
        return frozenset(self._walk.fixed_sizes)

    @property
    def attached_tensors(self) -> list[str]:
        """Names of the parameters / buffers with at least one sliceable dim attached."""
        return sorted({name for name, _ in self._walk.attachments})

    # ----------------------------------------------------------------- cost and removals
    def _unit_index(self) -> Tensor:
        """Global unit index of every atom (the count of units for atoms no group owns)."""
        n_units = sum(g.size for g in self.groups)
        roots = self._roots if self._roots is not None else self._walk.atoms.all_roots()
        lookup = torch.full((len(self._walk.atoms),), n_units, dtype=torch.int64)
        lookup[torch.tensor(self._unit_roots, dtype=torch.int64)] = torch.arange(n_units, dtype=torch.int64)
        return lookup[roots]

    def cost_model(self) -> CostModel:
        """Params and MACs as functions of a global keep vector (groups' units concatenated in order)."""
        unit_of_atom = self._unit_index()
        n_units = sum(g.size for g in self.groups)
        dims: dict[str, list[Tensor]] = {}
        for (name, _dim), ids in self._walk.attachments.items():
            dims.setdefault(name, []).append(unit_of_atom[ids])
        param_terms = []
        for name in sorted(self.parameters):
            tensor = self._walk.state.get(name)
            if tensor is not None:
                param_terms.append((int(tensor.numel()), dims.get(name, [])))
        mac_terms = [(t.base, [unit_of_atom[f] for f in t.factors]) for t in self._walk.mac_terms]
        return CostModel(n_units, param_terms, mac_terms)

    def keep_vector(self, keep: Mapping[int, Tensor]) -> Tensor:
        """Concatenate per-group keep masks (missing groups: all kept) into the global keep vector."""
        parts = [keep[g.id].to(torch.bool) if g.id in keep else torch.ones(g.size, dtype=torch.bool)
                 for g in self.groups]
        return torch.cat(parts) if parts else torch.zeros(0, dtype=torch.bool)

    def removals(self, keep: Mapping[int, Tensor]) -> dict[str, dict[int, list[int]]]:
        """{tensor name: {dim: removed indices}} for per-group keep masks; frozen units must be kept."""
        out: dict[str, dict[int, list[int]]] = {}
        for g in self.groups:
            mask = keep.get(g.id)
            if mask is None:
                continue
            gone = [u for u in range(g.size) if not bool(mask[u])]
            bad = [u for u in gone if u in g.frozen]
            if bad:
                raise PrunekitError(f"group {g.name!r}: unit {bad[0]} is frozen ({g.frozen[bad[0]]}) and cannot be removed")
            for param, dim, idx in g.slices(gone):
                out.setdefault(param, {}).setdefault(dim, []).extend(idx)
        for dims in out.values():
            for dim in dims:
                dims[dim] = sorted(set(dims[dim]))
        return out

    def keep_atoms(self, keep: Mapping[int, Tensor]) -> Tensor:
        """Per-atom keep flags (atoms no group owns are kept)."""
        vec = torch.cat([self.keep_vector(keep), torch.ones(1, dtype=torch.bool)])
        return vec[self._unit_index()]

    # ----------------------------------------------------------------- verification
    def verify(
        self, pruned: nn.Module, keep: Mapping[int, Tensor], example_inputs: Any = None, *, rtol: float = 1e-3,
        atol: float = 1e-5,
    ) -> VerifyResult:
        """Compare the pruned model with the original graph restricted to the kept channels (see graph.verify)."""
        inputs = self.example_inputs if example_inputs is None else example_inputs
        ref = reference_outputs(self._walk.ep, self._walk.labels, self._walk.statistics, self.keep_atoms(keep), inputs)
        return compare(pruned, ref, inputs, rtol, atol)

    def breaking_groups(self, model: nn.Module, keep: Mapping[int, Tensor], *, max_checks: int = 200) -> list[int]:
        """Groups whose removal alone makes the equivalence check fail (found by bisection, model left unchanged).

        A failure that appears only for a combination of groups returns the whole combination. Each check prunes
        a subset of the groups, verifies, and undoes the surgery.

        Raises:
            PrunekitError: more than `max_checks` checks were needed.
        """
        checks = 0

        def fails(ids: list[int]) -> bool:
            nonlocal checks
            checks += 1
            if checks > max_checks:
                raise PrunekitError(f"structured: isolating the groups that break the equivalence check took more "
                                    f"than {max_checks} checks")
            subset = {i: keep[i] for i in ids}
            undo = remove_slices(model, self.removals(subset))
            try:
                return not self.verify(model, subset).ok
            finally:
                undo.restore()

        def search(ids: list[int]) -> list[int]:
            if not fails(ids):
                return []
            if len(ids) == 1:
                return ids
            half = len(ids) // 2
            found = search(ids[:half]) + search(ids[half:])
            return found or ids

        pruned = [g.id for g in self.groups if g.id in keep and not bool(keep[g.id].all())]
        return search(pruned) if pruned else []

    def summary(self) -> str:
        """One line: groups, units, prunable units, ops without a rule."""
        units = sum(g.size for g in self.groups)
        prunable = sum(len(g.prunable) for g in self.groups)
        return (f"{len(self.groups)} groups, {units} channels, {prunable} prunable; "
                f"{len(self.unsupported)} op(s) without a channel rule")
