"""The `llm_depth` method: score every block (or window of blocks) on calibration data, remove the most redundant.

Scoring walks the blocks with the sequential runner (`prunekit.llm.run_blocks`: one block at a time, activations
cached on CPU); a forward hook on each block reads its input and output hidden states, and `scores.py` turns them
into per-block (or per-window) distances. `surgery.py` removes the blocks and fixes the Hugging Face config.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor, nn

from prunekit.llm import block_output, find_blocks, run_blocks
from prunekit.llm.calibration import calibration_samples
from prunekit.methods.base import Method, PruneContext, StageResult, register_method
from prunekit.methods.llm_depth.config import LlmDepthConfig
from prunekit.methods.llm_depth.scores import blocks_to_drop, token_distance
from prunekit.methods.llm_depth.surgery import drop_blocks


def _token_weights(sample: Any, length: int, tokens: str) -> Tensor:
    """(T,) weights of the scored tokens: the attention mask (or ones); with "last" only the last real token."""
    mask = sample.get("attention_mask") if isinstance(sample, dict) else None
    if isinstance(mask, Tensor):
        w = mask.reshape(-1)[-length:].to(torch.float64)
    else:
        w = torch.ones(length, dtype=torch.float64)
    if tokens == "last":
        last = int(w.nonzero().max()) if bool(w.any()) else length - 1
        w = torch.zeros(length, dtype=torch.float64)
        w[last] = 1.0
    return w


def window_scores(model: nn.Module, samples: list[Any], window: int, metric: str, tokens: str,
                  device: Any = None) -> list[float]:
    """Mean per-token distance between the input of block l and the output of block l + window - 1, for every
    window start l (window 1: one score per block), over `samples`."""
    _, blocks = find_blocks(model)
    sums = [0.0] * (len(blocks) - window + 1)
    counts = [0.0] * len(sums)
    history: dict[int, list[Tensor]] = {}  # block index -> its inputs per sample (the last `window` blocks only)

    def visit(i: int, _name: str, block: nn.Module, forward: Callable[[], None]) -> None:
        ins: list[Tensor] = []
        outs: list[Tensor] = []

        def hook(_m: nn.Module, args: tuple, kwargs: dict, out: Any) -> None:
            ins.append((args[0] if args else kwargs["hidden_states"]).detach().to("cpu"))
            outs.append(block_output(out).detach().to("cpu"))

        handle = block.register_forward_hook(hook, with_kwargs=True)
        try:
            forward()
        finally:
            handle.remove()
        history[i] = ins
        history.pop(i - window, None)
        start = i - window + 1
        if start < 0:
            return
        for j, (x, y) in enumerate(zip(history[start], outs)):
            w = _token_weights(samples[j], x.shape[-2], tokens)
            d = token_distance(x, y, metric).reshape(-1, x.shape[-2])  # (batch, T)
            sums[start] += float((d * w).sum())
            counts[start] += float(w.sum()) * d.shape[0]

    run_blocks(model, samples, visit, device)
    return [s / c if c else 0.0 for s, c in zip(sums, counts)]


@register_method
class LlmDepthMethod(Method):
    """Depth pruning: remove the transformer blocks that change the hidden states least (angular distance)."""

    name = "llm_depth"
    config_cls = LlmDepthConfig

    def apply(self, model: nn.Module, config: LlmDepthConfig, ctx: PruneContext) -> StageResult:  # type: ignore[override]
        _, blocks = find_blocks(model)
        n = config.count(len(blocks))
        samples = calibration_samples(model, config.calibration, ctx.example_inputs, ctx.data)
        scores = window_scores(model, samples, n if config.contiguous else 1, config.metric, config.tokens)
        drop = blocks_to_drop(scores, n, config.contiguous)
        what = f"window of {n} starting at" if config.contiguous else "block"
        result = StageResult(method=self.name)
        result.notes.append(f"llm_depth: {config.metric} distance per {what} " + ", ".join(
            f"{i}: {s:.4f}" for i, s in enumerate(scores)) + f" ({len(samples)} calibration sequence(s))")
        result.notes.extend(drop_blocks(model, drop))
        # no per-layer rows: the block names shift after the removal, so "model.layers.2" would name another block
        return result
