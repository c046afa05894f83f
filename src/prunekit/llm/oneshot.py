"""The shared flow of the one-shot LLM methods: targets -> calibration -> block by block: statistics -> prune.

A method supplies two things: `make_stats(module)`, an accumulator with `add(x)` fed the layer's inputs, and
`prune_layer(name, module, stats, sparsity)`, which returns the layer's (out, in) keep_mask and may update the weight
in place; `sparsity` is the layer's own (per-layer list, mapping or OWL), None for N:M. A `prune_layer` taking only
(name, module, stats) is still accepted (it must then know its sparsity itself).
Every targeted layer of a block sees inputs from the dense block (all its layers' statistics are gathered in one
pass), and the next block sees the outputs of the pruned one.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Any, Protocol

from torch import Tensor, nn

from prunekit.config.targets import select_targets
from prunekit.errors import PrunekitError
from prunekit.layers import matrix_to_weight, output_layer_names, weight_as_matrix
from prunekit.llm.calibration import calibration_samples
from prunekit.llm.config import OneShotConfig
from prunekit.llm.runner import find_blocks, run_blocks
from prunekit.llm.sparsity import layer_sparsities, owl_block_sparsities
from prunekit.masks import attach_mask, current_mask
from prunekit.methods.base import PruneContext, StageResult


class Stats(Protocol):
    """Per-layer input statistics, fed the layer's input activations (..., in_features)."""

    def add(self, x: Tensor) -> None: ...


PruneLayer = Callable[..., Tensor]


def _protected(model: nn.Module, targets: tuple[str, ...] | None) -> dict[str, str]:
    """The output head, unless `targets` names it exactly (a regex alone does not unprotect it)."""
    named = set(targets or ())
    return {
        n: "output head (lm_head), left dense by default" for n in output_layer_names(model) if n not in named
    }


def _plan(model: nn.Module, cfg: OneShotConfig) -> tuple[dict[int, list[str]], dict[str, str], str]:
    """Targeted layers grouped by block index, skipped layers with reasons, and the blocks' name."""
    sel = select_targets(model, cfg.targets, cfg.ignore, protected=_protected(model, cfg.targets), strict=cfg.strict)
    blocks_name, blocks = find_blocks(model)
    modules = dict(model.named_modules())
    skipped = dict(sel.skipped)
    by_block: dict[int, list[str]] = {}
    for name in sel.targeted:
        reason = None
        if not name.startswith(blocks_name + "."):
            reason = f"outside the transformer blocks ({blocks_name}); the one-shot runner prunes inside them only"
        elif cfg.nm is not None:
            module = modules[name]
            reason = cfg.nm.unsupported_reason(weight_as_matrix(module, module.weight).shape)
        if reason is not None:
            if cfg.strict:
                raise PrunekitError(f"strict: layer {name!r} is skipped: {reason}")
            skipped[name] = reason
            continue
        index = int(name[len(blocks_name) + 1 :].split(".")[0])
        by_block.setdefault(index, []).append(name)
    if not by_block:
        raise PrunekitError(f"none of the targeted layers can be pruned: {skipped}")
    return by_block, skipped, blocks_name


def collect_stats(
    layers: dict[str, nn.Module], make_stats: Callable[[nn.Module], Stats], forward: Callable[[], None]
) -> dict[str, Stats]:
    """Run `forward()` once with hooks that feed each layer's input to its own `make_stats(module)` accumulator."""
    stats = {name: make_stats(module) for name, module in layers.items()}
    handles = [
        module.register_forward_hook(lambda _m, args, _out, acc=stats[name]: acc.add(args[0]))
        for name, module in layers.items()
    ]
    try:
        forward()
    finally:
        for h in handles:
            h.remove()
    return stats


def _takes_sparsity(prune_layer: PruneLayer) -> bool:
    try:
        params = inspect.signature(prune_layer).parameters.values()
    except (TypeError, ValueError):
        return True
    if any(p.kind is p.VAR_POSITIONAL for p in params):
        return True
    return sum(p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD) for p in params) >= 4


def owl_allocation(
    model: nn.Module, cfg: OneShotConfig, example_inputs: Any = None, data: Any = None
) -> dict[int, float]:
    """The OWL sparsity per block index that a one-shot stage with `cfg` (which must set `owl`) would use.

    Useful to give the same non-uniform allocation to another method (e.g. per-block magnitude stages).
    """
    if cfg.owl is None or cfg.target_sparsity is None:
        raise PrunekitError("owl_allocation needs a config with owl set and one target sparsity")
    by_block, _, _ = _plan(model, cfg)
    samples = calibration_samples(model, cfg.calibration, example_inputs, data)
    return owl_block_sparsities(model, by_block, samples, cfg.target_sparsity, cfg.owl,
                                memory_budget=cfg.memory_budget, spill_dir=cfg.spill_dir)[0]


def run_oneshot(
    model: nn.Module,
    cfg: OneShotConfig,
    ctx: PruneContext,
    method: str,
    make_stats: Callable[[nn.Module], Stats],
    prune_layer: PruneLayer,
) -> StageResult:
    """Prune `model` in place block by block; attach each layer's keep_mask; return per-layer results."""
    by_block, skipped, _ = _plan(model, cfg)
    samples = calibration_samples(model, cfg.calibration, ctx.example_inputs, ctx.data)
    sparsities, notes = layer_sparsities(model, cfg, by_block, samples)
    with_sparsity = _takes_sparsity(prune_layer)
    modules = dict(model.named_modules())
    result = StageResult(method=method)
    for name, reason in skipped.items():
        result.layers[name] = {"status": "skipped", "reason": reason}

    def visit(index: int, _block_name: str, _block: nn.Module, forward: Callable[[], None]) -> None:
        names = by_block.get(index, [])
        if not names:
            return
        stats = collect_stats({n: modules[n] for n in names}, make_stats, forward)
        for name in names:
            module = modules[name]
            layer_stats = stats.pop(name)
            if with_sparsity:
                keep = prune_layer(name, module, layer_stats, None if sparsities is None else sparsities[name])
            else:
                keep = prune_layer(name, module, layer_stats)
            attach_mask(module, matrix_to_weight(module, keep, module.weight.shape))
            live = current_mask(module)
            achieved = 1.0 - live.float().mean().item() if live is not None else 0.0
            result.layers[name] = {"status": "pruned", "pattern": cfg.pattern, "sparsity": achieved}

    run_blocks(
        model, samples, visit, memory_budget=cfg.memory_budget, spill_dir=cfg.spill_dir, return_outputs=False
    )
    result.notes.append(f"calibrated on {len(samples)} samples")
    result.notes.extend(notes)
    return result
