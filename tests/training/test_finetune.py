"""The `finetune` stage: sparsity kept exactly (masks and stored weights), accuracy recovered on digits, distillation
from the dense model of the run, resume, and one-line config errors."""

from __future__ import annotations

import copy
import sys
from pathlib import Path

import pytest
import torch

import prunekit
import prunekit.training.distill as distill_mod
from prunekit.api import stage
from prunekit.errors import PrunekitError
from prunekit.masks import current_mask, masked_modules
from prunekit.training.finetune_loop import Batches
from prunekit.training.bn import recalibrate_batchnorm

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _gmp_toy import toy_data, toy_model  # noqa: E402

X = torch.zeros(2, 1, 8, 8)
MAG = {"method": "magnitude", "sparsity": 0.8}


def _ft(**kw):
    return {"method": "finetune", "epochs": 2, "batch_size": 16, "lr": 3e-3, **kw}


def _masks(model):
    return {name: current_mask(module, t) for name, module, t in masked_modules(model)}


def test_finetune_after_magnitude_keeps_the_masks_and_zeros_exactly():
    pruned = toy_model()
    prunekit.prune(pruned, {"stages": [MAG]}, X)
    model = toy_model()
    report = prunekit.prune(model, {"stages": [MAG, _ft()]}, X, data=toy_data())
    before, after = _masks(pruned), _masks(model)
    assert before.keys() == after.keys() and len(after) == 2
    for name, keep in after.items():
        assert torch.equal(keep, before[name]), name
        module = dict(model.named_modules())[name]
        assert 1 - keep.float().mean().item() == pytest.approx(0.8, abs=1 / 128)
        assert not module.weight[~keep].any()  # effective weights
        assert not module.parametrizations.weight.original[~keep].any()  # stored weights too
        assert not torch.equal(module.weight, dict(pruned.named_modules())[name].weight)  # it did train
    notes = report.stages[1]["notes"]
    assert "fine-tuned 24 steps (2 epochs x 12); masked sparsity" in notes[-1]
    assert "(was" not in notes[-1]
    assert report.target_sparsity == pytest.approx(0.8)  # a trailing finetune keeps the pruning stage's target


def test_finetune_recovers_accuracy_on_digits():
    from prunekit.data import digits_cnn, evaluate_classifier, load_dataset

    data = load_dataset("digits")
    baseline = digits_cnn(progress=False)
    prunekit.prune(baseline, {"stages": [{"method": "magnitude", "sparsity": 0.9}]}, X)
    batches = Batches(data.train, 64, 0, torch.device("cpu"))
    recalibrate_batchnorm(baseline, (batches.get(0, b)[0] for b in range(batches.per_epoch)))  # a fair baseline
    tuned = digits_cnn(progress=False)
    prunekit.prune(tuned, {"stages": [{"method": "magnitude", "sparsity": 0.9},
                                      {"method": "finetune", "epochs": 2, "lr": 3e-3}]}, X, data=data)
    acc0, acc1 = evaluate_classifier(baseline, data.val), evaluate_classifier(tuned, data.val)
    assert acc1 > acc0 + 0.05, (acc0, acc1)


def test_distill_uses_the_dense_model_of_the_run(monkeypatch):
    seen = []
    real = distill_mod.distill_loss

    def spy(s, t, y, *, temperature, alpha):
        seen.append(t.detach().clone())
        return real(s, t, y, temperature=temperature, alpha=alpha)

    monkeypatch.setattr(distill_mod, "distill_loss", spy)
    model, data = toy_model(), toy_data()
    dense = copy.deepcopy(model).eval()
    report = prunekit.prune(model, {"stages": [MAG, _ft(epochs=1, distill={"temperature": 2})]}, X, data=data)
    assert len(seen) == 12
    x, _ = Batches(data.train, 16, 0, torch.device("cpu")).get(0, 0)
    with torch.no_grad():
        assert torch.equal(seen[0], dense(x))  # the dense model, not the magnitude-pruned one entering finetune
    assert "distilled from the dense model (T=2, alpha=0.9)" in report.stages[1]["notes"]


def test_distill_as_the_first_stage_says_whose_the_teacher_is():
    report = prunekit.prune(toy_model(), {"stages": [_ft(epochs=1, distill={})]}, X, data=toy_data())
    assert any("the teacher is the model as it entered finetune" in n for n in report.stages[0]["notes"])


def test_finetune_resume_matches_an_uninterrupted_run(tmp_path, monkeypatch):
    import prunekit.training.finetune_loop as loop

    real = loop.zero_pruned
    calls = {"n": 0}

    def crash(model, opt=None):
        calls["n"] += 1
        if calls["n"] == 12:  # one call before the loop, then one per step: dies at step 11
            raise KeyboardInterrupt
        return real(model, opt)

    ckpt = str(tmp_path / "ft")
    recipe = {"stages": [MAG, _ft(checkpoint_every=4, checkpoint_dir=ckpt, distill={"alpha": 0.5})]}
    monkeypatch.setattr(loop, "zero_pruned", crash)
    with pytest.raises(KeyboardInterrupt):
        prunekit.prune(toy_model(), recipe, X, data=toy_data())
    monkeypatch.setattr(loop, "zero_pruned", real)
    resumed = toy_model()
    recipe["stages"][1] = _ft(checkpoint_every=4, resume_dir=ckpt, distill={"alpha": 0.5})
    report = prunekit.prune(resumed, recipe, X, data=toy_data())
    assert any("at step 8 of 24" in n for n in report.stages[1]["notes"])
    straight = toy_model()
    report2 = prunekit.prune(straight, {"stages": [MAG, _ft(distill={"alpha": 0.5})]}, X, data=toy_data())
    a, b = resumed.state_dict(), straight.state_dict()
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert report.stages[1]["notes"][-1] == report2.stages[1]["notes"][-1]


def test_bad_finetune_configs_are_one_line_errors():
    with pytest.raises(PrunekitError, match=r"finetune fine-tunes the model and needs data"):
        prunekit.prune(toy_model(), {"stages": [_ft()]}, X)
    with pytest.raises(PrunekitError, match="finetune needs data with .train and .val splits"):
        prunekit.prune(toy_model(), {"stages": [_ft()]}, X, data=[1, 2])
    with pytest.raises(PrunekitError, match="checkpoint_every needs a folder"):
        stage("finetune", checkpoint_every=3)
    for bad, text in (({"sparsity": 0.5}, "sparsity"), ({"epochs": 0}, "epochs"),
                      ({"distill": {"alpha": 2}}, "alpha")):
        with pytest.raises(PrunekitError, match=text) as err:
            stage("finetune", **bad)
        assert "\n" not in str(err.value).strip(), str(err.value)
