"""The perplexity protocol: window bookkeeping; a uniform model scores V; a bigram module matches the baseline."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torch import nn

from prunekit.data import bigram_perplexity, perplexity, unigram_perplexity
from prunekit.data.perplexity import target_mask, window_spans
from prunekit.errors import PrunekitError


class Uniform(nn.Module):
    """Logits all equal: every token has probability 1/V."""

    def __init__(self, vocab):
        super().__init__()
        self.vocab = vocab

    def forward(self, input_ids):
        return torch.zeros(*input_ids.shape, self.vocab)


class Bigram(nn.Module):
    """An exact bigram model as a 'language model': logits = log P(next | current token)."""

    def __init__(self, logp):
        super().__init__()
        self.register_buffer("logp", torch.as_tensor(logp, dtype=torch.float32))

    def forward(self, input_ids):
        return self.logp[input_ids]


@pytest.mark.parametrize("n,seq_len,stride", [(1000, 256, 256), (1000, 64, 16), (257, 256, 256), (10, 4, 3)])
def test_uniform_model_scores_vocab_size(n, seq_len, stride):
    ids = torch.randint(0, 37, (n,), generator=torch.Generator().manual_seed(0))
    assert perplexity(Uniform(37), ids, seq_len=seq_len, stride=stride, batch_size=3) == pytest.approx(37, rel=1e-6)


def test_non_overlapping_windows_score_all_but_each_first_token():
    spans = window_spans(600, 256, 256)
    assert spans == [(0, 256, 1), (256, 512, 1), (512, 600, 1)]
    assert target_mask(600, 256, 256).sum() == 600 - math.ceil(600 / 256)


def test_overlapping_windows_score_every_token_once():
    mask = target_mask(1000, 64, 16)
    assert mask.sum() == 999 and not mask[0]
    spans = window_spans(1000, 64, 16)
    assert spans[1] == (16, 80, 48) and spans[-1][1] == 1000


def test_model_and_bigram_baseline_agree_on_the_same_positions():
    gen = np.random.default_rng(0)
    train = gen.integers(0, 11, 5000)
    evals = gen.integers(0, 11, 777)
    counts = np.bincount(train[:-1] * 11 + train[1:], minlength=121).reshape(11, 11) + 0.5
    logp = np.log(counts / counts.sum(1, keepdims=True))
    for seq_len, stride in [(50, 50), (50, 10)]:
        ours = perplexity(Bigram(logp), torch.as_tensor(evals), seq_len=seq_len, stride=stride)
        base = bigram_perplexity(train, evals, 11, alpha=0.5, seq_len=seq_len, stride=stride)
        assert ours == pytest.approx(base, rel=1e-5)


def test_unigram_baseline_by_hand():
    train = np.array([0, 0, 0, 1])
    evals = np.array([1, 0, 1])  # scored with seq_len 256: tokens 1 and 2
    p = np.array([3 + 1, 1 + 1]) / 6  # add-one
    expected = math.exp(-(math.log(p[0]) + math.log(p[1])) / 2)
    assert unigram_perplexity(train, evals, 2) == pytest.approx(expected)


def test_tokenizer_path_matches_ids_path():
    class CharTok:
        def __call__(self, text, **kwargs):
            return {"input_ids": [ord(c) - 97 for c in text]}

    text = "abcabcabcaaabbbccc" * 5
    ids = torch.tensor([ord(c) - 97 for c in text])
    m = Bigram(torch.log_softmax(torch.randn(3, 3), -1))
    assert perplexity(m, CharTok(), text, seq_len=8, stride=8) == perplexity(m, ids, seq_len=8, stride=8)


def test_argument_errors():
    ids = torch.arange(10)
    with pytest.raises(PrunekitError, match=r"stride must be an integer from 1 to seq_len=8, got 9"):
        perplexity(Uniform(10), ids, seq_len=8, stride=9)
    with pytest.raises(PrunekitError, match=r"seq_len must be an integer >= 2, got 1"):
        perplexity(Uniform(10), ids, seq_len=1, stride=1)
    with pytest.raises(PrunekitError, match=r"at least 2 tokens of text, got 1"):
        perplexity(Uniform(10), torch.tensor([3]))
    with pytest.raises(PrunekitError, match=r"got a tokenizer but no text"):
        perplexity(Uniform(10), lambda t, **k: {"input_ids": [1, 2]})
    with pytest.raises(PrunekitError, match=r"either token ids, or a tokenizer and text"):
        perplexity(Uniform(10), ids, "some text")
    with pytest.raises(PrunekitError, match=r"eval token ids must lie in \[0, 3\), got \[0, 9\]"):
        bigram_perplexity([0, 1], np.arange(10), 3)
