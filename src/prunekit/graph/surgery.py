"""Surgery: remove parameter / buffer slices from a model so its layers become physically smaller dense layers.

The per-layer protocol is small: which dims of a module's tensors may be sliced (`sliceable_dims`) and how a module
updates its size attributes once its tensors shrank (`_fix_attributes`: in/out channels, groups for depthwise
convs, in/out features, num_features, normalized_shape, num_groups, embedding_dim; MultiheadAttention's num_heads,
embed_dim, kdim, vdim, switching it to `PrunedMultiheadAttention` when its attention width differs from embed_dim). Slicing uses `index_select`
on the original data, so the same removals on the same base weights give bit-identical results.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor, nn

from prunekit.errors import PrunekitError
from prunekit.graph.mha import MHA_SLICEABLE, PrunedMultiheadAttention, mha_sizes


def sliceable_dims(module: nn.Module, local: str, ndim: int) -> set[int] | None:
    """Dims of `module.<local>` that surgery can slice (None: any dim, for modules without size attributes)."""
    if isinstance(module, nn.MultiheadAttention):
        return set(MHA_SLICEABLE.get(local, ()))
    if isinstance(module, (nn.RNNBase, nn.RNNCellBase)):
        return set()
    if isinstance(module, (nn.modules.conv._ConvNd, nn.Linear)) or type(module).__name__ == "Conv1D":
        return {0, 1} if local == "weight" else {0}
    if isinstance(module, (nn.modules.batchnorm._BatchNorm, nn.modules.instancenorm._InstanceNorm, nn.GroupNorm)):
        return {0}
    if isinstance(module, (nn.LayerNorm, nn.RMSNorm)):
        return set(range(ndim))
    if isinstance(module, nn.Embedding):
        return {1} if local == "weight" else set()
    return None


def owner(model: nn.Module, name: str) -> tuple[nn.Module, str]:
    """(module, attribute) of a dotted parameter / buffer name."""
    path, _, local = name.rpartition(".")
    try:
        return (model.get_submodule(path) if path else model), local
    except AttributeError:
        raise PrunekitError(f"model has no module {path!r} (for tensor {name!r})") from None


def get_tensor(model: nn.Module, name: str) -> Tensor:
    """The parameter or buffer called `name`."""
    module, local = owner(model, name)
    tensor = module._parameters.get(local) if local in module._parameters else module._buffers.get(local)
    if tensor is None:
        raise PrunekitError(f"model has no parameter or buffer {name!r}")
    return tensor


@dataclass
class Undo:
    """What `remove_slices` replaced, so a failed check can put the model back exactly."""

    tensors: list[tuple[nn.Module, str, bool, Any]] = field(default_factory=list)
    attributes: list[tuple[nn.Module, str, Any]] = field(default_factory=list)

    def restore(self) -> None:
        """Put back every replaced tensor and attribute (in reverse order)."""
        for module, attr, value in reversed(self.attributes):
            setattr(module, attr, value)
        for module, local, is_param, value in reversed(self.tensors):
            (module._parameters if is_param else module._buffers)[local] = value


def _aliases(model: nn.Module) -> dict[int, list[tuple[nn.Module, str, bool]]]:
    out: dict[int, list[tuple[nn.Module, str, bool]]] = {}
    for module in model.modules():
        for local, p in module._parameters.items():
            if p is not None:
                out.setdefault(id(p), []).append((module, local, True))
        for local, b in module._buffers.items():
            if b is not None:
                out.setdefault(id(b), []).append((module, local, False))
    return out


def remove_slices(model: nn.Module, removals: Mapping[str, Mapping[int, Sequence[int]]]) -> Undo:
    """Remove `removals[name][dim]` indices from each named parameter / buffer, then fix module attributes.

    Tied tensors (one Parameter held by several modules) are replaced in every holder.

    Raises:
        PrunekitError: a name is missing, an index is out of range, or a dim would become empty.
    """
    undo = Undo()
    aliases = _aliases(model)
    touched: dict[int, nn.Module] = {}
    with torch.no_grad():
        for name, dims in removals.items():
            tensor = get_tensor(model, name)
            new = tensor.detach()
            for dim, removed in sorted(dims.items()):
                size = new.shape[dim]
                gone = set(int(i) for i in removed)
                if any(i < 0 or i >= size for i in gone):
                    raise PrunekitError(f"{name}: index out of range for dim {dim} of size {size}")
                keep = [i for i in range(size) if i not in gone]
                if not keep:
                    raise PrunekitError(f"{name}: removing all {size} indices of dim {dim}")
                new = new.index_select(dim, torch.tensor(keep, dtype=torch.long, device=new.device))
            is_param = isinstance(tensor, nn.Parameter)
            value: Tensor = nn.Parameter(new.clone(), requires_grad=tensor.requires_grad) if is_param else new.clone()
            for module, local, holder_is_param in aliases.get(id(tensor), []):
                undo.tensors.append((module, local, holder_is_param, tensor))
                (module._parameters if holder_is_param else module._buffers)[local] = value
                touched[id(module)] = module
    for module in touched.values():
        _fix_attributes(module, undo)
    return undo


def _set(module: nn.Module, attr: str, value: Any, undo: Undo) -> None:
    if getattr(module, attr, None) != value:
        undo.attributes.append((module, attr, getattr(module, attr)))
        setattr(module, attr, value)


def _fix_attributes(module: nn.Module, undo: Undo) -> None:
    w = getattr(module, "weight", None)
    if isinstance(module, nn.modules.conv._ConvNd) and isinstance(w, Tensor):
        if module.transposed:
            _set(module, "in_channels", w.shape[0], undo)
            _set(module, "out_channels", w.shape[1] * module.groups, undo)
            return
        old_groups, old_in, old_out = module.groups, module.in_channels, module.out_channels
        if old_groups > 1 and w.shape[1] == 1 and old_in == old_groups:  # depthwise-like: whole groups go
            groups = w.shape[0] // (old_out // old_groups)
            _set(module, "groups", groups, undo)
            _set(module, "in_channels", groups, undo)
        else:
            _set(module, "in_channels", w.shape[1] * old_groups, undo)
        _set(module, "out_channels", w.shape[0], undo)
    elif isinstance(module, nn.Linear) and isinstance(w, Tensor):
        _set(module, "in_features", w.shape[1], undo)
        _set(module, "out_features", w.shape[0], undo)
    elif isinstance(module, (nn.modules.batchnorm._BatchNorm, nn.modules.instancenorm._InstanceNorm)):
        ref = w if isinstance(w, Tensor) else module.running_mean
        if isinstance(ref, Tensor):
            _set(module, "num_features", ref.shape[0], undo)
    elif isinstance(module, (nn.LayerNorm, nn.RMSNorm)) and isinstance(w, Tensor):
        _set(module, "normalized_shape", tuple(w.shape), undo)
    elif isinstance(module, nn.GroupNorm) and isinstance(w, Tensor):
        if module.num_groups == module.num_channels:
            _set(module, "num_groups", w.shape[0], undo)
        _set(module, "num_channels", w.shape[0], undo)
    elif isinstance(module, nn.Embedding) and isinstance(w, Tensor):
        _set(module, "embedding_dim", w.shape[1], undo)
    elif type(module).__name__ == "Conv1D" and isinstance(w, Tensor):
        _set(module, "nf", w.shape[1], undo)
    elif isinstance(module, nn.MultiheadAttention):
        _fix_mha(module, undo)


def _fix_mha(module: nn.MultiheadAttention, undo: Undo) -> None:
    """Whole heads and / or input columns removed: update num_heads, embed_dim, kdim, vdim (head_dim stays). When
    the attention width no longer equals embed_dim, torch's forward cannot run it: switch to PrunedMultiheadAttention
    (see graph/mha.py)."""
    sizes = mha_sizes(module)
    if sizes is None:
        return
    for attr in ("embed_dim", "kdim", "vdim", "num_heads"):
        _set(module, attr, sizes[attr], undo)
    if sizes["width"] != sizes["embed_dim"] and type(module) is nn.MultiheadAttention:
        _set(module, "__class__", PrunedMultiheadAttention, undo)
    if isinstance(module, PrunedMultiheadAttention):
        _set(module, "_qkv_same_embed_dim", False, undo)
