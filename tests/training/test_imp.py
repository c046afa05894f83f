"""Lottery tickets (IMP): exact rewinding, exact sparsity per round, the random re-init control, errors."""

from __future__ import annotations

import copy
from types import SimpleNamespace

import pytest
import torch
from torch import nn
from torch.utils.data import TensorDataset

import prunekit
import prunekit.training.imp as imp_mod
from prunekit.api import stage
from prunekit.masks import current_mask
from prunekit.training.imp import check_imp_args, prune_remaining, run_imp
from prunekit.training.imp_loop import lr_at, restore, snapshot, step_plan, train_range

LAYERS = ["0", "2", "4"]


def _data(n: int = 192, seed: int = 0) -> SimpleNamespace:
    gen = torch.Generator().manual_seed(seed)
    centers = torch.randn(4, 8, generator=gen) * 2
    y = torch.randint(0, 4, (3 * n,), generator=gen)
    x = centers[y] + torch.randn(3 * n, 8, generator=gen)
    parts = [TensorDataset(x[i * n:(i + 1) * n], y[i * n:(i + 1) * n]) for i in range(3)]
    return SimpleNamespace(train=parts[0], val=parts[1], test=parts[2])


def _mlp(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(8, 32), nn.ReLU(), nn.Linear(32, 32), nn.ReLU(), nn.Linear(32, 4))


KW = dict(epochs=1, batch_size=32, protect_first=False, protect_last=False, min_density=0.0)


def _masked(model: nn.Module) -> dict[str, torch.Tensor]:
    return {n: current_mask(m) for n, m in model.named_modules() if current_mask(m) is not None}


def test_restore_puts_back_saved_weights_exactly_and_zeros_pruned_entries():
    data = _data()
    model = _mlp()
    saved = snapshot(model)
    plan = step_plan(len(data.train), epochs=2, batch_size=32, seed=0)
    train_range(model, data.train, plan, start=0, lr=1e-2, weight_decay=0.0)
    prune_remaining(model, LAYERS, 0.5)
    masks = _masked(model)
    restore(model, saved)
    assert _masked(model).keys() == masks.keys()
    for name, keep in masks.items():
        layer = dict(model.named_modules())[name]
        original = layer.parametrizations.weight.original
        assert torch.equal(original[keep], saved[f"{name}.weight"][keep])
        assert torch.equal(current_mask(layer), keep)
        assert not original[~keep].any() and not layer.weight[~keep].any()
    assert torch.equal(dict(model.named_modules())["0"].bias, saved["0.bias"])


@pytest.mark.parametrize("rewind", ["init", 3])
def test_every_round_starts_from_the_rewind_point(monkeypatch, rewind):
    data, model = _data(), _mlp()
    init = copy.deepcopy(model)
    k = 0 if rewind == "init" else rewind
    expected = snapshot(init)
    if k:  # an independent run of the first k steps of the same plan
        plan = step_plan(len(data.train), epochs=1, batch_size=32, seed=0)
        train_range(init, data.train, plan, start=0, stop=k, lr=4e-3, weight_decay=5e-4)
        expected = snapshot(init)
    starts = []

    def spy(m, *args, start, **kw):
        if start == k and m is model and _masked(m):
            starts.append(({n: t.clone() for n, t in _masked(m).items()}, snapshot(m)))
        return train_range(m, *args, start=start, **kw)

    monkeypatch.setattr(imp_mod, "train_range", spy)
    run_imp(model, data, rounds=2, prune_per_round=0.5, rewind=rewind, control=False, **KW)
    assert len(starts) == 2
    for masks, state in starts:
        for name, keep in masks.items():
            w = state[f"{name}.weight"]
            assert torch.equal(w[keep], expected[f"{name}.weight"][keep])
            assert not w[~keep].any()
        assert torch.equal(state["2.bias"], expected["2.bias"])


@pytest.mark.parametrize("p", [0.2, 0.5])
def test_sparsity_after_r_rounds_is_one_minus_one_minus_p_to_the_r(p):
    data, model = _data(), _mlp()
    res = run_imp(model, data, rounds=3, prune_per_round=p, control=False, **KW)
    units = sum(m.weight.numel() for m in model if isinstance(m, nn.Linear))
    left = units
    assert res.rounds[0].remaining == units and res.rounds[0].sparsity == 0
    for r in res.rounds[1:]:
        left -= int(p * left + 0.5)
        assert r.remaining == left
        assert abs(r.sparsity - (1 - (1 - p) ** r.round)) <= 1.0 / units * (r.round + 1)
    zeros = sum(int((~keep).sum()) for keep in _masked(model).values())
    assert zeros == units - left
    assert all(not m.weight[~current_mask(m)].any() for m in model if isinstance(m, nn.Linear))


def test_rounds_prune_by_global_magnitude_of_the_trained_weights(monkeypatch):
    data, model = _data(), _mlp()
    before = {}

    def spy(m, layers, fraction, min_density=0.0):
        before.update({n: dict(m.named_modules())[n].weight.detach().abs().clone() for n in layers})
        return prune_remaining(m, layers, fraction, min_density)

    monkeypatch.setattr(imp_mod, "prune_remaining", spy)
    run_imp(model, data, rounds=1, prune_per_round=0.3, control=False, **KW)
    masks = _masked(model)
    kept = torch.cat([before[n][masks[n]] for n in LAYERS])
    pruned = torch.cat([before[n][~masks[n]] for n in LAYERS])
    assert pruned.max() <= kept.min()


def test_control_uses_the_same_mask_with_different_weights(monkeypatch):
    data, model = _data(), _mlp()
    calls = []

    def spy(m, *args, **kw):
        calls.append((m, {n: t.clone() for n, t in _masked(m).items()}, snapshot(m)))
        return train_range(m, *args, **kw)

    monkeypatch.setattr(imp_mod, "train_range", spy)
    res = run_imp(model, data, rounds=2, prune_per_round=0.5, control=True, **KW)
    assert len(calls) == 1 + 2 * 2
    for (t_model, t_masks, t_state), (c_model, c_masks, c_state) in (calls[1:3], calls[3:5]):
        assert t_model is model and c_model is not model
        assert t_masks.keys() == c_masks.keys() == set(LAYERS)
        for name in LAYERS:
            keep = t_masks[name]
            assert torch.equal(keep, c_masks[name])
            assert not torch.equal(t_state[f"{name}.weight"][keep], c_state[f"{name}.weight"][keep])
    assert all(r.control_val_accuracy is not None for r in res.rounds[1:])
    assert res.rounds[0].control_val_accuracy is None


def test_control_needs_reset_parameters_or_model_fn():
    class Scale(nn.Module):
        def __init__(self):
            super().__init__()
            self.s = nn.Parameter(torch.ones(4))

        def forward(self, x):
            return x * self.s

    model = nn.Sequential(_mlp(), Scale())
    with pytest.raises(prunekit.PrunekitError, match=r"cannot re-initialize 1\.s .*no reset_parameters.*model_fn"):
        run_imp(model, _data(), rounds=1, prune_per_round=0.5, control=True, **KW)
    res = run_imp(nn.Sequential(_mlp(), Scale()), _data(), rounds=1, prune_per_round=0.5, control=True,
                  model_fn=lambda: nn.Sequential(_mlp(), Scale()), **KW)
    assert res.rounds[1].control_val_accuracy is not None


def test_lr_schedule_and_plan_are_replayable():
    assert step_plan(100, epochs=2, batch_size=32, seed=1) == step_plan(100, epochs=2, batch_size=32, seed=1)
    assert len(step_plan(100, epochs=2, batch_size=32, seed=1)) == 6  # 3 full batches per epoch
    assert lr_at(0, 100, 1.0) == pytest.approx(0.04)
    assert lr_at(20, 100, 1.0) == pytest.approx(1.0, abs=1e-3)
    assert lr_at(99, 100, 1.0) < 0.01


@pytest.mark.parametrize(("kwargs", "match"), [
    (dict(rounds=0), r"rounds 0 is invalid: it must be an integer >= 1"),
    (dict(prune_per_round=0.0), r"prune_per_round 0.0 is invalid: it must lie in \(0, 1\)"),
    (dict(prune_per_round=1.0), r"prune_per_round 1.0 is invalid"),
    (dict(rewind="late"), r"rewind 'late' is invalid: use 'init' .* or an integer k >= 0"),
    (dict(rewind=-2), r"rewind -2 is invalid"),
    (dict(rewind=True), r"rewind True is invalid"),
    (dict(epochs=0), r"epochs 0 is invalid"),
])
def test_check_imp_args_errors(kwargs, match):
    args = dict(rounds=2, prune_per_round=0.2, rewind="init", epochs=1) | kwargs
    with pytest.raises(prunekit.PrunekitError, match=match):
        check_imp_args(**args)


def test_run_imp_data_and_rewind_range_errors():
    with pytest.raises(prunekit.PrunekitError, match=r"rewind 6 is past the end of training: 6 steps"):
        run_imp(_mlp(), _data(), rounds=1, prune_per_round=0.5, rewind=6, **KW)
    with pytest.raises(prunekit.PrunekitError, match=r"imp needs data with train / val / test splits.*'test'"):
        run_imp(_mlp(), SimpleNamespace(train=_data().train, val=_data().val), rounds=1, prune_per_round=0.5, **KW)


def test_imp_method_from_a_recipe_stage():
    data, model = _data(), _mlp()
    st = stage("imp", rounds=2, prune_per_round=0.5, epochs=1, batch_size=32, rewind=2, protect_first=False,
               distill={"temperature": 2.0, "alpha": 0.5})
    report = prunekit.prune(model, st, torch.zeros(2, 8), data=data)
    notes = report.stages[0]["notes"]
    assert [n.split(":")[0] for n in notes] == ["round 0", "round 1", "round 2"]
    assert "control val" in notes[2]
    assert {row.name: row.status for row in report.layers}["4"] == "skipped"
    left = sum(int(current_mask(m).sum()) for m in (model[0], model[2]))
    units = 8 * 32 + 32 * 32
    assert left == units - int(0.5 * units + 0.5) - int(0.5 * (units // 2) + 0.5)
    with pytest.raises(prunekit.PrunekitError, match=r"method 'imp' trains the model: pass data="):
        prunekit.prune(_mlp(), st, torch.zeros(2, 8))


@pytest.mark.parametrize(("options", "match"), [
    (dict(rewind="late"), r"key 'rewind': 'late' is invalid: use 'init'"),
    (dict(rounds=0), r"key 'rounds': 0 is invalid"),
    (dict(prune_per_round=1.5), r"key 'prune_per_round': 1.5 is invalid"),
    (dict(distill={"hidden_mse": 1.0}), r"hidden_mse 1.0 needs hidden_layers"),
    (dict(rewnd=3), r"unknown key 'rewnd'.*Did you mean: rewind"),
])
def test_imp_config_errors(options, match):
    with pytest.raises(prunekit.PrunekitError, match=match):
        stage("imp", **options)


@pytest.mark.slow
def test_benchmark_script_prints_one_row_per_round(capsys):
    import importlib.util
    from pathlib import Path

    path = Path(__file__).resolve().parents[2] / "benchmarks" / "imp_digits.py"
    spec = importlib.util.spec_from_file_location("bench_imp_digits", path)
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    assert bench.main(["--rounds", "2", "--p", "0.5", "--epochs", "1", "--rewind", "3", "--variants", "init",
                       "k+distill"]) == 0
    rows = [line for line in capsys.readouterr().out.splitlines() if line.startswith("| ") and "%" in line]
    assert [r.split("|")[2].strip() for r in rows] == ["0.0%", "50.0%", "75.0%"]
    assert all(len(r.strip("|").split("|")) == 6 for r in rows)


def _state(model: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.clone() for k, v in model.state_dict().items()}


@pytest.mark.parametrize("distill", [False, True])
def test_imp_resumed_from_a_round_checkpoint_equals_an_uninterrupted_run(tmp_path, distill):
    from prunekit.training.distill import DistillConfig

    data = _data()
    kw = dict(KW, prune_per_round=0.4, rewind=2, distill=DistillConfig() if distill else None)
    whole_model = _mlp()
    whole = run_imp(whole_model, data, rounds=3, **kw)
    # An interrupted run: it stopped after round 2 (its last checkpoint); the rerun continues with round 3.
    first = run_imp(_mlp(), data, rounds=2, checkpoint_dir=str(tmp_path), **kw)
    assert (tmp_path / "latest.json").is_file()
    resumed_model = _mlp(seed=5)  # whatever weights it is handed: the checkpoint wins
    resumed = run_imp(resumed_model, data, rounds=3, resume_dir=str(tmp_path), **kw)
    assert [r.round for r in resumed.rounds] == [0, 1, 2, 3]
    assert resumed.rounds[:3] == first.rounds
    assert resumed.rounds == whole.rounds
    assert _masked(resumed_model).keys() == _masked(whole_model).keys()
    for name, keep in _masked(whole_model).items():
        assert torch.equal(_masked(resumed_model)[name], keep)
    a, b = _state(whole_model), _state(resumed_model)
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_imp_resume_refuses_other_settings_and_a_checkpoint_past_rounds(tmp_path):
    data = _data()
    run_imp(_mlp(), data, rounds=2, prune_per_round=0.4, control=False, checkpoint_dir=str(tmp_path), **KW)
    with pytest.raises(prunekit.PrunekitError, match=r"other imp settings \(prune_per_round differ"):
        run_imp(_mlp(), data, rounds=3, prune_per_round=0.5, control=False, resume_dir=str(tmp_path), **KW)
    with pytest.raises(prunekit.PrunekitError, match="holds round 2, past rounds=1"):
        run_imp(_mlp(), data, rounds=1, prune_per_round=0.4, control=False, resume_dir=str(tmp_path), **KW)


def test_imp_resume_dir_without_checkpoint_starts_afresh_and_checkpoints_there(tmp_path):
    data = _data()
    res = run_imp(_mlp(), data, rounds=1, prune_per_round=0.4, control=False, resume_dir=str(tmp_path / "ck"), **KW)
    assert [r.round for r in res.rounds] == [0, 1]
    assert (tmp_path / "ck" / "latest.json").is_file()
