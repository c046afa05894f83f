"""Guards around the structured method: a check that proves nothing says so; HF decoders trace without a KV cache."""

from __future__ import annotations

import pytest
import torch
from torch import nn
from zoo import build_llama_gqa

from prunekit.api import stage
from prunekit.methods.base import PruneContext
from prunekit.methods.structured.method import INCONCLUSIVE, StructuredMethod


def test_all_zero_output_makes_the_check_inconclusive_and_says_so():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 16), nn.ReLU(), nn.Linear(16, 4)).eval()
    with torch.no_grad():
        model[4].weight.zero_()
        model[4].bias.zero_()  # a zero-initialized head: every output is 0 whatever the pruning does
    with pytest.warns(UserWarning, match="INCONCLUSIVE"):
        result = StructuredMethod().apply(model, stage("structured", target={"width_ratio": 0.5}).config,
                                          PruneContext(example_inputs=torch.randn(3, 8)))
    assert INCONCLUSIVE in result.notes


def test_a_non_zero_output_gives_no_inconclusive_note():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 4)).eval()
    result = StructuredMethod().apply(model, stage("structured", target={"width_ratio": 0.5}).config,
                                      PruneContext(example_inputs=torch.randn(3, 8)))
    assert INCONCLUSIVE not in result.notes
    assert any(n.startswith("verify: ok") for n in result.notes)


def test_hf_decoder_with_use_cache_on_prunes_and_keeps_the_setting():
    model, inputs = build_llama_gqa()
    model.config.use_cache = True  # the default of a loaded Llama: the forward returns a DynamicCache
    result = StructuredMethod().apply(model, stage("structured", target={"params_ratio": 0.8}).config,
                                      PruneContext(example_inputs=inputs))
    assert any(n.startswith("verify: ok") for n in result.notes)
    assert model.config.use_cache is True
    with torch.no_grad():
        out = model(**inputs) if isinstance(inputs, dict) else model(inputs)
    assert torch.isfinite(out.logits).all()
