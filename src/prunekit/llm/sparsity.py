"""Per-layer sparsity of the one-shot methods: one number, a list per block, a regex mapping, or OWL.

OWL's outlier ratios come from a first, dense pass over every block (`run_blocks` with no pruning) before any block
is pruned, as in the paper's code: the allocation needs every block's ratio (min / max normalisation and the
weighted mean) before the first block is pruned, so it cannot be scored during the pruning walk. The pass costs one
extra forward of every block over the calibration samples.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor, nn

from prunekit.errors import PrunekitError
from prunekit.layers import weight_as_matrix
from prunekit.llm.config import OneShotConfig, OwlConfig
from prunekit.llm.owl import outlier_ratio, owl_sparsities
from prunekit.llm.runner import find_blocks, run_blocks


class _SumSquares:
    """Sum of squares of each input feature over every token: sqrt gives Wanda's ||X_j||_2."""

    def __init__(self) -> None:
        self.sum_sq: Tensor | None = None

    def add(self, x: Tensor) -> None:
        flat = x.detach().reshape(-1, x.shape[-1]).to(torch.float64)
        part = flat.pow(2).sum(dim=0).cpu()
        self.sum_sq = part if self.sum_sq is None else self.sum_sq + part


def block_outlier_ratios(
    model: nn.Module, by_block: dict[int, list[str]], samples: list[Any], m: float, *,
    memory_budget: int | None = None, spill_dir: str | None = None,
) -> dict[int, float]:
    """OWL's D_l per block index in `by_block`: scores |W| * ||X_j|| of the block's layers on the dense model
    (the walk spills cached activations to disk past `memory_budget` bytes, as the pruning walk does)."""
    modules = dict(model.named_modules())
    ratios: dict[int, float] = {}

    def visit(index: int, _name: str, _block: nn.Module, forward: Callable[[], None]) -> None:
        names = by_block.get(index, [])
        if not names:
            return
        acc = {n: _SumSquares() for n in names}
        handles = [
            modules[n].register_forward_hook(lambda _m, args, _out, a=acc[n]: a.add(args[0])) for n in names
        ]
        try:
            forward()
        finally:
            for h in handles:
                h.remove()
        scores = []
        with torch.no_grad():
            for n in names:
                w = weight_as_matrix(modules[n], modules[n].weight).detach().abs().to(torch.float64).cpu()
                norms = acc[n].sum_sq if acc[n].sum_sq is not None else torch.zeros(w.shape[1], dtype=torch.float64)
                scores.append(w * norms.sqrt().reshape(1, -1))
        ratios[index] = outlier_ratio(scores, m)

    run_blocks(model, samples, visit, memory_budget=memory_budget, spill_dir=spill_dir, return_outputs=False)
    return ratios


def owl_block_sparsities(
    model: nn.Module, by_block: dict[int, list[str]], samples: list[Any], target: float, owl: OwlConfig, *,
    memory_budget: int | None = None, spill_dir: str | None = None,
) -> tuple[dict[int, float], dict[int, float]]:
    """(sparsity, outlier ratio) per block index, the parameter-weighted mean sparsity exactly `target`."""
    modules = dict(model.named_modules())
    ratios = block_outlier_ratios(model, by_block, samples, owl.m, memory_budget=memory_budget, spill_dir=spill_dir)
    order = sorted(ratios)
    params = [sum(modules[n].weight.numel() for n in by_block[i]) for i in order]
    values = owl_sparsities([ratios[i] for i in order], params, target, owl.lam)
    return dict(zip(order, values)), ratios


def _from_mapping(names: list[str], mapping: dict[str, float]) -> dict[str, float]:
    out = {}
    for name in names:
        hit = next((key for key in mapping if re.fullmatch(key, name)), None)
        if hit is None:
            raise PrunekitError(
                f"sparsity mapping has no regex matching layer {name!r} (keys: {', '.join(map(repr, mapping))}); "
                "add a catch-all key such as '.*' or leave the layer out with ignore"
            )
        out[name] = float(mapping[hit])
    return out


def layer_sparsities(
    model: nn.Module, cfg: OneShotConfig, by_block: dict[int, list[str]], samples: list[Any]
) -> tuple[dict[str, float] | None, list[str]]:
    """Sparsity per targeted layer (None for N:M) and notes for the report (the OWL allocation)."""
    if cfg.nm is not None:
        return None, []
    names = [n for i in sorted(by_block) for n in by_block[i]]
    value = cfg.sparsity
    if isinstance(value, dict):
        return _from_mapping(names, value), []
    if isinstance(value, tuple):
        blocks_name, blocks = find_blocks(model)
        if len(value) != len(blocks):
            raise PrunekitError(
                f"sparsity list has {len(value)} values but the model has {len(blocks)} transformer blocks "
                f"({blocks_name}); give one value per block"
            )
        return {n: float(value[i]) for i in by_block for n in by_block[i]}, []
    target = float(cfg.target_sparsity or 0.0)
    if cfg.owl is None:
        return {n: target for n in names}, []
    per_block, ratios = owl_block_sparsities(model, by_block, samples, target, cfg.owl,
                                             memory_budget=cfg.memory_budget, spill_dir=cfg.spill_dir)
    note = "owl: " + ", ".join(
        f"block {i}: outliers {ratios[i]:.4f} -> sparsity {per_block[i]:.4f}" for i in sorted(per_block)
    )
    return {n: per_block[i] for i in by_block for n in by_block[i]}, [note]
