"""`prunekit analyze`: curves + allocation files on the cached digits CNN, usable by gmp; one-line errors."""

from __future__ import annotations

import json

import pytest
import torch

import prunekit
from prunekit.cli.main import main
from prunekit.masks import current_mask
from prunekit.training.allocation import AllocationConfig, layer_sparsities

MODEL = "prunekit.data:digits_cnn"


@pytest.fixture(scope="module")
def analyzed(tmp_path_factory):
    out = tmp_path_factory.mktemp("analyze") / "an"
    code = main(["analyze", "--model", MODEL, "--data", "digits", "--sparsities", "0.5", "0.9", "--target", "0.8",
                 "--out", str(out)])
    return code, out


def test_analyze_writes_the_four_files(analyzed):
    code, out = analyzed
    assert code == 0
    assert sorted(p.name for p in out.iterdir()) == ["allocation.json", "sensitivity.json", "sensitivity.md",
                                                     "sensitivity.png"]
    sens = json.loads((out / "sensitivity.json").read_text())
    assert sens["sparsities"] == [0.5, 0.9] and sens["split"] == "validation" and sens["metric"] == "accuracy"
    assert "stem.0" in sens["layers"] and "fc" in sens["layers"]  # every prunable layer is analysed
    md = (out / "sensitivity.md").read_text()
    assert "| layer | weights | uniform | erk | lamp | sensitivity |" in md
    assert (out / "sensitivity.png").read_bytes()[:4] == b"\x89PNG"


def test_allocation_json_loads_back_and_meets_the_target(analyzed):
    _, out = analyzed
    data = json.loads((out / "allocation.json").read_text())
    alloc = AllocationConfig(**data["allocation"])
    assert alloc.kind == "sensitivity" and alloc.file == str(out / "sensitivity.json")
    via_allocation_file = AllocationConfig(kind="sensitivity", file=str(out / "allocation.json"))
    model = prunekit.data.digits_cnn(progress=False)
    layers = data["layers"]
    assert "stem.0" not in layers and "fc" not in layers  # the layers a default gmp stage prunes
    want = layer_sparsities(model, layers, 0.8, alloc, max_sparsity=0.98)
    assert want == pytest.approx(data["sparsities"], abs=1e-12)
    assert layer_sparsities(model, layers, 0.8, via_allocation_file, max_sparsity=0.98) == want
    for kind, per_layer in data["comparison"].items():
        total = sum(dict(model.named_modules())[n].weight.numel() for n in layers)
        mean = sum(dict(model.named_modules())[n].weight.numel() * per_layer[n] for n in layers) / total
        assert mean == pytest.approx(0.8, abs=1e-9), kind


@pytest.mark.slow
def test_the_allocation_drives_gmp(analyzed):
    _, out = analyzed
    from prunekit.api import stage
    from prunekit.data import load_dataset

    data = load_dataset("digits")
    model = prunekit.data.digits_cnn(progress=False)
    alloc = {"kind": "sensitivity", "file": str(out / "sensitivity.json")}
    rec = stage("gmp", sparsity=0.8, epochs=1, batch_size=256, allocation=alloc)
    prunekit.prune(model, rec, torch.zeros(2, 1, 8, 8), data=data)
    layers = json.loads((out / "allocation.json").read_text())["layers"]
    want = layer_sparsities(model, layers, 0.8, AllocationConfig(**alloc), max_sparsity=0.98)
    mods = dict(model.named_modules())
    for n in layers:
        got = 1 - current_mask(mods[n]).float().mean().item()
        assert got == pytest.approx(want[n], abs=1 / mods[n].weight.numel()), n


def _error(capsys, argv, match):
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and match in err, err
    return err


def test_bad_flags_are_one_line_errors(capsys, tmp_path):
    base = ["analyze", "--model", MODEL, "--data", "digits", "--out", str(tmp_path / "o")]
    _error(capsys, base + ["--sparsities", "0.5", "1.5"], "sensitivity sparsity 1.5 must be in (0, 1)")
    _error(capsys, base + ["--sparsities", "0.5", "x"], "argument --sparsities: invalid float value: 'x'")
    _error(capsys, base + ["--sparsities", "0.5", "0.7"], "--target 0.9 is above the largest --sparsities value 0.7")
    _error(capsys, base + ["--target", "1.2"], "--target 1.2 must be in (0, 1)")
    _error(capsys, ["analyze", "--model", MODEL, "--data", "digitz"],
           "unknown data spec 'digitz'. Did you mean: digits?")
    _error(capsys, ["analyze", "--data", "digits"], "the following arguments are required: --model")
    (tmp_path / "file").write_text("x")
    _error(capsys, ["analyze", "--model", MODEL, "--data", "digits", "--out", str(tmp_path / "file")],
           "exists and is not a folder")
    assert not (tmp_path / "o").exists()  # nothing written on a user error


def test_allocation_errors_in_a_recipe_are_one_line(capsys, tmp_path):
    recipe = tmp_path / "r.yaml"
    recipe.write_text("stages:\n  - method: gmp\n    sparsity: 0.8\n    allocation: {kind: sensitivty}\n")
    err = _error(capsys, ["validate", str(recipe)], "unknown allocation kind 'sensitivty'")
    assert "Did you mean: sensitivity" in err
    recipe.write_text("stages:\n  - method: gmp\n    sparsity: 0.8\n    allocation: {kind: sensitivity}\n")
    _error(capsys, ["validate", str(recipe)], "allocation kind 'sensitivity' needs file")
    missing = tmp_path / "none" / "sensitivity.json"
    recipe.write_text(f"stages:\n  - method: imp\n    allocation: {{kind: sensitivity, file: '{missing}'}}\n")
    _error(capsys, ["validate", str(recipe)], f"allocation file '{missing}' does not exist")
    bad = tmp_path / "bad.json"
    bad.write_text("{oops")
    recipe.write_text("stages:\n  - method: gmp\n    sparsity: 0.8\n"
                      f"    allocation: {{kind: sensitivity, file: '{bad}'}}\n")
    _error(capsys, ["validate", str(recipe)], f"allocation file '{bad}' is not valid JSON")
