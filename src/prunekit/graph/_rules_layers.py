"""Channel rules of ops with weights: convolutions (plain, grouped, depthwise, transposed), linear and matmul,
normalization layers and embeddings. These rules attach parameter dims to atoms and record the MAC terms of the
cost model (MACs counted like `prunekit.eval`: matrix products and convolutions only).
"""

from __future__ import annotations

import math
from typing import Any

from torch.fx import Node

from prunekit.graph._labels import Label, broadcast_merge
from prunekit.graph._walk import Rule, Walk, arg, op_key


def _numel(shape: tuple[int, ...]) -> int:
    return int(math.prod(shape))


def conv(w: Walk, node: Node) -> Label:
    """Convolution. groups == 1: weight dim 0 = out channels, dim 1 = in channels.

    Depthwise-like (one input channel per group): input channel g and its group's output channels are one unit
    (removing it removes the whole group; `groups` shrinks). Other grouped convs keep `groups` fixed, so position
    k of every group is one unit, for the inputs and for the outputs alike (each group shrinks equally).
    """
    key = op_key(node.target)
    x, weight = node.args[0], node.args[1]
    bias = arg(node, 2, "bias")
    if key in ("convolution", "_convolution"):
        transposed, groups = bool(arg(node, 6, "transposed", False)), int(arg(node, 8, "groups", 1))
    elif key.startswith("conv_transpose"):
        transposed, groups = True, int(arg(node, 6, "groups", 1))
    else:
        transposed, groups = False, int(arg(node, 6, "groups", 1))
    wname = w.param(weight)
    bname = w.param(bias) if bias is not None else None
    if wname is None or (bias is not None and bname is None):
        return w.freeze_args(node, "convolution with a computed weight (not a module parameter)")
    wshape, xshape, out_shape = w.shape(weight) or (), w.shape(x) or (), w.out_shape(node)
    n_spatial = len(wshape) - 2
    label = w.label(x) or {}
    cdim = len(xshape) - n_spatial - 1
    for d, ids in label.items():
        if d != cdim:
            w.freeze(ids, "convolution over a channel-carrying spatial dim")
    in_ids = label.get(cdim)
    if transposed:
        if groups != 1:
            return w.freeze_args(node, "grouped transposed convolution (not supported yet)")
        out_ids = w.atoms.new(wshape[1])
        if in_ids is not None:
            w.attach(wname, 0, in_ids)
        w.attach(wname, 1, out_ids)
        w.macs(_numel(xshape) * _numel(wshape[1:]), [t for t in (in_ids, out_ids) if t is not None])
    else:
        cout, cin_group = wshape[0], wshape[1]
        out_ids = w.atoms.new(cout)
        w.attach(wname, 0, out_ids)
        factors = [out_ids]
        per_group = cout // groups
        if groups == 1:
            if in_ids is not None:
                w.attach(wname, 1, in_ids)
                factors.append(in_ids)
        elif cin_group == 1:
            if in_ids is None:
                w.freeze(out_ids, "depthwise convolution of a tensor without channels")
            else:
                w.atoms.union_pairs(in_ids.repeat_interleave(per_group), out_ids)
        else:
            grid = out_ids.reshape(groups, per_group)
            w.atoms.union_pairs(grid[1:], grid[0].expand(groups - 1, per_group))
            if in_ids is not None:
                ig = in_ids.reshape(groups, cin_group)
                w.atoms.union_pairs(ig[1:], ig[0].expand(groups - 1, cin_group))
                w.attach(wname, 1, ig[0].clone())
                factors.append(ig[0])
        w.macs(_numel(out_shape) * _numel(wshape[1:]), factors)
    if bname is not None:
        w.attach(bname, 0, out_ids)
    return {len(out_shape) - n_spatial - 1: out_ids}


def linear(w: Walk, node: Node) -> Label:
    """F.linear: weight (out, in); the input's last dim is contracted with weight dim 1, other dims pass."""
    x, weight = node.args[0], node.args[1]
    bias = arg(node, 2, "bias")
    wname = w.param(weight)
    bname = w.param(bias) if bias is not None else None
    if wname is None or (bias is not None and bname is None):
        return matmul_like(w, node, x, weight, bias, transpose_b=True)
    xshape, out_shape, wshape = w.shape(x) or (), w.out_shape(node), w.shape(weight) or ()
    label = w.label(x) or {}
    last = len(xshape) - 1
    in_ids = label.get(last)
    out_ids = w.atoms.new(wshape[0])
    w.attach(wname, 0, out_ids)
    if in_ids is not None:
        w.attach(wname, 1, in_ids)
    if bname is not None:
        w.attach(bname, 0, out_ids)
    w.macs(_numel(out_shape) * wshape[1], [t for t in (out_ids, in_ids) if t is not None])
    out = {d: ids for d, ids in label.items() if d != last}
    out[len(out_shape) - 1] = out_ids
    return out


def matmul(w: Walk, node: Node) -> Label:
    """matmul / mm / bmm / addmm / baddbmm between activations or with a bare parameter."""
    key = op_key(node.target)
    if key in ("addmm", "baddbmm", "addbmm"):
        return matmul_like(w, node, node.args[1], node.args[2], node.args[0])
    return matmul_like(w, node, node.args[0], node.args[1], None)


def matmul_like(w: Walk, node: Node, a: Any, b: Any, bias: Any, transpose_b: bool = False) -> Any:
    """a (..., M, K) @ b (..., K, N) [+ bias]: K channels of both sides are unioned (one side without channels
    along K freezes the other), M comes from a, N from b, batch dims broadcast."""
    sa, sb, out_shape = w.shape(a), w.shape(b), w.shape(node)
    if sa is None or sb is None or out_shape is None or len(sa) < 2 or len(sb) < 2:
        return w.freeze_args(node, "matmul with a 1-D operand")
    la, lb = dict(w.label(a) or {}), dict(w.label(b) or {})
    if transpose_b:  # F.linear(x, W): W is (N, K)
        sb = sb[:-2] + (sb[-1], sb[-2])
        lb = {({len(sb) - 1: len(sb) - 2, len(sb) - 2: len(sb) - 1}.get(d, d)): ids for d, ids in lb.items()}
    ra, rb, r = len(sa), len(sb), len(out_shape)
    ka, kb = la.get(ra - 1), lb.get(rb - 2)
    k_ids = ka if ka is not None else kb
    if ka is not None and kb is not None:
        w.atoms.union_pairs(ka, kb)
    elif k_ids is not None:
        w.freeze(k_ids, "contracted with a tensor without channels")
    batch = broadcast_merge(
        w.atoms,
        [({d: t for d, t in la.items() if d < ra - 2}, sa[:-2]), ({d: t for d, t in lb.items() if d < rb - 2}, sb[:-2])],
        out_shape[:-2],
        f"matmul batch dims at {w.where()}",
    )
    out: Label = dict(batch)
    if ra - 2 in la:
        out[r - 2] = la[ra - 2]
    if rb - 1 in lb:
        out[r - 1] = lb[rb - 1]
    w.macs(_numel(out_shape) * sa[-1], [t for t in [k_ids, *out.values()] if t is not None])
    if bias is not None and w.shape(bias) is not None:
        out = broadcast_merge(w.atoms, [(out, out_shape), (w.label(bias) or {}, w.shape(bias))], out_shape,
                              f"matmul bias at {w.where()}")
    return out


def _norm_params(w: Walk, node: Node, names: list[Any]) -> list[str | None] | None:
    out = []
    for p in names:
        if p is None:
            out.append(None)
            continue
        name = w.param(p)
        if name is None:
            return None
        out.append(name)
    return out


def _with_stats(node: Node, label: Label) -> Any:
    val = node.meta.get("val")
    if isinstance(val, (list, tuple)):
        return [dict(label)] + [{} for _ in val[1:]]
    return label


def batch_norm(w: Walk, node: Node) -> Any:
    """BatchNorm / InstanceNorm: per-channel, so weight, bias and running stats follow the channel (dim 1)."""
    x = node.args[0]
    params = _norm_params(w, node, [arg(node, i, n) for i, n in
                                    ((1, "weight"), (2, "bias"), (3, "running_mean"), (4, "running_var"))])
    if params is None:
        return w.freeze_args(node, "batch norm with computed parameters")
    xshape = w.shape(x) or ()
    label = dict(w.label(x) or {})
    ids = label.get(1 if len(xshape) >= 2 else 0)
    if ids is not None:
        for name in params:
            if name is not None:
                w.attach(name, 0, ids)
    return _with_stats(node, label)


def layer_norm(w: Walk, node: Node) -> Any:
    """LayerNorm / RMSNorm over the trailing `normalized_shape` dims: weight and bias follow; the statistics are
    over the kept channels after pruning (masked in the equivalence check)."""
    key = op_key(node.target)
    x, shape_arg = node.args[0], list(node.args[1])
    weight = arg(node, 2, "weight")
    bias = None if key == "rms_norm" else arg(node, 3, "bias")
    params = _norm_params(w, node, [weight, bias])
    if params is None:
        return w.freeze_args(node, f"{key} with computed parameters")
    xshape = w.shape(x) or ()
    label = dict(w.label(x) or {})
    first = len(xshape) - len(shape_arg)
    hit = [d for d in range(first, len(xshape)) if d in label]
    if hit:
        if params == [None, None]:
            for d in hit:
                w.freeze(label[d], f"{key} without affine parameters (its normalized_shape cannot follow yet)")
        else:
            for d in hit:
                for name in params:
                    if name is not None:
                        w.attach(name, d - first, label[d])
            w.statistic(node, key, tuple(range(first, len(xshape))))
    return _with_stats(node, label)


def group_norm(w: Walk, node: Node) -> Any:
    """GroupNorm: groups == channels or 1 prune freely; otherwise position k of every group is one unit, so each
    group keeps the same number of channels and `num_groups` stays."""
    key = op_key(node.target)
    x = node.args[0]
    if key == "native_group_norm":
        weight, bias, groups = node.args[1], node.args[2], int(node.args[6])
    else:
        groups, weight, bias = int(node.args[1]), arg(node, 2, "weight"), arg(node, 3, "bias")
    params = _norm_params(w, node, [weight, bias])
    if params is None:
        return w.freeze_args(node, "group norm with computed parameters")
    label = dict(w.label(x) or {})
    for d in [d for d in label if d >= 2]:
        w.freeze(label[d], "group norm statistics over a channel-carrying spatial dim")
    ids = label.get(1)
    if ids is not None:
        channels = ids.numel()
        if params == [None, None]:
            w.freeze(ids, "group norm without affine parameters (num_channels cannot follow yet)")
        else:
            if groups not in (1, channels):
                grid = ids.reshape(groups, channels // groups)
                w.atoms.union_pairs(grid[1:], grid[0].expand(groups - 1, channels // groups))
            for name in params:
                if name is not None:
                    w.attach(name, 0, ids)
            w.statistic(node, "group_norm", (1,))
    return _with_stats(node, label)


def embedding(w: Walk, node: Node) -> Label:
    """Embedding lookup: the output's last dim is the weight's dim 1 (embedding_dim); the vocabulary is never cut."""
    weight = node.args[0]
    wname = w.param(weight)
    if wname is None:
        return w.freeze_args(node, "embedding with a computed weight")
    wshape = w.shape(weight) or ()
    out_ids = w.atoms.new(wshape[1])
    w.attach(wname, 1, out_ids)
    return {len(w.out_shape(node)) - 1: out_ids}


def attention(w: Walk, node: Node) -> Any:
    """Fused attention over (..., heads, tokens, head_dim): whole heads only.

    Head h of the output is softmax(q_h k_h^T) v_h, so q, k, v and the output are coupled head by head along dim -3
    (with GQA, the repeated key-value heads map each query head to its key-value group, so a group and all its query
    heads become one unit). Channel ids on any other dim (a head_dim slice, tokens), on the mask, a mask with one
    slice per head (its size is fixed by the caller), or `enable_gqa` (key-value heads not expanded in the graph)
    freeze everything the op touches.
    """
    q, k, v = (w.shape(a) or () for a in node.args[:3])
    hd = len(q) - 3
    labels = [_live(w, w.label(a) or {}, keep=hd) for a in node.args[:3]]
    mask = arg(node, 3, "attn_mask")
    mshape = w.shape(mask) if mask is not None else None
    per_head_mask = mshape is not None and len(mshape) >= 3 and mshape[-3] > 1  # sized for every head: fixed
    heads_only = (
        q and k and v and len(q) >= 3 and len(q) == len(k) == len(v) and q[-3] == k[-3] == v[-3]
        and all(set(lab) <= {hd} for lab in labels)
        and not (mask is not None and w.label(mask)) and not per_head_mask and not node.kwargs.get("enable_gqa", False)
    )
    if not heads_only:
        if q and k and v:
            w.macs(_numel(q[:-2]) * q[-2] * k[-2] * (q[-1] + v[-1]), [])
        return w.freeze_args(node, "attention with channels outside the head dim")
    ids = w.atoms.new(q[hd])
    for lab in labels:
        if hd in lab:
            w.atoms.union_pairs(lab[hd], ids)
    w.macs(_numel(q[:-2]) * q[-2] * k[-2] * (q[-1] + v[-1]), [ids])
    return {hd: ids}


def _live(w: Walk, label: Label, keep: int) -> Label:
    """`label` without the dims (other than `keep`) whose channels are all frozen already (e.g. RoPE's cos / sin,
    which carry the frozen rotary buffer's ids along head_dim): they can never be removed, so they constrain nothing."""
    out: Label = {}
    for d, ids in label.items():
        if d == keep or any(w.atoms.frozen_reason(int(r)) is None for r in w.atoms.roots_of(ids).unique().tolist()):
            out[d] = ids
    return out


def nothing(w: Walk, node: Node) -> None:
    """Shape assertions and size queries: no data flows, nothing to map."""
    return None


def layer_rules() -> dict[str, Rule]:
    """Op key -> rule, for every op handled in this module."""
    table: dict[str, Rule] = {}
    for name in ("conv1d", "conv2d", "conv3d", "convolution", "_convolution", "conv_transpose1d",
                 "conv_transpose2d", "conv_transpose3d"):
        table[name] = conv
    table["linear"] = linear
    for name in ("matmul", "mm", "bmm", "addmm", "baddbmm"):
        table[name] = matmul
    for name in ("batch_norm", "_native_batch_norm_legit_no_training", "_native_batch_norm_legit",
                 "native_batch_norm", "instance_norm", "_batch_norm_impl_index"):
        table[name] = batch_norm
    for name in ("layer_norm", "native_layer_norm", "rms_norm", "_fused_rms_norm"):
        table[name] = layer_norm
    table["group_norm"] = group_norm
    table["native_group_norm"] = group_norm
    table["embedding"] = embedding
    table["scaled_dot_product_attention"] = attention
    for name in ("_assert_tensor_metadata", "_assert_async", "_assert_scalar", "sym_size", "sym_numel",
                 "sym_stride", "size", "numel", "dim", "_local_scalar_dense", "sym_constrain_range_for_size"):
        table[name] = nothing
    return table
