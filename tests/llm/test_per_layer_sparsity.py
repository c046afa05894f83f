"""Per-layer sparsity of the one-shot methods: a list with one value per block, and a REGEX -> sparsity mapping."""

from __future__ import annotations

import pytest
from _llm_models import tiny_llama_gqa

import prunekit
from prunekit.api import stage
from prunekit.errors import PrunekitError
from prunekit.masks import current_mask


def _prune(method, sparsity, token_ids, **opts):
    model = tiny_llama_gqa()
    extra = {"blocksize": 8} if method == "sparsegpt" else {}
    report = prunekit.prune(model, {"stages": [{"method": method, "sparsity": sparsity, "calibration": {"nsamples": 3},
                                                **extra, **opts}]}, token_ids)
    modules = dict(model.named_modules())
    measured = {r.name: 1 - current_mask(modules[r.name]).float().mean().item()
                for r in report.layers if r.status == "pruned"}
    return report, measured


@pytest.mark.parametrize("method", ["wanda", "sparsegpt"])
def test_list_gives_each_block_its_sparsity(method, token_ids):
    _, measured = _prune(method, [0.25, 0.75], token_ids)
    assert len(measured) == 14
    for name, got in measured.items():
        assert got == pytest.approx(0.25 if ".layers.0." in name else 0.75, abs=1e-9), name


def test_mapping_first_full_match_wins(token_ids):
    report, measured = _prune("wanda", {r".*\.mlp\..*": 0.75, r".*q_proj": 0.5, ".*": 0.25}, token_ids)
    for name, got in measured.items():
        want = 0.75 if ".mlp." in name else 0.5 if name.endswith("q_proj") else 0.25
        assert got == pytest.approx(want, abs=1e-9), name
    assert report.target_sparsity is None  # no single target for a per-layer mapping


def test_per_layer_errors(token_ids):
    with pytest.raises(PrunekitError, match="sparsity list has 3 values but the model has 2 transformer blocks"):
        _prune("wanda", [0.5, 0.5, 0.5], token_ids)
    with pytest.raises(PrunekitError, match="no regex matching layer 'model.layers.0.self_attn.q_proj'"):
        _prune("wanda", {".*mlp.*": 0.5}, token_ids)
    with pytest.raises(PrunekitError, match=r"sparsity\[1\] = 1.5 is outside \[0, 1\)"):
        stage("wanda", sparsity=[0.5, 1.5])
    with pytest.raises(PrunekitError, match="sparsity key 'a\\(' is not a valid regular expression"):
        stage("wanda", sparsity={"a(": 0.5})
    with pytest.raises(PrunekitError, match="per-layer sparsity list / mapping does not apply to pattern '2:4'"):
        stage("sparsegpt", sparsity=[0.5, 0.5], pattern="2:4")


def test_three_argument_prune_layer_still_accepted(token_ids):
    import torch

    from prunekit.llm.config import OneShotConfig
    from prunekit.llm.oneshot import run_oneshot
    from prunekit.methods.base import PruneContext

    class Count:
        def add(self, x):
            pass

    seen = []

    def prune_layer(name, module, stats):  # the pre-sparsity signature: no sparsity argument
        seen.append(name)
        return torch.ones_like(module.weight, dtype=torch.bool)

    cfg = OneShotConfig(sparsity=0.5, calibration={"nsamples": 2})
    result = run_oneshot(tiny_llama_gqa(), cfg, PruneContext(example_inputs=token_ids), "t", lambda m: Count(),
                         prune_layer)
    assert len(seen) == 14 and all(result.layers[n]["sparsity"] == 0.0 for n in seen)
