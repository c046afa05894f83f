"""The sequential block runner: block discovery, and equivalence with a plain forward when nothing is pruned."""

from __future__ import annotations

import pytest
import torch
from _llm_models import MODELS, tiny_llama_gqa
from torch import nn

from prunekit.errors import PrunekitError
from prunekit.llm import find_blocks, run_blocks


def _plain_last_block_outputs(model, blocks, samples):
    outs = []
    def hook(_m, _a, out):
        outs.append(out[0] if isinstance(out, tuple) else out)

    handle = blocks[-1].register_forward_hook(hook)
    with torch.no_grad():
        for s in samples:
            model(**s)
    handle.remove()
    return outs


@pytest.mark.parametrize("arch", sorted(MODELS))
def test_runner_equals_plain_forward(arch, token_ids):
    model = MODELS[arch]()
    name, blocks = find_blocks(model)
    assert len(blocks) == 2 and name.split(".")[-1] in {"layers", "h", "layer"}
    samples = [{"input_ids": row[None]} for row in token_ids]
    ref = _plain_last_block_outputs(model, blocks, samples)
    visited = []
    got = run_blocks(model, samples, visit=lambda i, n, b, fwd: (visited.append(n), fwd()))
    assert visited == [f"{name}.0", f"{name}.1"]
    assert len(got) == len(ref)
    for a, b in zip(got, ref):
        assert torch.allclose(a, b, atol=1e-5, rtol=0)


def test_runner_feeds_pruned_block_outputs_forward(token_ids):
    model = tiny_llama_gqa()
    samples = [{"input_ids": row[None]} for row in token_ids]
    dense = run_blocks(model, samples)

    def zero_first_mlp(i, _name, block, _fwd):
        if i == 0:
            for m in block.mlp.modules():
                if isinstance(m, nn.Linear):
                    m.weight.data.zero_()

    pruned = run_blocks(model, samples, visit=zero_first_mlp)
    assert not torch.allclose(dense[0], pruned[0])
    _, blocks = find_blocks(model)
    assert torch.allclose(pruned[0], _plain_last_block_outputs(model, blocks, samples)[0], atol=1e-5)


def test_no_blocks_is_an_error():
    with pytest.raises(PrunekitError, match="has no repeated blocks"):
        find_blocks(nn.Sequential(nn.Linear(2, 2)))
