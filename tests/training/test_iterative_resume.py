"""`iterative` checkpoint / resume at step granularity: a run interrupted after step 1 and resumed from its checkpoint
ends with the same model (shapes, weights, masks, plan) as an uninterrupted run; a checkpoint made with other
settings is refused in one line; `prunekit prune --resume` accepts a recipe whose only training stage is iterative."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch

import prunekit
from prunekit.api import stage
from prunekit.errors import PrunekitError
from prunekit.methods.iterative import method as iterative
from prunekit.methods.structured import get_plan

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _gmp_toy import toy_data, toy_model  # noqa: E402

X = torch.randn(2, 1, 8, 8, generator=torch.Generator().manual_seed(1))
KINDS = {
    "structured": {"kind": "structured", "target": {"macs_ratio": 0.5}},
    "mask": {"kind": "mask", "sparsity": 0.8},
}


def _run(kind, model=None, **folders):
    model = toy_model() if model is None else model
    report = prunekit.prune(model, stage("iterative", steps=3, finetune_epochs=1, batch_size=32, lr=3e-3,
                                         distill={"temperature": 2.0, "alpha": 0.5}, **KINDS[kind], **folders),
                            X, data=toy_data())
    return model, report.stages[0]["notes"]


class Interrupted(Exception):
    pass


@pytest.mark.parametrize("kind", list(KINDS))
def test_interrupted_run_resumes_to_the_same_model(kind, tmp_path, monkeypatch):
    whole, whole_notes = _run(kind)
    real, calls = iterative.train_steps, []

    def dies_in_step_2(*args, **kwargs):
        calls.append(kwargs["start"])
        if len(calls) == 2:
            raise Interrupted
        return real(*args, **kwargs)

    monkeypatch.setattr(iterative, "train_steps", dies_in_step_2)
    with pytest.raises(Interrupted):
        _run(kind, checkpoint_dir=str(tmp_path / "ck"))
    assert sorted(p.name for p in (tmp_path / "ck").iterdir()) == ["latest.json", "step-00000001",
                                                                   "teacher.safetensors"]
    monkeypatch.setattr(iterative, "train_steps", real)
    assert (tmp_path / "ck" / "teacher.safetensors").is_file()  # the dense teacher, saved once
    stranger = toy_model()
    with torch.no_grad():  # handed other weights: the checkpoint restores the student, teacher.safetensors the teacher
        for p in stranger.parameters():
            p.mul_(-0.5)
    resumed, notes = _run(kind, model=stranger, resume_dir=str(tmp_path / "ck"))
    assert any(n.startswith("distillation teacher restored from") for n in notes)
    assert any(n.startswith(f"resumed from {tmp_path / 'ck' / 'step-00000001'} after step 1 of 3") for n in notes)
    a, b = whole.state_dict(), resumed.state_dict()
    assert a.keys() == b.keys()
    for k in a:  # shapes, weights, masks, BatchNorm statistics
        assert torch.equal(a[k], b[k]), k
    plan_a, plan_b = get_plan(whole), get_plan(resumed)
    assert (plan_a is None) == (plan_b is None) == (kind == "mask")
    if plan_a is not None:
        assert plan_a.to_dict() == plan_b.to_dict() and len(plan_a.steps) == 3
    steps = [n.split(", val accuracy")[0] for n in whole_notes if n.startswith("step ")]
    assert [n.split(", val accuracy")[0] for n in notes if n.startswith("step ")] == steps
    assert sorted(p.name for p in (tmp_path / "ck").iterdir()) == ["latest.json", "step-00000003",
                                                                   "teacher.safetensors"]


def test_a_checkpoint_of_other_settings_is_refused(tmp_path):
    model = toy_model()
    prunekit.prune(model, stage("iterative", steps=1, finetune_epochs=0, **KINDS["mask"],
                                checkpoint_dir=str(tmp_path)), X, data=toy_data())
    with pytest.raises(PrunekitError) as err:
        prunekit.prune(toy_model(), stage("iterative", steps=2, finetune_epochs=0, **KINDS["mask"],
                                          resume_dir=str(tmp_path)), X, data=toy_data())
    assert "made with other iterative settings" in str(err.value) and "\n" not in str(err.value)


def test_cli_resume_accepts_an_iterative_recipe(tmp_path, monkeypatch):
    from prunekit.cli.main import main

    (tmp_path / "it_toy.py").write_text(
        "import torch\nfrom torch import nn\n\n\ndef build():\n    torch.manual_seed(0)\n"
        "    return nn.Sequential(nn.Flatten(), nn.Linear(64, 32), nn.ReLU(), nn.Linear(32, 32), nn.ReLU(),\n"
        "                         nn.Linear(32, 10))\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    recipe = tmp_path / "it.yaml"
    recipe.write_text("stages:\n  - method: iterative\n    kind: mask\n    sparsity: 0.5\n    steps: 2\n"
                      "    finetune_epochs: 0\n")
    args = ["prune", str(recipe), "--model", "it_toy:build", "--data", "digits", "--no-measure",
            "--resume", str(tmp_path / "r")]
    assert main([*args, "--out", str(tmp_path / "a")]) == 0
    assert (tmp_path / "r" / "stage-0" / "step-00000002").is_dir()
    assert main([*args, "--out", str(tmp_path / "b")]) == 0
    import json

    notes = json.loads((tmp_path / "b" / "report.json").read_text())["stages"][0]["notes"]
    assert any("after step 2 of 2" in n for n in notes), notes
