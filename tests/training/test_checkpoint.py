"""Checkpoints: atomic layout, RNG / optimizer / pruner round trip, and resume after `kill -9` matching an
uninterrupted run exactly (masks and weights)."""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

import prunekit
from prunekit.errors import PrunekitError
from prunekit.training.checkpoint import latest_checkpoint, load_checkpoint, save_checkpoint
from prunekit.training.pruner import Pruner
from prunekit.training.pruner_config import PrunerConfig

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from _gmp_toy import gmp_stage, toy_data, toy_model  # noqa: E402

X = torch.zeros(2, 1, 8, 8)
CFG = PrunerConfig(sparsity=0.5, schedule={"kind": "constant"})


def _setup():
    model = toy_model()
    pruner = Pruner(model, CFG, total_steps=10)
    pruner.prepare()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=10)
    return model, pruner, opt, sched


def test_round_trip_restores_everything_and_keeps_only_the_latest(tmp_path):
    model, pruner, opt, sched = _setup()
    model(torch.randn(4, 1, 8, 8)).sum().backward()
    opt.step()
    sched.step()
    pruner.step(1)
    save_checkpoint(tmp_path, 1, model=model, optimizer=opt, scheduler=sched, pruner=pruner, extra={"acc": [0.5]})
    torch.manual_seed(7), np.random.seed(7), random.seed(7)
    save_checkpoint(tmp_path, 2, model=model, optimizer=opt, scheduler=sched, pruner=pruner, extra={"acc": [0.5]})
    expected = (torch.rand(3), np.random.rand(3), random.random())
    assert sorted(p.name for p in tmp_path.iterdir()) == ["latest.json", "step-00000002"]
    assert json.loads((tmp_path / "latest.json").read_text()) == {"step": 2, "dir": "step-00000002"}

    ckpt = load_checkpoint(tmp_path)
    assert ckpt.step == 2 and ckpt.extra == {"acc": [0.5]}
    model2 = toy_model()
    pruner2 = Pruner(model2, CFG, total_steps=10)
    ckpt.restore(pruner=pruner2, model=model2)
    opt2 = torch.optim.AdamW(model2.parameters(), lr=1e-2)
    sched2 = torch.optim.lr_scheduler.CosineAnnealingLR(opt2, T_max=10)
    ckpt.restore(optimizer=opt2, scheduler=sched2, rng=True)
    assert torch.equal(torch.rand(3), expected[0]) and np.array_equal(np.random.rand(3), expected[1])
    assert random.random() == expected[2]
    for k, v in model.state_dict().items():
        assert torch.equal(v, model2.state_dict()[k]), k
    assert pruner2.last_step == 1 and all(torch.equal(pruner2.masks()[n], m) for n, m in pruner.masks().items())
    assert sched2.state_dict() == sched.state_dict()
    p1, p2 = next(iter(opt.state.values())), next(iter(opt2.state.values()))
    assert torch.equal(p1["exp_avg"], p2["exp_avg"])


def test_loading_without_the_pruner_first_or_from_nothing_raises(tmp_path):
    model, pruner, opt, sched = _setup()
    save_checkpoint(tmp_path, 3, model=model, pruner=pruner)
    with pytest.raises(PrunekitError, match="does not fit this model.*restore the pruner first"):
        load_checkpoint(tmp_path).restore(model=toy_model())
    with pytest.raises(PrunekitError, match="holds no optimizer state"):
        load_checkpoint(tmp_path).restore(optimizer=opt)
    with pytest.raises(PrunekitError, match="is not a prunekit checkpoint"):
        load_checkpoint(tmp_path / "nothing")
    assert latest_checkpoint(tmp_path / "nothing") is None


def _final_state(model):
    return {k: v.clone() for k, v in model.state_dict().items()}


# Not marked slow (~5 s): CI must prove that resume after kill -9 is exact.
def test_resume_after_kill_9_matches_an_uninterrupted_run(tmp_path):
    ckpt_dir = tmp_path / "run"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    child = subprocess.Popen([sys.executable, str(HERE / "_gmp_child.py"), str(ckpt_dir)], env=env,
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 120
    while latest_checkpoint(ckpt_dir) is None or latest_checkpoint(ckpt_dir).name < "step-00000008":
        assert child.poll() is None, child.communicate()[1].decode()[-2000:]
        assert time.monotonic() < deadline, "no checkpoint appeared"
        time.sleep(0.02)
    child.send_signal(signal.SIGKILL)
    child.wait()
    assert child.returncode == -signal.SIGKILL
    killed_at = load_checkpoint(ckpt_dir).step
    assert 8 <= killed_at < 36  # 3 epochs x 12 steps: killed mid-run, after at least two checkpoints

    resumed = toy_model()
    report = prunekit.prune(resumed, gmp_stage(checkpoint_every=4, resume_dir=str(ckpt_dir)), X, data=toy_data())
    assert f"resumed from {ckpt_dir}" in report.stages[0]["notes"][0]

    straight = toy_model()
    report2 = prunekit.prune(straight, gmp_stage(), X, data=toy_data())
    a, b = _final_state(resumed), _final_state(straight)
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k
    assert report.stages[0]["notes"][-1] == report2.stages[0]["notes"][-1]  # same val accuracies


def test_a_half_written_checkpoint_is_ignored_and_cleaned(tmp_path):
    model, pruner, opt, sched = _setup()
    save_checkpoint(tmp_path, 4, model=model, pruner=pruner)
    stale = tmp_path / ".step-00000008.abc"  # what a kill during the write of step 8 leaves behind
    stale.mkdir()
    (stale / "model.safetensors").write_bytes(b"partial")
    assert latest_checkpoint(tmp_path).name == "step-00000004"
    assert load_checkpoint(tmp_path).step == 4
    save_checkpoint(tmp_path, 12, model=model, pruner=pruner)
    assert not stale.exists() and latest_checkpoint(tmp_path).name == "step-00000012"
