"""digits_cnn / mnist1d_cnn: build, train, cache round trip, retrain on corruption, determinism; the loops."""

from __future__ import annotations

import json
from dataclasses import replace

import pytest
import torch
from torch import nn
from torch.nn.utils import parametrize
from torch.utils.data import TensorDataset

from prunekit.data import (
    DIGITS_RECIPE,
    MNIST1D_RECIPE,
    CacheWarning,
    digits_cnn,
    evaluate_classifier,
    load_dataset,
    mnist1d_cnn,
    train_classifier,
)
from prunekit.data.cache import sha256_file, verify_artefact
from prunekit.data.models import classifiers
from prunekit.errors import PrunekitError

QUICK = replace(DIGITS_RECIPE, epochs=1, widths=(4, 8), blocks=1)


def _state(model):
    return {k: v.clone() for k, v in model.state_dict().items()}


def test_fresh_models_have_the_documented_shapes():
    m = digits_cnn(pretrained=False)
    assert 30_000 < sum(p.numel() for p in m.parameters()) < 60_000
    assert m(torch.rand(3, 1, 8, 8)).shape == (3, 10)
    assert mnist1d_cnn(pretrained=False)(torch.randn(2, 1, 40)).shape == (2, 10)
    kinds = {type(mod) for mod in m.modules()}
    assert {nn.Conv2d, nn.BatchNorm2d, nn.Linear} <= kinds


def test_pretrained_trains_once_then_loads_from_cache(_private_cache, monkeypatch):
    m1 = digits_cnn(progress=False, recipe=QUICK)
    folders = [p for p in _private_cache.iterdir()]
    assert len(folders) == 1 and folders[0].name.startswith("digits_cnn-")  # not the default artefact's name
    manifest = json.loads((folders[0] / "manifest.json").read_text())
    assert manifest["recipe"]["epochs"] == 1 and manifest["data"]["split_sizes"]["test"] == 269
    assert 0.0 <= manifest["metrics"]["test_accuracy"] <= 1.0 and manifest["params"] > 0

    def must_not_train(*a, **k):
        raise AssertionError("retrained although the cache was valid")

    monkeypatch.setattr(classifiers, "_train_into", must_not_train)
    m2 = digits_cnn(progress=False, recipe=QUICK)
    assert all(torch.equal(a, b) for a, b in zip(_state(m1).values(), _state(m2).values()))
    assert not m2.training


def test_corrupt_weights_trigger_retraining(_private_cache):
    digits_cnn(progress=False, recipe=QUICK)
    (folder,) = list(_private_cache.iterdir())
    weights = folder / "model.safetensors"
    data = bytearray(weights.read_bytes())
    data[-1] ^= 0xFF
    weights.write_bytes(bytes(data))
    with pytest.warns(CacheWarning, match="checksum mismatch"):
        digits_cnn(progress=False, recipe=QUICK)
    manifest = json.loads((folder / "manifest.json").read_text())
    assert manifest["files"]["model.safetensors"] == sha256_file(weights)  # rebuilt, checksum matches again
    assert verify_artefact(folder.name, manifest["recipe"]) is not None


def test_training_is_deterministic(tmp_path, monkeypatch):
    states = []
    for i in range(2):
        monkeypatch.setenv("PRUNEKIT_CACHE_DIR", str(tmp_path / f"c{i}"))
        states.append(_state(digits_cnn(progress=False, recipe=QUICK)))
    assert all(torch.equal(states[0][k], states[1][k]) for k in states[0])


def test_mnist1d_quick_recipe_trains():
    quick = replace(MNIST1D_RECIPE, epochs=1, widths=(4,), blocks=1)
    model = mnist1d_cnn(progress=False, recipe=quick)
    assert 0.0 <= evaluate_classifier(model, load_dataset("mnist1d").test) <= 1.0


def test_bad_recipe_type_is_rejected():
    with pytest.raises(PrunekitError, match=r"recipe must be a ClassifierRecipe .* got dict"):
        digits_cnn(recipe={"epochs": 1})


class _Mask(nn.Module):
    def __init__(self, mask):
        super().__init__()
        self.register_buffer("mask", mask)

    def forward(self, w):
        return w * self.mask


def test_train_classifier_keeps_parametrized_masks_and_learns():
    torch.manual_seed(0)
    x = torch.randn(256, 6)
    y = (x[:, 0] + x[:, 1] > 0).long()
    model = nn.Sequential(nn.Linear(6, 16), nn.ReLU(), nn.Linear(16, 2))
    mask = (torch.rand(16, 6) > 0.5).float()
    parametrize.register_parametrization(model[0], "weight", _Mask(mask))
    before = model[0].parametrizations.weight.original.clone()
    history = train_classifier(model, TensorDataset(x, y), epochs=8, lr=0.05, batch_size=32, seed=0, progress=False)
    assert len(history) == 8 and history[-1] < history[0]
    assert not torch.equal(model[0].parametrizations.weight.original, before)
    assert torch.all(model[0].weight[mask == 0] == 0)
    assert evaluate_classifier(model, TensorDataset(x, y)) > 0.8


def test_evaluate_classifier_restores_mode_and_counts():
    model = nn.Linear(2, 2)
    with torch.no_grad():
        model.weight.copy_(torch.eye(2))
        model.bias.zero_()
    x = torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 0.0], [0.0, 1.0]])
    y = torch.tensor([0, 1, 1, 1])
    model.train()
    assert evaluate_classifier(model, TensorDataset(x, y), batch_size=3) == 0.75
    assert model.training


def test_loop_argument_errors():
    ds = TensorDataset(torch.randn(4, 2), torch.zeros(4, dtype=torch.long))
    with pytest.raises(PrunekitError, match=r"epochs must be a positive integer, got 0"):
        train_classifier(nn.Linear(2, 2), ds, epochs=0, lr=0.1, batch_size=2, seed=0, progress=False)
    with pytest.raises(PrunekitError, match=r"unknown augment 'flip'; valid: none, random-shift"):
        train_classifier(nn.Linear(2, 2), ds, epochs=1, lr=0.1, batch_size=2, seed=0, progress=False, augment="flip")
    with pytest.raises(PrunekitError, match=r"cannot evaluate on an empty dataset"):
        evaluate_classifier(nn.Linear(2, 2), TensorDataset(torch.zeros(0, 2), torch.zeros(0, dtype=torch.long)))


@pytest.mark.slow
def test_real_digits_cnn_reaches_97_percent_on_test():
    model = digits_cnn(progress=False)
    assert evaluate_classifier(model, load_dataset("digits").test) >= 0.97


@pytest.mark.slow
def test_real_mnist1d_cnn_reaches_85_percent_on_test():
    model = mnist1d_cnn(progress=False)
    assert evaluate_classifier(model, load_dataset("mnist1d").test) >= 0.85
