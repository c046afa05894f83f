"""Compressed storage: every form round-trips exactly, sizes are as specified, bad input gives one-line errors."""

from __future__ import annotations

import copy
import math
import os

import numpy as np
import pytest
import torch
from torch import nn

from prunekit.errors import PrunekitError
from prunekit.export.storage import describe, load_compressed, read_compressed, save_compressed
from prunekit.export.storage.bits import pack_bits, unpack_bits
from prunekit.export.storage.codec import encode_matrix
from prunekit.quant import QuantLinear, fake_quantize, quantize_model

KINDS = ["fp32", "fp16", "int8", "int4"]


def _expected(w: torch.Tensor, kind: str, group_size: int | None) -> torch.Tensor:
    """What a stored weight must load back as: the values kind applied to the (out, in) matrix."""
    m = w.reshape(w.shape[0], -1)
    if kind == "fp32":
        out = m
    elif kind == "fp16":
        out = m.half().to(w.dtype)
    else:
        out = fake_quantize(m, 8 if kind == "int8" else 4, group_size).to(w.dtype)
    return out.reshape(w.shape)


def _sparsify(w: torch.Tensor, sparsity: float, seed: int = 0) -> None:
    gen = torch.Generator().manual_seed(seed)
    k = round(sparsity * w.numel())
    idx = torch.randperm(w.numel(), generator=gen)[:k]
    w.view(-1)[idx] = 0


def _nm(w: torch.Tensor, n: int, m: int, fewer: bool = True) -> None:
    groups = w.view(-1, m)
    drop = groups.abs().argsort(dim=1)[:, : m - n]
    groups.scatter_(1, drop, 0)
    if fewer:
        groups[::3] = 0  # some groups hold fewer than n non-zeros (and some none)
        groups[1::3, 0] = 0


def _model(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(16, 32), nn.ReLU(), nn.Linear(32, 8))


def _roundtrip(tmp_path, model, **kw):
    path = tmp_path / "m.safetensors"
    save_compressed(model, path, **kw)
    fresh = _model(seed=99)
    load_compressed(path, fresh)
    return path, fresh


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("sparsity", [0.0, 0.3, 0.5, 0.9, 1.0])
def test_bitmask_round_trip_exact(tmp_path, kind, sparsity):
    model = _model()
    with torch.no_grad():
        for layer in (model[0], model[2]):
            _sparsify(layer.weight, sparsity)
    gs = 8 if kind == "int4" else None
    path, fresh = _roundtrip(tmp_path, model, values=kind, group_size=gs, encodings={"*": "bitmask"})
    for i in (0, 2):
        assert torch.equal(fresh[i].weight, _expected(model[i].weight.detach(), kind, gs))
        assert torch.equal(fresh[i].bias, model[i].bias)
    rows = {r.name: r for r in describe(path).rows}
    assert rows["0.weight"].encoding == "bitmask" and rows["0.weight"].values == kind
    assert rows["0.bias"].encoding == "raw"


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("n,m", [(2, 4), (4, 8), (1, 4)])
def test_nm_round_trip_exact(tmp_path, kind, n, m):
    model = _model()
    with torch.no_grad():
        for layer in (model[0], model[2]):
            _nm(layer.weight, n, m)
    gs = 8 if kind == "int4" else None
    path, fresh = _roundtrip(tmp_path, model, values=kind, group_size=gs, encodings={"*.weight": f"{n}:{m}"})
    for i in (0, 2):
        assert torch.equal(fresh[i].weight, _expected(model[i].weight.detach(), kind, gs))
    row = {r.name: r for r in describe(path).rows}["2.weight"]
    assert row.encoding == f"{n}:{m}"
    groups = 8 * 32 // m
    index_bytes = math.ceil(groups * math.ceil(math.log2(math.comb(m, n))) / 8)
    value_bytes = math.ceil(groups * n * {"fp32": 32, "fp16": 16, "int8": 8, "int4": 4}[kind] / 8)
    scale_bytes = 0 if kind in ("fp32", "fp16") else 4 * 8 * (1 if gs is None else 32 // gs)
    assert row.stored_bytes == index_bytes + value_bytes + scale_bytes


def test_auto_chooses_the_smallest_form(tmp_path):
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(64, 64), nn.Linear(64, 64), nn.Linear(64, 64))
    with torch.no_grad():
        _sparsify(model[1].weight, 0.9)
        _nm(model[2].weight, 2, 4, fewer=False)
    path = tmp_path / "m.safetensors"
    save_compressed(model, path, values="int8")
    rows = {r.name: r for r in describe(path).rows}
    assert rows["0.weight"].encoding == "dense"  # dense: a mask would only add bytes
    assert rows["1.weight"].encoding == "bitmask"
    assert rows["2.weight"].encoding == "2:4"  # 3 index bits per group beat a 4-bit mask per group
    for r in rows.values():
        assert r.theoretical_bytes <= r.stored_bytes < r.theoretical_bytes + 2
    desc = describe(path)
    assert desc.file_bytes == os.path.getsize(path) == desc.stored_bytes + desc.header_bytes
    dense_int8 = 64 * 64 + 64 * 4
    assert rows["1.weight"].stored_bytes == 64 * 64 // 8 + rows["1.weight"].nnz + 64 * 4 < dense_int8
    assert "| **total** |" in desc.table()


def test_conv_hf_conv1d_tied_and_buffers_round_trip(tmp_path):
    from transformers.pytorch_utils import Conv1D

    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.emb = nn.Embedding(10, 8)
            self.conv = nn.Conv2d(2, 4, 3)
            self.bn = nn.BatchNorm2d(4)
            self.c1d = Conv1D(12, 8)  # weight (in=8, out=12)
            self.head = nn.Linear(8, 10, bias=False)
            self.head.weight = self.emb.weight  # tied

    torch.manual_seed(0)
    net = Net()
    with torch.no_grad():
        wt = net.c1d.weight.t().contiguous()  # (out, in): make it 2:4 along its inputs
        _nm(wt, 2, 4, fewer=False)
        net.c1d.weight.copy_(wt.t())
        _sparsify(net.conv.weight, 0.6)
        net.bn.running_mean.uniform_()
    path = tmp_path / "net.safetensors"
    save_compressed(net, path, values="int8", encodings={"c1d.weight": "2:4"})
    fresh = Net()
    load_compressed(path, fresh)
    assert torch.equal(fresh.c1d.weight, fake_quantize(net.c1d.weight.t(), 8).t())
    assert torch.equal(fresh.conv.weight, fake_quantize(net.conv.weight.reshape(4, -1), 8).reshape(4, 2, 3, 3))
    assert torch.equal(fresh.bn.running_mean, net.bn.running_mean)
    assert fresh.head.weight is fresh.emb.weight
    rows = {r.name: r for r in describe(path).rows}
    assert rows["head.weight"].encoding == "alias of emb.weight"
    assert rows["bn.num_batches_tracked"].encoding == "raw"


@pytest.mark.parametrize("kind", ["int8", "int4"])
def test_load_as_quant_linear(tmp_path, kind):
    model = _model()
    with torch.no_grad():
        _sparsify(model[0].weight, 0.5)
    path = tmp_path / "m.safetensors"
    save_compressed(model, path, values=kind, group_size=8)
    plain = load_compressed(path, _model(seed=5))
    quant = load_compressed(path, _model(seed=6), quant_linear=True)
    assert isinstance(quant[0], QuantLinear) and quant[0].bits == (8 if kind == "int8" else 4)
    assert quant[0].group_size == 8
    x = torch.randn(4, 16)
    with torch.no_grad():
        torch.testing.assert_close(quant(x), plain(x), rtol=1e-6, atol=1e-6)
        assert torch.equal(quant[0].dequantized_weight(), plain[0].weight)
    same = copy.deepcopy(model)  # the storage codes are the codes quantize_model computes
    quantize_model(same, bits=quant[0].bits, group_size=8)
    assert torch.equal(same[0].qweight, quant[0].qweight) and torch.equal(same[2].scales, quant[2].scales)


@pytest.mark.parametrize("bits", [1, 2, 3, 7])
def test_pack_bits_round_trip(bits):
    gen = torch.Generator().manual_seed(bits)
    values = torch.randint(0, 1 << bits, (1001,), generator=gen)
    packed = pack_bits(values, bits)
    assert packed.numel() == math.ceil(1001 * bits / 8)
    assert torch.equal(unpack_bits(packed, bits, 1001), values)


def test_bitmask_bit_order_is_numpy_little():
    mask = torch.rand(77, generator=torch.Generator().manual_seed(3)) > 0.5
    expect = np.packbits(mask.numpy(), bitorder="little")
    assert pack_bits(mask, 1).numpy().tolist() == expect.tolist()


def test_bad_inputs_raise_clear_errors(tmp_path):
    model = _model()
    path = tmp_path / "m.safetensors"
    with pytest.raises(PrunekitError, match=r"unknown values kind 'int3'; choose one of: fp16, fp32, int4, int8"):
        save_compressed(model, path, values="int3")
    with pytest.raises(PrunekitError, match=r"group_size 5 does not divide the input dimension 16 of tensor '0.weight"):
        save_compressed(model, path, values="int8", group_size=5)
    with pytest.raises(PrunekitError, match=r"tensor '0.weight' is not 2:4 sparse: row 0, columns 0..3 hold 4 "
                                            r"non-zeros \(at most 2 allowed\)"):
        save_compressed(model, path, encodings={"0.weight": "2:4"})
    with pytest.raises(PrunekitError, match=r"group_size 4 applies to int8 / int4 values only, not 'fp16'"):
        save_compressed(model, path, values="fp16", group_size=4)
    with pytest.raises(PrunekitError, match=r"input dimension 16 is not divisible by 32"):
        save_compressed(model, path, encodings={"0.weight": "1:32"})
    with pytest.raises(PrunekitError, match=r"encodings key 'enc\*' matches no encodable tensor"):
        save_compressed(model, path, encodings={"enc*": "bitmask"})
    with pytest.raises(PrunekitError, match=r"encoding 'csr' for 0.weight is not valid; choose one of: auto, dense"):
        save_compressed(model, path, encodings={"0.weight": "csr"})
    from prunekit.masks import attach_mask

    attach_mask(model[0], torch.ones(32, 16, dtype=torch.bool))
    with pytest.raises(PrunekitError, match=r"call prunekit.finalize\(model\) before save_compressed"):
        save_compressed(model, path)
    assert not path.exists()


def test_foreign_corrupt_and_mismatched_files_give_one_line_errors(tmp_path):
    from safetensors.torch import save_file

    model = _model()
    foreign = tmp_path / "plain.safetensors"
    save_file({"a": torch.zeros(2)}, str(foreign))
    garbage = tmp_path / "garbage.safetensors"
    garbage.write_bytes(b"\x00\x01not a safetensors file at all")
    good = tmp_path / "good.safetensors"
    save_compressed(model, good, values="int8")
    truncated = tmp_path / "truncated.safetensors"
    truncated.write_bytes(good.read_bytes()[:-50])
    cases = [
        (foreign, r"not a prunekit compressed file \(metadata format is None, expected 'prunekit-compressed'\)"),
        (garbage, r"not a valid safetensors file"),
        (truncated, r"corrupt safetensors data"),
        (tmp_path / "missing.safetensors", r"is not a file"),
    ]
    for path, pattern in cases:
        with pytest.raises(PrunekitError, match=pattern) as info:
            load_compressed(path, _model())
        assert "\n" not in str(info.value)
    with pytest.raises(PrunekitError, match=r"does not fit the model: 4 tensors missing from the file") as info:
        load_compressed(good, nn.Sequential(nn.Linear(16, 32), nn.ReLU(), nn.Linear(32, 8), nn.Linear(8, 8),
                                            nn.Linear(8, 8)))
    assert "\n" not in str(info.value)
    with pytest.raises(PrunekitError, match=r"shape mismatches, file vs model \(e.g. 0.weight \(32, 16\) vs"):
        load_compressed(good, nn.Sequential(nn.Linear(17, 32), nn.ReLU(), nn.Linear(32, 8)))


def test_corrupt_entry_names_the_tensor(tmp_path):
    from safetensors.torch import save

    from prunekit.export.storage import build_file

    tensors, meta = build_file(_model(), values="int8", encodings={"*.weight": "bitmask"})
    tensors["0.weight::mask"] = tensors["0.weight::mask"][:-1].clone()
    path = tmp_path / "bad.safetensors"
    path.write_bytes(save(tensors, metadata=meta))
    with pytest.raises(PrunekitError, match=r"corrupt entry '0.weight' \(packed data has 63"):
        read_compressed(path)


def test_write_is_atomic(tmp_path, monkeypatch):
    path = tmp_path / "m.safetensors"
    path.write_bytes(b"old")
    model = _model()
    with pytest.raises(PrunekitError):  # an encoding error happens before anything is written
        save_compressed(model, path, encodings={"0.weight": "2:4"})

    def boom(_fd):
        raise OSError("disk full")

    monkeypatch.setattr(os, "fsync", boom)
    with pytest.raises(OSError, match="disk full"):
        save_compressed(model, path)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.safetensors"]
    assert path.read_bytes() == b"old"


def test_encode_matrix_is_pure_and_reports_bytes():
    w = torch.zeros(4, 8)
    w[0, 0] = 1.0
    enc = encode_matrix(w, "fp16")
    assert enc.entry["encoding"] == "bitmask" and enc.entry["nnz"] == 1
    assert enc.entry["theoretical_bytes"] == 32 / 8 + 2
    assert w[0, 0] == 1.0 and int((w != 0).sum()) == 1
