"""`prunekit prune` under `torchrun --nproc_per_node 2` (gloo, CPU): both ranks train, rank 0 alone writes, so
exactly one complete output folder results (no second temp folder, no clash on the rename) and it loads."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import pytest
import torch

RECIPE = """
stages:
  - method: gmp
    sparsity: 0.5
    epochs: 1
    batch_size: 64
"""


@pytest.mark.slow  # two torch processes and the launcher: ~15 s on a shared 2-core machine
def test_prune_under_torchrun_writes_one_folder_from_rank_0(tmp_path, monkeypatch):
    import prunekit

    work = tmp_path / "work"
    work.mkdir()
    (work / "ddp_toy.py").write_text(textwrap.dedent("""
        import torch
        from torch import nn

        def build():
            torch.manual_seed(0)
            return nn.Sequential(nn.Flatten(), nn.Linear(64, 32), nn.ReLU(), nn.Linear(32, 32), nn.ReLU(),
                                 nn.Linear(32, 10))
    """))
    (work / "gmp.yaml").write_text(RECIPE)
    out = tmp_path / "out"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": os.pathsep.join([str(work), *sys.path])}
    env.pop("WORLD_SIZE", None)
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--standalone",
           "-m", "prunekit.cli.main", "prune", str(work / "gmp.yaml"), "--model", "ddp_toy:build",
           "--data", "digits", "--no-measure", "--out", str(out)]
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300, cwd=str(work))
    assert done.returncode == 0, done.stderr[-3000:]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out", "work"]  # one folder, no leftover temp folder
    assert done.stdout.count(f"wrote {out}") == 1  # only rank 0 reported writing
    notes = json.loads((out / "report.json").read_text())["stages"][0]["notes"]
    assert any("data-parallel on 2 ranks" in n for n in notes), notes
    monkeypatch.syspath_prepend(str(work))
    model = prunekit.load(out)
    weights = [m.weight for m in model.modules() if isinstance(m, torch.nn.Linear)]
    zeros = sum(int((w == 0).sum()) for w in weights)
    assert zeros > 0 and model(torch.zeros(2, 1, 8, 8)).shape == (2, 10)
