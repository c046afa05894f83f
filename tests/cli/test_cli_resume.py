"""`prunekit prune --resume DIR`: training stages checkpoint into DIR/stage-<i> (every RESUME_EVERY steps unless the
recipe says) and a second run resumes there. 3 epochs of digits at batch 64 are 60 steps: one checkpoint at 50."""

from __future__ import annotations

import json
import textwrap

import pytest

from prunekit.cli.main import main

RECIPE = """
stages:
  - method: gmp
    sparsity: 0.5
    epochs: 3
    batch_size: 64
"""


@pytest.fixture
def toy_module(tmp_path, monkeypatch):
    (tmp_path / "resume_toy.py").write_text(textwrap.dedent("""
        import torch
        from torch import nn

        def build():
            torch.manual_seed(0)
            return nn.Sequential(nn.Flatten(), nn.Linear(64, 32), nn.ReLU(), nn.Linear(32, 32), nn.ReLU(),
                                 nn.Linear(32, 10))
    """))
    monkeypatch.syspath_prepend(str(tmp_path))
    recipe = tmp_path / "gmp.yaml"
    recipe.write_text(RECIPE)
    return recipe


def test_resume_checkpoints_then_resumes(toy_module, tmp_path):
    ckpt = tmp_path / "ckpt"
    args = ["prune", str(toy_module), "--model", "resume_toy:build", "--data", "digits", "--no-measure",
            "--resume", str(ckpt)]
    assert main([*args, "--out", str(tmp_path / "a")]) == 0
    assert (ckpt / "stage-0").is_dir() and any((ckpt / "stage-0").iterdir())
    assert main([*args, "--out", str(tmp_path / "b")]) == 0
    notes = json.loads((tmp_path / "b" / "report.json").read_text())["stages"][0]["notes"]
    assert any("resumed from" in n for n in notes), notes


def test_resume_without_a_training_stage_is_a_one_line_error(tmp_path, capsys):
    recipe = tmp_path / "mag.yaml"
    recipe.write_text("stages:\n  - method: magnitude\n    sparsity: 0.5\n")
    code = main(["prune", str(recipe), "--model", "timm:resnet18", "--out", str(tmp_path / "o"),
                 "--resume", str(tmp_path / "r")])
    err = capsys.readouterr().err.strip()
    assert code == 2 and "no stage of this recipe trains (magnitude)" in err and len(err.splitlines()) == 1
    assert not (tmp_path / "o").exists()
