"""Transformers on tiny random Hugging Face models: FFN width, residual stream and whole attention heads.

Per-layer mode (`uniform_layers: false, hf_config: false`): BERT / ViT / Llama (GQA) lose whole heads (q/k/v
out-features and o_proj in-features by head; with GQA a key-value head together with its query heads), the
equivalence check passes and the plan replays. GPT-2 splits its fused c_attn with a constant size, which the check
catches: repair keeps those heads whole. Default mode on Hugging Face models: sizes the config cannot express stay.
"""

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

CASES = {  # zoo model -> (q, k, v projections, FFN layer, head_dim; None: heads kept whole by repair)
    "bert": ("bert.encoder.layer.0.attention.self.query", "bert.encoder.layer.0.attention.self.key",
             "bert.encoder.layer.0.attention.self.value", "bert.encoder.layer.0.intermediate.dense", 8),
    "llama_gqa": ("model.layers.0.self_attn.q_proj", "model.layers.0.self_attn.k_proj",
                  "model.layers.0.self_attn.v_proj", "model.layers.0.mlp.gate_proj", 16),
    "gpt2": ("transformer.h.0.attn.c_attn", None, None, "transformer.h.0.mlp.c_fc", None),
    "vit": ("vit.layers.0.attention.q_proj", "vit.layers.0.attention.k_proj", "vit.layers.0.attention.v_proj",
            "vit.layers.0.mlp.fc1", 8),
}
PER_LAYER = {"uniform_layers": False, "hf_config": False}


def _out_size(module) -> int:
    return module.weight.shape[1] if type(module).__name__ == "Conv1D" else module.weight.shape[0]


def _run(model, inputs):
    with torch.no_grad():
        out = model(**inputs)
    return out.logits if hasattr(out, "logits") else out


@pytest.mark.parametrize("name", list(CASES))
def test_heads_and_ffn_per_layer(name):
    base, x = ZOO[name]()
    q, k, v, ffn, head_dim = CASES[name]
    model = copy.deepcopy(base)
    result = StructuredMethod().apply(model, stage("structured", target={"macs_ratio": 0.5}, **PER_LAYER).config,
                                      PruneContext(example_inputs=x))
    assert any(n.startswith("verify: ok") for n in result.notes), result.notes
    get = model.get_submodule
    assert _out_size(get(ffn)) < _out_size(base.get_submodule(ffn))
    if head_dim is None:  # constant split size in the model's code: the check fails, repair keeps the heads
        assert _out_size(get(q)) == _out_size(base.get_submodule(q))
        assert any(n.startswith("repair:") for n in result.notes)
    else:
        q_heads, kv_heads = _out_size(get(q)) / head_dim, _out_size(get(k)) / head_dim
        assert q_heads == int(q_heads) and kv_heads == int(kv_heads)  # whole heads, head_dim never cut
        assert _out_size(get(q)) < _out_size(base.get_submodule(q)) and _out_size(get(v)) == _out_size(get(k))
        base_ratio = _out_size(base.get_submodule(q)) // _out_size(base.get_submodule(k))
        assert q_heads == base_ratio * kv_heads  # GQA: a key-value group leaves with all its query heads
    before, after = count_model(base, x), count_model(model, x)
    assert after.macs < before.macs and after.params < before.params
    fresh = apply_plan(copy.deepcopy(base), PruningPlan.from_json(get_plan(model).to_json()))
    assert torch.equal(_run(fresh, x), _run(model, x))


def test_hf_mode_keeps_heads_the_config_cannot_express():
    base, x = ZOO["bert"]()
    model = copy.deepcopy(base)
    result = StructuredMethod().apply(model, stage("structured", target={"macs_ratio": 0.5}).config,
                                      PruneContext(example_inputs=x))
    query = "bert.encoder.layer.0.attention.self.query"
    assert _out_size(model.get_submodule(query)) == _out_size(base.get_submodule(query))
    assert any("attention.self.query" in n and "config cannot express" in n for n in result.notes), result.notes


def test_ignoring_the_embedding_keeps_the_residual_stream():
    base, x = ZOO["llama_gqa"]()
    model = copy.deepcopy(base)
    StructuredMethod().apply(model, stage("structured", target={"width_ratio": 0.5},
                                          ignore=["model.embed_tokens"]).config, PruneContext(example_inputs=x))
    assert model.model.embed_tokens.weight.shape == base.model.embed_tokens.weight.shape
    assert model.model.norm.weight.shape == base.model.norm.weight.shape
    up = model.model.layers[0].mlp.up_proj
    assert up.out_features == base.model.layers[0].mlp.up_proj.out_features // 2 and up.in_features == 64
