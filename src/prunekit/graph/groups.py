"""Groups: the coupled slices of parameters and buffers that must be removed together.

After the graph walk every index of every attached (tensor, dim) belongs to an atom class. A class is one unit (one
channel, seen from every tensor that has a slice of it). Units touching the same set of (tensor, dim) pairs form
one `Group`: e.g. the 64 output channels of a conv, with its BatchNorm and the next conv's input channels, or all the
channels of a ResNet stage's residual stream with every conv and norm that reads or writes it.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

import torch
from torch import Tensor

from prunekit.graph._atoms import AtomTable


@dataclass(frozen=True)
class GroupMember:
    """The slices of one tensor dim that belong to a group.

    Attributes:
        param: dotted name of the parameter or buffer (as in `model.state_dict()`).
        dim: the sliced dimension.
        indices: every index of `dim` that belongs to the group, ascending.
        units: for each entry of `indices`, the unit (channel of the group) it belongs to.
        is_buffer: True for buffers (BatchNorm running statistics), which never count as importance evidence.
    """

    param: str
    dim: int
    indices: tuple[int, ...]
    units: tuple[int, ...]
    is_buffer: bool = False

    def indices_of(self, units: Iterable[int]) -> list[int]:
        """The indices of this member that belong to `units`."""
        wanted = set(units)
        return [i for i, u in zip(self.indices, self.units) if u in wanted]


@dataclass(frozen=True)
class Group:
    """A set of units (channels) and the tensor slices each one owns; removing a unit removes all its slices.

    Attributes:
        id: position in `DependencyGraph.groups`.
        size: number of units.
        members: the (tensor, dim) slices of the group.
        frozen: unit -> why it must stay (model output, an op without a rule, ignore, ...).
        modules: modules owning the members, in graph order (the first is usually the producing layer).
    """

    id: int
    size: int
    members: tuple[GroupMember, ...]
    frozen: dict[int, str] = field(default_factory=dict, hash=False)
    modules: tuple[str, ...] = ()

    @property
    def prunable(self) -> list[int]:
        """Units that may be removed."""
        return [u for u in range(self.size) if u not in self.frozen]

    @property
    def name(self) -> str:
        """A short label: the first module, plus how many others the group spans."""
        if not self.modules:
            return f"group{self.id}"
        more = len(self.modules) - 1
        return self.modules[0] + (f" (+{more} coupled)" if more else "")

    def slices(self, units: Iterable[int]) -> list[tuple[str, int, list[int]]]:
        """(tensor name, dim, indices) removed together with `units`."""
        units = list(units)
        out = []
        for m in self.members:
            idx = m.indices_of(units)
            if idx:
                out.append((m.param, m.dim, idx))
        return out


def form_groups(
    atoms: AtomTable, attachments: dict[tuple[str, int], Tensor], buffers: set[str]
) -> tuple[list[Group], Tensor, list[int]]:
    """Group the atom classes of the attachments by the set of (tensor, dim) pairs they touch.

    Returns:
        (groups, roots of every atom, root of each unit in global order: group 0's units, then group 1's, ...).
    """
    roots_all = atoms.all_roots()
    keys = list(attachments)
    key_roots = [roots_all[attachments[k]] for k in keys]
    touched: dict[int, list[int]] = {}
    for ki, roots in enumerate(key_roots):
        for r in _unique_in_order(roots):
            touched.setdefault(r, []).append(ki)
    by_members: dict[tuple[int, ...], list[int]] = {}
    for root, kis in touched.items():
        by_members.setdefault(tuple(kis), []).append(root)
    groups: list[Group] = []
    unit_roots: list[int] = []
    for kis, roots in sorted(by_members.items(), key=lambda item: item[0]):
        lookup = torch.tensor(roots, dtype=torch.int64)
        sorted_roots, unit_order = torch.sort(lookup)
        members = []
        for ki in kis:
            roots_k = key_roots[ki]
            hit = torch.isin(roots_k, lookup).nonzero().flatten()
            units = unit_order[torch.searchsorted(sorted_roots, roots_k[hit])]  # root -> its unit, vectorized
            param, dim = keys[ki]
            members.append(GroupMember(param, dim, tuple(hit.tolist()), tuple(units.tolist()), param in buffers))
        frozen = {u: reason for u, r in enumerate(roots) if (reason := atoms.frozen_reason(r)) is not None}
        modules = _dedupe(m.param.rpartition(".")[0] or "<model>" for m in members)
        groups.append(Group(len(groups), len(roots), tuple(members), frozen, tuple(modules)))
        unit_roots.extend(roots)
    return groups, roots_all, unit_roots


def _unique_in_order(values: Tensor) -> list[int]:
    seen: set[int] = set()
    out = []
    for v in values.tolist():
        if v not in seen:
            seen.add(v)
            out.append(v)
    return out


def _dedupe(items: Iterable[str]) -> list[str]:
    out: list[str] = []
    for item in items:
        if item not in out:
            out.append(item)
    return out


def group_table(groups: Sequence[Group]) -> list[str]:
    """One line per group: id, size, prunable count and the modules it spans (for debugging and docs)."""
    lines = []
    for g in groups:
        lines.append(f"{g.id:4d}  {g.size:5d} units  {len(g.prunable):5d} prunable  {g.name}")
    return lines
