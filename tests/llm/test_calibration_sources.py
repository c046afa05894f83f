"""Calibration sources: {dataset | file} in the recipe, data passed to prune(), and their errors."""

from __future__ import annotations

import pytest
import torch
from _llm_models import tiny_llama_gqa

import prunekit
from prunekit.api import stage
from prunekit.errors import PrunekitError
from prunekit.llm.calibration import calibration_samples
from prunekit.llm.config import CalibrationConfig


class CharTokenizer:
    """A stand-in for a Hugging Face tokenizer: one token per character, ids below the tiny models' vocabulary."""

    def __call__(self, text, **_kwargs):
        return {"input_ids": [ord(c) % 64 for c in text]}

    def encode(self, text):
        return self(text)["input_ids"]


def _ids(text):
    return [ord(c) % 64 for c in text]


def test_file_source_windows_come_from_the_file(tmp_path):
    text = "".join(chr(65 + (i * 7) % 26) for i in range(400))
    path = tmp_path / "calib.txt"
    path.write_text(text)
    cfg = CalibrationConfig(file=str(path), nsamples=5, seq_len=16, seed=3)
    rows = calibration_samples(tiny_llama_gqa(), cfg, None, CharTokenizer())
    assert len(rows) == 5
    stream = _ids(text)
    for row in rows:
        window = row["input_ids"].reshape(-1).tolist()
        assert len(window) == 16
        assert any(stream[s : s + 16] == window for s in range(len(stream) - 15))
    again = calibration_samples(tiny_llama_gqa(), cfg, None, CharTokenizer())
    assert all(torch.equal(a["input_ids"], b["input_ids"]) for a, b in zip(rows, again))


def test_explicit_file_wins_over_example_inputs(tmp_path, token_ids):
    path = tmp_path / "c.txt"
    path.write_text("z" * 100)
    rows = calibration_samples(tiny_llama_gqa(), CalibrationConfig(file=str(path), nsamples=2, seq_len=8),
                               token_ids, CharTokenizer())
    assert rows[0]["input_ids"].reshape(-1).tolist() == _ids("z" * 8)


def test_file_errors(tmp_path):
    model, tok = tiny_llama_gqa(), CharTokenizer()
    missing = tmp_path / "nope.txt"
    with pytest.raises(PrunekitError, match="calibration file .*nope.txt' does not exist"):
        calibration_samples(model, CalibrationConfig(file=str(missing), nsamples=2, seq_len=8), None, tok)
    short = tmp_path / "short.txt"
    short.write_text("x" * 20)
    with pytest.raises(PrunekitError, match=r"has 20 tokens, fewer than nsamples \* seq_len = 4 \* 8 = 32"):
        calibration_samples(model, CalibrationConfig(file=str(short), nsamples=4, seq_len=8), None, tok)


def test_calibration_config_errors():
    with pytest.raises(PrunekitError, match="one of dataset or file, got both"):
        stage("wanda", sparsity=0.5, calibration={"dataset": "shakespeare", "file": "a.txt"})
    with pytest.raises(PrunekitError, match="needs a source: set dataset .* or file"):
        stage("wanda", sparsity=0.5, calibration={"dataset": None})
    st = stage("wanda", sparsity=0.5, calibration={"file": "a.txt"})
    assert st.config.calibration.source == ("file", "a.txt")
    assert stage("wanda", sparsity=0.5).config.calibration.source == ("dataset", "shakespeare")


def test_unknown_or_non_text_dataset(token_ids):
    with pytest.raises(PrunekitError, match="unknown dataset 'shakespear'"):
        calibration_samples(tiny_llama_gqa(), CalibrationConfig(dataset="shakespear"), None, CharTokenizer())


def test_data_forms(token_ids):
    model, cfg = tiny_llama_gqa(), CalibrationConfig(nsamples=4, seq_len=8)
    listed = calibration_samples(model, cfg, None, [token_ids[0], token_ids[1:]])  # a 1-D row, then a (2, T) batch
    assert [r["input_ids"].tolist() for r in listed] == [[t.tolist()] for t in token_ids]
    mapping = calibration_samples(model, cfg, None, {"input_ids": token_ids, "attention_mask": torch.ones(3, 16)})
    assert len(mapping) == 3 and mapping[2]["attention_mask"].shape == (1, 16)
    stream = calibration_samples(model, cfg, None, torch.arange(64))
    assert len(stream) == 4 and all(r["input_ids"].shape == (1, 8) for r in stream)
    with pytest.raises(PrunekitError, match="calibration data item 1 is a float"):
        calibration_samples(model, cfg, None, [token_ids, 1.5])
    with pytest.raises(PrunekitError, match="calibration data of type float is not usable"):
        calibration_samples(model, cfg, None, 2.5)
    with pytest.raises(PrunekitError, match="the calibration text passed as data needs a tokenizer"):
        calibration_samples(model, cfg, None, "a text but no tokenizer in the model's folder")


def test_data_text_is_tokenized_by_the_models_tokenizer(monkeypatch):
    monkeypatch.setattr("prunekit.llm.calibration._model_tokenizer", lambda _m: CharTokenizer())
    model, cfg = tiny_llama_gqa(), CalibrationConfig(nsamples=2, seq_len=8)
    rows = calibration_samples(model, cfg, None, "abcdefghijklmnopqrstuvwxyz")
    assert all(r["input_ids"].reshape(-1).tolist() == list(range(r["input_ids"][0, 0], r["input_ids"][0, 0] + 8))
               for r in rows)
    with pytest.raises(PrunekitError, match=r"the calibration text passed as data has 5 tokens, fewer than .* = 16"):
        calibration_samples(model, cfg, None, "short")


def test_prune_with_data_and_with_file(tmp_path, token_ids, monkeypatch):
    model = tiny_llama_gqa()
    report = prunekit.prune(model, {"stages": [{"method": "wanda", "sparsity": 0.5,
                                                "calibration": {"nsamples": 3}}]}, data=list(token_ids))
    assert any("calibrated on 3 samples" in n for s in report.stages for n in s.get("notes", []))
    path = tmp_path / "calib.txt"
    path.write_text("to be or not to be, that is the question " * 20)
    monkeypatch.setattr("prunekit.llm.calibration._model_tokenizer", lambda _m: CharTokenizer())
    model = tiny_llama_gqa()
    report = prunekit.prune(model, {"stages": [{"method": "sparsegpt", "sparsity": 0.5, "blocksize": 8,
                                                "calibration": {"file": str(path), "nsamples": 4, "seq_len": 16}}]})
    assert sum(r.status == "pruned" for r in report.layers) == 14
