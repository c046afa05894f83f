"""Conformance of the shared mask-pruning behaviours, for every registered mask-pruning method on zoo models.

Stages compose, the global `min_density` floor holds, the first layer and the output head are protected by default,
tied weights are left alone, and masks made with `torch.nn.utils.prune` are imported with their zeros kept.
"""

from __future__ import annotations

import copy
import math

import pytest
import torch
from torch import nn
from torch.nn.utils import parametrize
from torch.nn.utils import prune as torch_prune

import prunekit
from prunekit.layers import tied_weights
from prunekit.masks import attach_mask, current_mask
from _zoo_checks import (
    as_matrix,
    check_finalize,
    check_report_and_masks,
    forward,
    keep_matrix,
    pruned_names,
    round_half_up,
)
from test_methods_zoo import MASK_METHODS, make_stage

METHOD_NAMES = MASK_METHODS

# (first layer executed, output head) of each zoo model: what protect_first / protect_last must leave dense.
PROTECTED = {
    "mlp": ("0", "6"),
    "resnet_concat": ("stem", "head"),
    "vit": ("vit.embeddings.patch_embeddings.projection", "classifier"),
    "bert": ("bert.encoder.layer.0.attention.self.query", "classifier"),
    "llama_gqa": ("model.layers.0.self_attn.q_proj", "lm_head"),
    "gpt2": ("transformer.h.0.attn.c_attn", "lm_head"),
}


@pytest.mark.parametrize("method", METHOD_NAMES)
@pytest.mark.parametrize(
    ("model_name", "pattern", "scope"),
    [("mlp", "unstructured", "layer"), ("llama_gqa", "unstructured", "global"), ("resnet_concat", "block:4x1", "layer"),
     ("gpt2", "block:1x4", "global"), ("bert", "unstructured", "layer")],
)
def test_second_stage_keeps_first_stage_zeros(zoo, method, model_name, pattern, scope):
    model, inputs = zoo(model_name)
    prunekit.prune(model, make_stage(method, pattern, scope, sparsity=0.3), inputs)
    first = {n: keep_matrix(m).clone() for n, m in model.named_modules() if current_mask(m) is not None}
    second = make_stage(method, pattern, scope, sparsity=0.6)
    report = prunekit.prune(model, second, inputs)
    masks = check_report_and_masks(model, report, second.config)  # the 0.6 is each layer's / the total's sparsity
    assert first.keys() <= masks.keys()
    for name, keep in first.items():
        assert not (masks[name] & ~keep).any(), f"{name}: the second stage revived a weight the first one pruned"


@pytest.mark.parametrize("method", METHOD_NAMES)
def test_global_min_density_floor(zoo, method):
    model, inputs = zoo("mlp")
    with torch.no_grad():
        model[2].weight.mul_(1e-3)  # magnitude would empty this layer without the floor
    st = make_stage(method, "unstructured", "global", sparsity=0.6, min_density=0.35,
                    protect_first=False, protect_last=False)
    report = prunekit.prune(model, st, inputs)
    check_report_and_masks(model, report, st.config)  # exact total, and no layer below min_density
    if method == "magnitude":
        keep = current_mask(model[2])
        assert int((~keep).sum()) == math.floor(0.65 * keep.numel())  # clamped exactly at the floor


@pytest.mark.parametrize("method", METHOD_NAMES)
def test_global_sparsity_the_floor_cannot_reach_is_an_error(zoo, method):
    model, inputs = zoo("mlp")
    st = make_stage(method, "unstructured", "global", sparsity=0.9, min_density=0.2)
    with pytest.raises(prunekit.PrunekitError, match="cannot prune .* units"):
        prunekit.prune(model, st, inputs)


@pytest.mark.parametrize("model_name", list(PROTECTED))
def test_defaults_protect_first_layer_and_output_head(zoo, model_name):
    model, inputs = zoo(model_name)
    report = prunekit.prune(model, make_stage(METHOD_NAMES[0], "unstructured", "layer"), inputs)
    rows = {row.name: row for row in report.layers}
    first, head = PROTECTED[model_name]
    assert rows[first].status == "skipped" and rows[first].reason.startswith("first layer")
    assert rows[head].status == "skipped" and rows[head].reason.startswith("last layer / output head")
    getter = getattr(model, "get_output_embeddings", None)
    if callable(getter) and getter() is not None:
        assert getter() is model.get_submodule(head)
    for name in (first, head):
        assert current_mask(model.get_submodule(name)) is None


@pytest.mark.parametrize("model_name", ["resnet_concat", "vit", "llama_gqa"])
def test_protection_can_be_turned_off(zoo, model_name):
    model, inputs = zoo(model_name)
    st = make_stage(METHOD_NAMES[0], "unstructured", "layer", protect_first=False, protect_last=False)
    report = prunekit.prune(model, st, inputs)
    assert set(PROTECTED[model_name]) <= set(pruned_names(report))


class _HeadNotLast(nn.Module):
    """A model whose declared output head runs before another layer (so "last executed" alone would miss it)."""

    def __init__(self) -> None:
        super().__init__()
        self.inp, self.mid = nn.Linear(8, 16), nn.Linear(16, 16)
        self.lm_head, self.post = nn.Linear(16, 8), nn.Linear(8, 8)

    def get_output_embeddings(self) -> nn.Module:
        return self.lm_head

    def forward(self, x):
        return self.post(self.lm_head(self.mid(self.inp(x))))


def test_declared_output_head_is_protected_even_when_not_last():
    torch.manual_seed(0)
    model = _HeadNotLast()
    report = prunekit.prune(model, make_stage(METHOD_NAMES[0], "unstructured", "layer"), torch.randn(2, 8))
    status = {row.name: row.status for row in report.layers}
    assert status == {"inp": "skipped", "mid": "pruned", "lm_head": "skipped", "post": "skipped"}


@pytest.mark.parametrize("method", METHOD_NAMES)
@pytest.mark.parametrize(
    ("model_name", "embedding"), [("gpt2", "transformer.wte"), ("llama_tied", "model.embed_tokens")]
)
def test_tied_lm_head_is_left_alone(zoo, method, model_name, embedding):
    dense, _ = zoo(model_name)
    model, inputs = zoo(model_name)
    assert model.lm_head.weight is model.get_submodule(embedding).weight
    st = make_stage(method, "unstructured", "global", protect_last=False)
    report = prunekit.prune(model, st, inputs)
    row = next(r for r in report.layers if r.name == "lm_head")
    assert row.status == "skipped" and "tied" in row.reason and embedding in row.reason
    masks = check_report_and_masks(model, report, st.config)
    assert not parametrize.is_parametrized(model.lm_head)
    check_finalize(model, dense, inputs, masks)
    assert model.lm_head.weight is model.get_submodule(embedding).weight
    assert torch.equal(model.lm_head.weight, dense.lm_head.weight)


def test_tied_head_alone_is_nothing_to_prune(zoo):
    model, inputs = zoo("gpt2")
    st = make_stage(METHOD_NAMES[0], "unstructured", "layer", targets=["lm_head"], protect_last=False)
    with pytest.raises(prunekit.PrunekitError, match="no layer left to prune"):
        prunekit.prune(model, st, inputs)
    strict = make_stage(METHOD_NAMES[0], "unstructured", "layer", targets=["lm_head"], protect_last=False, strict=True)
    with pytest.raises(prunekit.PrunekitError, match="strict: layer 'lm_head' .* weight tied with transformer.wte"):
        prunekit.prune(model, strict, inputs)


def _torch_prune(model: nn.Module, names: list[str], amount: float) -> dict[str, torch.Tensor]:
    zeros = {}
    for name in names:
        module = model.get_submodule(name)
        torch_prune.l1_unstructured(module, "weight", amount=amount)
        zeros[name] = as_matrix(module, module.weight_mask.bool()).clone()
    return zeros


@pytest.mark.parametrize("method", METHOD_NAMES)
@pytest.mark.parametrize("model_name", ["mlp", "gpt2"])
def test_torch_prune_masks_are_imported(zoo, method, model_name):
    dense, _ = zoo(model_name)
    model, inputs = zoo(model_name)
    first = PROTECTED[model_name][0]
    targeted = "2" if model_name == "mlp" else "transformer.h.1.mlp.c_fc"
    before = _torch_prune(model, [first, targeted], amount=0.3)
    st = make_stage(method, "unstructured", "layer")
    report = prunekit.prune(model, st, inputs)
    masks = check_report_and_masks(model, report, st.config)  # the layer's total is 0.5, the earlier 0.3 included
    assert not (masks[targeted] & ~before[targeted]).any(), "a weight torch.nn.utils.prune zeroed was revived"
    check_finalize(model, dense, inputs, masks)
    for name, keep in before.items():
        module = model.get_submodule(name)
        assert not as_matrix(module, module.weight.detach())[~keep].any(), f"{name}: torch.nn.utils.prune zeros lost"
        assert not hasattr(module, "weight_orig") and not hasattr(module, "weight_mask")
        assert not module._forward_pre_hooks


def test_masked_layers_are_not_reported_as_tied():
    # A parametrized weight is a fresh tensor on every read; freed temporaries reuse addresses, so data_ptr()
    # comparisons of `module.weight` see ties that do not exist and a second stage skips those layers as "tied".
    torch.manual_seed(0)
    model = nn.Sequential(*[nn.Linear(16, 16) for _ in range(6)])
    for layer in model:
        attach_mask(layer, torch.rand(16, 16) > 0.3)
    assert tied_weights(model) == {}


def test_finalize_of_a_copy_leaves_the_masked_original_working(zoo):
    # torch's parametrize gives a deep copy the same injected class; removing the copy's parametrization deletes the
    # `weight` property from that shared class, so the original (still masked) model loses its weight.
    model, inputs = zoo("mlp")
    prunekit.prune(model, make_stage(METHOD_NAMES[0], "unstructured", "layer"), inputs)
    before = forward(model, inputs)
    final = prunekit.finalize(copy.deepcopy(model))
    torch.testing.assert_close(forward(final, inputs), before)
    torch.testing.assert_close(forward(model, inputs), before)


def test_finalize_keeps_parameter_order(zoo):
    dense, _ = zoo("mlp")
    model, inputs = zoo("mlp")
    prunekit.prune(model, make_stage(METHOD_NAMES[0], "unstructured", "layer"), inputs)
    prunekit.finalize(model)
    assert list(model.state_dict()) == list(dense.state_dict())


@pytest.mark.parametrize("method", METHOD_NAMES)
def test_global_count_uses_round_half_up(method):
    # 33 weights at 0.5 -> 16.5: the documented rule (floor(x + 0.5), as n_to_prune and layer scope) prunes 17.
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 3), nn.Linear(3, 11), nn.Linear(11, 2))
    st = make_stage(method, "unstructured", "global")
    report = prunekit.prune(model, st, torch.randn(2, 4))
    pruned = int((~current_mask(model[1])).sum())
    assert pruned == round_half_up(0.5 * 33) == 17


@pytest.mark.parametrize("method", METHOD_NAMES)
def test_conv1d_second_stage_keeps_input_dimension(zoo, method):
    # A parametrized transformers Conv1D must still be read as (out, in): N:M groups run along the input dimension.
    model, inputs = zoo("gpt2")
    prunekit.prune(model, make_stage(method, "unstructured", "layer", sparsity=0.0), inputs)
    st = make_stage(method, "2:4", "layer")
    report = prunekit.prune(model, st, inputs)
    check_report_and_masks(model, report, st.config)


def test_counted_macs_see_through_parametrized_conv1d(zoo):
    model, inputs = zoo("gpt2")
    report = prunekit.prune(model, make_stage(METHOD_NAMES[0], "unstructured", "layer"), inputs)
    rows = {row.name: row for row in report.layers}
    assert rows["transformer.h.0.attn.c_proj"].status == "pruned"
    assert rows["transformer.h.0.attn.c_proj"].macs == 2 * 8 * 32 * 32  # batch 2 x 8 tokens, 32 -> 32
    assert report.metric("effective_macs").after < report.metric("effective_macs").before
    assert forward(model, inputs).isfinite().all()
