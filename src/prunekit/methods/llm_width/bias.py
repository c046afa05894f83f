"""Bias compensation (FLAP): what a removed input channel contributed on average goes into the layer's bias.

For a Linear y = W x + b that loses input channels R, with m the mean of its dense calibration inputs,

    b' = b + W[:, R] @ m[R]

so the layer's output keeps its mean over the calibration data. The statistics and the dense weights are taken
before the structured engine prunes (`prepare`); `apply` reads which columns went from the plan step. A layer without
a bias gets one: on a Hugging Face model only through the config's boolean bias flags (Llama `attention_bias`,
`mlp_bias`), chosen by rebuilding the model class on the meta device, so `from_pretrained` still rebuilds it; the
other biases such a flag adds start at zero.
"""

from __future__ import annotations

import copy
import itertools
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from prunekit.errors import PrunekitError
from prunekit.methods.structured.calib import Batch, collect_inputs
from prunekit.methods.structured.hf_config import is_hf_model, state_shapes


def bias_shift(weight: Tensor, mean: Tensor, removed: Sequence[int]) -> Tensor:
    """W[:, removed] @ mean[removed] in float64: the bias change of a (out, in) layer losing input columns."""
    idx = torch.as_tensor(list(removed), dtype=torch.long)
    return weight.detach().to("cpu", torch.float64)[:, idx] @ mean.to(torch.float64)[idx]


@dataclass
class BiasPlan:
    """What bias compensation measured on the dense model: input means and weights of the candidate layers, and
    which config flags add which bias keys (Hugging Face models)."""

    means: dict[str, Tensor]
    weights: dict[str, Tensor]
    flags: dict[str, set[str]]


def _rebuild_keys(model: nn.Module, config: object) -> dict[str, tuple[int, ...]] | None:
    try:
        with torch.device("meta"):
            fresh = type(model)._from_config(config)
    except Exception:  # a config the class rejects adds nothing
        return None
    return state_shapes(fresh)


def _bias_flags(model: nn.Module) -> dict[str, set[str]]:
    """{bool config field that is False and names a bias: the state-dict keys setting it True adds}."""
    base = _rebuild_keys(model, model.config)
    if base is None:
        return {}
    out = {}
    for field, value in model.config.to_dict().items():
        if value is False and "bias" in field:
            cfg = copy.deepcopy(model.config)
            setattr(cfg, field, True)
            keys = _rebuild_keys(model, cfg)
            if keys is not None and set(base) <= set(keys) and len(keys) > len(base):
                out[field] = set(keys) - set(base)
    return out


def prepare(model: nn.Module, modules: Mapping[str, nn.Linear], batches: Sequence[Batch]) -> BiasPlan:
    """Measure input means of `modules` on the dense model; check that every bias-less one can get a bias.

    Raises:
        PrunekitError: a Hugging Face model whose config has no flag adding a bias to one of the layers.
    """
    flags = _bias_flags(model) if is_hf_model(model) else {}
    if is_hf_model(model):
        addable = set().union(*flags.values()) if flags else set()
        missing = [n for n, m in modules.items() if m.bias is None and f"{n}.bias" not in addable]
        if missing:
            raise PrunekitError(
                f"compensate: bias needs a bias on {missing[0]!r}, but no boolean bias flag of "
                f"{type(model.config).__name__} adds one (so from_pretrained could not load it); use compensate: "
                "least_squares or none"
            )
    stats = collect_inputs(model, batches, modules)
    means = {n: s.total / max(s.count, 1) for n, s in stats.items() if s.total is not None}
    weights = {n: m.weight.detach().to("cpu").clone() for n, m in modules.items()}
    return BiasPlan(means, weights, flags)


def _cover(flags: Mapping[str, set[str]], needed: set[str]) -> list[str] | None:
    """The fewest flags whose added keys include `needed`."""
    for size in range(1, len(flags) + 1):
        for chosen in itertools.combinations(sorted(flags), size):
            if needed <= set().union(*(flags[f] for f in chosen)):
                return list(chosen)
    return None


def apply(model: nn.Module, plan: BiasPlan, removals: Mapping[str, Mapping[int, list[int]]]) -> str:
    """Add the bias shifts for the columns `removals` ({tensor: {dim: indices}}) took; the note for the report."""
    shifts: dict[str, Tensor] = {}
    for name, weight in plan.weights.items():
        dims = removals.get(f"{name}.weight", {})
        if 1 not in dims or name not in plan.means:
            continue
        shift = bias_shift(weight, plan.means[name], dims[1])
        if 0 in dims:  # the layer's own outputs shrank too (residual stream pruned)
            keep = torch.ones(shift.numel(), dtype=torch.bool)
            keep[torch.as_tensor(dims[0], dtype=torch.long)] = False
            shift = shift[keep]
        shifts[name] = shift
    needed = {f"{n}.bias" for n in shifts if model.get_submodule(n).bias is None}
    flag_note = ""
    if needed and is_hf_model(model):
        chosen = _cover(plan.flags, needed)
        if chosen is None:
            raise PrunekitError(f"compensate: bias: no config flag adds {sorted(needed)[0]!r}")
        added = set().union(*(plan.flags[f] for f in chosen))
        for f in chosen:
            setattr(model.config, f, True)
        needed = added
        flag_note = "; config " + ", ".join(f"{f} -> true" for f in chosen) + f" ({len(added)} zero bias(es) added)"
    with torch.no_grad():
        for key in sorted(needed):
            module = model.get_submodule(key.rpartition(".")[0])
            if not isinstance(module, nn.Linear) or module.bias is not None:
                raise PrunekitError(f"compensate: bias: {key!r} is not the missing bias of a Linear")
            module.bias = nn.Parameter(torch.zeros(module.out_features, dtype=module.weight.dtype,
                                                   device=module.weight.device))
        for name, shift in shifts.items():
            bias = model.get_submodule(name).bias
            bias.add_(shift.to(bias.dtype).to(bias.device))
    return (f"compensate bias: {len(shifts)} layer(s) got W[:, removed] @ mean(x[removed]) added to their bias"
            + flag_note)
