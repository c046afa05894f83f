"""Weight-only quantization maths, int4 packing, QuantLinear and quantize_model."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from prunekit.errors import PrunekitError
from prunekit.quant import QuantLinear, dequantize, fake_quantize, pack_int4, quantize, quantize_model, unpack_int4


@pytest.mark.parametrize("bits,qmax", [(8, 127), (4, 7)])
@pytest.mark.parametrize("group_size", [None, 4, 8])
def test_quantize_codes_scales_and_error_bound(bits, qmax, group_size):
    torch.manual_seed(0)
    w = torch.randn(6, 16)
    w[1] = 0  # an all-zero row
    w[2, :5] = 0
    codes, scales = quantize(w, bits, group_size)
    g = group_size or 16
    assert codes.dtype == torch.int8 and codes.shape == w.shape
    assert scales.shape == (6, 16 // g)
    assert int(codes.abs().max()) == qmax  # the largest magnitude of each non-zero group maps to qmax
    expect_scales = w.reshape(6, 16 // g, g).abs().amax(-1) / qmax
    assert torch.equal(scales, expect_scales)
    assert bool((codes[w == 0] == 0).all()), "pruned zeros must stay exactly zero"
    assert bool((scales[1] == 0).all())
    deq = dequantize(codes, scales)
    step = scales.repeat_interleave(g, dim=1)
    assert bool(((deq - w).abs() <= step / 2 + 1e-7).all())
    assert torch.equal(fake_quantize(w, bits, group_size), deq)


def test_quantize_rejects_bad_bits_and_group_size():
    w = torch.randn(4, 12)
    with pytest.raises(PrunekitError, match=r"quantization bits 3 is not supported; choose one of: 4, 8"):
        quantize(w, 3)
    with pytest.raises(PrunekitError, match=r"group_size 5 does not divide the input dimension 12"):
        quantize(w, 8, 5)
    with pytest.raises(PrunekitError, match=r"group_size must be a positive integer or None"):
        quantize(w, 8, 0)
    with pytest.raises(PrunekitError, match=r"2-D floating-point matrix"):
        quantize(torch.ones(3, dtype=torch.int64).reshape(1, 3), 8)


@pytest.mark.parametrize("n", [0, 1, 7, 16, 33])
def test_int4_pack_round_trip(n):
    codes = (torch.arange(n) % 16 - 8).to(torch.int8)  # every value in [-8, 7]
    packed = pack_int4(codes)
    assert packed.dtype == torch.uint8 and packed.numel() == (n + 1) // 2
    assert torch.equal(unpack_int4(packed, n), codes)


def test_int4_pack_layout_and_range():
    packed = pack_int4(torch.tensor([1, -1, 7], dtype=torch.int8))
    assert packed.tolist() == [0x1 | (0xF << 4), 0x7]  # low nibble first, two's complement, zero-padded
    with pytest.raises(PrunekitError, match=r"int4 codes must lie in \[-8, 7\], got \[0, 9\]"):
        pack_int4(torch.tensor([0, 9], dtype=torch.int8))
    with pytest.raises(PrunekitError, match=r"expected 2 uint8"):
        unpack_int4(torch.zeros(3, dtype=torch.uint8), 4)


@pytest.mark.parametrize("bits,group_size", [(8, None), (8, 8), (4, None), (4, 8)])
def test_quant_linear_matches_dequantized_linear(bits, group_size):
    torch.manual_seed(1)
    lin = nn.Linear(32, 10)
    x = torch.randn(5, 32)
    q = QuantLinear.from_linear(lin, bits, group_size)
    ref = nn.functional.linear(x, fake_quantize(lin.weight, bits, group_size), lin.bias)
    torch.testing.assert_close(q(x), ref, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(q.to_linear()(x), ref, rtol=1e-5, atol=1e-5)
    # and close to the float layer: error bounded by the quantization step
    assert float((q(x) - lin(x)).detach().abs().max()) < (0.05 if bits == 8 else 0.6)
    expect_bytes = 32 * 10 if bits == 8 else 32 * 10 // 2
    assert q.qweight.numel() * q.qweight.element_size() == expect_bytes
    state = q.state_dict()
    assert set(state) == {"qweight", "scales", "bias"}
    q2 = QuantLinear(32, 10, bits, group_size)
    q2.load_state_dict(state)
    assert torch.equal(q2(x), q(x))


def test_quantize_model_targets_and_errors():
    torch.manual_seed(2)
    model = nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 4))
    x = torch.randn(3, 8)
    replaced = quantize_model(model, bits=8, targets=["2"])
    assert replaced == ["2"]
    assert type(model[0]) is nn.Linear and isinstance(model[2], QuantLinear)
    assert model(x).shape == (3, 4)
    with pytest.raises(PrunekitError, match=r"quantize target 'dec\*': it matches no module"):
        quantize_model(nn.Sequential(nn.Linear(8, 8)), targets=["dec*"])
    with pytest.raises(PrunekitError, match=r"matches only non-Linear modules \(1\)"):
        quantize_model(nn.Sequential(nn.Linear(8, 8), nn.ReLU()), targets=["1"])
    with pytest.raises(PrunekitError, match=r"group_size 16 does not divide the input dimension 8 of layer '0'"):
        quantize_model(nn.Sequential(nn.Linear(8, 8)), group_size=16)
    whole = nn.Sequential(nn.Linear(8, 8), nn.Linear(8, 4))
    assert quantize_model(whole, bits=4, group_size=4) == ["0", "1"]


def test_quantize_model_refuses_masks():
    from prunekit.masks import attach_mask

    model = nn.Sequential(nn.Linear(4, 4))
    attach_mask(model[0], torch.ones(4, 4, dtype=torch.bool))
    with pytest.raises(PrunekitError, match=r"call prunekit.finalize\(model\)"):
        quantize_model(model)
