"""The `movement` recipe stage on the shared fine-tune loop: checkpoint / resume to the same final masks and
weights, BatchNorm recalibration, the scores' own optimizer group, soft mode's regulariser in the loss, and
`prunekit prune --resume` treating it as a training stage (distillation: tests/training/test_gmp_distill.py)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch

import prunekit
from prunekit.cli.commands import _with_resume
from prunekit.errors import PrunekitError
from prunekit.masks import current_mask
from prunekit.recipes import parse_recipe
from prunekit.training.finetune_loop import TEACHER_FILE
from prunekit.training.movement import MovementPruner, MovementScores

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _gmp_toy import interrupted_run, movement_stage, toy_data, toy_model  # noqa: E402

X = torch.zeros(2, 1, 8, 8)
DISTILL = {"temperature": 3.0, "alpha": 0.7}


def _state(model):
    return {k: v.clone() for k, v in model.state_dict().items()}


@pytest.mark.parametrize("extra", [
    {"distill": DISTILL},
    {"mode": "soft", "sparsity": None, "regularization": 0.05, "threshold": 0.05, "score_init": "constant"},
], ids=["hard-distill", "soft"])
def test_resume_matches_an_uninterrupted_run(tmp_path, monkeypatch, extra):
    ckpt = tmp_path / "run"
    stage = movement_stage(checkpoint_every=4, checkpoint_dir=str(ckpt), **extra)
    interrupted_run(monkeypatch, MovementPruner, 14, stage)
    assert (ckpt / "step-00000012").is_dir()
    assert (ckpt / TEACHER_FILE).is_file() == ("distill" in extra)

    stranger = toy_model()  # a differently initialised model: everything must come from the checkpoint
    torch.manual_seed(123)
    for p in stranger.parameters():
        torch.nn.init.normal_(p)
    report = prunekit.prune(stranger, movement_stage(checkpoint_every=4, resume_dir=str(ckpt), **extra), X,
                            data=toy_data())
    notes = report.stages[0]["notes"]
    assert any("at step 12 of 36" in n for n in notes)

    straight = toy_model()
    report2 = prunekit.prune(straight, movement_stage(**extra), X, data=toy_data())
    a, b = _state(stranger), _state(straight)
    assert a.keys() == b.keys() and any(k.endswith(".0.mask") for k in a)
    for k in a:
        assert torch.equal(a[k], b[k]), k
    assert notes[-1] == report2.stages[0]["notes"][-1]  # same val accuracies, same summary
    assert not any(isinstance(m, MovementScores) for m in stranger.modules())


def test_bn_is_recalibrated_and_scores_get_their_own_learning_rate(monkeypatch):
    groups = []
    real = torch.optim.AdamW.__init__

    def spy(self, params, *a, **kw):
        groups.append([(len(g["params"]), g.get("lr"), g.get("weight_decay")) for g in params])
        real(self, params, *a, **kw)

    monkeypatch.setattr(torch.optim.AdamW, "__init__", spy)
    model = toy_model()
    report = prunekit.prune(model, movement_stage(epochs=1, weight_decay=0.01), X, data=toy_data())
    # the scored layers (first conv and the head are protected) have their scores in group 2
    n_scores = sum(1 for r in report.layers if r.status == "pruned")
    assert groups == [[(len(list(toy_model().parameters())), 3e-3, 0.01), (n_scores, 5e-2, 0.0)]]
    notes = report.stages[0]["notes"]
    assert "BatchNorm statistics re-estimated on 12 train batches" in notes
    assert "after BN recalibration" in notes[-1]
    for row in report.layers:
        if row.status == "pruned":
            keep = current_mask(dict(model.named_modules())[row.name])
            assert 1 - keep.float().mean().item() == pytest.approx(0.8, abs=1e-3)


def test_cli_resume_counts_movement_as_a_training_stage(tmp_path):
    recipe = parse_recipe({"stages": [{"method": "magnitude", "sparsity": 0.5}, {"method": "movement",
                                                                                  "sparsity": 0.8}]})
    out = _with_resume(recipe, str(tmp_path))
    cfg = out.stages[1].config
    assert cfg.resume_dir == str(tmp_path / "stage-1") and cfg.checkpoint_every == 50


def test_state_dict_round_trip_and_its_errors():
    model, data = toy_model(), toy_data()
    pruner = MovementPruner(model, {"sparsity": 0.8, "schedule": {"end": 6}}, total_steps=8).prepare()
    opt = torch.optim.AdamW(pruner.param_groups(1e-3, 5e-2))
    x, y = data.train.tensors[0][:32], data.train.tensors[1][:32]
    for t in range(1, 4):
        loss = torch.nn.functional.cross_entropy(model(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        pruner.step(t)
    state = pruner.state_dict()
    other_model = toy_model()
    other = MovementPruner(other_model, {"sparsity": 0.8, "schedule": {"end": 6}}, total_steps=8)
    other.load_state_dict(state)
    other_model.load_state_dict(model.state_dict())
    assert other.phase == "prepared" and other.last_step == 3 and other.applied == pruner.applied
    assert all(torch.equal(other.masks()[n], m) for n, m in pruner.masks().items())
    with pytest.raises(PrunekitError, match="made with another config; use the same one"):
        MovementPruner(toy_model(), {"sparsity": 0.5, "schedule": {"end": 6}}, total_steps=8).load_state_dict(state)
    with pytest.raises(PrunekitError, match="state format 7 is not 1"):
        MovementPruner(toy_model(), {"sparsity": 0.8}).load_state_dict({**state, "format": 7})
    pruner.finalize()
    with pytest.raises(PrunekitError, match="a finalized movement pruning state cannot be resumed"):
        MovementPruner(toy_model(), {"sparsity": 0.8, "schedule": {"end": 6}},
                       total_steps=8).load_state_dict(pruner.state_dict())
