"""The `llm_width` method: calibration windows -> the `structured` engine (activation importance, uniform layers,
Hugging Face config edit) -> optional bias compensation.

No engine of its own: heads / key-value groups and MLP channels are the structured engine's groups; this method
chooses which parts may shrink (`parts.py`), turns the LLM calibration samples into batches, and adds FLAP's bias
compensation (`bias.py`) around the engine.
"""

from __future__ import annotations

import inspect
from typing import Any

import torch
from torch import Tensor, nn

from prunekit.llm import find_blocks
from prunekit.llm.calibration import calibration_samples
from prunekit.methods.base import Method, PruneContext, StageResult, register_method
from prunekit.methods.llm_width import bias
from prunekit.methods.llm_width.config import LlmWidthConfig
from prunekit.methods.llm_width.parts import block_parts, ignore_patterns
from prunekit.methods.structured.calib import Batch
from prunekit.methods.structured.config import StructuredConfig
from prunekit.methods.structured.method import StructuredMethod
from prunekit.methods.structured.plan import get_plan


def _takes_use_cache(model: nn.Module) -> bool:
    try:
        return "use_cache" in inspect.signature(model.forward).parameters
    except (TypeError, ValueError):
        return False


def calibration_batches(samples: list[dict[str, Tensor]], batch_size: int, use_cache: bool) -> list[dict[str, Any]]:
    """Stack equally shaped samples (dicts of (1, T) tensors) into batches of `batch_size` rows (samples of other
    shapes stay alone); `use_cache=False` is added when the model takes it (no cache object in a hooked forward)."""
    out: list[dict[str, Any]] = []
    for start in range(0, len(samples), batch_size):
        chunk = samples[start:start + batch_size]
        first = chunk[0]
        same = all(s.keys() == first.keys() and all(s[k].shape == first[k].shape for k in s) for s in chunk)
        rows = [{k: torch.cat([s[k] for s in chunk]) for k in first}] if same else chunk
        out.extend({**r, "use_cache": False} if use_cache else dict(r) for r in rows)
    return out


def _bias_candidates(model: nn.Module, keep_parts: tuple[str, ...]) -> dict[str, nn.Linear]:
    """Linears inside the blocks' parts that may lose input channels (all of the blocks' Linears with `hidden`)."""
    prefix, parts = block_parts(model)
    _, blocks = find_blocks(model)
    children = [c for p in ("attention", "mlp") if p in keep_parts for c in parts[p]]
    out = {}
    for i, block in enumerate(blocks):
        for name, module in block.named_modules():
            top = name.split(".")[0]
            if isinstance(module, nn.Linear) and ("hidden" in keep_parts or top in children):
                out[f"{prefix}.{i}.{name}"] = module
    return out


@register_method
class LlmWidthMethod(Method):
    """Structured LLM width pruning: whole heads / key-value groups and MLP channels, scored from calibration."""

    name = "llm_width"
    config_cls = LlmWidthConfig

    def apply(self, model: nn.Module, config: LlmWidthConfig, ctx: PruneContext) -> StageResult:  # type: ignore[override]
        ignore = ignore_patterns(model, config.parts)  # before any forward: a wrong `parts` fails fast
        samples = calibration_samples(model, config.calibration, ctx.example_inputs, ctx.data)
        use_cache = _takes_use_cache(model)
        batches = calibration_batches(samples, config.batch_size, use_cache)
        trace = {**samples[0], "use_cache": False} if use_cache else dict(samples[0])
        engine = StructuredConfig(
            target=config.target, importance=config.importance, scope=config.scope, round_to=config.round_to,
            compensate="least_squares" if config.compensate == "least_squares" else "none", damp=config.damp,
            calib_batches=len(batches), ignore=(*ignore, *config.ignore), verify=config.verify, uniform_layers=True,
        )
        pending = None
        if config.compensate == "bias":
            pending = bias.prepare(model, _bias_candidates(model, config.parts), [Batch(b) for b in batches])
        result = StructuredMethod().apply(model, engine, PruneContext(example_inputs=trace, data=batches,
                                                                      progress=ctx.progress))
        result.method = self.name
        if pending is not None:
            result.notes.append(bias.apply(model, pending, get_plan(model).steps[-1].removals()))
        result.notes.append(f"llm_width: parts {', '.join(config.parts)}; {len(samples)} calibration sequence(s) "
                            f"in {len(batches)} batch(es)")
        return result
