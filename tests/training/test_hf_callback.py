"""PrunekitCallback drives the Pruner: through its hooks in a plain loop, and inside a real `transformers.Trainer`
run on a random tiny BERT (that one needs `accelerate`, which Trainer requires; skipped without it)."""

from __future__ import annotations

import pytest
import torch

transformers = pytest.importorskip("transformers")

from prunekit.training.hf_callback import PrunekitCallback  # noqa: E402
from prunekit.training.pruner import Pruner  # noqa: E402


class _Toy(torch.utils.data.Dataset):
    def __init__(self, n: int = 32) -> None:
        gen = torch.Generator().manual_seed(0)
        self.ids = torch.randint(5, 100, (n, 8), generator=gen)
        self.labels = (self.ids[:, 0] > 50).long()

    def __len__(self) -> int:
        return len(self.ids)

    def __getitem__(self, i: int) -> dict:
        return {"input_ids": self.ids[i], "labels": self.labels[i]}


def _bert():
    torch.manual_seed(0)
    cfg = transformers.BertConfig(vocab_size=100, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                                  intermediate_size=64, max_position_embeddings=16, num_labels=2)
    return transformers.BertForSequenceClassification(cfg)


def _pruner(model):
    return Pruner(model, {"sparsity": 0.8, "targets": ["re:.*encoder\\.layer\\.\\d+\\.(intermediate|output)\\.dense"],
                            "schedule": {"kind": "cubic", "frequency": 2}})


def _check(model, pruner, optimizer):
    assert pruner.phase == "finalized" and pruner.last_step == 8
    assert pruner.total_steps == 8 and [s for s, _ in pruner.history] == [2, 4, 6]  # end = 3/4 of 8 steps
    assert len(pruner.layers) == 4
    for name, keep in pruner.masks().items():
        assert 1 - keep.float().mean().item() == pytest.approx(0.8, abs=1e-3), name
        original = dict(model.named_modules())[name].parametrizations.weight.original
        assert torch.all(original[~keep] == 0)
        assert torch.all(optimizer.state[original]["exp_avg"][~keep] == 0)


def test_callback_hooks_in_a_plain_loop():
    model = _bert()
    pruner = _pruner(model)
    callback = PrunekitCallback(pruner)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=0.1)
    state, control = transformers.TrainerState(max_steps=8), transformers.TrainerControl()
    callback.on_train_begin(None, state, control, optimizer=opt)
    data = _Toy()
    for step in range(8):
        batch = data[slice(step % 4 * 8, step % 4 * 8 + 8)]
        loss = model(**batch).loss
        opt.zero_grad()
        loss.backward()
        opt.step()
        state.global_step = step + 1
        callback.on_step_end(None, state, control, optimizer=opt)
    callback.on_train_end(None, state, control)
    _check(model, pruner, opt)


def test_trainer_callback_prunes_on_schedule(tmp_path):
    pytest.importorskip("accelerate")
    model = _bert()
    pruner = _pruner(model)
    args = transformers.TrainingArguments(output_dir=str(tmp_path), max_steps=8, per_device_train_batch_size=8,
                                          learning_rate=1e-3, weight_decay=0.1, report_to=[], save_strategy="no",
                                          logging_strategy="no", use_cpu=True, disable_tqdm=True)
    trainer = transformers.Trainer(model=model, args=args, train_dataset=_Toy(), callbacks=[PrunekitCallback(pruner)])
    trainer.train()
    _check(model, pruner, trainer.optimizer)
