"""The demo's training-aware step: its summary line states numbers measured in the run, consistent with the models."""

from __future__ import annotations

import copy
import json
import re

import pytest
import torch

import prunekit
from prunekit.cli.demo_training import BENCH_POINTER, mask_sparsity, training_aware_line, training_aware_run
from prunekit.data import digits_cnn, evaluate_classifier, load_dataset
from prunekit.masks import masked_modules

LINE = re.compile(r"training-aware, (?P<sparsity>[\d.]+)% sparsity .*?without training (?P<oneshot>[\d.]+)%; "
                  r"one-shot \+ (?P<epochs>\d+) epochs fine-tuning (?P<ft>[\d.]+)%; gmp cubic over the same \d+ "
                  r"epochs (?P<gmp>[\d.]+)% \(dense (?P<dense>[\d.]+)%\): gmp vs one-shot \+ fine-tune "
                  r"(?P<gain>[+-][\d.]+) points = (?P<images>[+-]\d+) of (?P<n>\d+) test images")


def _zeros_of_masked_layers(model: torch.nn.Module) -> float:
    """Independent count: bake the masks, then the fraction of exact zeros in the weights that had a mask."""
    names = [name for name, _m, _t in masked_modules(model)]
    plain = prunekit.finalize(copy.deepcopy(model))
    modules = dict(plain.named_modules())
    weights = [modules[n].weight for n in names]
    return sum(int((w == 0).sum()) for w in weights) / sum(w.numel() for w in weights)


@pytest.fixture(scope="module")
def run():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # a module fixture runs before the suite's per-test one-thread fixture
    torch.manual_seed(0)
    splits = load_dataset("digits")
    dense = digits_cnn(pretrained=False, progress=False)
    before = {k: v.clone() for k, v in dense.state_dict().items()}
    result, models = training_aware_run(dense, splits, splits.test.tensors[0][:4], sparsity=0.9, epochs=1)
    torch.set_num_threads(threads)
    return dense, before, splits, result, models


def test_reported_sparsity_is_the_models_measured_sparsity(run):
    dense, before, _splits, result, models = run
    assert set(result.sparsity) == set(models) == {"one-shot", "one-shot + fine-tune", "gmp cubic"}
    for name, model in models.items():
        assert result.sparsity[name] == pytest.approx(_zeros_of_masked_layers(model), abs=1e-9), name
        assert result.sparsity[name] == pytest.approx(mask_sparsity(model))
        assert result.sparsity[name] == pytest.approx(0.9, abs=0.005), name  # layer scope: each layer at 90%
    # the three runs prune the same layers, and the dense model is left as it was
    assert len({tuple(n for n, _m, _t in masked_modules(m)) for m in models.values()}) == 1
    assert not list(masked_modules(dense))
    assert all(torch.equal(v, before[k]) for k, v in dense.state_dict().items())


def test_accuracies_are_the_models_test_accuracies(run):
    dense, _before, splits, result, models = run
    assert result.dense == evaluate_classifier(dense, splits.test)
    assert result.oneshot == evaluate_classifier(models["one-shot"], splits.test)
    assert result.oneshot_finetuned == evaluate_classifier(models["one-shot + fine-tune"], splits.test)
    assert result.gmp == evaluate_classifier(models["gmp cubic"], splits.test)
    assert result.epochs == 1 and result.seconds > 0 and result.n_test == len(splits.test)


def test_summary_line_states_the_measured_numbers(run):
    result = run[3]
    line = training_aware_line(result)
    m = LINE.search(line)
    assert m, line
    assert float(m["sparsity"]) == pytest.approx(100 * result.sparsity["gmp cubic"], abs=0.05)
    assert float(m["oneshot"]) == pytest.approx(100 * result.oneshot, abs=0.005)
    assert float(m["ft"]) == pytest.approx(100 * result.oneshot_finetuned, abs=0.005)
    assert float(m["gmp"]) == pytest.approx(100 * result.gmp, abs=0.005)
    assert float(m["dense"]) == pytest.approx(100 * result.dense, abs=0.005)
    assert int(m["epochs"]) == result.epochs
    gain = result.gmp - result.oneshot_finetuned
    assert float(m["gain"]) == pytest.approx(100 * gain, abs=0.005)
    assert int(m["n"]) == result.n_test == 269  # digits test split
    assert int(m["images"]) == round(gain * result.n_test)  # accuracies are multiples of 1/269
    assert line.endswith(BENCH_POINTER) and "docs/benchmarks.md" in line


def test_line_follows_the_numbers_not_a_template(run):
    result = run[3]
    other = type(result)(**{**result.__dict__, "gmp": 0.0, "oneshot_finetuned": 0.5, "oneshot": 0.25, "n_test": 10,
                            "sparsity": {**result.sparsity, "gmp cubic": 0.5}})
    m = LINE.search(training_aware_line(other))
    assert (m["sparsity"], m["gmp"], m["ft"], m["gain"], m["images"], m["n"]) == \
        ("50.0", "0.00", "50.00", "-50.00", "-5", "10")


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_demo_summary_has_the_training_aware_line(tmp_path, monkeypatch, capsys):
    from prunekit.cli.main import main

    monkeypatch.setenv("PRUNEKIT_CACHE_DIR", str(tmp_path / "cache"))
    out = tmp_path / "demo"
    assert main(["demo", "--quick", "--out", str(out)]) == 0
    printed = " ".join(capsys.readouterr().out.split())
    saved = json.loads((out / "training_aware.json").read_text())
    summary = (out / "summary.md").read_text()
    m = LINE.search(summary)
    assert m, summary
    assert float(m["sparsity"]) == pytest.approx(100 * saved["sparsity"]["gmp cubic"], abs=0.05)
    assert saved["sparsity"]["gmp cubic"] == pytest.approx(0.9, abs=0.005)
    assert float(m["gmp"]) == pytest.approx(100 * saved["gmp"], abs=0.005)
    assert float(m["oneshot"]) == pytest.approx(100 * saved["oneshot"], abs=0.005)
    assert m.group(0) in printed  # the same line in the printed verdict
