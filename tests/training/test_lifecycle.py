"""The guarded lifecycle the three training-time pruners share (`prunekit.training.lifecycle`): every misuse of
prepare() -> step(global_step) -> finalize() raises the same one-line error, naming the class and what to call."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch
from torch import nn

from prunekit.errors import PrunekitError
from prunekit.training.movement import MovementPruner
from prunekit.training.pruner import Pruner
from prunekit.training.structured_pruner import StructuredPruner

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _gmp_toy import toy_model  # noqa: E402


def _mlp() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 16), nn.ReLU(), nn.Linear(16, 4))


MAKERS = {
    "Pruner": lambda: Pruner(_mlp(), {"sparsity": 0.75, "protect_first": False, "schedule": {"end": 20}}),
    "MovementPruner": lambda: MovementPruner(_mlp(), {"sparsity": 0.5}, total_steps=10),
    "StructuredPruner": lambda: StructuredPruner(toy_model(), {"target": {"width_ratio": 0.5}, "at_steps": [1]},
                                                 torch.randn(2, 1, 8, 8)),
}


@pytest.mark.parametrize("who", sorted(MAKERS))
def test_lifecycle_misuse_says_what_to_call(who):
    make = MAKERS[who]
    with pytest.raises(PrunekitError, match=rf"^{who}\.step\(\) called before prepare\(\); call pruner.prepare\(\) "
                                            "first"):
        make().step(1)
    with pytest.raises(PrunekitError, match=rf"^{who}\.finalize\(\) called before prepare\(\); call prepare\(\), "
                                            r"train with step\(\), then finalize\(\)$"):
        make().finalize()
    pruner = make()
    pruner.prepare()
    assert pruner.phase == "prepared"
    with pytest.raises(PrunekitError, match=rf"^{who}\.prepare\(\) was already called; call it once"):
        pruner.prepare()
    with pytest.raises(PrunekitError, match=rf"^{who}\.load_state_dict\(\) needs a fresh pruner"):
        pruner.load_state_dict(pruner.state_dict())
    pruner.step(3)
    assert pruner.last_step == 3
    for bad in (2, 3.0, True, "4"):
        with pytest.raises(PrunekitError, match=r"global_step must be an integer >= the last one \(3\)"):
            pruner.step(bad)
    assert pruner.last_step == 3
    pruner.step(3)  # the same step again is allowed (e.g. gradient accumulation)
    pruner.finalize()
    assert pruner.phase == "finalized"
    with pytest.raises(PrunekitError, match=rf"^{who}\.step\(\) called after finalize\(\); the run is over"):
        pruner.step(4)
    with pytest.raises(PrunekitError, match=rf"^{who}\.finalize\(\) was already called$"):
        pruner.finalize()
    with pytest.raises(PrunekitError, match=rf"^{who}\.prepare\(\) after finalize\(\); build a new {who}"):
        pruner.prepare()
