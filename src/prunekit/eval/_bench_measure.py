"""Per-variant measurements for `prunekit.eval.bench` that go beyond timing: parameter / non-zero counts and sizes
that also work for dynamically quantized models, and an output-agreement metric for models without a task metric.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from prunekit.errors import PrunekitError
from prunekit.eval._inputs import call_model, eval_mode, iter_tensors
from prunekit.eval.measure import file_size, weight_bytes
from prunekit.export.quantize_dynamic import is_quantized, plain_state_dict

if TYPE_CHECKING:
    from prunekit.eval.bench import Variant


def output_agreement(reference: nn.Module, example_inputs: Any) -> Callable[[nn.Module], dict[str, float]]:
    """An `evaluate` for when no task metric exists: cosine similarity between a variant's first output and the
    reference model's on `example_inputs` (1.0 = same direction; flattened over the whole batch).

    The reference output is computed once, here."""

    def first(model: nn.Module) -> torch.Tensor:
        with eval_mode(model), torch.inference_mode():
            out = next(iter_tensors(call_model(model, example_inputs)), None)
        if out is None:
            raise PrunekitError(f"{type(model).__name__} returned no tensor; cannot compare outputs")
        return out.detach().float().flatten()

    ref = first(reference)

    def evaluate(model: nn.Module) -> dict[str, float]:
        got = first(model)
        if got.shape != ref.shape:
            raise PrunekitError(f"output shape {tuple(got.shape)} differs from the reference's {tuple(ref.shape)}")
        return {"output_cosine": float(torch.nn.functional.cosine_similarity(got, ref, dim=0))}

    return evaluate


def counts(model: nn.Module) -> tuple[int, int]:
    """(parameters, non-zero parameters); quantized Linear weights counted from their INT8 values."""
    tensors = {id(p): p for p in model.parameters()}
    params = sum(t.numel() for t in tensors.values())
    nonzeros = sum(int(torch.count_nonzero(t.detach())) for t in tensors.values())
    if is_quantized(model):
        plain = plain_state_dict(model)
        for key, value in plain.items():
            if key.endswith(".weight") and value.dtype == torch.int8 and f"{key}_zero_point" in plain:
                zero = plain[f"{key}_zero_point"].to(torch.int32)
                zero = zero.view(-1, *([1] * (value.dim() - 1))) if zero.numel() > 1 else zero
                params += value.numel()
                nonzeros += int(torch.count_nonzero(value.to(torch.int32) - zero))
            elif key.endswith(".bias") and key[:-5] + ".weight_scale" in plain:
                params += value.numel()
                nonzeros += int(torch.count_nonzero(value))
    return params, nonzeros


def sizes(variant: Variant) -> tuple[int, str, int]:
    """(file bytes, where the number comes from, weight bytes in memory)."""
    model = variant.model
    if is_quantized(model):
        from safetensors.torch import save_file

        plain = plain_state_dict(model)
        memory = sum(t.numel() * t.element_size() for t in plain.values())
        with tempfile.TemporaryDirectory(prefix="prunekit-bench-") as tmp:
            path = os.path.join(tmp, "model.safetensors")
            save_file(plain, path)
            disk = os.path.getsize(path)
        source = "safetensors of the state dict (INT8 weights unpacked with their scales)"
    else:
        memory = weight_bytes(model)
        disk, source = file_size(model), "safetensors of the state dict"
    if variant.files:
        paths = [Path(f) for f in variant.files]
        missing = [str(p) for p in paths if not p.is_file()]
        if missing:
            raise PrunekitError(f"variant files not found: {missing}")
        disk = sum(p.stat().st_size for p in paths)
        source = "files: " + ", ".join(p.name for p in paths)
    return disk, source, memory
