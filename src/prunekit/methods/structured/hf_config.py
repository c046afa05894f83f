"""Hugging Face configs of structurally pruned models: which sizes a config can express, and the edit that does.

A `transformers` config names one size per kind (`hidden_size`, `intermediate_size`, ...), never per-layer sizes.
Whether a set of pruned shapes is expressible is decided by construction, not by attribute paths per architecture:
the integer fields of the config whose value equals a dimension that changed are the candidates; each candidate
edit (fewest fields first) is applied to a copy of the config, the model class is rebuilt from it on the meta device
(no memory, no initialization), and every state-dict tensor's shape must equal the pruned model's. Only an edit
that passes this check is ever returned, so `save_pretrained` + `from_pretrained` rebuilds the same architecture.
"""

from __future__ import annotations

import copy
import itertools
import sys
from collections.abc import Iterable, Mapping
from typing import Any

import torch
from torch import nn

from prunekit.graph import get_tensor

_MAX_TRIES = 64  # rebuilds per search (each one is a meta-device model build)
_MAX_FIELDS = 3  # fields edited together at most


def is_hf_model(model: nn.Module) -> bool:
    """True for a `transformers.PreTrainedModel` (checked only when transformers is already imported)."""
    transformers = sys.modules.get("transformers")
    return transformers is not None and isinstance(model, transformers.PreTrainedModel)


def state_shapes(model: nn.Module) -> dict[str, tuple[int, ...]]:
    """Shape of every state-dict entry (tied tensors under each of their names), as the finalized model would name
    them: a masked weight's `parametrizations.weight.original` counts as `weight`, its mask buffers not at all."""
    out = {}
    for key, value in model.state_dict(keep_vars=True).items():
        if ".parametrizations." in f".{key}":
            if not key.endswith(".original"):
                continue
            key = f".{key}".replace(".parametrizations.", ".").removesuffix(".original").lstrip(".")
        out[key] = tuple(value.shape)
    return out


def shapes_after(model: nn.Module, removals: Mapping[str, Mapping[int, Iterable[int]]]) -> dict[str, tuple[int, ...]]:
    """The state-dict shapes `model` would have after removing the given slices (aliases of a tensor included)."""
    names_of: dict[int, list[str]] = {}
    for key, value in model.state_dict(keep_vars=True).items():
        names_of.setdefault(id(value), []).append(key)
    shapes = state_shapes(model)
    for name, dims in removals.items():
        tensor = get_tensor(model, name)
        shape = list(tensor.shape)
        for dim, idx in dims.items():
            shape[dim] -= len(set(idx))
        for key in names_of.get(id(tensor), [name]):
            shapes[key] = tuple(shape)
    return shapes


def _rebuild_shapes(model: nn.Module, config: Any) -> dict[str, tuple[int, ...]] | None:
    try:
        validate = getattr(config, "validate", None)
        if callable(validate):  # what save_pretrained runs (e.g. Llama: hidden_size a multiple of the heads)
            validate()
        with torch.device("meta"):
            fresh = type(model)._from_config(config)
    except Exception:  # a config the model class rejects (e.g. hidden_size not divisible by the heads) expresses nothing
        return None
    return state_shapes(fresh)


def find_config_edit(model: nn.Module, target: Mapping[str, tuple[int, ...]],
                     fields: Iterable[str] | None = None, fixed: Iterable[int] = ()) -> dict[str, int] | None:
    """The smallest edit of `model.config` whose rebuilt model has exactly the state-dict shapes `target`.

    Args:
        model: a `transformers.PreTrainedModel` whose `config` still describes the unpruned sizes.
        target: state-dict key -> shape wanted (e.g. `state_shapes(pruned)` or `shapes_after(model, removals)`).
        fields: search only these config fields (any number of them together), e.g. the fields that the
            per-class probes found; default: every integer or unset field, at most `_MAX_FIELDS` together.
        fixed: sizes pruning keeps constant (`DependencyGraph.fixed_sizes`, the head_dim): a field holding one of
            them is never edited (halving head_dim matches the shapes of dropping half the heads, not the maths).

    Returns:
        {config field: new value} ({} when the config already matches), or None when no edit of at most
        `_MAX_FIELDS` integer fields reproduces `target` (per-layer sizes, or sizes the model class derives
        differently).
    """
    base = _rebuild_shapes(model, model.config)
    if base is None or set(base) != set(target):
        return None
    if base == dict(target):
        return {}
    pairs: set[tuple[int, int]] = set()
    for key, shape in target.items():
        old = base[key]
        if len(old) != len(shape):
            return None
        pairs.update((a, b) for a, b in zip(old, shape) if a != b)
    keep = set(fixed)
    fields_all = {k: v for k, v in model.config.to_dict().items() if (type(v) is int and v not in keep) or v is None}
    # an int field equal to an old size may take its new size; an unset field (GPT-2's n_inner) may take any new size
    options = {f: sorted({b for a, b in pairs if v is None or a == v} | _counts(v, pairs))
               for f, v in fields_all.items()}
    options = {f: vals for f, vals in options.items() if vals and (fields is None or f in set(fields))}
    most = len(options) if fields is not None else min(_MAX_FIELDS, len(options))
    tries = 0
    for size in range(1, most + 1):
        inert: set[str] = set()  # fields whose single edit changes no shape: never needed in a combination
        for chosen in itertools.combinations(sorted(options), size):
            if inert.intersection(chosen):
                continue
            for values in itertools.product(*(options[f] for f in chosen)):
                tries += 1
                if tries > _MAX_TRIES:
                    return None
                edit = dict(zip(chosen, values))
                shapes = _shapes_with(model, edit)
                if shapes == dict(target):
                    return edit
                if size == 1 and shapes == base:
                    inert.add(chosen[0])
        options = {f: vals for f, vals in options.items() if f not in inert}
    return None


def _counts(value: int | None, pairs: set[tuple[int, int]]) -> set[int]:
    """New values of a count field (heads): a size `a = value * per` that became `b = new * per`."""
    if not value or value <= 1:
        return set()
    return {b // (a // value) for a, b in pairs if a % value == 0 and b % (a // value) == 0 and b < a}


def _shapes_with(model: nn.Module, edit: Mapping[str, int]) -> dict[str, tuple[int, ...]] | None:
    config = copy.deepcopy(model.config)
    try:
        for f, v in edit.items():
            setattr(config, f, v)
    except Exception:  # a typed config field that cannot hold this value (huggingface_hub strict dataclasses)
        return None
    return _rebuild_shapes(model, config)


def apply_config_edit(model: nn.Module, edit: Mapping[str, int]) -> list[str]:
    """Set the fields of `model.config`; returns "field old -> new" lines for the notes."""
    lines = []
    for field_name, value in edit.items():
        lines.append(f"{field_name} {getattr(model.config, field_name)} -> {value}")
        setattr(model.config, field_name, value)
    return lines
