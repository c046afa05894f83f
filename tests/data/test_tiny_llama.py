"""Tiny Llama: the char tokenizer, a tiny recipe trained in seconds, the HF folder round trip, the manifest."""

from __future__ import annotations

import json
import socket

import pytest
import torch

from prunekit.data import LlamaRecipe, load_dataset, perplexity, tiny_llama, tiny_llama_path
from prunekit.data.models import llama as tl_mod
from prunekit.data.tokenizer import build_char_tokenizer, char_vocab, encode_chars
from prunekit.errors import PrunekitError

TINY = LlamaRecipe(hidden_size=32, num_layers=2, num_heads=4, num_kv_heads=2, intermediate_size=64, seq_len=32,
                   batch_size=4, steps=6, warmup_steps=2, eval_seq_len=32, eval_max_tokens=3000)


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    cache = tmp_path_factory.mktemp("llama-cache")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("PRUNEKIT_CACHE_DIR", str(cache))
        model, tok = tiny_llama(progress=False, recipe=TINY)
        path = tiny_llama_path(progress=False, recipe=TINY)
    return cache, path, model, tok


def test_char_tokenizer_round_trip(tmp_path):
    from transformers import AutoTokenizer

    tok = build_char_tokenizer()
    assert len(tok) == len(char_vocab()) == 100
    text = "KING LEAR:\nHow now, my lord?  'Tis [Aside] ~ 42!\n"
    ids = tok(text, add_special_tokens=False)["input_ids"]
    assert len(ids) == len(text) and tok.decode(ids) == text
    assert tok("\u00e9", add_special_tokens=False)["input_ids"] == [tok.unk_token_id]
    mixed = text + "caf\u00e9 \u2014 \U0001f600\t"
    assert encode_chars(mixed).tolist() == tok(mixed, add_special_tokens=False)["input_ids"]
    tok.save_pretrained(tmp_path)
    again = AutoTokenizer.from_pretrained(tmp_path, local_files_only=True)
    assert again(text, add_special_tokens=False)["input_ids"] == ids and again.decode(ids) == text


def test_folder_has_hf_files_and_manifest(trained):
    cache, path, model, _ = trained
    assert path.parent == cache and path.name.startswith("tiny_llama-")
    names = {p.name for p in path.iterdir()}
    assert {"config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json", "manifest.json"} <= names
    manifest = json.loads((path / "manifest.json").read_text())
    m = manifest["metrics"]
    for key in ("val_perplexity", "test_perplexity", "unigram_test_perplexity", "bigram_test_perplexity"):
        assert m[key] > 1.0
    # baselines on real text: a bigram beats a unigram, which beats uniform over 100 tokens
    assert m["bigram_test_perplexity"] < m["unigram_test_perplexity"] < 100
    assert manifest["params"] == sum(p.numel() for p in model.parameters())
    assert manifest["recipe"]["num_kv_heads"] == 2 and manifest["train_seconds"] >= 0
    assert set(manifest["files"]) >= {"model.safetensors", "config.json", "tokenizer.json"}


def test_from_pretrained_offline_matches(trained, monkeypatch):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    _, path, model, tok = trained
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(socket.socket, "connect", lambda *a, **k: (_ for _ in ()).throw(OSError("no network")))
    loaded = AutoModelForCausalLM.from_pretrained(path).eval()
    tok2 = AutoTokenizer.from_pretrained(path)
    assert type(loaded).__name__ == "LlamaForCausalLM"
    assert loaded.config.num_attention_heads == 4 and loaded.config.num_key_value_heads == 2
    x = torch.tensor([tok2("To be, or not to be", add_special_tokens=False)["input_ids"]])
    with torch.no_grad():
        assert torch.allclose(loaded(input_ids=x).logits, model(input_ids=x).logits)
    assert tok2.decode(x[0]) == "To be, or not to be" and tok.vocab == tok2.vocab


def test_manifest_perplexity_is_reproducible(trained):
    _, path, model, tok = trained
    manifest = json.loads((path / "manifest.json").read_text())
    ids = tok(load_dataset("shakespeare").test.text, add_special_tokens=False, verbose=False)["input_ids"][:3000]
    ppl = perplexity(model, torch.tensor(ids), seq_len=32, stride=32)
    assert ppl == pytest.approx(manifest["metrics"]["test_perplexity"], rel=1e-5)


def test_second_call_loads_without_training(trained, monkeypatch):
    cache, path, *_ = trained
    monkeypatch.setenv("PRUNEKIT_CACHE_DIR", str(cache))
    monkeypatch.setattr(tl_mod, "_train_into", lambda *a, **k: pytest.fail("retrained a valid artefact"))
    assert tiny_llama_path(progress=False, recipe=TINY) == path


def test_untrained_default_architecture():
    model, tok = tiny_llama(pretrained=False)
    cfg = model.config
    assert (cfg.hidden_size, cfg.num_hidden_layers, cfg.num_attention_heads, cfg.num_key_value_heads) == (256, 4, 8, 2)
    assert cfg.vocab_size == len(tok) == 100
    assert 2_000_000 < sum(p.numel() for p in model.parameters()) < 4_000_000


def test_lr_schedule_warms_up_then_decays():
    r = LlamaRecipe(steps=100, warmup_steps=10, lr=1.0, min_lr_ratio=0.1)
    lrs = [tl_mod._lr_at(s, r) for s in range(100)]
    assert lrs[0] == pytest.approx(0.1) and lrs[9] == pytest.approx(1.0)
    assert all(a >= b for a, b in zip(lrs[9:], lrs[10:])) and lrs[-1] >= 0.1


def test_bad_recipe_type():
    with pytest.raises(PrunekitError, match=r"recipe must be a LlamaRecipe"):
        tiny_llama_path(recipe=TINY.__dict__)
