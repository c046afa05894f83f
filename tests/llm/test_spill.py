"""The runner's disk spill: past `memory_budget` the cached block inputs go to a temporary folder, read back one sample
at a time; results are bit-identical to the in-RAM walk and the folder is removed, also on error."""

from __future__ import annotations

import pytest
import torch
from _llm_models import MODELS, tiny_llama_gqa
from torch import nn

import prunekit
from prunekit.api import stage
from prunekit.errors import PrunekitError
from prunekit.llm import run_blocks
from prunekit.llm.spill import ActivationCache, BlockCall, call_bytes, parse_bytes
from prunekit.masks import current_mask
from prunekit.methods.wanda.config import WandaConfig


def _samples(token_ids):
    return [{"input_ids": row[None]} for row in token_ids]


def _one_sample_bytes(model, token_ids):
    from prunekit.llm import capture_block_inputs, find_blocks

    return call_bytes(capture_block_inputs(model, find_blocks(model)[1][0], _samples(token_ids[:1]))[0])


@pytest.mark.parametrize("arch", sorted(MODELS))
@pytest.mark.parametrize("budget", ["none_fit", "one_fits"])
def test_spilled_walk_is_bit_identical(arch, budget, token_ids, tmp_path):
    model = MODELS[arch]()
    ref = run_blocks(model, _samples(token_ids))
    limit = 0 if budget == "none_fit" else _one_sample_bytes(model, token_ids)
    seen = []

    def visit(i, _name, _block, forward):
        forward()
        seen.append(sorted(p.name for p in tmp_path.rglob("*.pt")))

    got = run_blocks(model, _samples(token_ids), visit, memory_budget=limit, spill_dir=tmp_path)
    spilled = 3 if budget == "none_fit" else 2  # samples that did not fit
    assert all(len(files) == 2 * spilled for files in seen), seen  # hidden + other tensors per spilled sample
    assert len(got) == len(ref)
    for a, b in zip(got, ref):
        assert torch.equal(a, b)
    assert list(tmp_path.iterdir()) == []  # the spill folder is gone


def test_spilled_walk_feeds_pruned_outputs_forward(token_ids, tmp_path):
    def zero_first_mlp(i, _name, block, fwd):
        fwd()
        if i == 0:
            for m in block.mlp.modules():
                if isinstance(m, nn.Linear):
                    m.weight.data.zero_()

    ref = run_blocks(tiny_llama_gqa(), _samples(token_ids), zero_first_mlp)
    got = run_blocks(tiny_llama_gqa(), _samples(token_ids), zero_first_mlp, memory_budget=0, spill_dir=tmp_path)
    for a, b in zip(got, ref):
        assert torch.equal(a, b)


def test_spill_folder_removed_on_error(token_ids, tmp_path):
    def fail(i, _name, _block, _fwd):
        assert len(list(tmp_path.rglob("*.pt"))) == 6
        raise RuntimeError("boom")

    with pytest.raises(RuntimeError, match="boom"):
        run_blocks(tiny_llama_gqa(), _samples(token_ids), fail, memory_budget=0, spill_dir=tmp_path)
    assert list(tmp_path.iterdir()) == []


def test_return_outputs_false_returns_nothing(token_ids):
    assert run_blocks(tiny_llama_gqa(), _samples(token_ids), memory_budget=0, return_outputs=False) == []


def test_cache_keeps_non_tensor_arguments_and_reads_plain_tensors(tmp_path):
    calls = [BlockCall((torch.randn(2, 3),), {"mask": None, "flag": True, "pos": (torch.arange(3), torch.ones(3))})
             for _ in range(3)]
    with ActivationCache(budget=call_bytes(calls[0]), spill_dir=tmp_path) as cache:
        for c in calls:
            cache.append(c)
        assert cache.spilled == 2 and cache.ram_bytes == call_bytes(calls[0])
        for i, c in enumerate(calls):
            got = cache[i]
            assert got.kwargs["mask"] is None and got.kwargs["flag"] is True
            assert torch.equal(got.hidden(), c.hidden()) and torch.equal(got.kwargs["pos"][1], c.kwargs["pos"][1])
        for path in tmp_path.rglob("*.pt"):
            torch.load(path, weights_only=True)  # plain tensors only
        new = torch.randn(2, 3)
        cache.set_hidden(2, new)
        assert torch.equal(cache[2].hidden(), new) and torch.equal(cache[2].kwargs["pos"][0], torch.arange(3))
        with pytest.raises(IndexError, match="no sample 3"):
            cache[3]
    assert list(tmp_path.iterdir()) == []


def _masks(model):
    return {n: current_mask(m).clone() for n, m in model.named_modules() if current_mask(m) is not None}


@pytest.mark.parametrize("method", ["wanda", "sparsegpt"])
@pytest.mark.parametrize("opts", [{"sparsity": 0.5}, {"pattern": "2:4"}])
def test_methods_give_identical_results_with_spill(method, opts, token_ids, tmp_path):
    extra = {"blocksize": 8} if method == "sparsegpt" else {}
    results = []
    for spill in ({}, {"memory_budget": "1KB", "spill_dir": str(tmp_path)}):
        model = tiny_llama_gqa()
        stage = {"method": method, "calibration": {"nsamples": 3}, **opts, **extra, **spill}
        prunekit.prune(model, {"stages": [stage]}, token_ids)
        results.append((_masks(model), {k: v.detach().clone() for k, v in model.state_dict().items()}))
    (masks_a, w_a), (masks_b, w_b) = results
    assert len(masks_a) == 14 and masks_a.keys() == masks_b.keys()
    assert all(torch.equal(masks_a[k], masks_b[k]) for k in masks_a)
    assert all(torch.equal(w_a[k], w_b[k]) for k in w_a)
    assert list(tmp_path.iterdir()) == []


def test_parse_bytes():
    assert parse_bytes(None) is None
    assert parse_bytes(1234) == 1234
    assert parse_bytes("2GiB") == 2 * 2**30
    assert parse_bytes("512MB") == 512 * 10**6
    assert parse_bytes("1.5 kib") == 1536
    assert parse_bytes("0") == 0
    assert WandaConfig(sparsity=0.5, memory_budget="1MiB").memory_budget == 2**20


@pytest.mark.parametrize("bad", ["lots", "2 parsecs", "-1GB", -5, True])
def test_bad_memory_budget_is_an_error(bad):
    with pytest.raises(PrunekitError, match=r"memory budget .* (is not a size|is negative)"):
        stage("wanda", sparsity=0.5, memory_budget=bad)
