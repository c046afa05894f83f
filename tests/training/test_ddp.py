"""Data-parallel gmp + distilled finetune under `torchrun --nproc_per_node 2` (gloo, CPU): both ranks end with the
same masks and the same weights although they started from different ones, only rank 0 writes checkpoints, and a
mask drifted on one rank is repaired from rank 0."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from prunekit.training import distributed

HERE = Path(__file__).resolve().parent


def test_single_process_helpers_are_no_ops():
    assert not distributed.is_distributed() and distributed.rank() == 0 and distributed.world_size() == 1
    batch = (torch.arange(6), torch.arange(6))
    assert distributed.shard(batch) is batch
    model = torch.nn.Linear(2, 2)
    assert distributed.wrap(model) is model and distributed.broadcast_masks(model) == 0


# Not marked slow (~5 s per method here, ~15 s on a loaded machine): CI must prove identical masks across ranks.
@pytest.mark.parametrize("method", ["gmp", "movement"])  # movement: the scores are parameters, DDP averages them
def test_two_gloo_ranks_end_with_identical_masks_and_weights(tmp_path, method):
    from safetensors.torch import load_file

    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    env.pop("WORLD_SIZE", None)
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--standalone",
           str(HERE / "_ddp_child.py"), str(tmp_path), method]
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    r0, r1 = (load_file(str(tmp_path / f"rank{r}.safetensors")) for r in (0, 1))
    assert r0.keys() == r1.keys()
    mask_keys = [k for k in r0 if k.endswith(".mask")]
    assert len(mask_keys) == 2  # conv "3" and Linear "8" (first and last layers protected)
    for k in r0:  # masks, stored weights and BatchNorm statistics
        assert torch.equal(r0[k], r1[k]), k
    for k in mask_keys:
        assert 1 - r0[k].float().mean().item() == pytest.approx(0.8, abs=1 / 128)
    infos = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in (0, 1)]
    assert [i["world"] for i in infos] == [2, 2]
    assert infos[0]["notes"] == infos[1]["notes"]  # same val accuracies reported on both ranks
    assert any("data-parallel on 2 ranks; masks broadcast from rank 0" in n for n in infos[0]["notes"])
    # the ranks' masks never drifted in training (the end state is not just rank 0's, broadcast at the end)
    assert sum("(0 mask(s) had drifted on some rank)" in n for n in infos[0]["notes"]) == 2
    assert [i["drifted"] for i in infos] == [1, 1]  # rank 1's flipped bit was seen by both ranks ...
    s0, s1 = (load_file(str(tmp_path / f"resynced{r}.safetensors")) for r in (0, 1))
    assert all(torch.equal(s0[k], s1[k]) for k in s0)  # ... and repaired from rank 0
    ckpts = sorted(p.name for p in (tmp_path / "ckpt").iterdir())
    assert ckpts == ["latest.json", "step-00000020"]  # rank 0 alone wrote them, every 5 of 24 steps
