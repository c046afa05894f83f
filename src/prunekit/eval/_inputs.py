"""Shared plumbing for running a model on example inputs: call conventions, eval mode that restores, descriptions.

Example inputs are a single tensor (`model(x)`), a tuple or list (`model(*inputs)`) or a dict (`model(**inputs)`),
the same convention everywhere in `prunekit.eval`.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import torch

from prunekit.errors import PrunekitError
from prunekit.layers import call_model, eval_mode  # noqa: F401  (re-exported for eval's modules)

ExampleInputs = torch.Tensor | tuple | list | dict


def check_inputs(example_inputs: Any) -> None:
    """Raise `PrunekitError` unless `example_inputs` is a tensor, a tuple/list or a dict."""
    if not isinstance(example_inputs, (torch.Tensor, tuple, list, dict)):
        raise PrunekitError(
            f"example_inputs must be a Tensor, a tuple/list of positional inputs or a dict of keyword inputs, "
            f"got {type(example_inputs).__name__}"
        )




def iter_tensors(obj: Any) -> Iterator[torch.Tensor]:
    """Yield every tensor inside nested tuples, lists, dicts and objects with `to_tuple()` (HF model outputs)."""
    if isinstance(obj, torch.Tensor):
        yield obj
    elif isinstance(obj, dict):
        for value in obj.values():
            yield from iter_tensors(value)
    elif isinstance(obj, (tuple, list)):
        for value in obj:
            yield from iter_tensors(value)
    elif hasattr(obj, "to_tuple"):
        yield from iter_tensors(obj.to_tuple())


def describe_inputs(example_inputs: Any) -> str:
    """A short text of the input shapes, e.g. 'input_ids=(2, 16), attention_mask=(2, 16)'."""

    def one(value: Any) -> str:
        if isinstance(value, torch.Tensor):
            return str(tuple(value.shape))
        return type(value).__name__

    if isinstance(example_inputs, torch.Tensor):
        return one(example_inputs)
    if isinstance(example_inputs, dict):
        return ", ".join(f"{k}={one(v)}" for k, v in example_inputs.items())
    return ", ".join(one(v) for v in example_inputs)


