"""The sequential block runner: walk a transformer's repeated blocks one at a time over cached calibration inputs.

The blocks are found from the model's structure (the nn.ModuleList holding the most parameters whose children all
share one class), never from per-architecture attribute paths. The first block's inputs (positional and keyword
arguments: attention masks, position ids, rotary embeddings, ...) are captured by a pre-hook that stops the forward,
so nothing after the first block runs. Then each block in turn is moved to the compute device, offered to a `visit`
callback (which may run it over every cached input with hooks attached, and prune it), and run once more to produce
the next block's inputs from the block as it is now (pruned). Cached activations live on CPU, and past
`memory_budget` bytes on disk (`prunekit.llm.spill.ActivationCache`), read back one sample at a time.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from prunekit.errors import PrunekitError
from prunekit.layers import call_model
from prunekit.llm.spill import ActivationCache, BlockCall, parse_bytes

__all__ = ["BlockCall", "block_output", "capture_block_inputs", "find_blocks", "run_blocks"]

Visit = Callable[[int, str, nn.Module, Callable[[], None]], None]


class _StopForward(Exception):
    """Raised by the capture hook to stop the model's forward at the first block."""


def find_blocks(model: nn.Module) -> tuple[str, nn.ModuleList]:
    """The model's repeated blocks: the ModuleList with the most parameters whose children all share one class.

    Raises:
        PrunekitError: when the model has no such ModuleList.
    """
    best: tuple[int, str, nn.ModuleList] | None = None
    for name, module in model.named_modules():
        if not isinstance(module, nn.ModuleList) or len(module) == 0:
            continue
        if len({type(child) for child in module}) != 1:
            continue
        size = sum(p.numel() for p in module.parameters())
        if size and (best is None or size > best[0]):
            best = (size, name, module)
    if best is None:
        raise PrunekitError(
            f"{type(model).__name__} has no repeated blocks (an nn.ModuleList of same-class modules with parameters); "
            "the sequential LLM runner needs a transformer-style stack"
        )
    return best[1], best[2]


def _move(obj: Any, device: torch.device | str) -> Any:
    if isinstance(obj, Tensor):
        return obj.to(device)
    if isinstance(obj, tuple):
        return tuple(_move(o, device) for o in obj)
    if isinstance(obj, list):
        return [_move(o, device) for o in obj]
    if isinstance(obj, Mapping):
        return {k: _move(v, device) for k, v in obj.items()}
    return obj


def block_output(out: Any) -> Tensor:
    """The hidden states a block returns: the tensor itself, or the first element of a tuple / ModelOutput."""
    if isinstance(out, Tensor):
        return out
    if isinstance(out, (tuple, list)) and out and isinstance(out[0], Tensor):
        return out[0]
    if isinstance(out, Mapping) and out:
        first = next(iter(out.values()))
        if isinstance(first, Tensor):
            return first
    raise PrunekitError(
        f"a transformer block returned {type(out).__name__}; expected a tensor or a tuple starting with one"
    )


def _no_cache_inputs(model: nn.Module, inputs: Any) -> Any:
    """Ask for use_cache=False when the model takes it, so no cache object is threaded through the blocks."""
    try:
        takes = "use_cache" in inspect.signature(model.forward).parameters
    except (TypeError, ValueError):
        takes = False
    if takes and isinstance(inputs, Mapping) and "use_cache" not in inputs:
        return {**inputs, "use_cache": False}
    if takes and isinstance(inputs, Tensor):
        return {"input_ids": inputs, "use_cache": False}
    return inputs


def _capture(model: nn.Module, first_block: nn.Module, samples: list[Any], add: Callable[[BlockCall], None]) -> None:
    def hook(_module: nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
        add(BlockCall(_move(args, "cpu"), _move(kwargs, "cpu")))
        raise _StopForward

    handle = first_block.register_forward_pre_hook(hook, with_kwargs=True)
    try:
        with torch.no_grad():
            for sample in samples:
                try:
                    call_model(model, _no_cache_inputs(model, sample))
                except _StopForward:
                    continue
                raise PrunekitError("the model's forward never reached its first transformer block")
    finally:
        handle.remove()


def capture_block_inputs(model: nn.Module, first_block: nn.Module, samples: list[Any]) -> list[BlockCall]:
    """Run `model` on each sample until `first_block` is called; return each call's arguments (on CPU)."""
    calls: list[BlockCall] = []
    _capture(model, first_block, samples, calls.append)
    return calls


def _device_of(module: nn.Module) -> torch.device:
    p = next(iter(module.parameters()), None)
    return p.device if p is not None else torch.device("cpu")


def run_blocks(
    model: nn.Module,
    samples: list[Any],
    visit: Visit | None = None,
    device: str | torch.device | None = None,
    *,
    memory_budget: int | str | None = None,
    spill_dir: str | Path | None = None,
    return_outputs: bool = True,
) -> list[Tensor]:
    """Walk the blocks over `samples`; return the last block's output hidden states per sample (on CPU).

    Args:
        model: a transformer (decoder or encoder) whose blocks `find_blocks` finds.
        samples: model inputs, one forward each (a dict of kwargs such as {"input_ids": ...}, or a tensor).
        visit: called as visit(index, name, block, forward) for each block before it produces its outputs;
            `forward()` runs the block over every cached input (outputs discarded), e.g. with hooks attached.
        device: where each block runs; default: where the block's parameters are.
        memory_budget: bytes (or a size such as "2GiB") of cached block inputs kept in RAM; samples past it are
            spilled to a temporary folder and read back one at a time (None: all in RAM; 0: all on disk). The
            folder is removed before returning, also on error. Results are identical either way.
        spill_dir: where that temporary folder is made (default: the system's temp folder).
        return_outputs: False returns [] instead of loading every sample's final hidden states into RAM.
    """
    if not samples:
        raise PrunekitError("run_blocks needs at least one calibration sample")
    name, blocks = find_blocks(model)
    was_training = model.training
    model.eval()
    try:
        with ActivationCache(parse_bytes(memory_budget), spill_dir) as cache:
            _capture(model, blocks[0], samples, cache.append)
            for i, block in enumerate(blocks):
                home = _device_of(block)
                dev = torch.device(device) if device is not None else home
                block.to(dev)

                def run_all(keep: bool, block: nn.Module = block, dev: torch.device = dev) -> None:
                    with torch.no_grad():
                        for j in range(len(cache)):
                            call = cache[j]
                            out = block_output(block(*_move(call.args, dev), **_move(call.kwargs, dev)))
                            del call
                            if keep:  # sample j's input is no longer needed: its slot takes the output
                                cache.set_hidden(j, out.to("cpu"))
                            del out

                if visit is not None:

                    def forward(run_all: Callable[[bool], None] = run_all) -> None:
                        run_all(False)

                    visit(i, f"{name}.{i}", block, forward)
                run_all(True)
                block.to(home)
            return cache.hidden_states() if return_outputs else []
    finally:
        model.train(was_training)
