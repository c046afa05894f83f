"""Child process of the kill -9 resume test: a gmp run that checkpoints, slowed so the parent can kill it mid-run."""

from __future__ import annotations

import sys
import time
from pathlib import Path

import torch

torch.set_num_threads(1)
sys.path.insert(0, str(Path(__file__).resolve().parent))

import prunekit  # noqa: E402
from prunekit.training.pruner import Pruner  # noqa: E402
from _gmp_toy import gmp_stage, toy_data, toy_model  # noqa: E402

_step = Pruner.step


def _slow_step(self, global_step):  # gives the parent time to kill us between checkpoints
    time.sleep(0.05)
    return _step(self, global_step)


Pruner.step = _slow_step
prunekit.prune(toy_model(), gmp_stage(checkpoint_every=4, checkpoint_dir=sys.argv[1]), torch.zeros(2, 1, 8, 8),
               data=toy_data())
print("FINISHED")
