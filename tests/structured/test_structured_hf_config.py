"""Hugging Face config round trip: structured pruning of tiny random BERT / Llama (GQA) / ViT models edits
`model.config` (uniform-per-layer mode), and `save_pretrained` + `AutoModel*.from_pretrained` rebuilds the pruned
model with the same outputs; per-layer sizes are never claimed expressible."""

from __future__ import annotations

import copy

import pytest
import torch

from prunekit.api import stage
from prunekit.errors import PrunekitError
from prunekit.methods.base import PruneContext
from prunekit.methods.structured import PruningPlan, apply_plan, get_plan
from prunekit.methods.structured.hf_config import find_config_edit, shapes_after, state_shapes
from prunekit.methods.structured.method import StructuredMethod
from prunekit.methods.structured.select import candidate, select, tie_counts

transformers = pytest.importorskip("transformers")
from zoo import ZOO, output_tensor  # noqa: E402  (needs transformers)


def _bert_model():
    torch.manual_seed(0)
    cfg = transformers.BertConfig(vocab_size=128, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                                  intermediate_size=64, max_position_embeddings=32)
    ids = torch.randint(0, 128, (2, 8))
    return transformers.BertModel(cfg).eval(), {"input_ids": ids, "attention_mask": torch.ones_like(ids)}


def _vit_model():
    torch.manual_seed(0)
    cfg = transformers.ViTConfig(image_size=32, patch_size=8, num_channels=3, hidden_size=32, num_hidden_layers=2,
                                 num_attention_heads=4, intermediate_size=64)
    return transformers.ViTModel(cfg).eval(), {"pixel_values": torch.randn(1, 3, 32, 32)}


def _qwen2_model():
    """Qwen2-like: GQA (4 query heads, 2 key-value heads) with biases on q / k / v, explicit head_dim."""
    torch.manual_seed(0)
    cfg = transformers.Qwen2Config(vocab_size=128, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                                   num_attention_heads=4, num_key_value_heads=2, head_dim=16,
                                   max_position_embeddings=64, tie_word_embeddings=False, use_cache=False)
    return transformers.Qwen2ForCausalLM(cfg).eval(), {"input_ids": torch.randint(0, 128, (2, 8))}


BUILDERS = {  # name -> (builder, Auto class that loads it back)
    "bert_model": (_bert_model, "AutoModel"),
    "bert_classifier": (ZOO["bert"], "AutoModelForSequenceClassification"),
    "llama_gqa": (ZOO["llama_gqa"], "AutoModelForCausalLM"),
    "qwen2_gqa": (_qwen2_model, "AutoModelForCausalLM"),
    "vit_model": (_vit_model, "AutoModel"),
}


def _prune(model, inputs, **cfg):
    return StructuredMethod().apply(model, stage("structured", **cfg).config, PruneContext(example_inputs=inputs))


def _ffn_widths(model) -> set[int]:
    """The out-features of every first FFN layer (the intermediate width of each block)."""
    names = ("intermediate.dense", "mlp.up_proj", "mlp.fc1")
    return {m.out_features for n, m in model.named_modules() if n.endswith(names)}


ROUND_TRIPS = [(name, {"macs_ratio": 0.6}) for name in BUILDERS] + [
    ("bert_classifier", {"params_ratio": 0.7}), ("llama_gqa", {"params_ratio": 0.7}),
    ("qwen2_gqa", {"params_ratio": 0.7})]


@pytest.mark.parametrize(("name", "target"), ROUND_TRIPS, ids=[f"{n}-{next(iter(t))}" for n, t in ROUND_TRIPS])
def test_save_pretrained_round_trip(name, target, tmp_path):
    build, auto = BUILDERS[name]
    model, x = build()
    base_config = copy.deepcopy(model.config)
    result = _prune(model, x, target=target)
    notes = "\n".join(result.notes)
    assert "verify: ok" in notes and "mode: uniform layers" in notes
    assert "from_pretrained rebuilds" in notes, notes
    assert model.config.intermediate_size < base_config.intermediate_size
    assert _ffn_widths(model) == {model.config.intermediate_size}  # every block the same width
    if name in ("llama_gqa", "qwen2_gqa"):  # the residual stream is expressible for Llama (explicit head_dim), so it shrinks too
        assert model.config.hidden_size < base_config.hidden_size
        if name == "llama_gqa":  # (Qwen2 here keeps head_dim explicit, so any hidden size is expressible)
            assert model.config.hidden_size % model.config.num_attention_heads == 0
    else:  # BERT / ViT derive the attention width from hidden_size: the residual stream is kept whole
        assert model.config.hidden_size == base_config.hidden_size
    if name == "bert_classifier":  # (in the bare models the residual stream is the output, frozen anyway)
        assert "kept whole because the config cannot express" in notes
    model.save_pretrained(tmp_path / "pruned")
    loaded = getattr(transformers, auto).from_pretrained(tmp_path / "pruned").eval()
    assert loaded.config.intermediate_size == model.config.intermediate_size
    plan = PruningPlan.from_json(get_plan(model).to_json())
    assert plan.steps[0].config["intermediate_size"] == model.config.intermediate_size
    replayed = apply_plan(build()[0], plan)  # the plan carries the config edit too
    replayed.save_pretrained(tmp_path / "replayed")
    reloaded = getattr(transformers, auto).from_pretrained(tmp_path / "replayed").eval()
    with torch.no_grad():
        want = output_tensor(model(**x))
        got, again = output_tensor(loaded(**x)), output_tensor(reloaded(**x))
    assert got.shape == want.shape
    torch.testing.assert_close(got, want, atol=1e-5, rtol=0)
    torch.testing.assert_close(again, want, atol=1e-5, rtol=0)


def test_per_layer_sizes_are_not_claimed_expressible():
    model, _ = ZOO["llama_gqa"]()
    one_block = {"model.layers.0.mlp.up_proj.weight": {0: [0, 1]}, "model.layers.0.mlp.gate_proj.weight": {0: [0, 1]},
                 "model.layers.0.mlp.down_proj.weight": {1: [0, 1]}}
    assert find_config_edit(model, shapes_after(model, one_block)) is None
    both = {k.replace("layers.0", f"layers.{i}"): v for i in range(2) for k, v in one_block.items()}
    assert find_config_edit(model, shapes_after(model, both)) == {"intermediate_size": 126}
    assert find_config_edit(model, state_shapes(model)) == {}


def test_per_layer_mode_leaves_the_config_alone():
    model, x = ZOO["llama_gqa"]()
    base = copy.deepcopy(model.config)
    result = _prune(model, x, target={"width_ratio": 0.5}, scope="global", uniform_layers=False, hf_config=False)
    assert "mode: per-layer counts" in result.notes
    assert not any(n.startswith("hf_config") for n in result.notes)
    assert model.config.intermediate_size == base.intermediate_size and model.config.hidden_size == base.hidden_size


def test_uniform_layers_on_a_plain_model():
    model, x = ZOO["llama_gqa"]()
    _prune(model, x, target={"width_ratio": 0.6}, scope="global", hf_config=False)
    assert len(_ffn_widths(model)) == 1  # global scope, but one count for the repeated FFN groups


def test_hf_config_errors():
    with pytest.raises(PrunekitError, match="hf_config: true needs uniform_layers"):
        stage("structured", target={"width_ratio": 0.5}, hf_config=True, uniform_layers=False)
    model, x = ZOO["mlp"]()
    with pytest.raises(PrunekitError, match="hf_config: true needs a transformers PreTrainedModel, got"):
        _prune(model, x, target={"width_ratio": 0.5}, hf_config=True)
    llama, ids = ZOO["llama_gqa"]()
    _prune(llama, ids, target={"width_ratio": 0.5})
    with pytest.raises(PrunekitError, match="edits a Hugging Face config .*but Sequential has no `config`"):
        apply_plan(model, get_plan(llama))


def test_tie_counts_and_tied_selection():
    cands = [candidate(torch.arange(8.0), torch.zeros(8, dtype=torch.bool)) for _ in range(3)]
    assert tie_counts([3, 5, 8], cands, [0, 0, 1], round_to=1, min_channels=1) == [4, 4, 8]
    assert tie_counts([3, 5, 8], cands, None, round_to=1, min_channels=1) == [3, 5, 8]
    assert tie_counts([3, 4, 8], cands, [0, 0, 1], round_to=4, min_channels=1) == [4, 4, 8]
    floors = [candidate(torch.arange(8.0), torch.arange(8) < 6), cands[1]]  # 6 frozen units: floor 6
    assert tie_counts([2, 2], floors, [0, 0], round_to=1, min_channels=1) == [6, 6]
    stepped = candidate(torch.arange(8.0), torch.zeros(8, dtype=torch.bool), multiple=4)
    masks, _ = select([stepped], lambda m: float(m[0].sum()) / 8, 0.45, scope="layer")
    assert int(masks[0].sum()) == 4  # a group's own step (e.g. heads of a HF config) constrains its count
    # global scope: per-group thresholds differ, the class keeps one count
    scores = [torch.tensor([9.0, 8, 7, 6]), torch.tensor([1.0, 0.5, 0.2, 0.1])]
    tied = [candidate(s, torch.zeros(4, dtype=torch.bool)) for s in scores]
    masks, _ = select(tied, lambda m: sum(float(x.sum()) for x in m) / 8, 0.5, scope="global", classes=[0, 0])
    assert [int(m.sum()) for m in masks] == [2, 2]
    assert masks[0].tolist() == [True, True, False, False]  # each ranked within its own block


def test_llama_gqa_heads_round_trip(tmp_path):
    model, x = ZOO["llama_gqa"]()
    result = _prune(model, x, target={"width_ratio": 0.5})
    cfg = model.config
    assert (cfg.num_attention_heads, cfg.num_key_value_heads, cfg.head_dim) == (2, 1, 16), result.notes
    attn = model.model.layers[1].self_attn
    assert attn.q_proj.out_features == 32 and attn.k_proj.out_features == 16 and attn.o_proj.in_features == 32
    model.save_pretrained(tmp_path)
    loaded = transformers.AutoModelForCausalLM.from_pretrained(tmp_path).eval()
    with torch.no_grad():
        torch.testing.assert_close(loaded(**x).logits, model(**x).logits, atol=1e-5, rtol=0)
