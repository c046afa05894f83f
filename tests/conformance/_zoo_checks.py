"""Checks the conformance suite runs on every pruned zoo model, written from the documented rules, not from prunekit.

Counting rule (docs of `prunekit.patterns`): pruning a fraction s of n units prunes floor(s * n + 0.5) units (round
half up). Units are single weights (unstructured) or R x C blocks of the (out, in) matrix view (block patterns,
partial edge blocks included); N:M prunes exactly M - N of every M consecutive input weights.
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import Tensor, nn
from torch.nn.utils import parametrize

from prunekit.layers import call_model
from prunekit.masks import current_mask
from prunekit.patterns import NM, Pattern, parse_pattern
from zoo import output_tensor


def as_matrix(module: nn.Module, t: Tensor) -> Tensor:
    """(out, in*...) view of a weight-shaped tensor. transformers' Conv1D stores (in, out), parametrized or not."""
    from transformers.pytorch_utils import Conv1D

    if isinstance(module, Conv1D):
        return t.t()
    return t.reshape(t.shape[0], -1)


def round_half_up(x: float) -> int:
    """The project's counting rule: floor(x + 0.5)."""
    return math.floor(x + 0.5)


def keep_matrix(module: nn.Module) -> Tensor:
    """The module's live keep_mask in the (out, in) matrix view; fails when the module carries none."""
    keep = current_mask(module)
    assert keep is not None, f"{type(module).__name__} is marked pruned but carries no keep_mask"
    return as_matrix(module, keep)


def unit_counts(pattern: Pattern, keep: Tensor) -> tuple[int, int]:
    """(units in the matrix, units pruned) for a keep_mask matrix; N:M counts single weights."""
    if isinstance(pattern, NM):
        return keep.numel(), int((~keep).sum())
    kept_per_unit = pattern.unit_scores(keep.to(torch.float32))
    return kept_per_unit.numel(), int((kept_per_unit == 0).sum())


def pruned_names(report: Any) -> list[str]:
    return [row.name for row in report.layers if row.status == "pruned"]


def effective_params(model: nn.Module, names: list[str]) -> dict[str, tuple[torch.Size, torch.dtype]]:
    """Shape and dtype of each named parameter as the forward sees it (a parametrized one through its module)."""
    out = {}
    for name in names:
        mod_name, _, pname = name.rpartition(".")
        tensor = getattr(model.get_submodule(mod_name), pname)
        out[name] = (tensor.shape, tensor.dtype)
    return out


def forward(model: nn.Module, inputs: Any) -> Tensor:
    with torch.no_grad():
        return output_tensor(call_model(model, inputs))


def check_report_and_masks(model: nn.Module, report: Any, cfg: Any) -> dict[str, Tensor]:
    """Sparsity, pattern and skip-reason checks after `prunekit.prune`; returns the keep_masks by layer name."""
    pattern = parse_pattern(cfg.pattern)
    sparsity = cfg.target_sparsity
    modules = dict(model.named_modules())
    names = pruned_names(report)
    assert names, "no layer was pruned"
    for row in report.layers:
        if row.status == "skipped":
            assert isinstance(row.reason, str) and row.reason.strip(), f"skipped layer {row.name} has no reason"
        if row.status == "pruned":
            assert row.pattern == pattern.name
    masks, total_units, total_pruned = {}, 0, 0
    for name in names:
        module = modules[name]
        keep = keep_matrix(module)
        masks[name] = keep.clone()
        weight = as_matrix(module, module.weight.detach())
        assert not weight[~keep].any(), f"{name}: a weight outside its keep_mask is nonzero"
        assert pattern.check(keep), f"{name}: keep_mask breaks pattern {pattern.name}"
        assert pattern.check(weight), f"{name}: weight zeros break pattern {pattern.name}"
        n_units, n_pruned = unit_counts(pattern, keep)
        total_units += n_units
        total_pruned += n_pruned
        if isinstance(pattern, NM):
            groups = keep.reshape(-1, pattern.m).sum(dim=1)
            assert bool((groups == pattern.n).all()), f"{name}: an N:M group does not keep exactly {pattern.n}"
        elif cfg.scope == "layer":
            assert n_pruned == round_half_up(sparsity * n_units), f"{name}: {n_pruned} of {n_units} units pruned"
        else:
            assert n_units - n_pruned >= math.ceil(cfg.min_density * n_units - 1e-9), f"{name}: below min_density"
    if cfg.scope == "global":
        expected = round_half_up(sparsity * total_units)
        assert total_pruned == expected, f"global: {total_pruned} of {total_units} units pruned, expected {expected}"
    return masks


def check_finalize(model: nn.Module, dense: nn.Module, inputs: Any, masks: dict[str, Tensor]) -> Tensor:
    """Forward runs without NaN, shapes/dtypes are kept, `finalize` leaves a plain model with the same zeros."""
    import prunekit

    names = [n for n, _ in dense.named_parameters()]
    assert effective_params(model, names) == effective_params(dense, names), "pruning changed a shape or dtype"
    before = forward(model, inputs)
    assert before.shape == forward(dense, inputs).shape
    assert not torch.isnan(before).any(), "forward of the pruned model gives NaN"
    prunekit.finalize(model)
    assert not any(parametrize.is_parametrized(m) for m in model.modules())
    assert not any("parametrizations" in k for k in model.state_dict())
    # names compared as sets here; the order is a separate test (test_finalize_keeps_parameter_order)
    params, dense_params = dict(model.named_parameters()), dict(dense.named_parameters())
    assert sorted(params) == sorted(dense_params)
    assert sorted(model.state_dict()) == sorted(dense.state_dict())
    for name, p in params.items():
        assert (p.shape, p.dtype) == (dense_params[name].shape, dense_params[name].dtype), name
    modules = dict(model.named_modules())
    for name, keep in masks.items():
        weight = as_matrix(modules[name], modules[name].weight.detach())
        assert not weight[~keep].any(), f"{name}: finalize revived a pruned weight"
    after = forward(model, inputs)
    torch.testing.assert_close(after, before)
    return after
