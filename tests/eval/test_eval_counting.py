"""count_model against hand arithmetic: params, non-zeros, dense and effective MACs, attention matmuls."""

from __future__ import annotations

import pytest
import torch
from torch import nn
from torch.nn.utils import parametrize

from prunekit.errors import PrunekitError
from prunekit.eval import count_model, count_params


def _mlp() -> nn.Sequential:
    """Linear(4,3) -> ReLU -> Linear(3,2) with all-ones weights and biases (so only our zeros are zeros)."""
    model = nn.Sequential(nn.Linear(4, 3), nn.ReLU(), nn.Linear(3, 2))
    with torch.no_grad():
        for p in model.parameters():
            p.fill_(1.0)
    return model


def test_mlp_dense_counts_match_hand_arithmetic():
    count = count_model(_mlp(), torch.randn(5, 4))
    first, second = count.layer("0"), count.layer("2")
    # params: 4*3 + 3 = 15 and 3*2 + 2 = 8
    assert (first.params, second.params, count.params) == (15, 8, 23)
    # MACs: batch 5 * in 4 * out 3 = 60 and 5 * 3 * 2 = 30
    assert (first.macs, second.macs, count.macs) == (60, 30, 90)
    assert count.effective_macs == 90
    assert [r.name for r in count.layers] == ["0", "2"]
    assert first.shape == (3, 4) and first.type == "Linear"
    assert count.inputs == "(5, 4)"


def test_mlp_zeroed_weights_scale_effective_macs_by_density():
    model = _mlp()
    with torch.no_grad():
        model[0].weight[0, :] = 0.0  # 4 zeros
        model[0].weight[1, 0] = 0.0  # 5 of 12 weights are zero -> density 7/12
        model[2].weight[:, 0] = 0.0  # 2 of 6 zero
        model[2].weight[0, 1] = 0.0  # 3 of 6 zero -> density 1/2
    count = count_model(model, torch.randn(5, 4))
    assert count.layer("0").nonzeros == 7 + 3
    assert count.layer("2").nonzeros == 3 + 2
    assert count.nonzeros == 15
    assert count.macs == 90  # dense MACs do not change
    assert count.layer("0").effective_macs == 35  # 60 * 7/12
    assert count.layer("2").effective_macs == 15  # 30 * 1/2
    assert count.effective_macs == 50
    assert count.layer("2").sparsity == pytest.approx(3 / 8)


class _ConvNet(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3, padding=1)
        self.dw = nn.Conv2d(8, 8, 3, stride=2, padding=1, groups=8)
        self.bn = nn.BatchNorm2d(8)
        self.fc = nn.Linear(8 * 4 * 4, 10)

    def forward(self, x):
        x = torch.relu(self.bn(self.dw(torch.relu(self.conv(x)))))
        return self.fc(x.flatten(1))


def test_conv_net_counts_match_hand_arithmetic():
    model = _ConvNet()
    with torch.no_grad():
        model.conv.weight.fill_(1.0)
        model.conv.weight[:4] = 0.0  # half the filters -> density 0.5
    count = count_model(model, torch.randn(2, 3, 8, 8))
    # conv: out 2*8*8*8 = 1024 elements, each 3 in-channels * 3*3 kernel
    assert count.layer("conv").macs == 1024 * 3 * 9 == 27648
    assert count.layer("conv").effective_macs == 27648 // 2
    # depthwise stride 2: out 2*8*4*4 = 256 elements, each 8/8 = 1 in-channel * 9
    assert count.layer("dw").macs == 256 * 9
    assert count.layer("bn").macs == 0
    assert count.layer("fc").macs == 2 * 128 * 10
    assert count.macs == 27648 + 2304 + 2560
    assert count.params == (8 * 3 * 9 + 8) + (8 * 9 + 8) + 16 + (128 * 10 + 10)
    assert count.layer("conv").nonzeros == 4 * 27 + int(torch.count_nonzero(model.conv.bias))


def test_conv_transpose_and_conv1d_formulas():
    up = nn.ConvTranspose2d(8, 4, 2, stride=2)
    count = count_model(up, torch.randn(2, 8, 4, 4))
    # transposed: every input element (2*8*4*4 = 256) scatters to C_out/groups (4) * kernel (2*2) outputs
    assert count.macs == 256 * 4 * 4
    conv1d = nn.Conv1d(4, 6, 5, groups=2)
    count = count_model(conv1d, torch.randn(3, 4, 20))
    assert count.macs == (3 * 6 * 16) * (4 // 2) * 5


def test_parametrized_weight_is_counted_by_its_effective_value():
    class Mask(nn.Module):
        def __init__(self, keep):
            super().__init__()
            self.register_buffer("keep", keep)

        def forward(self, w):
            return w * self.keep

    layer = nn.Linear(4, 4)
    with torch.no_grad():
        layer.weight.fill_(1.0)
        layer.bias.fill_(1.0)
    keep = torch.zeros(4, 4)
    keep[:, :1] = 1.0  # keep one column: density 1/4
    parametrize.register_parametrization(layer, "weight", Mask(keep))
    model = nn.Sequential(layer)
    count = count_model(model, torch.randn(2, 4))
    assert [r.name for r in count.layers] == ["0"]  # no row for parametrizations.weight.original
    row = count.layer("0")
    assert row.type == "Linear"
    assert (row.params, row.nonzeros) == (20, 4 + 4)
    assert row.macs == 2 * 4 * 4 and row.effective_macs == 8
    assert count_params(model) == (20, 8)


def test_tied_weights_are_counted_once_and_macs_go_to_the_caller():
    class Tied(nn.Module):
        def __init__(self):
            super().__init__()
            self.embed = nn.Embedding(10, 4)
            self.head = nn.Linear(4, 10, bias=False)
            self.head.weight = self.embed.weight

        def forward(self, ids):
            return self.head(self.embed(ids))

    count = count_model(Tied(), torch.randint(0, 10, (2, 3)))
    assert count.layer("embed").params == 40 and count.layer("head").params == 40
    assert count.params == 40
    assert count.layer("embed").macs == 0  # a lookup
    assert count.layer("head").macs == 2 * 3 * 4 * 10


def test_multihead_attention_projections_and_matmuls():
    batch, length, dim, heads = 2, 5, 16, 4
    mha = nn.MultiheadAttention(dim, heads, batch_first=True)
    x = torch.randn(batch, length, dim)
    count = count_model(mha, (x, x, x))
    assert count.layer("").macs == batch * length * dim * 3 * dim  # in_proj, called functionally
    assert count.layer("out_proj").macs == batch * length * dim * dim
    attention = count.layer("::matmul")
    assert attention.type == "attention"
    assert attention.macs == 2 * batch * heads * length**2 * (dim // heads)


@pytest.fixture(scope="module")
def transformers_mod():
    return pytest.importorskip("transformers")


def _attention_rows(count):
    return [r for r in count.layers if r.name.endswith("::matmul")]


@pytest.mark.parametrize("impl", ["eager", "sdpa"])
def test_bert_attention_matmuls_follow_the_formula(transformers_mod, impl):
    batch, seq, heads, hidden, layers = 2, 8, 4, 32, 2
    config = transformers_mod.BertConfig(
        vocab_size=50, hidden_size=hidden, num_hidden_layers=layers, num_attention_heads=heads,
        intermediate_size=64, max_position_embeddings=32, attn_implementation=impl,
    )
    torch.manual_seed(0)
    model = transformers_mod.BertModel(config)
    inputs = {
        "input_ids": torch.randint(0, 50, (batch, seq)),
        "attention_mask": torch.ones(batch, seq, dtype=torch.long),
    }
    count = count_model(model, inputs)
    rows = _attention_rows(count)
    assert len(rows) == layers
    assert all(r.type == "attention" for r in rows)
    assert [r.macs for r in rows] == [2 * batch * heads * seq**2 * (hidden // heads)] * layers
    assert count.layer("encoder.layer.0.attention.self.query").macs == batch * seq * hidden * hidden


@pytest.mark.parametrize("impl", ["eager", "sdpa"])
def test_llama_gqa_total_is_projections_plus_attention(transformers_mod, impl):
    batch, seq, heads, kv_heads, hidden, inter, vocab, layers = 2, 8, 4, 2, 32, 64, 100, 2
    config = transformers_mod.LlamaConfig(
        vocab_size=vocab, hidden_size=hidden, num_hidden_layers=layers, num_attention_heads=heads,
        num_key_value_heads=kv_heads, intermediate_size=inter, max_position_embeddings=64,
        attn_implementation=impl, tie_word_embeddings=True,
    )
    torch.manual_seed(0)
    model = transformers_mod.LlamaForCausalLM(config)
    count = count_model(model, torch.randint(0, vocab, (batch, seq)))
    head_dim = hidden // heads
    tokens = batch * seq
    projections = tokens * (hidden * hidden * 2 + hidden * kv_heads * head_dim * 2 + 3 * hidden * inter)
    attention = 2 * batch * heads * seq**2 * head_dim
    rows = _attention_rows(count)
    assert [r.macs for r in rows if r.type == "attention"] == [attention] * layers
    other_matmuls = sum(r.macs for r in rows if r.type != "attention")  # e.g. rotary tables, if any
    assert count.macs == layers * (projections + attention) + tokens * hidden * vocab + other_matmuls
    assert count.params == sum(p.numel() for p in model.parameters())  # tied embedding counted once


def test_counting_leaves_the_model_as_it_was():
    model = _ConvNet()
    model.train()
    model.bn.eval()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    global_hooks = dict(torch.nn.modules.module._global_forward_hooks)
    count_model(model, torch.randn(2, 3, 8, 8))
    assert model.training and model.conv.training and not model.bn.training
    for module in model.modules():
        assert not module._forward_hooks and not module._forward_pre_hooks
    assert dict(torch.nn.modules.module._global_forward_hooks) == global_hooks
    after = model.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)  # BN running stats untouched too


def test_no_inputs_means_no_macs():
    count = count_model(_mlp())
    assert count.macs is None and count.effective_macs is None
    assert count.layer("0").macs is None and count.params == 23


def test_count_round_trips_through_dict():
    count = count_model(_ConvNet(), torch.randn(1, 3, 8, 8))
    assert type(count).from_dict(count.to_dict()) == count


def test_bad_arguments_raise_with_the_bad_value():
    with pytest.raises(PrunekitError, match="expects an nn.Module, got str"):
        count_model("resnet18", None)
    with pytest.raises(PrunekitError, match="example_inputs must be a Tensor.*got int"):
        count_model(_mlp(), 3)
    with pytest.raises(PrunekitError, match="no layer named 'fc1'"):
        count_model(_mlp()).layer("fc1")


def test_transformers_conv1d_is_a_weight_layer(transformers_mod):
    from transformers.pytorch_utils import Conv1D

    layer = Conv1D(6, 4)  # nf=6 outputs, nx=4 inputs; weight stored as (in, out)
    with torch.no_grad():
        layer.weight.fill_(1.0)
        layer.weight[:2] = 0.0  # half the weights
    count = count_model(nn.Sequential(layer), torch.randn(2, 3, 4))
    row = count.layer("0")
    assert row.type == "Conv1D" and row.shape == (4, 6)
    assert row.macs == 2 * 3 * 4 * 6 and row.effective_macs == 2 * 3 * 4 * 6 // 2
