"""`head_taylor` fine-tuning distilled from the dense model: the distillation loss is the one minimised, with the
configured temperature / alpha, on the same (tokenized) inputs as the student, and the teacher's logits are the
dense model's; bad distill configs are one-line errors."""

from __future__ import annotations

import copy
from types import SimpleNamespace

import pytest
import torch

from prunekit.api import stage
from prunekit.errors import PrunekitError
from prunekit.methods.base import PruneContext
from prunekit.methods.head_taylor.method import HeadTaylorMethod
from prunekit.training import distill

transformers = pytest.importorskip("transformers")


def _spy(monkeypatch):
    """Record every distill_loss call (and the batch inputs the Distiller got) while still returning the real loss."""
    calls, inputs = [], []
    real_loss, real_forward = distill.distill_loss, distill.Distiller.loss

    def loss_spy(student_logits, teacher_logits, targets, *, temperature, alpha):
        calls.append({"teacher": teacher_logits.detach().clone(), "student": student_logits.detach().clone(),
                      "T": temperature, "alpha": alpha})
        return real_loss(student_logits, teacher_logits, targets, temperature=temperature, alpha=alpha)

    def forward_spy(self, student, x, y):
        inputs.append({k: v.clone() for k, v in x.items()} if isinstance(x, dict) else x)
        return real_forward(self, student, x, y)

    monkeypatch.setattr(distill, "distill_loss", loss_spy)
    monkeypatch.setattr(distill.Distiller, "loss", forward_spy)
    return calls, inputs


def _text_bert(tmp_path):
    from prunekit.data.tokenizer import build_char_tokenizer

    build_char_tokenizer().save_pretrained(str(tmp_path))
    torch.manual_seed(0)
    cfg = transformers.BertConfig(vocab_size=100, hidden_size=32, num_hidden_layers=1, num_attention_heads=4,
                                  intermediate_size=64, max_position_embeddings=64, num_labels=2, pad_token_id=0,
                                  hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)
    model = transformers.BertForSequenceClassification(cfg).eval()
    items = [("to be or not to be", 0), ("a horse, a horse", 1), ("exit, pursued by a bear", 0), ("now is", 1)] * 4
    return model, SimpleNamespace(train=items, val=items[:4])


def test_text_fine_tune_minimises_the_distillation_loss_against_the_dense_logits(tmp_path, monkeypatch):
    model, data = _text_bert(tmp_path)
    dense = copy.deepcopy(model)
    calls, inputs = _spy(monkeypatch)
    cfg = stage("head_taylor", heads_ratio=0.5, epochs=1.0, batch_size=4, score_batches=1, tokenizer=str(tmp_path),
                max_length=16, distill={"temperature": 3.0, "alpha": 0.7}).config
    result = HeadTaylorMethod().apply(model, cfg, PruneContext(data=data))
    steps = round(1.0 * len(data.train) / 4)
    assert len(calls) == len(inputs) == steps  # every fine-tune step, and only those, used the distillation loss
    assert {(c["T"], c["alpha"]) for c in calls} == {(3.0, 0.7)}
    for call, x in zip(calls, inputs):
        assert isinstance(x, dict) and x["input_ids"].dtype == torch.long  # tokenized text, fed as keywords
        with torch.no_grad():
            torch.testing.assert_close(call["teacher"], dense(**x).logits)  # the teacher is the dense model
    assert not torch.equal(calls[0]["student"], calls[0]["teacher"])  # the student had lost heads by then
    assert "fine-tuning distilled from the dense model (T=3, alpha=0.7)" in result.notes
    assert model.bert.encoder.layer[0].attention.self.query.out_features == 16


def test_teacher_is_ctx_dense_when_prune_kept_one(monkeypatch):
    torch.manual_seed(0)
    cfg = transformers.BertConfig(vocab_size=32, hidden_size=32, num_hidden_layers=1, num_attention_heads=4,
                                  intermediate_size=64, max_position_embeddings=16, num_labels=2,
                                  hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)
    model = transformers.BertForSequenceClassification(cfg).eval()
    other = transformers.BertForSequenceClassification(cfg).eval()  # different weights: stands for ctx.dense
    ids = torch.randint(1, 32, (16, 8), generator=torch.Generator().manual_seed(0))
    y = (ids[:, 0] > 16).long()
    data = SimpleNamespace(train=torch.utils.data.TensorDataset(ids, y), val=None)
    calls, inputs = _spy(monkeypatch)
    conf = stage("head_taylor", heads_ratio=0.5, epochs=0.5, batch_size=8, score_batches=1,
                 distill={"temperature": 2.0, "alpha": 1.0}).config
    ctx = PruneContext(data=data)
    ctx.dense = other
    HeadTaylorMethod().apply(model, conf, ctx)
    assert len(calls) == 1 and isinstance(inputs[0], tuple)  # one step; tensor inputs stay positional
    with torch.no_grad():
        torch.testing.assert_close(calls[0]["teacher"], other(*inputs[0]).logits)


@pytest.mark.parametrize("bad, message", [
    ({"temperature": 0}, "temperature"),
    ({"alpha": 1.5}, "alpha"),
    ({"hidden_mse": 0.5}, "hidden_mse 0.5 needs hidden_layers"),
    ({"tempreature": 2}, "tempreature"),
])
def test_bad_distill_config_is_a_one_line_error(bad, message):
    with pytest.raises(PrunekitError) as err:
        stage("head_taylor", heads_ratio=0.5, distill=bad)
    text = str(err.value)
    assert message in text and "\n" not in text.strip()
