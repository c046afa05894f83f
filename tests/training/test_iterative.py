"""The `iterative` method: prune -> fine-tune in steps (structured or mask), val-only decisions, the accuracy-drop
rollback, and its config errors."""

from __future__ import annotations

import sys
import types
from pathlib import Path

import pytest
import torch

import prunekit
from prunekit.api import stage
from prunekit.errors import PrunekitError
from prunekit.eval import count_model
from prunekit.masks import current_mask
from prunekit.methods.iterative import method as iterative
from prunekit.methods.structured import apply_plan, get_plan
from prunekit.recipes import parse_recipe

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _gmp_toy import NeverRead, toy_data, toy_model  # noqa: E402

X = torch.randn(2, 1, 8, 8, generator=torch.Generator().manual_seed(1))


def _shapes(model):
    return {k: tuple(v.shape) for k, v in model.state_dict().items()}


def test_structured_steps_shrink_the_model_and_note_each_step():
    model = toy_model()
    dense_macs = count_model(model, X).macs
    report = prunekit.prune(model, stage("iterative", kind="structured", target={"macs_ratio": 0.5}, steps=2,
                                         finetune_epochs=1, batch_size=16), X, data=toy_data())
    notes = report.stages[0]["notes"]
    assert notes[0].startswith("dense val accuracy ")
    assert notes[1].startswith("step 1/2: target macs_ratio 0.7071, reached ")
    assert notes[2].startswith("step 2/2: target macs_ratio 0.5000, reached ")
    assert "val accuracy " in notes[2] and "after 1 epoch(s)" in notes[2]
    reached = float(notes[2].split("reached ")[1].split(",")[0])
    assert count_model(model, X).macs / dense_macs == pytest.approx(reached, abs=1e-4)
    plan = get_plan(model)
    assert len(plan.steps) == 2
    fresh = apply_plan(toy_model(), plan)
    fresh.load_state_dict(model.state_dict())
    assert torch.equal(fresh.eval()(X), model.eval()(X))
    row = next(r for r in report.layers if r.name == "0")
    assert row.status == "pruned" and row.reason == f"out channels 8 -> {model[0].out_channels}"


def test_mask_kind_reaches_the_sparsity_in_steps():
    model = toy_model()
    report = prunekit.prune(model, stage("iterative", kind="mask", sparsity=0.8, steps=2, finetune_epochs=1,
                                         batch_size=16), X, data=toy_data())
    for name in ("3", "8"):  # first conv and last Linear are protected, as with magnitude
        keep = current_mask(dict(model.named_modules())[name])
        assert 1 - keep.float().mean().item() == pytest.approx(0.8, abs=1 / 128)
    assert current_mask(model[0]) is None and current_mask(model[10]) is None
    notes = report.stages[0]["notes"]
    assert notes[1].startswith(f"step 1/2: target sparsity {1 - 0.2 ** 0.5:.4f}, reached ")
    assert notes[2].startswith("step 2/2: target sparsity 0.8000, reached 0.80")


def test_accuracy_budget_rolls_back_to_the_previous_step_and_stops(monkeypatch):
    seen = []
    scripted = iter([0.9, 0.9, 0.1])  # dense, after step 1 (within budget), after step 2 (far below)

    def fake_eval(model, dataset):
        seen.append(_shapes(model))
        return next(scripted)

    monkeypatch.setattr(iterative, "evaluate_classifier", fake_eval)
    model = toy_model()
    report = prunekit.prune(model, stage("iterative", kind="structured", target={"width_ratio": 0.25}, steps=3,
                                         finetune_epochs=0, max_accuracy_drop=0.05), X, data=toy_data())
    assert _shapes(model) == seen[1] != seen[2]  # the model after step 1, not step 2 (nor the dense one)
    assert _shapes(model) != seen[0]
    assert len(get_plan(model).steps) == 1
    notes = report.stages[0]["notes"]
    assert notes[2].endswith(" - REJECTED") and notes[2].startswith("step 2/3")
    assert notes[3] == ("stopped at step 2: val accuracy 0.1000 is 0.8000 below the dense 0.9000 "
                        "(max_accuracy_drop 0.05); rolled back to step 1's model")
    assert len(notes) == 4  # step 3 never ran
    fresh = apply_plan(toy_model(), get_plan(model))
    assert _shapes(fresh) == _shapes(model)


def test_mask_kind_splits_each_step_by_the_allocation():
    from prunekit.training.allocation import AllocationConfig, layer_sparsities

    model = toy_model()
    expect = layer_sparsities(toy_model(), ["3", "8"], 0.8, AllocationConfig(kind="erk"), max_sparsity=0.98)
    assert abs(expect["3"] - expect["8"]) > 0.03  # erk is not uniform here, so the test can tell
    prunekit.prune(model, stage("iterative", kind="mask", sparsity=0.8, steps=2, finetune_epochs=0,
                                allocation={"kind": "erk"}), X, data=toy_data())
    for name in ("3", "8"):
        keep = current_mask(dict(model.named_modules())[name])
        assert 1 - keep.float().mean().item() == pytest.approx(expect[name], abs=2 / keep.numel())
    assert iterative.mask_sparsity(model) == pytest.approx(0.8, abs=0.01)


def test_fine_tuning_can_be_distilled_from_the_dense_model():
    runs = []
    for distill in (None, {"temperature": 4.0, "alpha": 1.0}):
        model = toy_model()
        report = prunekit.prune(model, stage("iterative", kind="structured", target={"width_ratio": 0.5}, steps=1,
                                             finetune_epochs=1, batch_size=32, distill=distill), X, data=toy_data())
        runs.append((model.state_dict(), report.stages[0]["notes"]))
    (plain, plain_notes), (distilled, notes) = runs
    assert notes[1] == "fine-tuning distilled from the dense model (T=4, alpha=1)"
    assert not any("distilled" in n for n in plain_notes)
    assert plain.keys() == distilled.keys() and not torch.equal(plain["3.weight"], distilled["3.weight"])


def test_mask_kind_rolls_back_to_the_previous_masks(monkeypatch):
    scripted = iter([0.9, 0.88, 0.5])
    monkeypatch.setattr(iterative, "evaluate_classifier", lambda model, dataset: next(scripted))
    model = toy_model()
    report = prunekit.prune(model, stage("iterative", kind="mask", sparsity=0.96, steps=2, finetune_epochs=0,
                                         max_accuracy_drop=0.05), X, data=toy_data())
    assert iterative.mask_sparsity(model) == pytest.approx(0.8, abs=1 / 128)  # step 1 of 2: 1 - 0.04 ** 0.5
    assert report.stages[0]["notes"][-1].endswith("rolled back to step 1's model")


def test_the_test_split_is_never_read_and_data_is_required():
    data = toy_data()
    assert isinstance(data.test, NeverRead)
    prunekit.prune(toy_model(), stage("iterative", kind="mask", sparsity=0.5, steps=1, finetune_epochs=1,
                                      batch_size=32), X, data=data)
    with pytest.raises(PrunekitError, match=r"iterative fine-tunes the model and needs data: pass prunekit.prune"):
        prunekit.prune(toy_model(), stage("iterative", kind="mask", sparsity=0.5), X)
    with pytest.raises(PrunekitError, match=r"iterative needs data with .train and .val splits"):
        prunekit.prune(toy_model(), stage("iterative", kind="mask", sparsity=0.5), X,
                       data=types.SimpleNamespace(train=data.train))


@pytest.mark.parametrize("stage_data, message", [
    ({"kind": "structured", "sparsity": 0.5}, r"iterative kind structured needs target: \{macs_ratio: x\}"),
    ({"kind": "mask", "target": {"macs_ratio": 0.5}}, r"iterative kind mask needs sparsity: x in \(0, 1\)"),
    ({"kind": "mask", "sparsity": 0.5, "target": {"macs_ratio": 0.5}},
     r"iterative kind mask takes sparsity, not target \(that is kind structured\)"),
    ({"kind": "structured", "target": {"macs_ratio": 0.5}, "importance": "taylr"},
     r"iterative structured: unknown importance 'taylr'; valid: l1, l2, bn_scale"),
    ({"kind": "mask", "sparsity": 0.5, "importance": "taylor"}, r"iterative mask: unknown importance 'taylor'"),
    ({"kind": "structured", "target": {"macs_ratio": 0.5}, "allocation": {"kind": "erk"}},
     r"iterative: allocation splits a sparsity across layers and needs kind mask"),
    ({"kind": "mask", "sparsity": 0.5, "scope": "global", "allocation": {"kind": "erk"}},
     r"iterative: allocation cannot be combined with scope 'global'"),
    ({"kind": "structured", "target": {"macs_ratio": 0.5}, "distill": {"hidden_mse": 1.0, "hidden_layers": ["3"]}},
     r"iterative kind structured: distill.hidden_mse compares hidden activations"),
    ({"kind": "sparse", "sparsity": 0.5}, r"key 'kind': 'sparse' is invalid: Input should be 'structured' or 'mask'"),
    ({"kind": "mask", "sparsity": 0.5, "steps": 0}, r"key 'steps': 0 is invalid"),
    ({"kind": "mask", "sparsity": 0.5, "max_accuracy_drop": 2}, r"key 'max_accuracy_drop': 2 is invalid"),
    ({"kind": "mask", "sparsity": 0.5, "finetune_epoch": 1}, r"unknown key 'finetune_epoch'.*finetune_epochs"),
])
def test_bad_configs_are_one_line_errors(stage_data, message):
    with pytest.raises(PrunekitError, match=r"stage 0 \(iterative\): " + message) as info:
        parse_recipe({"stages": [{"method": "iterative", **stage_data}]})
    assert "\n" not in str(info.value)


def test_structured_needs_example_inputs():
    with pytest.raises(PrunekitError, match=r"iterative kind structured needs example inputs"):
        iterative.IterativeMethod().apply(toy_model(), iterative.IterativeConfig(
            kind="structured", target={"macs_ratio": 0.5}), iterative.PruneContext(data=toy_data()))


def _digits():
    from prunekit.data import digits_cnn, load_dataset

    splits = load_dataset("digits")
    data = types.SimpleNamespace(train=splits.train, val=splits.val, test=NeverRead())
    x = torch.stack([splits.train[i][0] for i in range(2)])
    return digits_cnn(progress=False), data, x


@pytest.mark.slow
def test_digits_cnn_to_half_the_macs_in_two_steps():
    model, data, x = _digits()
    dense_macs = count_model(model, x).macs
    report = prunekit.prune(model, stage("iterative", kind="structured", target={"macs_ratio": 0.5}, steps=2,
                                         finetune_epochs=1), x, data=data)
    ratio = count_model(model, x).macs / dense_macs
    assert abs(ratio / 0.5 - 1) <= 0.02
    notes = report.stages[0]["notes"]
    assert [n[:8] for n in notes[1:3]] == ["step 1/2", "step 2/2"]
    dense_acc = float(notes[0].split()[-1])
    final_acc = float(notes[2].split("val accuracy ")[1].split()[0])
    assert dense_acc > 0.95 and final_acc > 0.85  # a trained model that one epoch per step keeps working


@pytest.mark.slow
def test_digits_cnn_impossible_budget_rolls_back_to_the_dense_model():
    model, data, x = _digits()
    dense = _shapes(model)
    report = prunekit.prune(model, stage("iterative", kind="structured", target={"macs_ratio": 0.02}, steps=2,
                                         finetune_epochs=1, max_accuracy_drop=0.0), x, data=data)
    notes = report.stages[0]["notes"]
    assert notes[1].startswith("step 1/2") and notes[1].endswith("REJECTED")
    assert notes[2].startswith("stopped at step 1:") and notes[2].endswith("rolled back to the dense model")
    assert _shapes(model) == dense
    assert not get_plan(model).steps


@pytest.mark.slow
def test_benchmark_script_prints_both_schedules(capsys):
    import importlib.util

    path = Path(__file__).resolve().parents[2] / "benchmarks" / "iterative_digits.py"
    spec = importlib.util.spec_from_file_location("bench_iterative_digits", path)
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    assert bench.main(["--targets", "0.5", "--seeds", "0", "--epochs", "2", "--steps", "2", "--rounds", "1",
                       "--iters", "2"]) == 0
    rows = [[c.strip() for c in line.strip("|").split("|")] for line in capsys.readouterr().out.splitlines()
            if line.startswith("| 0.5 |") and len(line.split("|")) > 8]
    assert [r[1] for r in rows] == ["one-shot (1 x 2 ep)", "iterative x2 (2 x 1 ep)"]
    for row in rows:
        assert 0.0 <= float(row[3]) <= 100.0 and abs(float(row[6]) - 0.5) < 0.02  # test acc %, MACs ratio
