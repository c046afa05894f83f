"""Conformance: every registered method x the model zoo x patterns x scopes, with the method's default options.

The cases are derived from `prunekit.registry.METHODS`: every method whose config is a `MaskPruningConfig` (it
attaches keep_masks and leaves shapes alone) is tested without editing this file. Methods that change shapes
(structured) need their own suite. Each case prunes a fresh copy of a zoo model and checks the achieved sparsity (exact, per layer or in total),
the pattern of every pruned weight, skip reasons, unchanged shapes/dtypes, a NaN-free forward, and `finalize`.
Determinism and config round trips run on a smaller set of cases.
"""

from __future__ import annotations

import pytest
import torch
import yaml

import prunekit
from prunekit.api import stage
from prunekit.masks import current_mask
from prunekit.methods.mask_config import MaskPruningConfig
from prunekit.patterns import parse_pattern
from prunekit.recipes import parse_recipe
from prunekit.registry import METHODS
from _zoo_checks import check_finalize, check_report_and_masks, pruned_names
from zoo import ZOO

MASK_METHODS = [m for m in METHODS.names() if issubclass(METHODS.get(m).config_cls, MaskPruningConfig)]
SPARSITY = 0.5
PATTERNS = ("unstructured", "2:4", "4:8", "block:4x1", "block:1x4")
PATTERN_SCOPES = [
    (p, s) for p in PATTERNS for s in ("layer", "global") if s == "layer" or parse_pattern(p).supports_global
]


def make_stage(method: str, pattern: str, scope: str, sparsity: float = SPARSITY, **options):
    """A stage with the method's defaults; N:M patterns get their implied sparsity (none given)."""
    if parse_pattern(pattern).implied_sparsity() is None:
        options["sparsity"] = sparsity
    return stage(method, pattern=pattern, scope=scope, **options)


def _matrix_cases() -> list:
    """Every method x model x (pattern, scope). Models are small enough that the full product stays fast."""
    return [
        pytest.param(m, z, p, s, id=f"{m}-{z}-{p}-{s}")
        for m in MASK_METHODS
        for z in ZOO
        for p, s in PATTERN_SCOPES
    ]


@pytest.mark.parametrize(("method", "model_name", "pattern", "scope"), _matrix_cases())
def test_method_on_zoo(zoo, method, model_name, pattern, scope):
    dense, inputs = zoo(model_name)
    model, _ = zoo(model_name)
    st = make_stage(method, pattern, scope)
    report = prunekit.prune(model, st, inputs)
    masks = check_report_and_masks(model, report, st.config)
    check_finalize(model, dense, inputs, masks)


def _masks(model) -> dict[str, torch.Tensor]:
    return {n: current_mask(m) for n, m in model.named_modules() if current_mask(m) is not None}


_DETERMINISM = [
    pytest.param(m, z, p, s, id=f"{m}-{z}-{p}-{s}")
    for m in MASK_METHODS
    for z in ("resnet_concat", "gpt2")
    for p, s in (("unstructured", "global"), ("2:4", "layer"), ("block:4x1", "global"))
]


@pytest.mark.parametrize(("method", "model_name", "pattern", "scope"), _DETERMINISM)
def test_same_config_same_masks(zoo, method, model_name, pattern, scope):
    runs = []
    for _ in range(2):
        model, inputs = zoo(model_name)
        prunekit.prune(model, make_stage(method, pattern, scope), inputs)
        runs.append(_masks(model))
    assert runs[0].keys() == runs[1].keys() and runs[0]
    for name in runs[0]:
        assert torch.equal(runs[0][name], runs[1][name]), name


_SEEDED = [m for m in MASK_METHODS if "seed" in METHODS.get(m).config_cls.model_fields]


@pytest.mark.parametrize("method", _SEEDED)
@pytest.mark.parametrize(("pattern", "scope"), [("unstructured", "layer"), ("block:1x4", "global")])
def test_other_seed_other_masks(zoo, method, pattern, scope):
    runs = []
    for seed in (0, 1):
        model, inputs = zoo("llama_gqa")
        prunekit.prune(model, make_stage(method, pattern, scope, seed=seed), inputs)
        runs.append(_masks(model))
    assert runs[0].keys() == runs[1].keys()
    assert all(not torch.equal(runs[0][n], runs[1][n]) for n in runs[0]), "a layer got the same mask for both seeds"


@pytest.mark.parametrize("method", MASK_METHODS)
@pytest.mark.parametrize(("pattern", "scope"), PATTERN_SCOPES)
def test_config_round_trip(method, pattern, scope):
    st = make_stage(method, pattern, scope, ignore=["re:.*head.*"], min_density=0.1)
    data = st.to_dict()
    again = parse_recipe({"stages": [data]}).stages[0]
    assert again == st
    assert again.to_dict() == data
    via_yaml = parse_recipe(yaml.safe_load(prunekit.Recipe((st,)).to_yaml())).stages[0]
    assert via_yaml == st


@pytest.mark.parametrize("method", METHODS.names())
def test_every_config_field_has_help_text(method):
    cls = METHODS.get(method).config_cls
    for name, field in cls.model_fields.items():
        assert field.description, f"{method}.{name} has no help text"


@pytest.mark.parametrize("method", MASK_METHODS)
def test_mask_defaults_and_typo_error(method):
    st = stage(method, sparsity=0.5)
    assert (st.config.pattern, st.config.scope, st.config.protect_first, st.config.protect_last) == (
        "unstructured", "layer", True, True)
    with pytest.raises(prunekit.PrunekitError, match="unknown key 'sparsit'.*Did you mean: sparsity"):
        stage(method, sparsit=0.5)


@pytest.mark.parametrize("method", MASK_METHODS)
def test_pruned_layers_are_reported_with_status(zoo, method):
    model, inputs = zoo("resnet_concat")
    report = prunekit.prune(model, make_stage(method, "2:4", "layer"), inputs)
    rows = {row.name: row for row in report.layers}
    assert rows["depthwise"].status == "skipped"
    assert rows["depthwise"].reason.startswith("pattern 2:4 does not fit: input dimension 9")
    assert {"branch_a", "pointwise", "mix"} <= set(pruned_names(report))
