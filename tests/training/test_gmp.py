"""The `gmp` method: reaches the sparsity on schedule while training, reports val accuracy, never reads test data."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch

import prunekit
from prunekit.errors import PrunekitError
from prunekit.masks import current_mask
from prunekit.recipes import parse_recipe

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _gmp_toy import gmp_stage, toy_data, toy_model  # noqa: E402

X = torch.zeros(2, 1, 8, 8)


def _sparsity(model, name):
    return 1 - current_mask(dict(model.named_modules())[name]).float().mean().item()


def test_gmp_prunes_to_the_target_and_reports_val_accuracy_per_epoch():
    model = toy_model()
    report = prunekit.prune(model, gmp_stage(), X, data=toy_data())
    for name in ("3", "8"):  # first conv and last Linear are protected
        assert _sparsity(model, name) == pytest.approx(0.8, abs=1 / 128)
    assert current_mask(model[0]) is None and current_mask(model[10]) is None
    notes = report.stages[0]["notes"]
    summary = notes[-1]
    assert "cubic schedule to sparsity 0.8 over 36 steps (3 epochs x 12)" in summary
    accs = summary.split("val accuracy per epoch: ")[1].split(";")[0].split(", ")
    assert len(accs) == 3 and all(0.0 <= float(a) <= 1.0 for a in accs)
    assert "after BN recalibration" in summary
    # The schedule as applied (what schedule.png draws): the cubic formula at each update, ending at the target.
    from prunekit.schedules import cubic

    history = report.stages[0]["sparsity_history"]
    end = 27  # 3/4 of the 36 steps
    assert history[-1] == [end, pytest.approx(0.8)]
    for step, value in history:
        assert value == pytest.approx(cubic(step, initial=0.0, final=0.8, begin=0, end=end, frequency=1))
    assert [s for s, _ in history] == sorted(s for s, _ in history)


def test_long_histories_are_thinned_evenly_keeping_the_ends():
    from prunekit.api import _thin

    points = [(i, i / 1000) for i in range(1000)]
    thin = _thin(points, most=50)
    assert len(thin) == 50 and thin[0] == [0, 0.0] and thin[-1] == [999, 0.999]
    assert _thin(points[:10], most=50) == [[i, i / 1000] for i in range(10)]


def test_gmp_is_deterministic_for_a_seed_and_changes_with_it():
    runs = []
    for seed in (0, 0, 1):
        model = toy_model()
        prunekit.prune(model, gmp_stage(epochs=1, seed=seed), X, data=toy_data())
        runs.append({k: v.clone() for k, v in model.state_dict().items()})
    assert all(torch.equal(runs[0][k], runs[1][k]) for k in runs[0])
    assert not torch.equal(runs[0]["3.parametrizations.weight.0.mask"], runs[2]["3.parametrizations.weight.0.mask"])


def test_gmp_needs_data_and_a_checkpoint_folder():
    with pytest.raises(PrunekitError, match=r"gmp fine-tunes the model and needs data: pass prunekit.prune"):
        prunekit.prune(toy_model(), gmp_stage(), X)
    with pytest.raises(PrunekitError, match="needs data with .train and .val splits"):
        prunekit.prune(toy_model(), gmp_stage(), X, data=[1, 2])
    with pytest.raises(PrunekitError, match="checkpoint_every needs a folder: set checkpoint_dir"):
        gmp_stage(checkpoint_every=5)


def test_gmp_from_a_recipe():
    recipe = parse_recipe({"stages": [{"method": "gmp", "sparsity": 0.9, "schedule": {"kind": "linear", "frequency": 4},
                                       "epochs": 1}]})
    cfg = recipe.stages[0].config
    assert cfg.schedule.kind == "linear" and cfg.schedule.frequency == 4 and cfg.schedule.end is None
    with pytest.raises(PrunekitError, match="unknown schedule kind 'cubik'.*cubic"):
        parse_recipe({"stages": [{"method": "gmp", "sparsity": 0.9, "schedule": {"kind": "cubik"}}]})
