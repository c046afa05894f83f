"""Channel rules of ops without weights: element-wise maths, shape ops, concatenation, splitting, reductions,
pooling. Each rule reads its inputs' labels and returns its output's label (a list for tuple outputs).

The guiding question of every rule: after channels are removed, will the model's own (eager) code, run on the
smaller tensors, compute exactly the original values restricted to the kept channels? Where the answer depends on
constants baked into the code (slice bounds, unequal split sizes), the channels are frozen.
"""

from __future__ import annotations

from typing import Any

import torch
from torch.fx import Node

from prunekit.graph._labels import FREE, Label, broadcast_merge, norm_dim, permuted, reshape_label, shifted, without
from prunekit.graph._trace import module_path
from prunekit.graph._walk import Rule, Walk, arg, free_like, op_key

UNARY = (
    "relu relu_ gelu gelu_ silu silu_ sigmoid sigmoid_ tanh tanh_ hardswish hardswish_ hardsigmoid hardsigmoid_ "
    "hardtanh hardtanh_ relu6 leaky_relu leaky_relu_ elu elu_ selu selu_ celu celu_ mish mish_ softplus exp exp_ "
    "log log1p sqrt rsqrt abs abs_ neg reciprocal sin cos erf sign square floor ceil round trunc nan_to_num "
    "clamp clamp_ clamp_min clamp_min_ clamp_max clamp_max_ dropout dropout_ feature_dropout alpha_dropout "
    "contiguous clone detach alias lift_fresh_copy _to_copy to logical_not bitwise_not isnan isinf "
    "add.Scalar mul.Scalar sub.Scalar div.Scalar pow.Tensor_Scalar"
).split()
BINARY = (
    "add add_ sub sub_ rsub mul mul_ div div_ maximum minimum pow where masked_fill masked_fill_ eq ne lt le gt ge "
    "logical_and logical_or bitwise_and bitwise_or lerp addcmul addcdiv atan2 fmod remainder copysign hypot copy_ "
    "floor_divide true_divide"
).split()
CONSTANT_OUT = "zeros_like ones_like empty_like full_like rand_like randn_like zero_ fill_ new_zeros new_ones new_empty new_full".split()


def _tensor_args(w: Walk, node: Node) -> list[tuple[Label, tuple[int, ...]]]:
    out = []
    for a in list(node.args) + list(node.kwargs.values()):
        label, shape = w.label(a), w.shape(a)
        if label is not None and shape is not None:
            out.append((label, shape))
    return out


def elementwise(w: Walk, node: Node) -> Any:
    """Element-wise ops with broadcasting (residual add, SE scaling, activations, casts)."""
    val = node.meta.get("val")
    if not isinstance(val, torch.Tensor):
        return free_like(node)
    inputs = _tensor_args(w, node)
    return broadcast_merge(w.atoms, inputs, tuple(val.shape), f"element-wise {node.target} with a tensor without channels at {w.where()}")


def like_first(w: Walk, node: Node) -> Label:
    """type_as / view_as-style ops whose values come from the first argument only."""
    return dict(w.label(node.args[0]) or {})


def constant_out(w: Walk, node: Node) -> Any:
    """Ops whose output does not depend on input values (zeros_like, fill_): no channel structure."""
    return free_like(node)


def reshape(w: Walk, node: Node) -> Label:
    """view / reshape / flatten / unflatten / squeeze / unsqueeze: mapped index by index (see reshape_label)."""
    x = node.args[0]
    label = w.label(x) or {}
    if not label:
        return {}
    size = node.args[1] if len(node.args) > 1 else None
    written = list(size) if isinstance(size, (list, tuple)) else []
    dynamic = written.index(-1) if written.count(-1) == 1 else None  # the dim the code lets shrink
    if dynamic is None:
        dynamic = _mha_head_split(w, node)
    return reshape_label(w.atoms, label, w.shape(x) or (), w.out_shape(node), w.where(), dynamic, w.fixed_sizes)


def _mha_head_split(w: Walk, node: Node) -> int | None:
    """Inside an `nn.MultiheadAttention`, torch splits heads with `view(L, N * num_heads, head_dim)` (constant
    sizes): read it like a `-1` on the heads dim, so each head is one unit (its pruned forward, `graph.mha`, writes
    -1 there). Returns the heads dim, or None when `node` is not that split."""
    heads = w.head_dims.get(module_path(node))
    in_shape, out_shape = w.shape(node.args[0]) or (), w.out_shape(node)
    if heads is None or len(in_shape) != len(out_shape) or len(out_shape) < 2:
        return None
    num_heads, head_dim = heads
    if out_shape[-1] == head_dim and in_shape[-1] == num_heads * head_dim and out_shape[-2] == in_shape[-2] * num_heads:
        return len(out_shape) - 2
    return None


def permute(w: Walk, node: Node) -> Label:
    x = node.args[0]
    ndim = len(w.shape(x) or ())
    dims = [norm_dim(d, ndim) for d in node.args[1]]
    return permuted(w.label(x) or {}, dims)


def transpose(w: Walk, node: Node) -> Label:
    x = node.args[0]
    ndim = len(w.shape(x) or ())
    if ndim < 2:
        return dict(w.label(x) or {})
    d0, d1 = (norm_dim(d, ndim) for d in node.args[1:3]) if len(node.args) >= 3 else (0, 1)
    perm = list(range(ndim))
    perm[d0], perm[d1] = perm[d1], perm[d0]
    return permuted(w.label(x) or {}, perm)


def movedim(w: Walk, node: Node) -> Label:
    x = node.args[0]
    ndim = len(w.shape(x) or ())
    src, dst = node.args[1], node.args[2]
    src = [src] if isinstance(src, int) else list(src)
    dst = [dst] if isinstance(dst, int) else list(dst)
    perm_src = [norm_dim(s, ndim) for s in src]
    perm_dst = [norm_dim(d, ndim) for d in dst]
    rest = iter(d for d in range(ndim) if d not in perm_src)
    order = [0] * ndim
    placed = dict(zip(perm_dst, perm_src))
    for i in range(ndim):
        order[i] = placed[i] if i in placed else next(rest)
    return permuted(w.label(x) or {}, order)


def expand(w: Walk, node: Node) -> Label:
    """expand / expand_as / broadcast_to: new leading dims are free; a size-1 channel dim repeats its atom."""
    x = node.args[0]
    shape, out = w.shape(x) or (), w.out_shape(node)
    label = shifted(w.label(x) or {}, len(out) - len(shape))
    return {d: ids.expand(out[d]).clone() if ids.numel() == 1 else ids for d, ids in label.items()}


def repeat(w: Walk, node: Node) -> Label:
    """x.repeat(...) tiles each dim; a tiled channel dim repeats its ids (removal stays consistent per copy)."""
    x = node.args[0]
    reps = list(node.args[1])
    label = shifted(w.label(x) or {}, len(reps) - len(w.shape(x) or ()))
    return {d: ids.repeat(reps[d]) for d, ids in label.items()}


def cat(w: Walk, node: Node) -> Label:
    """torch.cat: ids concatenate along the cat dim (a part without channels gets frozen atoms); the other dims
    of all parts must be the same channels, so they are unioned."""
    parts = [a for a in node.args[0] if w.shape(a) is not None and not (len(w.shape(a)) == 1 and w.shape(a)[0] == 0)]
    out_shape = w.out_shape(node)
    dim = norm_dim(arg(node, 1, "dim", 0), len(out_shape))
    labels = [(w.label(a) or {}, w.shape(a)) for a in parts]
    result: Label = {}
    if any(dim in lab for lab, _ in labels):
        pieces = []
        for lab, shape in labels:
            if dim in lab:
                pieces.append(lab[dim])
            else:
                fresh = w.atoms.new(shape[dim])
                w.freeze(fresh, "concatenated with a tensor without channels")
                pieces.append(fresh)
        result[dim] = torch.cat(pieces)
    others = [({d: ids for d, ids in lab.items() if d != dim}, tuple(1 if d == dim else s for d, s in enumerate(shape)))
              for lab, shape in labels]
    merged = broadcast_merge(w.atoms, others, tuple(1 if d == dim else s for d, s in enumerate(out_shape)),
                             f"concatenated with a tensor without channels at {w.where()}")
    result.update({d: ids for d, ids in merged.items() if d != dim})
    return result


def stack(w: Walk, node: Node) -> Label:
    """torch.stack: a new free dim; the stacked tensors' channels are the same channels."""
    parts = [a for a in node.args[0] if w.shape(a) is not None]
    out_shape = w.out_shape(node)
    dim = norm_dim(arg(node, 1, "dim", 0), len(out_shape))
    merged = broadcast_merge(w.atoms, [(w.label(a) or {}, w.shape(a)) for a in parts],
                             tuple(s for d, s in enumerate(out_shape) if d != dim), f"stack at {w.where()}")
    return {(d + 1 if d >= dim else d): ids for d, ids in merged.items()}


def _pieces(w: Walk, node: Node, sizes: list[int], dim: int) -> list[Label]:
    x = node.args[0]
    label = w.label(x) or {}
    if dim not in label:
        return [dict(label) for _ in sizes]
    ids = label[dim]
    if len(set(sizes)) == 1 and len(sizes) > 1:
        # Eager code re-splits the smaller tensor into equal parts, so every part must lose the same positions:
        # position k of each part is one unit.
        grid = ids.reshape(len(sizes), sizes[0])
        for k in range(sizes[0]):
            w.atoms.union_all(grid[:, k])
    elif len(sizes) > 1:
        w.freeze(ids, f"split into unequal sizes {sizes} along the channel dim (sizes are fixed in the code)")
    out, start = [], 0
    for size in sizes:
        out.append({**label, dim: ids[start:start + size]})
        start += size
    return out


def split(w: Walk, node: Node) -> list[Label]:
    """split / split_with_sizes / chunk / unsafe_split: equal parts couple positions, unequal parts freeze."""
    val = node.meta.get("val")
    ndim = len(w.shape(node.args[0]) or ())
    dim = norm_dim(arg(node, 2, "dim", 0), ndim)
    sizes = [int(v.shape[dim]) for v in val]
    return _pieces(w, node, sizes, dim)


def unbind(w: Walk, node: Node) -> list[Label]:
    x = node.args[0]
    ndim = len(w.shape(x) or ())
    dim = norm_dim(arg(node, 1, "dim", 0), ndim)
    label = w.label(x) or {}
    if dim in label:
        w.freeze(label[dim], "unbind along the channel dim")
    return [without(label, [dim]) for _ in node.meta["val"]]


def slice_(w: Walk, node: Node) -> Label:
    """x[..., a:b:s]: a full slice is a no-op; a partial slice of a channel dim freezes it (constant bounds)."""
    x = node.args[0]
    shape = w.shape(x) or ()
    dim = norm_dim(arg(node, 1, "dim", 0), len(shape))
    start, end, step = arg(node, 2, "start", None), arg(node, 3, "end", None), arg(node, 4, "step", 1)
    label = dict(w.label(x) or {})
    if dim not in label:
        return label
    size = shape[dim]
    full = (start in (None, 0)) and (end is None or end >= size) and step == 1
    if not full:
        w.freeze(label[dim], f"slice [{start}:{end}:{step}] of the channel dim (bounds are fixed in the code)")
        label[dim] = label[dim][slice(start, end, step)]
    return label


def select(w: Walk, node: Node) -> Label:
    x = node.args[0]
    dim = norm_dim(node.args[1], len(w.shape(x) or ()))
    label = w.label(x) or {}
    if dim in label:
        w.freeze(label[dim], "select of one index of the channel dim")
    return without(label, [dim])


def _reduce_dims(node: Node, ndim: int, dim_index: int = 1) -> list[int]:
    dims = arg(node, dim_index, "dim", None)
    if dims is None or dims == []:
        return list(range(ndim))
    dims = [dims] if isinstance(dims, int) else list(dims)
    return sorted({norm_dim(d, ndim) for d in dims})


def reduction(w: Walk, node: Node) -> Any:
    """mean / sum / vector norm over channel dims are statistics (they follow the kept channels and are masked in
    the equivalence check); other reductions over a channel dim (max, var, ...) freeze it."""
    x = node.args[0]
    name = op_key(node.target)
    if name in ("max", "min") and len(node.args) > 1 and isinstance(node.args[1], Node):
        return elementwise(w, node)  # torch.max(a, b): element-wise
    shape = w.shape(x) or ()
    dim_index = 2 if name in ("linalg_vector_norm", "norm") else 1
    dims = _reduce_dims(node, len(shape), dim_index)
    keepdim = bool(arg(node, dim_index + 1, "keepdim", False))
    label = w.label(x) or {}
    hit = [d for d in dims if d in label]
    if hit:
        if name in ("mean", "sum", "nansum", "linalg_vector_norm", "norm"):
            w.statistic(node, "mean" if name == "mean" else "sum", hit)
        else:
            for d in hit:
                w.freeze(label[d], f"{name} over the channel dim")
    out = {d: ids for d, ids in label.items() if d not in dims}
    result = out if keepdim else without(out, dims)
    val = node.meta.get("val")
    if isinstance(val, (list, tuple)):  # max.dim / var_mean: (values, indices) or (var, mean)
        return [dict(result) for _ in val]
    return result


def along_dim(w: Walk, node: Node) -> Any:
    """softmax, log_softmax, cumsum, flip, roll, sort, ...: fine unless they run along a channel dim (frozen)."""
    x = node.args[0]
    shape = w.shape(x) or ()
    label = dict(w.label(x) or {})
    key = op_key(node.target)
    if key == "roll":
        dims = arg(node, 2, "dims", [])
        dims = list(range(len(shape))) if not dims else ([dims] if isinstance(dims, int) else list(dims))
    elif key == "flip":
        dims = list(arg(node, 1, "dims", []))
    else:
        d = arg(node, 2, "dim", -1) if key == "topk" else arg(node, 1, "dim", -1)
        dims = [d if d is not None else -1]
    for d in {norm_dim(d, len(shape)) for d in dims}:
        if d in label:
            w.freeze(label[d], f"{key} along the channel dim")
    val = node.meta.get("val")
    if isinstance(val, (list, tuple)):
        return [dict(label) for _ in val]
    return label


_SPATIAL = {
    "max_pool1d": 1, "max_pool2d": 2, "max_pool3d": 3, "avg_pool1d": 1, "avg_pool2d": 2, "avg_pool3d": 3,
    "adaptive_avg_pool1d": 1, "adaptive_avg_pool2d": 2, "adaptive_avg_pool3d": 3, "adaptive_max_pool1d": 1,
    "adaptive_max_pool2d": 2, "adaptive_max_pool3d": 3, "max_pool2d_with_indices": 2, "max_pool3d_with_indices": 3,
    "upsample_nearest1d": 1, "upsample_nearest2d": 2, "upsample_nearest3d": 3, "upsample_bilinear2d": 2,
    "upsample_bicubic2d": 2, "upsample_linear1d": 1, "upsample_trilinear3d": 3, "_upsample_nearest_exact2d": 2,
    "_upsample_bilinear2d_aa": 2, "lp_pool2d": 2, "lp_pool1d": 1, "fractional_max_pool2d": 2,
}


def spatial(w: Walk, node: Node) -> Any:
    """Pooling, interpolation and padding change only the trailing spatial dims; channel dims pass through (padding:
    only dims with a non-zero pad count as spatial)."""
    x = node.args[0]
    shape = w.shape(x) or ()
    name = op_key(node.target)
    padded: set[int] | None = None
    if name in ("pad", "constant_pad_nd") or name.startswith(("reflection_pad", "replication_pad")):
        pad = list(arg(node, 1, "pad", []))
        n_spatial = len(pad) // 2
        # pad[2i], pad[2i + 1] pad dim -(i + 1); a dim padded by (0, 0) is unchanged (windowed attention pads
        # (B, H, W, C) with (0, 0) on C), so its channels pass
        padded = {len(shape) - 1 - i for i in range(n_spatial) if pad[2 * i] != 0 or pad[2 * i + 1] != 0}
    else:
        n_spatial = _SPATIAL[name]
    label = dict(w.label(x) or {})
    for d in range(len(shape) - n_spatial, len(shape)):
        if d in label and (padded is None or d in padded):
            w.freeze(label.pop(d), f"{name} over a channel dim")
    val = node.meta.get("val")
    if isinstance(val, (list, tuple)):  # (values, indices)
        return [dict(label), dict(FREE)]
    return label


def getitem(w: Walk, node: Node) -> Any:
    """Pick one output of a tuple-returning op."""
    src, index = node.args
    value = w.labels.get(src.name) if isinstance(src, Node) else None
    if isinstance(value, (list, tuple)) and isinstance(index, int) and index < len(value):
        return value[index]
    return free_like(node)


def shape_rules() -> dict[str, Rule]:
    """Op key -> rule, for every op handled in this module."""
    table: dict[str, Rule] = {}
    for name in UNARY + BINARY:
        table[name.split(".")[0]] = elementwise
    for name in CONSTANT_OUT:
        table[name] = constant_out
    for name in "view reshape _unsafe_view flatten unflatten squeeze squeeze_ unsqueeze unsqueeze_ view_as reshape_as _reshape_alias".split():
        table[name] = reshape
    table.update(permute=permute, transpose=transpose, transpose_=transpose, t=transpose, swapaxes=transpose,
                 swapdims=transpose, movedim=movedim, moveaxis=movedim, expand=expand, expand_as=expand,
                 broadcast_to=expand, repeat=repeat, cat=cat, concat=cat, concatenate=cat, stack=stack,
                 split=split, split_with_sizes=split, chunk=split, unsafe_split=split, unbind=unbind, slice=slice_,
                 select=select, getitem=getitem, type_as=like_first)
    for name in "mean sum nansum amax amin max min var std var_mean std_mean prod logsumexp linalg_vector_norm norm any all argmax argmin".split():
        table[name] = reduction
    for name in "softmax _softmax log_softmax _log_softmax cumsum cumprod flip roll sort topk".split():
        table[name] = along_dim
    for name in list(_SPATIAL) + ["pad", "constant_pad_nd", "reflection_pad1d", "reflection_pad2d",
                                  "replication_pad1d", "replication_pad2d"]:
        table[name] = spatial
    return table
