"""A tiny deterministic classification task and CNN for gmp / resume tests (shared with the killed subprocess)."""

from __future__ import annotations

import types

import torch
from torch import nn
from torch.utils.data import Dataset, TensorDataset


class NeverRead(Dataset):
    """A test split that fails the test if anything reads it."""

    def __len__(self) -> int:
        return 8

    def __getitem__(self, i: int):
        raise AssertionError("the test split was read")


def toy_data(n: int = 192) -> types.SimpleNamespace:
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(n + 64, 1, 8, 8, generator=gen)
    y = (x[:, 0, :4].sum((1, 2)) > x[:, 0, 4:].sum((1, 2))).long() + 2 * (x[:, 0, :, :4].mean((1, 2)) > 0).long()
    return types.SimpleNamespace(train=TensorDataset(x[:n], y[:n]), val=TensorDataset(x[n:], y[n:]), test=NeverRead())


def toy_model() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(1, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(),
        nn.Conv2d(8, 16, 3, padding=1), nn.BatchNorm2d(16), nn.ReLU(), nn.Dropout(0.1),
        nn.Flatten(), nn.Linear(16 * 64, 32), nn.ReLU(), nn.Linear(32, 4),
    )


def gmp_stage(**kw):
    from prunekit.api import stage

    return stage("gmp", **{"sparsity": 0.8, "epochs": 3, "batch_size": 16, "lr": 3e-3, **kw})


def movement_stage(**kw):
    from prunekit.api import stage

    return stage("movement", **{"sparsity": 0.8, "epochs": 3, "batch_size": 16, "lr": 3e-3, "score_lr": 5e-2,
                                "schedule": {"begin": 2}, **kw})


class Stop(Exception):
    """Raised inside a pruner's step to stop a run as a kill would."""


def interrupted_run(monkeypatch, pruner_cls, at: int, stage) -> None:
    """Run `stage` on the toy task and crash it inside `pruner_cls.step(at)`, as a killed run would stop."""
    import pytest

    import prunekit

    real_step = pruner_cls.step

    def crash(self, step):
        if step == at:
            raise Stop
        return real_step(self, step)

    monkeypatch.setattr(pruner_cls, "step", crash)
    with pytest.raises(Stop):
        prunekit.prune(toy_model(), stage, torch.zeros(2, 1, 8, 8), data=toy_data())
    monkeypatch.setattr(pruner_cls, "step", real_step)


def spy_distill_loss(monkeypatch) -> list:
    """Record (teacher logits, targets, temperature, alpha) of every distillation loss computed from now on."""
    import prunekit.training.distill as distill_mod

    calls = []
    real = distill_mod.distill_loss

    def spy(s, t, y, *, temperature, alpha):
        calls.append((t.detach().clone(), y.clone(), temperature, alpha))
        return real(s, t, y, temperature=temperature, alpha=alpha)

    monkeypatch.setattr(distill_mod, "distill_loss", spy)
    return calls
