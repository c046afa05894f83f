"""`gmp` (and `movement`, on the same loop) with `distill:`: the loss is the distillation loss against the dense
model, and a resumed run (handed a differently initialised model) ends with the same masks and weights as an
uninterrupted one."""

from __future__ import annotations

import copy
import sys
from pathlib import Path

import pytest
import torch

import prunekit
from prunekit.errors import PrunekitError
from prunekit.training.finetune_loop import TEACHER_FILE, Batches
from prunekit.training.pruner import Pruner

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _gmp_toy import (  # noqa: E402
    gmp_stage,
    interrupted_run,
    movement_stage,
    spy_distill_loss,
    toy_data,
    toy_model,
)

X = torch.zeros(2, 1, 8, 8)
DISTILL = {"temperature": 3.0, "alpha": 0.7}


def _state(model):
    return {k: v.clone() for k, v in model.state_dict().items()}


@pytest.mark.parametrize("make_stage", [gmp_stage, movement_stage], ids=["gmp", "movement"])
def test_the_loss_is_the_distillation_loss_from_the_dense_model(monkeypatch, make_stage):
    calls = spy_distill_loss(monkeypatch)
    model, data = toy_model(), toy_data()
    dense = copy.deepcopy(model).eval()
    report = prunekit.prune(model, make_stage(epochs=1, distill=DISTILL), X, data=data)
    assert len(calls) == 12  # one per optimizer step: 192 samples // 16
    assert all(c[2] == 3.0 and c[3] == 0.7 for c in calls)
    x, y = Batches(data.train, 16, 0, torch.device("cpu")).get(0, 0)  # the run's first batch
    with torch.no_grad():
        assert torch.equal(calls[0][0], dense(x)) and torch.equal(calls[0][1], y)
        # later steps still use the dense teacher, not the model being pruned
        x5, _ = Batches(data.train, 16, 0, torch.device("cpu")).get(0, 5)
        assert torch.equal(calls[5][0], dense(x5))
    assert "distilled from the dense model (T=3, alpha=0.7)" in report.stages[0]["notes"]


def test_distill_changes_the_training():
    plain, distilled = toy_model(), toy_model()
    prunekit.prune(plain, gmp_stage(epochs=1), X, data=toy_data())
    prunekit.prune(distilled, gmp_stage(epochs=1, distill=DISTILL), X, data=toy_data())
    assert not torch.equal(plain[8].weight, distilled[8].weight)


def test_resume_with_distill_matches_an_uninterrupted_run(tmp_path, monkeypatch):
    ckpt = tmp_path / "run"
    stage = gmp_stage(distill=DISTILL, checkpoint_every=4, checkpoint_dir=str(ckpt))
    interrupted_run(monkeypatch, Pruner, 14, stage)
    assert (ckpt / TEACHER_FILE).is_file() and (ckpt / "step-00000012").is_dir()

    # The resumed run is handed a differently initialised model: the student comes from the checkpoint and the
    # teacher from teacher.safetensors, so the result must not depend on it.
    stranger = toy_model()
    torch.manual_seed(123)
    for p in stranger.parameters():
        torch.nn.init.normal_(p)
    report = prunekit.prune(stranger, gmp_stage(distill=DISTILL, checkpoint_every=4, resume_dir=str(ckpt)), X,
                            data=toy_data())
    notes = report.stages[0]["notes"]
    assert any("distillation teacher restored from" in n for n in notes)
    assert any("at step 12 of 36" in n for n in notes)

    straight = toy_model()
    report2 = prunekit.prune(straight, gmp_stage(distill=DISTILL), X, data=toy_data())
    a, b = _state(stranger), _state(straight)
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k
    assert notes[-1] == report2.stages[0]["notes"][-1]  # same val accuracies


def test_resuming_with_distill_needs_the_saved_teacher(tmp_path, monkeypatch):
    ckpt = tmp_path / "run"
    interrupted_run(monkeypatch, Pruner, 6, gmp_stage(checkpoint_every=4, checkpoint_dir=str(ckpt)))
    with pytest.raises(PrunekitError, match=r"resuming with distill, but .*teacher.safetensors is missing"):
        prunekit.prune(toy_model(), gmp_stage(distill=DISTILL, resume_dir=str(ckpt)), X, data=toy_data())


def test_bad_distill_settings_are_one_line_errors():
    with pytest.raises(PrunekitError, match="temperatur"):
        gmp_stage(distill={"temperatur": 2})
    with pytest.raises(PrunekitError, match="hidden_mse 0.5 needs hidden_layers"):
        gmp_stage(distill={"hidden_mse": 0.5})
