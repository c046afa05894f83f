"""`llm_depth`: block scores against a naive reference, which blocks go, and the pruned model still loads and
generates (KV cache with renumbered layer_idx, config num_hidden_layers / layer_types)."""

from __future__ import annotations

import math

import pytest
import torch
from _llm_models import tiny_gpt2

import prunekit
from prunekit.errors import PrunekitError
from prunekit.methods.llm_depth.method import window_scores
from prunekit.methods.llm_depth.scores import blocks_to_drop

pytest.importorskip("transformers")
from transformers import (  # noqa: E402
    AutoModelForCausalLM,
    LlamaConfig,
    LlamaForCausalLM,
    Qwen2Config,
    Qwen2ForCausalLM,
)


def llama4():
    torch.manual_seed(0)
    cfg = LlamaConfig(vocab_size=64, hidden_size=32, intermediate_size=64, num_hidden_layers=4,
                      num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=64)
    return LlamaForCausalLM(cfg).eval()


@pytest.fixture
def calib_ids():
    return torch.randint(0, 64, (4, 12), generator=torch.Generator().manual_seed(2))


def _naive_hidden(model, ids):
    """Inputs of every block and the last block's output, by hooks on one plain forward per row."""
    layers = model.model.layers
    states = [[] for _ in range(len(layers) + 1)]
    hooks = [layer.register_forward_pre_hook(
        lambda m, a, k, i=i: states[i].append((a[0] if a else k["hidden_states"])[0].clone()), with_kwargs=True)
        for i, layer in enumerate(layers)]
    hooks.append(layers[-1].register_forward_hook(
        lambda m, a, o: states[-1].append((o[0] if isinstance(o, tuple) else o)[0].clone())))
    with torch.no_grad():
        for row in ids:
            model(row[None], use_cache=False)
    for h in hooks:
        h.remove()
    return states  # states[l][sample]: (T, H)


def _naive_scores(model, ids, window, metric, last):
    states = _naive_hidden(model, ids)
    out = []
    for start in range(len(states) - window):
        total = count = 0.0
        for x, y in zip(states[start], states[start + window]):
            rows = range(x.shape[0] - 1, x.shape[0]) if last else range(x.shape[0])
            for t in rows:
                a, b = x[t].tolist(), y[t].tolist()
                cos = sum(p * q for p, q in zip(a, b)) / math.sqrt(sum(p * p for p in a) * sum(q * q for q in b))
                cos = max(-1.0, min(1.0, cos))
                total += math.acos(cos) / math.pi if metric == "angular" else 1.0 - cos
                count += 1
        out.append(total / count)
    return out


@pytest.mark.parametrize("window", [1, 2])
@pytest.mark.parametrize("metric", ["angular", "block_influence"])
@pytest.mark.parametrize("last", [False, True])
def test_scores_match_a_naive_loop(window, metric, last, calib_ids):
    model = llama4()
    samples = [{"input_ids": row[None]} for row in calib_ids]
    got = window_scores(model, samples, window, metric, "last" if last else "all")
    want = _naive_scores(model, calib_ids, window, metric, last)
    assert len(got) == 5 - window
    assert got == pytest.approx(want, rel=1e-5, abs=1e-7)


def test_blocks_to_drop():
    assert blocks_to_drop([0.3, 0.1, 0.5, 0.1], 2, contiguous=False) == [1, 3]
    assert blocks_to_drop([0.3, 0.2, 0.1], 2, contiguous=True) == [2, 3]  # window scores: start 2 covers 2 and 3
    assert blocks_to_drop([0.2, 0.2], 1, contiguous=False) == [0]


def _stage(**opts):
    return {"stages": [{"method": "llm_depth", "calibration": {"nsamples": 4}, **opts}]}


@pytest.mark.parametrize("opts", [{"drop": 2}, {"keep_ratio": 0.5, "contiguous": True, "metric": "block_influence"}])
def test_drop_reload_and_generate(opts, calib_ids, tmp_path):
    model = llama4()
    window = 2 if opts.get("contiguous") else 1
    scores = _naive_scores(model, calib_ids, window, opts.get("metric", "angular"), False)
    gone = blocks_to_drop(scores, 2, bool(opts.get("contiguous")))
    kept = [id(model.model.layers[i]) for i in range(4) if i not in gone]
    prunekit.prune(model, _stage(**opts), calib_ids)
    assert [id(b) for b in model.model.layers] == kept
    assert model.config.num_hidden_layers == 2
    assert [b.self_attn.layer_idx for b in model.model.layers] == [0, 1]
    model.save_pretrained(tmp_path)
    fresh = AutoModelForCausalLM.from_pretrained(tmp_path).eval()
    ids = calib_ids[:1]
    with torch.no_grad():
        full = model(ids, use_cache=False).logits
        assert torch.allclose(full, fresh(ids).logits, atol=1e-6)
        out = model(ids[:, :6], use_cache=True)  # prefill, then one token at a time through the KV cache
        steps = [out.logits]
        cache = out.past_key_values
        for t in range(6, ids.shape[1]):
            out = model(ids[:, t:t + 1], cache=cache, use_cache=True)
            cache = out.past_key_values
            steps.append(out.logits)
        assert torch.allclose(torch.cat(steps, 1), full, atol=1e-5)
        gen = fresh.generate(ids[:, :4], max_new_tokens=3, do_sample=False)
    assert gen.shape == (1, 7)


def test_layer_types_follow_the_kept_blocks(calib_ids):
    torch.manual_seed(0)
    cfg = Qwen2Config(vocab_size=64, hidden_size=32, intermediate_size=64, num_hidden_layers=4, num_attention_heads=4,
                      num_key_value_heads=2, max_position_embeddings=64, use_sliding_window=True, sliding_window=8,
                      max_window_layers=2)
    model = Qwen2ForCausalLM(cfg).eval()
    types = list(cfg.layer_types)
    report = prunekit.prune(model, _stage(drop=1), calib_ids)
    notes = " ".join(report.stages[0]["notes"])
    gone = int(notes.split("removed blocks [")[1].split("]")[0])
    assert model.config.layer_types == [t for i, t in enumerate(types) if i != gone]
    assert "from_pretrained rebuilds" in notes
    with torch.no_grad():
        assert torch.isfinite(model(calib_ids, use_cache=True).logits).all()


def test_gpt2_n_layer(calib_ids, tmp_path):
    model = tiny_gpt2()
    prunekit.prune(model, _stage(drop=1), calib_ids)
    assert model.config.n_layer == 1 and len(model.transformer.h) == 1
    model.save_pretrained(tmp_path)
    fresh = AutoModelForCausalLM.from_pretrained(tmp_path).eval()
    with torch.no_grad():
        assert torch.allclose(model(calib_ids).logits, fresh(calib_ids).logits, atol=1e-6)


def test_errors_by_text(calib_ids):
    with pytest.raises(PrunekitError, match="removes 4 of the model's 4 blocks; at least one must stay"):
        prunekit.prune(llama4(), _stage(drop=4), calib_ids)
    with pytest.raises(PrunekitError, match="keep_ratio 0.9 removes no block of 4"):
        prunekit.prune(llama4(), _stage(keep_ratio=0.9), calib_ids)
    with pytest.raises(PrunekitError, match="exactly one of drop"):
        prunekit.parse_recipe(_stage(drop=1, keep_ratio=0.5))
    with pytest.raises(PrunekitError, match="metric.*'angular' or 'block_influence'"):
        prunekit.parse_recipe(_stage(drop=1, metric="cosine"))
    with pytest.raises(PrunekitError, match="unknown key 'window'"):
        prunekit.parse_recipe(_stage(drop=1, window=2))


@pytest.mark.slow
def test_tiny_shakespeare_llama_depth(tmp_path):
    from dataclasses import asdict

    from prunekit.data import TINY_LLAMA_RECIPE, tiny_llama
    from prunekit.data.cache import verify_artefact

    if verify_artefact("tiny_llama", asdict(TINY_LLAMA_RECIPE)) is None:
        pytest.skip("the tiny Llama is not cached (python -m prunekit.data builds it)")
    model, tok = tiny_llama(progress=False)
    prunekit.prune(model, _stage(drop=2, calibration={"nsamples": 4, "seq_len": 64}))
    assert model.config.num_hidden_layers == 2
    ids = tok("To be, or not to be", return_tensors="pt")["input_ids"]
    model.save_pretrained(tmp_path)
    fresh = AutoModelForCausalLM.from_pretrained(tmp_path).eval()
    with torch.no_grad():
        assert torch.allclose(model(ids).logits, fresh(ids).logits, atol=1e-5)
        assert fresh.generate(ids, max_new_tokens=4, do_sample=False).shape[1] == ids.shape[1] + 4
