"""Transformer MLPs (FFN width) on tiny random Hugging Face models: attention stays whole (heads are the next
increment), the feed-forward hidden width and the residual stream shrink, the equivalence check passes, and the
plan replays. The Hugging Face config is not edited yet, so these models are pruned in memory only."""

from __future__ import annotations

import copy

import pytest
import torch

from prunekit.api import stage
from prunekit.eval import count_model
from prunekit.methods.base import PruneContext
from prunekit.methods.structured import PruningPlan, apply_plan, get_plan
from prunekit.methods.structured.method import StructuredMethod

pytest.importorskip("transformers")
from zoo import ZOO  # noqa: E402  (needs transformers)

CASES = {  # zoo model -> (an attention projection that must keep its shape, an FFN layer that must shrink)
    "bert": ("bert.encoder.layer.0.attention.self.query", "bert.encoder.layer.0.intermediate.dense"),
    "llama_gqa": ("model.layers.0.self_attn.k_proj", "model.layers.0.mlp.gate_proj"),
    "gpt2": ("transformer.h.0.attn.c_attn", "transformer.h.0.mlp.c_fc"),
    "vit": ("vit.layers.0.attention.q_proj", "vit.layers.0.mlp.fc1"),
}


def _out_size(module) -> int:
    return module.weight.shape[1] if type(module).__name__ == "Conv1D" else module.weight.shape[0]


def _main(out):
    return out.logits if hasattr(out, "logits") else out


@pytest.mark.parametrize("name", list(CASES))
def test_ffn_width_is_pruned_and_attention_kept(name):
    base, x = ZOO[name]()
    attn, ffn = CASES[name]
    model = copy.deepcopy(base)
    result = StructuredMethod().apply(model, stage("structured", target={"macs_ratio": 0.5}).config,
                                      PruneContext(example_inputs=x))
    assert any(n.startswith("verify: ok") for n in result.notes), result.notes
    get = lambda m, n: m.get_submodule(n)  # noqa: E731
    assert _out_size(get(model, attn)) == _out_size(get(base, attn))  # heads untouched
    assert _out_size(get(model, ffn)) < _out_size(get(base, ffn))
    before, after = count_model(base, x), count_model(model, x)
    assert after.macs < before.macs and after.params < before.params
    fresh = apply_plan(copy.deepcopy(base), PruningPlan.from_json(get_plan(model).to_json()))
    with torch.no_grad():
        kwargs = x if isinstance(x, dict) else None
        got = _main(fresh(**kwargs) if kwargs else fresh(x))
        want = _main(model(**kwargs) if kwargs else model(x))
    assert torch.equal(got, want)


def test_ignoring_the_embedding_keeps_the_residual_stream():
    base, x = ZOO["llama_gqa"]()
    model = copy.deepcopy(base)
    StructuredMethod().apply(model, stage("structured", target={"width_ratio": 0.5},
                                          ignore=["model.embed_tokens"]).config, PruneContext(example_inputs=x))
    assert model.model.embed_tokens.weight.shape == base.model.embed_tokens.weight.shape
    assert model.model.norm.weight.shape == base.model.norm.weight.shape
    up = model.model.layers[0].mlp.up_proj
    assert up.out_features == base.model.layers[0].mlp.up_proj.out_features // 2 and up.in_features == 64
