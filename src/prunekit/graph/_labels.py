"""Channel labels of a tensor and how shape ops move them: the pure maths of the dependency graph.

A label maps a tensor dimension to a 1-D int64 tensor of atom ids, one per index along that dimension
(`{1: ids}` for an NCHW activation whose dim 1 holds channels). A dimension without an entry carries no channel
structure ("free": batch, spatial positions, model inputs, constants). One entry per dimension, so two independent
channel structures (e.g. tokens x features in an MLP-Mixer) are two entries.

Ids may repeat: `flatten(1)` after a (N, C, H, W) conv gives one dim of C*H*W indices where each channel's atom
appears H*W times, which is how a Linear after the flatten loses exactly H*W in-features per removed channel.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import Tensor

from prunekit.graph._atoms import AtomTable

Label = dict[int, Tensor]
FREE: Label = {}

MAX_RESHAPE_ELEMENTS = 1 << 26
"""Past this many elements in one reshaped block, its channels are frozen instead of mapped (bounded work)."""


def norm_dim(dim: int, ndim: int) -> int:
    """A possibly negative dim as a non-negative index (0 for 0-d tensors)."""
    return dim + ndim if dim < 0 else dim


def shifted(label: Label, offset: int) -> Label:
    """The label with every dim moved by `offset` (new leading dims when positive)."""
    return {d + offset: ids for d, ids in label.items()}


def without(label: Label, dims: Sequence[int]) -> Label:
    """Drop `dims` (removed by a reduction or a select) and renumber the others."""
    gone = sorted(set(dims))
    out: Label = {}
    for d, ids in label.items():
        if d not in gone:
            out[d - sum(1 for g in gone if g < d)] = ids
    return out


def permuted(label: Label, perm: Sequence[int]) -> Label:
    """The label of `x.permute(perm)`: output dim i is input dim perm[i]."""
    where = {src: i for i, src in enumerate(perm)}
    return {where[d]: ids for d, ids in label.items()}


def expanded(ids: Tensor, size: int) -> Tensor:
    """Ids of a dim broadcast from length 1 to `size` (the same atom repeated)."""
    if ids.numel() == size:
        return ids
    if ids.numel() == 1:
        return ids.expand(size).clone()
    raise RuntimeError(f"cannot broadcast {ids.numel()} channel ids to {size}")


def broadcast_merge(
    atoms: AtomTable, inputs: Sequence[tuple[Label, Sequence[int]]], out_shape: Sequence[int], reason: str
) -> Label:
    """Label of an element-wise op's output: each output dim unions the ids every input carries there.

    An input that varies along a channel dim without carrying ids there (a constant, a model input, a tensor without
    channel structure) cannot lose those channels, so the channels are frozen with `reason`. An input of size 1
    along the dim broadcasts and constrains nothing.
    """
    rank = len(out_shape)
    out: Label = {}
    for o in range(rank):
        found: list[Tensor] = []
        free_full = False
        for label, shape in inputs:
            d = o - (rank - len(shape))
            if d < 0:
                continue
            if d in label:
                found.append(expanded(label[d], int(out_shape[o])))
            elif int(shape[d]) > 1:
                free_full = True
        if not found:
            continue
        for other in found[1:]:
            atoms.union_pairs(found[0], other)
        if free_full:
            atoms.freeze(found[0], reason)
        out[o] = found[0]
    return out


def reshape_blocks(in_shape: Sequence[int], out_shape: Sequence[int]) -> list[tuple[list[int], list[int]]] | None:
    """Split a reshape into blocks of consecutive input and output dims with equal products.

    `(N, C, H, W) -> (N, C*H*W)` gives `[([0], [0]), ([1, 2, 3], [1])]`. Returns None for shapes that do not
    reshape into each other or hold a zero-size dim.
    """
    a, b = [int(s) for s in in_shape], [int(s) for s in out_shape]
    if math.prod(a) != math.prod(b) or 0 in a or 0 in b:
        return None
    blocks: list[tuple[list[int], list[int]]] = []
    i = j = 0
    while i < len(a) or j < len(b):
        ins: list[int] = []
        outs: list[int] = []
        pa = pb = 1
        if i < len(a):
            ins.append(i)
            pa *= a[i]
            i += 1
        if j < len(b):
            outs.append(j)
            pb *= b[j]
            j += 1
        while pa != pb:
            if pa < pb and i < len(a):
                ins.append(i)
                pa *= a[i]
                i += 1
            elif pb < pa and j < len(b):
                outs.append(j)
                pb *= b[j]
                j += 1
            else:
                return None
        blocks.append((ins, outs))
    return blocks


def _varies_along(grid: Tensor, dim: int) -> bool:
    first = grid.narrow(dim, 0, 1)
    return bool((grid != first).any())


def reshape_label(
    atoms: AtomTable, label: Label, in_shape: Sequence[int], out_shape: Sequence[int], where: str,
    dynamic: int | None = None, fixed: set[int] | None = None,
) -> Label:
    """Label of a view / reshape / flatten / unflatten / squeeze / unsqueeze, mapped index by index.

    Each block of the reshape that holds one channel dim is materialized (ids broadcast over the block's other dims,
    reshaped like the data) and read back per output dim:
    - the ids depend on one output dim only (flatten, unflatten, squeeze): that dim carries them, exactly;
    - they depend on several (a channel dim split into (groups, channels_per_group), as a channel shuffle does):
      the leading factors are taken as fixed and the last as the one that shrinks, so the channels at one
      position of the last factor are coupled across the leading ones (removed together). Code that fixes the last
      factor instead (a constant head_dim) is caught by the equivalence check, never silently accepted;
    - unless the code wrote the size of a LEADING factor as -1 (`dynamic`: `x.view(B, T, -1, head_dim)`, as
      Hugging Face attention does): then the trailing factors are the fixed ones and the leading one shrinks, so
      every index of that dim (an attention head) is one unit, whole, and that dim carries the ids; the trailing
      sizes (head_dim) are added to `fixed`: they must never change.
    A block that merges two channel dims, or is too large to map, freezes its channels.
    """
    blocks = reshape_blocks(in_shape, out_shape)
    if blocks is None:
        for ids in label.values():
            atoms.freeze(ids, f"reshape {tuple(in_shape)} -> {tuple(out_shape)} at {where} could not be mapped")
        return {}
    out: Label = {}
    for ins, outs in blocks:
        carried = [d for d in ins if d in label]
        if not carried:
            continue
        if len(carried) > 1:
            for d in carried:
                atoms.freeze(label[d], f"reshape at {where} merges two channel dims")
            continue
        src = carried[0]
        if len(ins) == 1 and len(outs) == 1:
            out[outs[0]] = label[src]
            continue
        sizes_in = [int(in_shape[d]) for d in ins]
        sizes_out = [int(out_shape[d]) for d in outs]
        if math.prod(sizes_in) > MAX_RESHAPE_ELEMENTS:
            atoms.freeze(label[src], f"reshape at {where} is too large to map ({math.prod(sizes_in)} elements)")
            continue
        if not outs:
            atoms.freeze(label[src], f"reshape at {where} drops the channel dim")
            continue
        view = [1] * len(ins)
        view[ins.index(src)] = sizes_in[ins.index(src)]
        grid = atoms.roots_of(label[src].reshape(view).expand(sizes_in).reshape(sizes_out))
        varying = [k for k in range(len(outs)) if sizes_out[k] > 1 and _varies_along(grid, k)]
        if not varying:
            k = max(range(len(outs)), key=lambda i: sizes_out[i])
            out[outs[k]] = grid.movedim(k, 0).reshape(sizes_out[k], -1)[:, 0].clone()
            continue
        lead = outs.index(dynamic) if dynamic in outs else None
        if len(varying) > 1 and lead is not None and lead in varying[:-1]:
            per_index = grid.movedim(lead, 0).reshape(sizes_out[lead], -1)
            for p in range(sizes_out[lead]):
                atoms.union_all(per_index[p])
            out[outs[lead]] = atoms.roots_of(per_index[:, 0].clone())
            if fixed is not None:
                fixed.update(sizes_out[k] for k in varying if k > lead)
            continue
        keep = varying[-1]
        moved = grid.movedim(keep, -1).reshape(-1, sizes_out[keep])
        if len(varying) > 1:
            for p in range(sizes_out[keep]):
                atoms.union_all(moved[:, p])
        out[outs[keep]] = moved[0].clone()
    return out


def keep_mask(label: Label, keep_atom: Tensor, ndim: int) -> Tensor | None:
    """Bool mask broadcastable to the tensor: True where every channel id of the element is kept.

    Returns None when nothing in this tensor is removed.
    """
    mask: Tensor | None = None
    for d, ids in label.items():
        keep = keep_atom[ids]
        if bool(keep.all()):
            continue
        shape = [1] * ndim
        shape[d] = keep.numel()
        part = keep.reshape(shape)
        mask = part if mask is None else mask & part
    return mask
