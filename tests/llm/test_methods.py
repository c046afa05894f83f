"""The registered `wanda` and `sparsegpt` methods run from recipes via `prunekit.prune` on a tiny random GQA Llama."""

from __future__ import annotations

import pytest
import torch
from _llm_models import tiny_gpt2, tiny_llama_gqa

import prunekit
from prunekit.api import stage
from prunekit.errors import PrunekitError
from prunekit.llm.calibration import calibration_samples, corpus_windows
from prunekit.llm.config import CalibrationConfig
from prunekit.masks import current_mask, finalize
from prunekit.patterns import NM



def _recipe(method, **opts):
    return {"stages": [{"method": method, "calibration": {"nsamples": 3}, **opts}]}


@pytest.mark.parametrize("method", ["wanda", "sparsegpt"])
@pytest.mark.parametrize("opts", [{"sparsity": 0.5}, {"pattern": "2:4"}])
def test_prune_tiny_llama_from_recipe(method, opts, token_ids):
    model = tiny_llama_gqa()
    head_before = model.lm_head.weight.detach().clone()
    extra = {"blocksize": 8} if method == "sparsegpt" else {}
    report = prunekit.prune(model, _recipe(method, **opts, **extra), token_ids)
    rows = {r.name: r for r in report.layers}
    assert rows["lm_head"].status == "skipped"
    pruned = [n for n, r in rows.items() if r.status == "pruned"]
    assert sorted(pruned) == sorted(f"model.layers.{i}.{p}.{k}" for i in range(2) for p, k in
                                    [("self_attn", "q_proj"), ("self_attn", "k_proj"), ("self_attn", "v_proj"),
                                     ("self_attn", "o_proj"), ("mlp", "gate_proj"), ("mlp", "up_proj"),
                                     ("mlp", "down_proj")])
    modules = dict(model.named_modules())
    for name in pruned:
        keep = current_mask(modules[name])
        assert keep is not None
        if "pattern" in opts:
            assert NM(2, 4).check(keep), name
        else:
            assert abs((1 - keep.float().mean().item()) - 0.5) < 1e-6, name
            if method == "wanda":  # per output row
                assert (keep.sum(dim=1) == keep.shape[1] // 2).all(), name
    finalize(model)
    assert torch.equal(model.lm_head.weight, head_before)
    for name in pruned:
        w = modules[name].weight
        assert abs((w == 0).float().mean().item() - 0.5) < 1e-6
    with torch.no_grad():
        assert torch.isfinite(model(token_ids).logits).all()


def test_sparsegpt_updates_kept_weights_wanda_does_not(token_ids):
    dense = tiny_llama_gqa()
    w0 = dense.model.layers[0].mlp.up_proj.weight.detach().clone()
    for method, changes in (("wanda", False), ("sparsegpt", True)):
        model = tiny_llama_gqa()
        prunekit.prune(model, _recipe(method, sparsity=0.5), token_ids)
        finalize(model)
        w = model.model.layers[0].mlp.up_proj.weight
        kept = w != 0
        assert (not torch.allclose(w[kept], w0[kept])) == changes


def test_gpt2_conv1d_layers_are_pruned(token_ids):
    model = tiny_gpt2()
    report = prunekit.prune(model, _recipe("sparsegpt", pattern="2:4", blocksize=8), token_ids)
    rows = {r.name: r for r in report.layers}
    assert rows["transformer.h.0.attn.c_attn"].status == "pruned"
    keep = current_mask(model.transformer.h[0].attn.c_attn)
    assert NM(2, 4).check(keep.t())  # Conv1D stores (in, out): groups run along the input dimension


def test_lm_head_pruned_only_when_targeted_and_outside_blocks_is_skipped(token_ids):
    model = tiny_llama_gqa()
    report = prunekit.prune(model, _recipe("wanda", sparsity=0.5, targets=["lm_head", "re:.*q_proj"]), token_ids)
    rows = {r.name: r for r in report.layers}
    assert rows["model.layers.0.self_attn.q_proj"].status == "pruned"
    assert rows["lm_head"].status == "skipped" and "outside the transformer blocks" in rows["lm_head"].reason


def test_config_errors():
    with pytest.raises(PrunekitError, match="choose 'unstructured' or 'N:M'"):
        stage("wanda", pattern="block:4x1", sparsity=0.5)
    with pytest.raises(PrunekitError, match="blocksize 6 must be a multiple of M=4"):
        stage("sparsegpt", pattern="2:4", blocksize=6)
    with pytest.raises(PrunekitError, match="sparsity is required"):
        stage("wanda")


def test_calibration_sources(token_ids):
    model = tiny_llama_gqa()
    cfg = CalibrationConfig(nsamples=2, seq_len=8, seed=1)
    rows = calibration_samples(model, cfg, token_ids)
    assert len(rows) == 2 and torch.equal(rows[1]["input_ids"], token_ids[1:2])
    windows = corpus_windows(torch.arange(100), cfg)
    assert [w["input_ids"].shape for w in windows] == [(1, 8)] * 2
    assert windows[0]["input_ids"].tolist() == corpus_windows(torch.arange(100), cfg)[0]["input_ids"].tolist()
    with pytest.raises(PrunekitError, match="no calibration data"):
        calibration_samples(model, cfg, None, None)
