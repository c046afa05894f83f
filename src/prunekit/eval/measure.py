"""Measure what a model really costs: forward latency, peak activation memory, weight memory and file size.

- `measure_latency`: wall-clock time of `model(*inputs)` under `torch.inference_mode` (time.perf_counter, CUDA
  synchronised when the model or inputs live there), after warm-up; p50 / p90 / mean in milliseconds.
- `measure_peak_memory`: the peak, over one forward pass, of the bytes held by tensor storages created during that
  forward (activations, temporaries, outputs), tracked op by op with a `TorchDispatchMode`. Weights, buffers and
  inputs that existed before are excluded; so are allocator rounding / fragmentation and scratch memory a kernel
  uses internally without returning it as a tensor (e.g. oneDNN workspaces). It is exact for what it counts and the
  same on every device, so dense vs pruned comparisons are fair.
- `weight_bytes`: bytes of the storages behind parameters and buffers, each shared storage once.
- `state_dict_bytes` / `file_size`: payload bytes of the state_dict (shared tensors once) and the size on disk of
  that state_dict written as safetensors (payload + header).
"""

from __future__ import annotations

import os
import tempfile
import time
import weakref
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.utils._python_dispatch import TorchDispatchMode

from prunekit.errors import PrunekitError
from prunekit.eval._inputs import call_model, check_inputs, eval_mode, iter_tensors
from prunekit.eval._tensors import storage_ptr, tensor_key


@dataclass(frozen=True)
class LatencyStats:
    """Forward-pass latency in milliseconds over `iters` timed runs (after `warmup` untimed ones)."""

    p50_ms: float
    p90_ms: float
    mean_ms: float
    min_ms: float
    std_ms: float
    iters: int
    warmup: int
    threads: int
    device: str

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-ready dict."""
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> LatencyStats:
        """Inverse of `to_dict`."""
        return cls(**data)


def _check_count(name: str, value: Any, minimum: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise PrunekitError(f"{name} must be an integer >= {minimum}, got {value!r}")


def _device_of(model: nn.Module, example_inputs: Any) -> torch.device:
    for tensor in iter_tensors(example_inputs):
        return tensor.device
    for tensor in model.parameters():
        return tensor.device
    return torch.device("cpu")


def measure_latency(
    model: nn.Module,
    example_inputs: Any,
    *,
    warmup: int = 5,
    iters: int = 30,
    threads: int | None = None,
) -> LatencyStats:
    """Time the forward pass of `model` on `example_inputs`.

    Args:
        model: the model; run in eval mode (training flags restored afterwards).
        example_inputs: a Tensor, a tuple of positional inputs or a dict of keyword inputs.
        warmup: untimed runs first (caches, lazy init, allocator warm-up).
        iters: timed runs.
        threads: intra-op CPU threads for the measurement (restored afterwards); None keeps the current setting.

    Returns:
        `LatencyStats` with p50 / p90 / mean / min / std in ms and the thread count actually used.

    Raises:
        PrunekitError: for a bad count, thread number or input type.
    """
    check_inputs(example_inputs)
    _check_count("warmup", warmup, 0)
    _check_count("iters", iters, 1)
    if threads is not None:
        _check_count("threads", threads, 1)
    device = _device_of(model, example_inputs)
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    previous_threads = torch.get_num_threads()
    if threads is not None:
        torch.set_num_threads(threads)
    times = []
    try:
        used_threads = torch.get_num_threads()
        with eval_mode(model), torch.inference_mode():
            for _ in range(warmup):
                call_model(model, example_inputs)
            sync()
            for _ in range(iters):
                start = time.perf_counter()
                call_model(model, example_inputs)
                sync()
                times.append((time.perf_counter() - start) * 1000.0)
    finally:
        torch.set_num_threads(previous_threads)
    values = np.asarray(times, dtype=np.float64)
    return LatencyStats(
        p50_ms=float(np.percentile(values, 50)),
        p90_ms=float(np.percentile(values, 90)),
        mean_ms=float(values.mean()),
        min_ms=float(values.min()),
        std_ms=float(values.std()),
        iters=iters,
        warmup=warmup,
        threads=used_threads,
        device=str(device),
    )


class _StorageTracker(TorchDispatchMode):
    """Tracks the storages that ops create and frees them via weakref callbacks; records the peak of live bytes."""

    def __init__(self, preexisting: set[int]):
        super().__init__()
        self.preexisting = preexisting
        self.live: dict[int, tuple[weakref.ref, int]] = {}
        self.current = 0
        self.peak = 0

    def _freed(self, ptr: int, ref: weakref.ref) -> None:
        entry = self.live.get(ptr)
        if entry is not None and entry[0] is ref:
            del self.live[ptr]
            self.current -= entry[1]

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        seen_in_args = {storage_ptr(t) for t in iter_tensors((args, kwargs or {}))}
        for tensor in iter_tensors(out):
            storage = tensor.untyped_storage()
            ptr = storage.data_ptr()
            if ptr == 0 or ptr in self.preexisting or ptr in seen_in_args:
                continue  # views, in-place results and tensors that existed before the forward
            entry = self.live.get(ptr)
            if entry is not None and entry[0]() is storage:
                continue
            if entry is not None:  # address reused after a free whose callback has not run yet
                self.current -= entry[1]
            ref = weakref.ref(storage, lambda r, p=ptr: self._freed(p, r))
            self.live[ptr] = (ref, storage.nbytes())
            self.current += storage.nbytes()
        self.peak = max(self.peak, self.current)
        return out


def measure_peak_memory(model: nn.Module, example_inputs: Any) -> int:
    """Peak bytes of tensors created during one forward pass (activations, temporaries and outputs).

    See the module docstring for exactly what is and is not counted. Runs in eval mode under
    `torch.inference_mode`; training flags are restored.

    Args:
        model: the model.
        example_inputs: a Tensor, a tuple of positional inputs or a dict of keyword inputs.

    Returns:
        The peak in bytes, beyond the weights, buffers and inputs that existed before the call.
    """
    check_inputs(example_inputs)
    preexisting = {storage_ptr(t) for t in iter_tensors(example_inputs)}
    preexisting.update(storage_ptr(t) for t in model.parameters())
    preexisting.update(storage_ptr(t) for t in model.buffers())
    preexisting.discard(0)
    tracker = _StorageTracker(preexisting)
    with eval_mode(model), torch.inference_mode(), tracker:
        out = call_model(model, example_inputs)
    del out
    return int(tracker.peak)


def weight_bytes(model: nn.Module) -> int:
    """Bytes of the storages behind the model's parameters and buffers, each shared storage counted once."""
    sizes: dict[int, int] = {}
    for tensor in [*model.parameters(), *model.buffers()]:
        ptr = storage_ptr(tensor)
        key = ptr if ptr else id(tensor)
        sizes[key] = tensor.untyped_storage().nbytes() if ptr else tensor.numel() * tensor.element_size()
    return int(sum(sizes.values()))


def _unique_state_dict(model: nn.Module) -> dict[str, torch.Tensor]:
    """The state_dict with identical (tied) tensors kept once; partial overlaps become standalone copies."""
    unique: dict[str, torch.Tensor] = {}
    seen: set[tuple] = set()
    for name, tensor in model.state_dict().items():
        key = tensor_key(tensor)
        if key not in seen:
            seen.add(key)
            unique[name] = tensor.detach()
    used_storages: set[int] = set()
    for name, tensor in unique.items():
        ptr = storage_ptr(tensor)
        whole = tensor.is_contiguous() and tensor.untyped_storage().nbytes() == tensor.numel() * tensor.element_size()
        if ptr in used_storages or not whole:
            unique[name] = tensor.clone(memory_format=torch.contiguous_format)
        used_storages.add(ptr)
    return unique


def state_dict_bytes(model: nn.Module) -> int:
    """Payload bytes of the state_dict (numel * element size), each shared (tied) tensor counted once."""
    return int(sum(t.numel() * t.element_size() for t in _unique_state_dict(model).values()))


def file_size(model: nn.Module) -> int:
    """Bytes on disk of the model's state_dict written as a safetensors file (shared tensors stored once).

    The file goes to a temporary directory that is removed afterwards. Zeros cost as much as any other value here:
    this is the size of a plain dense checkpoint.
    """
    from safetensors.torch import save_file

    tensors = {name: tensor.cpu() for name, tensor in _unique_state_dict(model).items()}
    with tempfile.TemporaryDirectory(prefix="prunekit-size-") as tmp:
        path = os.path.join(tmp, "model.safetensors")
        save_file(tensors, path)
        return os.path.getsize(path)
