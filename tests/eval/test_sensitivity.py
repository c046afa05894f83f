"""Sensitivity analysis: each layer pruned alone, the metric per grid point, weights restored, JSON / table / plot."""

from __future__ import annotations

import json

import pytest
import torch
from torch import nn

from prunekit.errors import PrunekitError
from prunekit.eval.sensitivity import (
    SensitivityResult,
    allocation_table,
    analyze_sensitivity,
    check_grid,
    compare_allocations,
)
from prunekit.masks import attach_mask
from prunekit.training.allocation import AllocationConfig, layer_sparsities


def _model() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(6, 16), nn.ReLU(), nn.Linear(16, 8), nn.ReLU(), nn.Linear(8, 3))


X = torch.randn(32, 6, generator=torch.Generator().manual_seed(1))


def _agreement(dense: nn.Module):
    ref = dense(X).detach()

    def evaluate(m: nn.Module) -> float:  # a deterministic "metric": cosine of the outputs with the dense ones
        with torch.no_grad():
            return float(torch.nn.functional.cosine_similarity(m(X).flatten(), ref.flatten(), dim=0))
    return evaluate


def test_each_layer_is_pruned_alone_by_magnitude_and_restored_exactly():
    model = _model()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    evaluate = _agreement(model)
    res = analyze_sensitivity(model, evaluate, sparsities=[0.9, 0.5], progress=False)
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    c = res.curves
    assert c.sparsities == [0.5, 0.9] and list(c.layers) == ["0", "2", "4"]
    assert c.dense == pytest.approx(1.0)
    assert c.params == {"0": 96, "2": 128, "4": 24}
    # the value at (layer 2, 0.9) equals a manual magnitude pruning of that layer alone
    manual = _model()
    w = manual[2].weight.data
    k = int(0.9 * w.numel() + 0.5)
    w.view(-1)[torch.argsort(w.abs().flatten(), stable=True)[:k]] = 0
    assert c.layers["2"][1] == pytest.approx(evaluate(manual), abs=1e-7)
    assert all(v < 1.0 for vals in c.layers.values() for v in vals)


def test_json_round_trip_table_plot_and_allocations(tmp_path):
    model = _model()
    res = analyze_sensitivity(model, _agreement(model), sparsities=[0.5, 0.9], layers=["0", "2"], progress=False)
    res.model, res.data = "toy:mlp", "toy"
    path = tmp_path / "sensitivity.json"
    res.to_json(path)
    back = SensitivityResult.from_json(path)
    assert back.curves == res.curves and back.model == "toy:mlp" and back.split == "validation"
    table = res.table()
    assert "| layer | weights | 50% | 90% |" in table and "| 0 | 96 |" in table
    png = tmp_path / "s.png"
    res.plot(png)
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    alloc = compare_allocations(model, ["0", "2"], 0.7, path)
    assert set(alloc) == {"uniform", "erk", "lamp", "sensitivity"}
    assert alloc["sensitivity"] == layer_sparsities(model, ["0", "2"], 0.7,
                                                    AllocationConfig(kind="sensitivity", file=str(path)))
    md = allocation_table(alloc, res.curves.params)
    assert "| **weighted mean** | 224 | 70.0% | 70.0% | 70.0% | 70.0% |" in md


def test_errors():
    model = _model()
    evaluate = _agreement(model)
    with pytest.raises(PrunekitError, match=r"sensitivity sparsity 1.5 must be in \(0, 1\)"):
        check_grid([0.5, 1.5])
    with pytest.raises(PrunekitError, match="at least one sparsity"):
        check_grid([])
    with pytest.raises(PrunekitError, match=r"no layer '3' with a weight. Prunable layers: 0, 2, 4"):
        analyze_sensitivity(model, evaluate, layers=["3"], progress=False)
    attach_mask(model[2], torch.ones(8, 16, dtype=torch.bool))
    with pytest.raises(PrunekitError, match="layer '2' carries a mask"):
        analyze_sensitivity(model, evaluate, progress=False)


def test_from_json_names_a_corrupt_file(tmp_path):
    bad = tmp_path / "s.json"
    bad.write_text(json.dumps({"format": "prunekit-sensitivity", "sparsities": [0.5], "dense": 1.0,
                               "layers": {"a": {"params": 3}}}))
    with pytest.raises(PrunekitError, match=f"allocation file '{bad}' is malformed"):
        SensitivityResult.from_json(bad)
