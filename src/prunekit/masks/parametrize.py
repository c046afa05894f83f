"""KeepMask parametrization, attach / finalize, and import from `torch.nn.utils.prune`.

One mask per (module, tensor name). Attaching a second mask to the same tensor combines them (logical AND), so
stages compose: a later stage can only prune more. `finalize` is idempotent.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping

import torch
from torch import Tensor, nn
from torch.nn.utils import parametrize

from prunekit.errors import PrunekitError


class KeepMask(nn.Module):
    """Parametrization `w -> w * mask` with a boolean buffer (True = keep)."""

    def __init__(self, keep_mask: Tensor, param_order: list[str] | None = None) -> None:
        super().__init__()
        self.register_buffer("mask", keep_mask.to(torch.bool))
        # The module's parameter order before parametrizing, restored by `finalize` (parametrize moves the weight).
        self.param_order = list(param_order or [])

    def forward(self, weight: Tensor) -> Tensor:
        # A bool mask costs 1/4 of a float one in memory; the per-forward cast is the price (measured in
        # docs/benchmarks.md: torch.where was 3x slower still). Deployed models are finalized and pay nothing.
        return weight * self.mask.to(weight.dtype)

    def extra_repr(self) -> str:
        density = self.mask.float().mean().item() if self.mask.numel() else 1.0
        return f"shape={tuple(self.mask.shape)}, density={density:.4f}"


def _keep_masks(module: nn.Module, name: str) -> list[KeepMask]:
    if not parametrize.is_parametrized(module, name):
        return []
    return [p for p in module.parametrizations[name] if isinstance(p, KeepMask)]  # type: ignore[index]


def attach_mask(module: nn.Module, keep_mask: Tensor, name: str = "weight") -> KeepMask:
    """Attach (or AND into the existing) keep_mask of `module.<name>`; return the live KeepMask.

    Raises:
        PrunekitError: if the mask's shape differs from the tensor's, or the tensor does not exist.
    """
    tensor = getattr(module, name, None)
    if not isinstance(tensor, Tensor):
        raise PrunekitError(f"{type(module).__name__} has no tensor named {name!r} to mask")
    if tuple(keep_mask.shape) != tuple(tensor.shape):
        raise PrunekitError(
            f"mask shape {tuple(keep_mask.shape)} does not match {name} shape {tuple(tensor.shape)} "
            f"of {type(module).__name__}"
        )
    keep_mask = keep_mask.to(device=tensor.device, dtype=torch.bool)
    existing = _keep_masks(module, name)
    if existing:
        existing[0].mask.logical_and_(keep_mask)
        return existing[0]
    # Imported torch.nn.utils.prune state would double-mask; bring it in first.
    if hasattr(module, f"{name}_orig"):
        import_torch_prune(module)
        return attach_mask(module, keep_mask, name)
    param = KeepMask(keep_mask, list(module._parameters))
    parametrize.register_parametrization(module, name, param)
    return param


def _all_keep_masks(module: nn.Module) -> list[KeepMask]:
    return [p for name in module.parametrizations for p in _keep_masks(module, name)]  # type: ignore[union-attr]


def current_mask(module: nn.Module, name: str = "weight") -> Tensor | None:
    """The module's keep_mask for `name` (AND of all KeepMasks), or None when it carries none."""
    masks = _keep_masks(module, name)
    if not masks:
        return None
    out = masks[0].mask.clone()
    for m in masks[1:]:
        out &= m.mask
    return out


def masked_modules(model: nn.Module) -> Iterator[tuple[str, nn.Module, str]]:
    """Yield (module name, module, tensor name) for every tensor carrying a KeepMask."""
    for mod_name, module in model.named_modules():
        if parametrize.is_parametrized(module):
            for tname in list(module.parametrizations.keys()):  # type: ignore[union-attr]
                if _keep_masks(module, tname):
                    yield mod_name, module, tname


def has_masks(model: nn.Module) -> bool:
    """True when any parametrization or `torch.nn.utils.prune` hook is still attached."""
    for module in model.modules():
        if parametrize.is_parametrized(module) or _prune_hooks(module):
            return True
    return False


def finalize(model: nn.Module) -> nn.Module:
    """Bake every mask into plain weights and remove all parametrizations and prune hooks, in place.

    Parametrizations other than KeepMask (e.g. weight norm) are baked too, since a deployed model must be plain.
    Returns the same model for chaining.
    """
    import_torch_prune(model)
    for module in model.modules():
        if not parametrize.is_parametrized(module):
            continue
        order = next((p.param_order for p in _all_keep_masks(module) if p.param_order), None)
        # torch generates one Parametrized<Class> per module and a deepcopy shares it; removing the parametrization
        # deletes the property from that class, which would break the other copy. Give this module its own class.
        cls = type(module)
        module.__class__ = type(cls.__name__, cls.__bases__, dict(cls.__dict__))
        for tname in list(module.parametrizations.keys()):  # type: ignore[union-attr]
            parametrize.remove_parametrizations(module, tname, leave_parametrized=True)
        if order:
            params = module._parameters
            ordered = {k: params[k] for k in order if k in params}
            ordered.update({k: v for k, v in params.items() if k not in ordered})
            params.clear()
            params.update(ordered)
    return model


def _prune_hooks(module: nn.Module) -> list[tuple[int, object]]:
    from torch.nn.utils.prune import BasePruningMethod

    return [(k, h) for k, h in module._forward_pre_hooks.items() if isinstance(h, BasePruningMethod)]


def import_torch_prune(model: nn.Module) -> int:
    """Convert `torch.nn.utils.prune` state (weight_orig / weight_mask + hook) into KeepMask parametrizations.

    Returns the number of tensors converted. The effective weights are unchanged.
    """
    converted = 0
    for module in model.modules():
        for key, hook in _prune_hooks(module):
            tname = hook._tensor_name  # type: ignore[attr-defined]
            orig = getattr(module, f"{tname}_orig")
            mask = getattr(module, f"{tname}_mask").to(torch.bool)
            del module._forward_pre_hooks[key]
            delattr(module, tname)
            del module._parameters[f"{tname}_orig"]
            del module._buffers[f"{tname}_mask"]
            module.register_parameter(tname, nn.Parameter(orig.detach().clone(), requires_grad=orig.requires_grad))
            attach_mask(module, mask, tname)
            converted += 1
    return converted


def import_torch_prune_state_dict(state_dict: Mapping[str, Tensor]) -> dict[str, Tensor]:
    """Turn a state dict saved from a `torch.nn.utils.prune` model into plain keys with masks baked in.

    `a.weight_orig` and `a.weight_mask` become `a.weight = orig * mask`; other keys pass through.

    Raises:
        PrunekitError: if a `*_orig` key has no matching `*_mask` (or the reverse).
    """
    out: dict[str, Tensor] = {}
    origs = {k[: -len("_orig")]: v for k, v in state_dict.items() if k.endswith("_orig")}
    masks = {k[: -len("_mask")]: v for k, v in state_dict.items() if k.endswith("_mask")}
    if set(origs) != set(masks):
        odd = sorted(set(origs) ^ set(masks))
        raise PrunekitError(f"torch.nn.utils.prune state dict has unpaired _orig/_mask keys for: {', '.join(odd)}")
    for key, value in state_dict.items():
        if key.endswith("_orig") or key.endswith("_mask"):
            continue
        out[key] = value
    for base, orig in origs.items():
        out[base] = orig * masks[base].to(orig.dtype)
    return out
