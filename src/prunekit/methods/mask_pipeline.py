"""The one pipeline every mask-pruning method runs: targets -> scores -> pattern -> keep_mask -> parametrization.

A method only supplies a score function (weight matrix -> per-weight scores, higher = keep). Scores are computed on
the effective weight, and weights an earlier stage already pruned score -inf, so stages compose and the requested
sparsity is the layer's total, not an increment.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch import Tensor, nn

from prunekit.config.targets import TargetSelection, select_targets
from prunekit.errors import PrunekitError
from prunekit.layers import matrix_to_weight, output_layer_names, weight_as_matrix
from prunekit.masks import attach_mask, current_mask, import_torch_prune
from prunekit.methods.base import PruneContext, StageResult
from prunekit.methods.mask_config import MaskPruningConfig
from prunekit.patterns import Pattern, n_to_prune, parse_pattern, select_global

ScoreFn = Callable[[str, Tensor], Tensor]


def protected_layers(model: nn.Module, cfg: MaskPruningConfig, ctx: PruneContext) -> dict[str, str]:
    """The layers guarded by default: the first one executed and the last one / the declared output head."""
    order = ctx.execution_order
    if not order:
        from prunekit.layers import is_prunable

        order = [n for n, m in model.named_modules() if n and is_prunable(m)]
    guards: dict[str, str] = {}
    if cfg.protect_last and order:
        for name in output_layer_names(model) | {order[-1]}:
            guards[name] = "last layer / output head (protected; set protect_last: false to prune it)"
    if cfg.protect_first and order:
        guards[order[0]] = "first layer, reads the input (protected; set protect_first: false to prune it)"
    return guards


def _matrix_scores(module: nn.Module, name: str, score_fn: ScoreFn) -> Tensor:
    with torch.no_grad():
        matrix = weight_as_matrix(module, module.weight.detach())
        scores = score_fn(name, matrix).to(torch.float32)
        if scores.shape != matrix.shape:
            raise RuntimeError(f"score function returned shape {tuple(scores.shape)} for {tuple(matrix.shape)}")
        keep = current_mask(module)
        if keep is not None:
            scores = scores.masked_fill(~weight_as_matrix(module, keep), float("-inf"))
    if torch.isnan(scores).any():
        raise PrunekitError(f"layer {name!r}: weights or scores contain NaN ({int(torch.isnan(scores).sum())} values)")
    return scores


def run_mask_pruning(
    model: nn.Module,
    cfg: MaskPruningConfig,
    ctx: PruneContext,
    method: str,
    score_fn: ScoreFn,
    layer_sparsity: dict[str, float] | None = None,
) -> StageResult:
    """Prune `model` in place with masks chosen from `score_fn` per `cfg`; return per-layer results.

    `layer_sparsity` (optional, e.g. from `prunekit.training.allocation.layer_sparsities`) gives each targeted
    layer its own sparsity instead of `cfg`'s; it needs scope "layer" and a pattern that takes a sparsity.
    """
    pattern = parse_pattern(cfg.pattern)
    import_torch_prune(model)  # earlier torch.nn.utils.prune zeros must score -inf like our own masks
    sel = select_targets(
        model, cfg.targets, cfg.ignore, protected=protected_layers(model, cfg, ctx), strict=cfg.strict
    )
    modules = dict(model.named_modules())
    layers = _drop_unsupported(sel, modules, pattern, cfg.strict)
    result = StageResult(method=method)
    for name, reason in sel.skipped.items():
        result.layers[name] = {"status": "skipped", "reason": reason}
    sparsity = cfg.target_sparsity
    if layer_sparsity is not None:
        per_layer = _check_layer_sparsity(layer_sparsity, layers, cfg, pattern)
        masks = {n: _layer_mask(modules[n], n, pattern, per_layer[n], score_fn) for n in layers}
    elif cfg.scope == "global":
        masks = _global_masks(layers, modules, pattern, sparsity, cfg.min_density, score_fn)
    else:
        masks = {n: _layer_mask(modules[n], n, pattern, sparsity, score_fn) for n in layers}
    for name, keep in masks.items():
        module = modules[name]
        weight_keep = matrix_to_weight(module, keep, module.weight.shape)
        attach_mask(module, weight_keep)
        live = current_mask(module)
        achieved = 1.0 - live.float().mean().item() if live is not None else 0.0
        result.layers[name] = {"status": "pruned", "pattern": pattern.name, "sparsity": achieved}
    return result


def _check_layer_sparsity(
    layer_sparsity: dict[str, float], layers: list[str], cfg: MaskPruningConfig, pattern: Pattern
) -> dict[str, float]:
    if cfg.scope == "global":
        raise PrunekitError(
            "a per-layer sparsity allocation cannot be combined with scope 'global' (one threshold decides every "
            "layer's sparsity); use scope: layer with an allocation, or drop the allocation"
        )
    if pattern.implied_sparsity() is not None:
        raise PrunekitError(
            f"pattern {pattern.name!r} fixes every layer's sparsity; a per-layer allocation needs 'unstructured' "
            "or 'block:RxC'"
        )
    missing = [n for n in layers if n not in layer_sparsity]
    if missing:
        raise PrunekitError(f"per-layer sparsity missing for targeted layer {missing[0]!r}")
    for name in layers:
        value = layer_sparsity[name]
        if not 0.0 <= value < 1.0:
            raise PrunekitError(f"per-layer sparsity {value!r} of layer {name!r} must be in [0, 1)")
    return {n: float(layer_sparsity[n]) for n in layers}


def _drop_unsupported(
    sel: TargetSelection, modules: dict[str, nn.Module], pattern: Pattern, strict: bool
) -> list[str]:
    kept = []
    for name in sel.targeted:
        module = modules[name]
        reason = pattern.unsupported_reason(weight_as_matrix(module, module.weight).shape)
        if reason is None:
            kept.append(name)
            continue
        if strict:
            raise PrunekitError(f"strict: layer {name!r} cannot take pattern {pattern.name!r}: {reason}")
        sel.skipped[name] = f"pattern {pattern.name} does not fit: {reason}"
    if not kept:
        raise PrunekitError(f"pattern {pattern.name!r} fits none of the targeted layers")
    return kept


def _layer_mask(module: nn.Module, name: str, pattern: Pattern, sparsity: float, score_fn: ScoreFn) -> Tensor:
    scores = _matrix_scores(module, name, score_fn)
    if pattern.implied_sparsity() is not None:
        return pattern.keep_mask(scores, None)
    return pattern.keep_mask(scores, sparsity)


def _global_masks(
    layers: list[str],
    modules: dict[str, nn.Module],
    pattern: Pattern,
    sparsity: float,
    min_density: float,
    score_fn: ScoreFn,
) -> dict[str, Tensor]:
    def unit_fn(name: str) -> Callable[[], Tensor]:
        return lambda: pattern.unit_scores(_matrix_scores(modules[name], name, score_fn))

    fns = [unit_fn(n) for n in layers]
    units, caps = [], []
    for fn in fns:  # one streaming pass for sizes and what earlier stages already pruned
        unit_scores = fn()
        units.append(unit_scores.numel())
        already = int(torch.isneginf(unit_scores).sum())
        caps.append(max(already, int(math.floor((1.0 - min_density) * unit_scores.numel() + 1e-9))))
    n_prune = n_to_prune(sum(units), sparsity)
    selection = select_global(fns, n_prune, max_prune=caps, names=layers)
    masks = {}
    for i, name in enumerate(layers):
        matrix_shape = weight_as_matrix(modules[name], modules[name].weight).shape
        unit_keep = selection.keep_mask(i, fns[i]())
        masks[name] = pattern.expand(unit_keep, matrix_shape)
    return masks
