"""`prunekit prune` on a Hugging Face folder writes a folder that `from_pretrained` loads, zeros included."""

from __future__ import annotations

import json

import pytest
import torch

from prunekit.cli.main import main

transformers = pytest.importorskip("transformers")


def test_prune_hf_llama_folder_round_trip(tmp_path):
    cfg = transformers.LlamaConfig(
        vocab_size=64, hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
        num_key_value_heads=2, max_position_embeddings=64,
    )
    torch.manual_seed(0)
    src = tmp_path / "llama"
    transformers.LlamaForCausalLM(cfg).save_pretrained(src)
    recipe = tmp_path / "r.yaml"
    recipe.write_text("stages:\n  - method: magnitude\n    pattern: '2:4'\n")
    out = tmp_path / "out"
    assert main(["prune", str(recipe), "--model", str(src), "--out", str(out), "--no-measure"]) == 0
    assert (out / "config.json").is_file() and (out / "model.safetensors").is_file()
    model = transformers.AutoModelForCausalLM.from_pretrained(out)
    w = model.model.layers[0].mlp.up_proj.weight
    groups = (w != 0).reshape(w.shape[0], -1, 4).sum(-1)
    assert torch.all(groups <= 2)  # 2:4 holds after the round trip
    assert torch.count_nonzero(model.lm_head.weight) == model.lm_head.weight.numel()  # LM head protected
    report = json.loads((out / "report.json").read_text())
    reasons = {r["name"]: r["reason"] for r in report["layers"] if r["status"] == "skipped"}
    assert "lm_head" in reasons and "protected" in reasons["lm_head"]
    assert model(torch.randint(0, 64, (1, 8))).logits.isfinite().all()
