"""`llm_width`: whole heads / key-value groups and MLP channels of a tiny random GQA Llama, via the structured engine.

Checked: the model shrinks and still runs, the Hugging Face config says the new sizes so save_pretrained +
from_pretrained gives the same logits, `parts` keeps the other parts whole, bias compensation keeps the mean output
of a layer whose inputs lost channels (and is absent without it), and error texts.
"""

from __future__ import annotations

import pytest
import torch
from _llm_models import tiny_llama_gqa
from torch import nn

import prunekit
from prunekit.errors import PrunekitError
from prunekit.methods.llm_width.bias import bias_shift

pytest.importorskip("transformers")
from transformers import AutoModelForCausalLM  # noqa: E402


@pytest.fixture
def calib_ids():
    return torch.randint(0, 64, (8, 16), generator=torch.Generator().manual_seed(1))


def _stage(**opts):
    return {"stages": [{"method": "llm_width", "calibration": {"nsamples": 8}, **opts}]}


def _params(model):
    return sum(p.numel() for p in model.parameters())


def _reload(model, tmp_path):
    model.save_pretrained(tmp_path)
    return AutoModelForCausalLM.from_pretrained(tmp_path).eval()


@pytest.mark.parametrize("compensate", ["none", "bias", "least_squares"])
def test_width_round_trip(compensate, calib_ids, tmp_path):
    model = tiny_llama_gqa()
    before = _params(model)
    prunekit.prune(model, _stage(target={"params_ratio": 0.7}, scope="layer", compensate=compensate), calib_ids)
    cfg = model.config
    assert cfg.num_key_value_heads == 1 and cfg.intermediate_size < 64  # heads and MLP channels both shrank
    assert _params(model) < 0.8 * before
    assert cfg.hidden_size == 32  # residual stream kept whole by default
    assert cfg.num_attention_heads == 2 * cfg.num_key_value_heads  # GQA ratio kept: a kv group leaves with its heads
    assert cfg.intermediate_size < 64
    attn = model.model.layers[0].self_attn
    assert attn.q_proj.out_features == cfg.num_attention_heads * cfg.head_dim
    assert attn.k_proj.out_features == cfg.num_key_value_heads * cfg.head_dim
    assert (attn.o_proj.bias is not None) == (compensate == "bias")
    fresh = _reload(model, tmp_path)
    with torch.no_grad():
        out, again = model(calib_ids).logits, fresh(calib_ids).logits
    assert torch.isfinite(out).all()
    assert torch.allclose(out, again, atol=1e-6)


@pytest.mark.parametrize("part", ["attention", "mlp"])
def test_parts_keep_the_other_part_whole(part, calib_ids):
    model = tiny_llama_gqa()
    prunekit.prune(model, _stage(target={"width_ratio": 0.5}, parts=[part], compensate="none"), calib_ids)
    layer = model.model.layers[1]
    heads_cut = layer.self_attn.q_proj.out_features < 32
    mlp_cut = layer.mlp.gate_proj.out_features < 64
    assert (heads_cut, mlp_cut) == ((True, False) if part == "attention" else (False, True))


def test_global_scope_and_fluct_importance(calib_ids):
    model = tiny_llama_gqa()
    report = prunekit.prune(model, _stage(target={"params_ratio": 0.8}, scope="global",
                                          importance="activation_fluct"), calib_ids)
    notes = " ".join(report.stages[0]["notes"])
    assert _params(model) < 0.9 * _params(tiny_llama_gqa())
    assert "importance: activation_fluct" in notes and "scope global" in notes


def _mean_output(model, module_name, ids):
    """Mean over all tokens of a module's output (block 0's inputs are the same in the dense and pruned model)."""
    seen = []
    module = model.get_submodule(module_name)
    handle = module.register_forward_hook(lambda m, a, o: seen.append(o.reshape(-1, o.shape[-1])))
    with torch.no_grad():
        model(ids)
    handle.remove()
    return torch.cat(seen).double().mean(0)


@pytest.mark.parametrize("compensate", ["none", "bias"])
def test_bias_compensation_keeps_the_mean_output(compensate, calib_ids):
    dense = tiny_llama_gqa()
    model = tiny_llama_gqa()
    prunekit.prune(model, _stage(target={"width_ratio": 0.5}, parts=["mlp"], compensate=compensate), calib_ids)
    name = "model.layers.0.mlp.down_proj"
    gap = (_mean_output(model, name, calib_ids) - _mean_output(dense, name, calib_ids)).abs().max()
    scale = _mean_output(dense, name, calib_ids).abs().max()
    if compensate == "bias":
        assert gap < 1e-5 * max(1.0, float(scale))
        assert model.config.mlp_bias and not model.config.attention_bias
        assert torch.count_nonzero(model.model.layers[0].mlp.up_proj.bias) == 0  # the flag's other biases start at 0
    else:
        assert gap > 1e-4


def test_bias_shift_matches_a_loop():
    g = torch.Generator().manual_seed(0)
    w, m = torch.randn(5, 7, generator=g), torch.randn(7, generator=g)
    removed = [1, 4, 6]
    want = [sum(float(w[o, j]) * float(m[j]) for j in removed) for o in range(5)]
    assert torch.allclose(bias_shift(w, m, removed), torch.tensor(want, dtype=torch.float64), atol=1e-12)


class _Block(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc1, self.fc2 = nn.Linear(8, 16), nn.Linear(16, 8)

    def forward(self, x):
        return x + self.fc2(torch.relu(self.fc1(x)))


class _Stack(nn.Module):
    def __init__(self):
        super().__init__()
        self.layers = nn.ModuleList(_Block() for _ in range(2))

    def forward(self, x):
        for layer in self.layers:
            x = layer(x)
        return x


def test_errors_by_text(calib_ids):
    with pytest.raises(PrunekitError, match="parts.*'attention', 'mlp' or 'hidden'"):
        prunekit.parse_recipe(_stage(target={"params_ratio": 0.8}, parts=["heads"]))
    with pytest.raises(PrunekitError, match="compensate.*'none', 'bias' or 'least_squares'"):
        prunekit.parse_recipe(_stage(target={"params_ratio": 0.8}, compensate="bn"))
    with pytest.raises(PrunekitError, match="unknown key 'heads_ratio'"):
        prunekit.parse_recipe(_stage(target={"params_ratio": 0.8}, heads_ratio=0.5))
    with pytest.raises(PrunekitError, match="have no attention module"):
        prunekit.prune(_Stack(), _stage(target={"width_ratio": 0.5}, parts=["attention"]), torch.randn(2, 3, 8))
    with pytest.raises(PrunekitError, match="no calibration data"):
        prunekit.prune(tiny_llama_gqa(), _stage(target={"width_ratio": 0.5}))


@pytest.mark.slow
def test_tiny_shakespeare_llama_width(tmp_path):
    from dataclasses import asdict

    from prunekit.data import TINY_LLAMA_RECIPE, tiny_llama
    from prunekit.data.cache import verify_artefact

    if verify_artefact("tiny_llama", asdict(TINY_LLAMA_RECIPE)) is None:
        pytest.skip("the tiny Llama is not cached (python -m prunekit.data builds it)")
    model, tok = tiny_llama(progress=False)
    before = _params(model)
    prunekit.prune(model, _stage(target={"params_ratio": 0.7}, calibration={"nsamples": 4, "seq_len": 64}))
    assert _params(model) < 0.75 * before
    ids = tok("To be, or not to be", return_tensors="pt")["input_ids"]
    fresh = _reload(model, tmp_path)
    with torch.no_grad():
        assert torch.allclose(model(ids).logits, fresh(ids).logits, atol=1e-5)
