"""Dynamic INT8 quantization of Linear layers, and the honest size of a quantized model.

`quantize_dynamic_int8(model)` returns a copy whose `nn.Linear` layers are PyTorch's dynamically quantized Linear
(`torch.ao.quantization.quantize_dynamic`): weights stored as INT8 with a float scale (per output channel by
default), activations quantized on the fly per batch, matmuls on the fbgemm / x86 INT8 kernels. It runs on CPU
only (PyTorch has no CUDA kernel for it). PyTorch 2.14 still ships it but marks `torch.ao.quantization` deprecated
in favour of torchao; the deprecation warnings are silenced here and the path is checked by the tests.

A quantized Linear keeps its weights in an opaque packed object, so `state_dict()` cannot be written as safetensors
and `parameters()` no longer shows them. `plain_state_dict(model)` unpacks them into ordinary tensors (INT8 values,
float scales, INT zero points, float bias): the file a deployment would ship, used for file size and weight memory.
"""

from __future__ import annotations

import copy
import warnings
from collections.abc import Iterator

import torch
from torch import Tensor, nn

from prunekit.errors import PrunekitError


def _ao() -> tuple[object, object]:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            from torch.ao.nn.quantized.dynamic import Linear as DynLinear
            from torch.ao.quantization import quantize_dynamic
        except ImportError as exc:  # pragma: no cover - depends on the torch build
            raise PrunekitError(f"dynamic INT8 needs torch.ao.quantization, missing in torch {torch.__version__} "
                                f"({exc})") from None
    return quantize_dynamic, DynLinear


def int8_engine() -> str | None:
    """The quantized engine PyTorch uses on this CPU ('x86', 'fbgemm', 'qnnpack', ...), None when there is none."""
    engines = [e for e in torch.backends.quantized.supported_engines if e != "none"]
    return torch.backends.quantized.engine if engines else None


def quantize_dynamic_int8(model: nn.Module, *, per_channel: bool = True) -> nn.Module:
    """A copy of `model` (eval mode) with every `nn.Linear` replaced by a dynamically quantized INT8 Linear.

    Args:
        model: a float model on CPU (structured-pruned, finalized or dense); left unchanged.
        per_channel: one weight scale per output row (more accurate, same kernels) instead of one per layer.

    Raises:
        PrunekitError: the model has parameters off the CPU, no Linear layer, or this torch has no INT8 engine.
    """
    if any(p.device.type != "cpu" for p in model.parameters()):
        raise PrunekitError("dynamic INT8 runs on CPU only: move the model to CPU first (PyTorch has no CUDA kernel)")
    if not any(isinstance(m, nn.Linear) for m in model.modules()):
        raise PrunekitError(f"dynamic INT8 quantizes nn.Linear layers; {type(model).__name__} has none")
    if int8_engine() is None:
        raise PrunekitError(f"this torch build has no quantized CPU engine "
                            f"(supported: {torch.backends.quantized.supported_engines})")
    quantize_dynamic, _ = _ao()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from torch.ao.quantization import default_dynamic_qconfig, per_channel_dynamic_qconfig

        qconfig = per_channel_dynamic_qconfig if per_channel else default_dynamic_qconfig
        out = quantize_dynamic(copy.deepcopy(model).eval(), {nn.Linear: qconfig}, dtype=torch.qint8)
    return out


def _dynamic_linears(model: nn.Module) -> Iterator[tuple[str, nn.Module]]:
    _, dyn_linear = _ao()
    for name, module in model.named_modules():
        if isinstance(module, dyn_linear):  # type: ignore[arg-type]
            yield name, module


def is_quantized(model: nn.Module) -> bool:
    """Whether `model` holds dynamically quantized Linear layers."""
    return next(_dynamic_linears(model), None) is not None


def _unpack(module: nn.Module) -> dict[str, Tensor]:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        weight, bias = module._packed_params._weight_bias()  # noqa: SLF001 - the public accessors call this too
        out = {"weight": weight.int_repr().contiguous()}
        if weight.qscheme() in (torch.per_channel_affine, torch.per_channel_symmetric):
            out["weight_scale"] = weight.q_per_channel_scales().to(torch.float32)
            out["weight_zero_point"] = weight.q_per_channel_zero_points().to(torch.int32)
        else:
            out["weight_scale"] = torch.tensor([weight.q_scale()], dtype=torch.float32)
            out["weight_zero_point"] = torch.tensor([weight.q_zero_point()], dtype=torch.int32)
    if bias is not None:
        out["bias"] = bias.detach().to(torch.float32)
    return out


def plain_state_dict(model: nn.Module) -> dict[str, Tensor]:
    """The state dict as ordinary CPU tensors: quantized Linear layers unpacked to INT8 weights + scales + zero
    points + float bias; every other tensor as is (tied tensors once, by identity). Ready for safetensors."""
    quant = dict(_dynamic_linears(model))
    out: dict[str, Tensor] = {}
    for name, module in quant.items():
        for key, tensor in _unpack(module).items():
            out[f"{name}.{key}" if name else key] = tensor
    prefixes = tuple(f"{n}." for n in quant if n) if "" not in quant else ("",)
    seen: set[tuple[int, int, tuple[int, ...]]] = set()
    for key, value in model.state_dict().items():
        if not isinstance(value, Tensor) or (quant and key.startswith(prefixes)):
            continue
        ident = (value.untyped_storage().data_ptr(), value.storage_offset(), tuple(value.shape))
        if ident[0] and ident in seen:
            continue
        seen.add(ident)
        out[key] = value.detach().cpu().clone()  # own storage: safetensors refuses shared ones
    return out
