"""ONNX (checked in onnxruntime) and torch.export of structured-pruned models."""

from __future__ import annotations

import importlib.util

import numpy as np
import pytest
import torch
from torch import nn

import prunekit
from prunekit.errors import PrunekitError
from prunekit.export.onnx import _check, export_onnx, export_program
from prunekit.export.quantize_dynamic import quantize_dynamic_int8

pytest.importorskip("onnxruntime")
X = torch.randn(2, 3, 16, 16, generator=torch.Generator().manual_seed(0))


def small_cnn() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(3, 16, 3, padding=1), nn.BatchNorm2d(16), nn.ReLU(),
        nn.Conv2d(16, 32, 3, padding=1, stride=2), nn.BatchNorm2d(32), nn.ReLU(),
        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(32, 10),
    ).eval()


def pruned_cnn() -> nn.Module:
    model = small_cnn()
    prunekit.prune(model, {"stages": [{"method": "structured", "target": {"width_ratio": 0.5}}]}, X)
    prunekit.finalize(model)
    assert model[0].out_channels < 16  # really structured-pruned: the export sees smaller layers
    return model.eval()


def test_onnx_output_equals_pytorch_on_structured_cnn(tmp_path):
    model = pruned_cnn()
    result = export_onnx(model, X, tmp_path / "m.onnx")
    assert result.format == "onnx" and result.outputs == 1 and result.file_bytes > 0
    assert result.max_abs_diff <= 1e-4 and result.exporter in ("dynamo", "torchscript")
    import onnxruntime as ort

    session = ort.InferenceSession(result.path, providers=["CPUExecutionProvider"])
    got = session.run(None, {session.get_inputs()[0].name: X.numpy()})[0]
    np.testing.assert_allclose(got, model(X).detach().numpy(), atol=1e-4)
    assert not list(tmp_path.glob(".*"))  # no temp file left behind


def test_onnx_small_bert_keyword_inputs(tmp_path):
    transformers = pytest.importorskip("transformers")
    config = transformers.BertConfig(vocab_size=64, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                                     intermediate_size=64, max_position_embeddings=32)
    torch.manual_seed(0)
    model = transformers.BertModel(config).eval()
    ids = torch.randint(0, 64, (2, 8), generator=torch.Generator().manual_seed(0))
    inputs = {"input_ids": ids, "attention_mask": torch.ones_like(ids)}
    with torch.no_grad():  # a structured-pruned FFN, made by hand: the export must follow the smaller shapes
        for layer in model.encoder.layer:
            layer.intermediate.dense = nn.Linear(32, 24)
            layer.output.dense = nn.Linear(24, 32)
    model.eval()
    result = export_onnx(model, inputs, tmp_path / "bert.onnx")
    assert result.outputs == 2 and result.max_abs_diff <= 1e-4


def test_torch_export_round_trip(tmp_path):
    model = pruned_cnn()
    result = export_program(model, X, tmp_path / "m.pt2")
    assert result.format == "torch-export" and result.max_abs_diff <= 1e-5
    loaded = torch.export.load(result.path).module()
    torch.testing.assert_close(loaded(X), model(X), atol=1e-5, rtol=1e-5)


def test_export_errors(tmp_path):
    model = small_cnn()
    with pytest.raises(PrunekitError, match=r"must end in \.onnx"):
        export_onnx(model, X, tmp_path / "m.bin")
    with pytest.raises(PrunekitError, match="does not exist"):
        export_onnx(model, X, tmp_path / "no" / "m.onnx")
    with pytest.raises(PrunekitError, match=r"must end in \.pt2"):
        export_program(model, X, tmp_path / "m.onnx")
    with pytest.raises(PrunekitError, match="unknown ONNX exporter 'fast'; choose auto, dynamo, torchscript"):
        export_onnx(model, X, tmp_path / "m.onnx", exporter="fast")
    with pytest.raises(PrunekitError, match="dynamically quantized"):
        export_onnx(quantize_dynamic_int8(nn.Sequential(nn.Linear(4, 4))), torch.randn(1, 4), tmp_path / "q.onnx")
    with pytest.raises(PrunekitError, match="example_inputs must be"):
        export_program(model, "x", tmp_path / "m.pt2")
    if importlib.util.find_spec("onnxscript") is None:
        with pytest.raises(PrunekitError, match="needs the onnxscript package"):
            export_onnx(model, X, tmp_path / "m.onnx", exporter="dynamo")
    assert not list(tmp_path.iterdir())


def test_output_check_rejects_a_difference():
    ref = [torch.tensor([1.0, 2.0])]
    assert _check(ref, [np.array([1.0, 2.0])], 1e-4, 0.5, "x") == (0.0, 1e-4 + 0.5 * 2.0)
    with pytest.raises(PrunekitError, match=r"x differs from PyTorch by 0.5 \(max abs\), above the tolerance"):
        _check(ref, [np.array([1.0, 2.5])], 1e-4, 1e-4, "x")
    with pytest.raises(PrunekitError, match="returned 2 output"):
        _check(ref, [np.zeros(2), np.zeros(2)], 1e-4, 0.0, "x")
