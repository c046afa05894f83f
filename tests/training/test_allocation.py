"""Per-layer sparsity allocation: ERK / LAMP / sensitivity maths, exact targets, clamping, errors, and its use by
the Pruner, gmp and imp."""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from torch import nn
from torch.utils.data import TensorDataset

import prunekit
from prunekit.errors import PrunekitError
from prunekit.importance.allocation import (
    erk_sparsities,
    lamp_scores,
    lamp_sparsities,
    sensitivity_sparsities,
    weighted_mean,
)
from prunekit.masks import current_mask
from prunekit.methods.base import PruneContext
from prunekit.methods.magnitude.config import MagnitudeConfig
from prunekit.methods.mask_pipeline import run_mask_pruning
from prunekit.training.allocation import AllocationConfig, SensitivityCurves, layer_sparsities
from prunekit.training.imp import run_imp
from prunekit.training.pruner import Pruner

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _gmp_toy import gmp_stage, toy_data, toy_model  # noqa: E402


def _model() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(1, 8, 3), nn.ReLU(), nn.Conv2d(8, 16, 3), nn.Flatten(),
                         nn.Linear(16 * 4 * 4, 32), nn.ReLU(), nn.Linear(32, 10))


LAYERS = ["0", "2", "4", "6"]


def _params(model: nn.Module, layers: list[str]) -> list[float]:
    mods = dict(model.named_modules())
    return [float(mods[n].weight.numel()) for n in layers]


def _curves_file(tmp_path: Path, layers: dict[str, list[float]], params: dict[str, int],
                 grid=(0.5, 0.8, 0.95), dense: float = 0.9) -> str:
    curves = SensitivityCurves(sparsities=list(grid), dense=dense, layers=layers, params=params)
    path = tmp_path / "sensitivity.json"
    path.write_text(json.dumps(curves.to_dict()))
    return str(path)


# ----- ERK ------------------------------------------------------------------------------------------------------
def test_erk_matches_its_formula_on_a_hand_computed_two_layer_case():
    # weights (2, 4) and (8, 2): raw (2+4)/8 = 0.75 and (8+2)/16 = 0.625; 24 weights, density 0.5 -> 12 kept
    # 12 = eps * (8 * 0.75 + 16 * 0.625) = 16 eps -> eps = 0.75 -> densities 0.5625, 0.46875
    s = erk_sparsities([(2, 4), (8, 2)], 0.5)
    assert s == pytest.approx([1 - 0.5625, 1 - 0.46875], abs=1e-12)
    model = nn.Sequential(nn.Linear(4, 2), nn.Linear(2, 8))
    got = layer_sparsities(model, ["0", "1"], 0.5, AllocationConfig(kind="erk"))
    assert got == pytest.approx({"0": 0.4375, "1": 0.53125}, abs=1e-12)


def test_erk_keeps_a_layer_dense_when_its_density_would_exceed_one_and_solves_again():
    # (2, 2): raw 1, 4 weights; (100, 100): raw 0.02, 10000 weights. Target 0.5 keeps 5002:
    # eps = 5002 / (4 + 200) = 24.5 -> the small layer would have density 24.5: dense; then eps = 4998 / 200
    s = erk_sparsities([(2, 2), (100, 100)], 0.5)
    assert s[0] == 0.0
    assert s[1] == pytest.approx(1 - 4998 / 10000, abs=1e-12)
    assert weighted_mean(s, [4, 10000]) == pytest.approx(0.5, abs=1e-12)


def test_erk_power_flattens_the_allocation():
    s1 = erk_sparsities([(8, 1, 3, 3), (10, 512)], 0.9)
    s_half = erk_sparsities([(8, 1, 3, 3), (10, 512)], 0.9, power=0.5)
    assert abs(s_half[0] - s_half[1]) < abs(s1[0] - s1[1])
    assert weighted_mean(s_half, [72, 5120]) == pytest.approx(0.9, abs=1e-12)


# ----- exact target for every kind --------------------------------------------------------------------------------
@pytest.mark.parametrize("kind", ["uniform", "erk", "lamp", "sensitivity"])
@pytest.mark.parametrize("target", [0.0, 0.3, 0.77, 0.9])
def test_every_kind_meets_the_parameter_weighted_target_exactly(tmp_path, kind, target):
    model = _model()
    params = _params(model, LAYERS)
    file = None
    if kind == "sensitivity":
        file = _curves_file(tmp_path, {"0": [0.5, 0.2, 0.1], "2": [0.88, 0.7, 0.3], "4": [0.9, 0.89, 0.85],
                                       "6": [0.85, 0.6, 0.2]}, {n: int(p) for n, p in zip(LAYERS, params)})
    s = layer_sparsities(model, LAYERS, target, AllocationConfig(kind=kind, file=file))
    assert list(s) == LAYERS
    assert weighted_mean([s[n] for n in LAYERS], params) == pytest.approx(target, abs=1e-9)
    assert all(0.0 <= v < 1.0 for v in s.values())


@pytest.mark.parametrize("kind", ["erk", "lamp"])
def test_max_sparsity_clamps_layers_and_keeps_the_mean_exact(kind):
    model = _model()
    free = layer_sparsities(model, LAYERS, 0.9, AllocationConfig(kind=kind))
    assert max(free.values()) > 0.93  # without the cap some layer goes above it
    s = layer_sparsities(model, LAYERS, 0.9, AllocationConfig(kind=kind), max_sparsity=0.93)
    assert max(s.values()) <= 0.93 + 1e-12
    assert weighted_mean([s[n] for n in LAYERS], _params(model, LAYERS)) == pytest.approx(0.9, abs=1e-9)
    with pytest.raises(PrunekitError, match=r"target sparsity 0.95 is above the per-layer cap 0.93"):
        layer_sparsities(model, LAYERS, 0.95, AllocationConfig(kind=kind), max_sparsity=0.93)


# ----- LAMP -----------------------------------------------------------------------------------------------------
def _brute_lamp(weights: list[torch.Tensor], target: float) -> list[float]:
    entries = []  # (score, layer)
    for i, w in enumerate(weights):
        vals = sorted(float(v) ** 2 for v in w.flatten())
        for u, v in enumerate(vals):
            entries.append((v / sum(vals[u:]), i))
    n_prune = round(target * sum(w.numel() for w in weights))
    pruned = sorted(entries, key=lambda e: e[0])[:n_prune]
    return [sum(1 for _, i in pruned if i == j) / w.numel() for j, w in enumerate(weights)]


@pytest.mark.parametrize("target", [0.25, 0.5, 0.875])
def test_lamp_equals_the_sparsities_of_a_brute_force_global_lamp_threshold(target):
    gen = torch.Generator().manual_seed(1)
    weights = [torch.randn(4, 8, generator=gen), torch.randn(8, 8, generator=gen) * 3,
               torch.randn(2, 16, generator=gen)]
    # 32 + 64 + 32 = 128 weights: target * 128 is an integer, so the brute force needs no fractional remainder
    assert lamp_sparsities(weights, target) == pytest.approx(_brute_lamp(weights, target), abs=1e-12)


def test_lamp_scores_follow_the_definition():
    w = torch.tensor([3.0, -1.0, 2.0])
    # sorted squares 1, 4, 9: scores 1/14, 4/13, 9/9
    assert lamp_scores(w).tolist() == pytest.approx([1.0, 1 / 14, 4 / 13])


def test_lamp_never_empties_a_layer():
    weights = [torch.ones(3), torch.randn(100, generator=torch.Generator().manual_seed(0))]
    s = lamp_sparsities(weights, 0.97)
    assert s[0] < 1.0 and weighted_mean(s, [3, 100]) == pytest.approx(0.97, abs=1e-12)
    with pytest.raises(PrunekitError, match="would prune every weight"):
        lamp_sparsities([torch.ones(2), torch.ones(2)], 0.9)


# ----- sensitivity --------------------------------------------------------------------------------------------------
def test_sensitivity_gives_the_fragile_layer_less_sparsity_and_meets_the_target():
    grid = [0.5, 0.7, 0.9, 0.95]
    robust = [0.89, 0.87, 0.80, 0.70]
    fragile = [0.85, 0.70, 0.30, 0.10]
    s = sensitivity_sparsities(grid, [robust, fragile], 0.90, [1000, 1000], 0.6)
    assert s[1] < 0.6 < s[0] < grid[-1]
    assert weighted_mean(s, [1000, 1000]) == pytest.approx(0.6, abs=1e-12)
    # the solver equalises the predicted (interpolated) drop of the two layers
    xs = [0.0, *grid]
    d_robust = _interp(xs, [0.0, *(0.9 - m for m in robust)], s[0])
    d_fragile = _interp(xs, [0.0, *(0.9 - m for m in fragile)], s[1])
    assert d_robust == pytest.approx(d_fragile, abs=1e-6)


def _interp(xs, ds, x):
    for j in range(len(xs) - 1):
        if xs[j] <= x <= xs[j + 1]:
            return ds[j] + (x - xs[j]) / (xs[j + 1] - xs[j]) * (ds[j + 1] - ds[j])
    raise AssertionError(x)


def test_sensitivity_with_lower_is_better_and_errors():
    grid = [0.5, 0.9]
    s = sensitivity_sparsities(grid, [[10.0, 11.0], [12.0, 40.0]], 10.0, [100, 100], 0.6, higher_is_better=False)
    assert s[0] > s[1] and weighted_mean(s, [100, 100]) == pytest.approx(0.6, abs=1e-12)
    with pytest.raises(PrunekitError, match=r"target 0.95 is above the largest analysed sparsity 0.9"):
        sensitivity_sparsities(grid, [[1.0, 1.0]], 1.0, [10], 0.95)
    with pytest.raises(PrunekitError, match="one metric per grid sparsity"):
        sensitivity_sparsities(grid, [[1.0]], 1.0, [10], 0.5)


# ----- config and file errors --------------------------------------------------------------------------------------
def test_config_errors_are_one_line_and_name_the_problem(tmp_path):
    with pytest.raises(ValueError, match=r"unknown allocation kind 'erkk'; choose one of erk, lamp, sensitivity, "
                                         r"uniform. Did you mean: erk"):
        AllocationConfig(kind="erkk")
    with pytest.raises(ValueError, match="allocation kind 'sensitivity' needs file"):
        AllocationConfig(kind="sensitivity")
    missing = tmp_path / "nope" / "sensitivity.json"
    with pytest.raises(ValueError, match=f"allocation file '{missing}' does not exist"):
        AllocationConfig(kind="sensitivity", file=str(missing))
    corrupt = tmp_path / "bad.json"
    corrupt.write_text("{not json")
    with pytest.raises(ValueError, match=f"allocation file '{corrupt}' is not valid JSON"):
        AllocationConfig(kind="sensitivity", file=str(corrupt))
    other = tmp_path / "other.json"
    other.write_text(json.dumps({"format": "something"}))
    with pytest.raises(ValueError, match="is not a prunekit sensitivity file"):
        AllocationConfig(kind="sensitivity", file=str(other))
    with pytest.raises(ValueError, match="file is only used by kind 'sensitivity', not 'erk'"):
        AllocationConfig(kind="erk", file=str(other))
    with pytest.raises(ValueError, match="erk_power applies to kind 'erk' only"):
        AllocationConfig(kind="lamp", erk_power=0.5)


def test_layer_errors(tmp_path):
    model = _model()
    with pytest.raises(PrunekitError, match=r"layer '44' is not a module with a weight in this model. Did you mean: 4"):
        layer_sparsities(model, ["0", "44"], 0.5, AllocationConfig(kind="erk"))
    with pytest.raises(PrunekitError, match=r"target sparsity 1.0 must be in \[0, 1\)"):
        layer_sparsities(model, ["0"], 1.0, None)
    file = _curves_file(tmp_path, {"0": [0.5, 0.2, 0.1]}, {"0": 72})
    with pytest.raises(PrunekitError, match=r"has no curve for layer '2' \(analysed: 0\)"):
        layer_sparsities(model, ["0", "2"], 0.5, AllocationConfig(kind="sensitivity", file=file))


# ----- Pruner / gmp / imp -----------------------------------------------------------------------------------------
def _sparsity(model: nn.Module, name: str) -> float:
    return 1.0 - current_mask(dict(model.named_modules())[name]).float().mean().item()


@pytest.mark.parametrize("kind", ["erk", "lamp"])
def test_pruner_with_an_allocation_reaches_the_allocated_per_layer_sparsities(kind):
    model = _model()
    alloc = AllocationConfig(kind=kind)
    pruner = Pruner(model, {"sparsity": 0.9, "schedule": {"kind": "cubic", "end": 8}, "allocation": alloc.model_dump(),
                            "min_density": 0.0}, total_steps=10)
    pruner.prepare()
    for step in range(1, 11):
        pruner.step(step)
    pruner.finalize()
    want = layer_sparsities(model, pruner.layers, 0.9, alloc) if kind == "erk" else None
    mods = dict(model.named_modules())
    total = sum(mods[n].weight.numel() for n in pruner.layers)
    got = {n: _sparsity(model, n) for n in pruner.layers}
    assert sum(mods[n].weight.numel() * got[n] for n in pruner.layers) / total == pytest.approx(0.9, abs=0.01)
    if want is not None:
        for n in pruner.layers:
            assert got[n] == pytest.approx(want[n], abs=1.0 / mods[n].weight.numel())
        assert len({round(v, 3) for v in got.values()}) > 1  # not uniform


def test_allocation_refuses_global_scope_and_nm_patterns():
    with pytest.raises(ValueError, match="allocation cannot be combined with scope 'global'"):
        Pruner(_model(), {"sparsity": 0.9, "scope": "global", "allocation": {"kind": "erk"}})
    with pytest.raises(ValueError, match="pattern '2:4' fixes every layer's sparsity"):
        Pruner(_model(), {"pattern": "2:4", "allocation": {"kind": "erk"}})
    model = _model()
    cfg = MagnitudeConfig(sparsity=0.5, scope="global")
    with pytest.raises(PrunekitError, match="per-layer sparsity allocation cannot be combined with scope 'global'"):
        run_mask_pruning(model, cfg, PruneContext(), "t", lambda n, w: w.abs(), layer_sparsity={"2": 0.5, "4": 0.5})


def test_run_mask_pruning_per_layer_sparsity():
    model = _model()
    cfg = MagnitudeConfig(sparsity=0.5, protect_first=False, protect_last=False)
    per = {"0": 0.25, "2": 0.5, "4": 0.75, "6": 0.0}
    res = run_mask_pruning(model, cfg, PruneContext(), "t", lambda n, w: w.abs(), layer_sparsity=per)
    for n, s in per.items():
        assert res.layers[n]["sparsity"] == pytest.approx(s, abs=1 / dict(model.named_modules())[n].weight.numel())
    with pytest.raises(PrunekitError, match="per-layer sparsity missing for targeted layer '2'"):
        run_mask_pruning(_model(), cfg, PruneContext(), "t", lambda n, w: w.abs(), layer_sparsity={"0": 0.1})


def test_gmp_accepts_an_allocation_from_a_recipe():
    model = toy_model()
    prunekit.prune(model, gmp_stage(epochs=1, allocation={"kind": "erk"}), torch.zeros(2, 1, 8, 8), data=toy_data())
    layers = ["3", "8"]  # first conv and last Linear are protected
    want = layer_sparsities(model, layers, 0.8, AllocationConfig(kind="erk"))
    for n in layers:
        assert _sparsity(model, n) == pytest.approx(want[n], abs=1 / dict(model.named_modules())[n].weight.numel())
    assert want["8"] < 0.8 < want["3"]  # ERK: (8+16+9)/1152 < (1024+32)/32768, so the conv is sparser


def test_imp_with_an_allocation_follows_layer_sparsities_each_round():
    gen = torch.Generator().manual_seed(0)
    centers = torch.randn(4, 8, generator=gen) * 2
    y = torch.randint(0, 4, (3 * 96,), generator=gen)
    x = centers[y] + torch.randn(3 * 96, 8, generator=gen)
    parts = [TensorDataset(x[i * 96:(i + 1) * 96], y[i * 96:(i + 1) * 96]) for i in range(3)]
    data = SimpleNamespace(train=parts[0], val=parts[1], test=parts[2])
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(8, 64), nn.ReLU(), nn.Linear(64, 16), nn.ReLU(), nn.Linear(16, 4))
    alloc = AllocationConfig(kind="erk")
    res = run_imp(model, data, rounds=2, prune_per_round=0.5, epochs=1, batch_size=32, control=False,
                  protect_first=False, protect_last=False, min_density=0.0, allocation=alloc)
    level = 1 - 0.5 ** 2
    want = layer_sparsities(model, ["0", "2", "4"], level, alloc)
    for n in ("0", "2", "4"):
        numel = dict(model.named_modules())[n].weight.numel()
        assert res.layer_sparsity[n] == pytest.approx(want[n], abs=1 / numel)
    assert res.rounds[-1].sparsity == pytest.approx(level, abs=0.01)
    assert not math.isclose(res.layer_sparsity["0"], res.layer_sparsity["4"], abs_tol=0.02)


def test_a_target_above_the_analysed_grid_fails_at_config_time(tmp_path):
    from prunekit.methods.imp.config import ImpConfig
    from prunekit.training.pruner_config import PrunerConfig

    file = _curves_file(tmp_path, {"0": [0.5, 0.2, 0.1]}, {"0": 72}, grid=(0.5, 0.8, 0.9))
    alloc = {"kind": "sensitivity", "file": file}
    with pytest.raises(ValueError, match=r"sparsity 0.95 is above the largest sparsity 0.9 analysed in"):
        PrunerConfig(sparsity=0.95, allocation=alloc)
    assert PrunerConfig(sparsity=0.9, allocation=alloc).allocation.kind == "sensitivity"
    with pytest.raises(ValueError, match=r"sparsity 0.9375 is above the largest sparsity 0.9"):
        ImpConfig(rounds=4, prune_per_round=0.5, allocation=alloc)
