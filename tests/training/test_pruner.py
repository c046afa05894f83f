"""Pruner: lifecycle guards, pruned weights held at zero under several optimizers, schedule, state round trip."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

from prunekit.errors import PrunekitError
from prunekit.masks import current_mask, has_masks
from prunekit.training.pruner import Pruner
from prunekit.training.pruner_config import PrunerConfig


def _model() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 16), nn.ReLU(), nn.Linear(16, 4))


def _cfg(**kw) -> PrunerConfig:
    base = dict(sparsity=0.75, protect_first=False, schedule={"kind": "cubic", "end": 20, "frequency": 5})
    return PrunerConfig(**{**base, **kw})


def _train(model, pruner, opt, steps, check=None):
    gen = torch.Generator().manual_seed(1)
    for t in range(1, steps + 1):
        x = torch.randn(16, 8, generator=gen)
        y = torch.randint(0, 4, (16,), generator=gen)
        loss = nn.functional.cross_entropy(model(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        pruner.step(t)
        if check:
            check(t)


OPTIMIZERS = {
    "adamw": lambda p: torch.optim.AdamW(p, lr=1e-2, weight_decay=0.1),
    "adam-l2": lambda p: torch.optim.Adam(p, lr=1e-2, weight_decay=0.1),
    "sgd-momentum": lambda p: torch.optim.SGD(p, lr=0.1, momentum=0.9, weight_decay=0.1),
}


@pytest.mark.parametrize("opt_name", sorted(OPTIMIZERS))
def test_pruned_weights_and_optimizer_state_stay_zero(opt_name):
    model = _model()
    pruner = Pruner(model, _cfg())
    pruner.prepare()
    opt = OPTIMIZERS[opt_name](model.parameters())
    pruner.attach_optimizer(opt)
    previous = {}

    def check(t):
        for name, keep in pruner.masks().items():
            module = dict(model.named_modules())[name]
            original = module.parametrizations.weight.original
            assert torch.all(module.weight[~keep] == 0) and torch.all(original[~keep] == 0), (t, name)
            for value in opt.state[original].values():
                if value.shape == original.shape:
                    assert torch.all(value[~keep] == 0), (t, name)
            if name in previous:
                assert not torch.any(keep & ~previous[name]), "a pruned weight came back"
            previous[name] = keep.clone()

    _train(model, pruner, opt, 30, check)
    result = pruner.finalize()
    assert pruner.layers == ["0", "2"]  # the last layer is protected
    for name in pruner.layers:
        assert result.layers[name]["sparsity"] == pytest.approx(0.75)
    assert result.layers["4"]["status"] == "skipped" and "last layer" in result.layers["4"]["reason"]
    assert not result.notes


def test_sparsity_follows_the_schedule():
    model = _model()
    pruner = Pruner(model, _cfg())
    pruner.prepare()
    opt = torch.optim.SGD(model.parameters(), lr=0.05)
    seen = {}
    _train(model, pruner, opt, 25, lambda t: seen.setdefault(t, 1 - pruner.masks()["2"].float().mean().item()))
    for t in (1, 4, 5, 12, 15, 20, 25):
        assert seen[t] == pytest.approx(pruner.schedule(t), abs=1 / 256), t
    assert [s for s, _ in pruner.history] == [5, 10, 15, 20]  # step 0 has sparsity 0: nothing applied


def test_finalize_before_the_schedule_ends_prunes_to_final_with_a_note():
    model = _model()
    pruner = Pruner(model, _cfg())
    pruner.prepare()
    pruner.step(6)
    result = pruner.finalize(bake=True)
    assert "before the schedule reached sparsity 0.75" in result.notes[0]
    assert not has_masks(model)
    assert (model[2].weight == 0).float().mean().item() == pytest.approx(0.75)


def test_constant_schedule_prunes_at_prepare_and_nm_is_applied_whole():
    model = _model()
    Pruner(model, _cfg(schedule={"kind": "constant"}), total_steps=10).prepare()
    assert 1 - current_mask(model[2]).float().mean().item() == pytest.approx(0.75)
    model = _model()
    pruner = Pruner(model, _cfg(sparsity=None, pattern="2:4", schedule={"kind": "linear", "begin": 3, "end": 9}))
    pruner.prepare()
    assert bool(pruner.masks()["2"].all())
    pruner.step(3)  # linear is still 0 at its begin: nothing yet
    pruner.step(4)
    keep = pruner.masks()["2"]
    assert torch.all(keep.view(16, 4, 4).sum(-1) == 2)


def test_global_scope_and_random_importance():
    model = _model()
    pruner = Pruner(model, _cfg(scope="global", importance="random", seed=3, schedule={"kind": "constant"}),
                    total_steps=5)
    pruner.prepare()
    kept = sum(int(m.sum()) for m in pruner.masks().values())
    total = sum(m.numel() for m in pruner.masks().values())
    assert kept == total - round(0.75 * total)


def test_state_dict_round_trip_into_a_fresh_model():
    model = _model()
    fresh = copy.deepcopy(model)
    pruner = Pruner(model, _cfg())
    pruner.prepare()
    _train(model, pruner, torch.optim.SGD(model.parameters(), lr=0.05), 12)
    state = pruner.state_dict()
    other = Pruner(fresh, _cfg())
    other.load_state_dict(state)
    assert other.phase == "prepared" and other.last_step == 12 and other.applied == pruner.applied
    assert all(torch.equal(other.masks()[n], m) for n, m in pruner.masks().items())
    other.step(13)
    with pytest.raises(PrunekitError, match=r"Pruner.load_state_dict\(\) needs a fresh pruner"):
        other.load_state_dict(state)
    with pytest.raises(PrunekitError, match="another PrunerConfig"):
        Pruner(copy.deepcopy(fresh), _cfg(sparsity=0.5)).load_state_dict(state)


def test_bad_config_and_missing_end_raise():
    with pytest.raises(PrunekitError, match=r"schedule end is not set and total_steps is unknown; pass Pruner"):
        Pruner(_model(), _cfg(schedule={"kind": "cubic"})).prepare()
    with pytest.raises(ValueError, match="sparsity is required with pattern 'unstructured'"):
        PrunerConfig()
    with pytest.raises(ValueError, match="importance"):
        PrunerConfig(sparsity=0.5, importance="l3")


def test_the_docstring_plain_loop_example_runs():
    import textwrap

    import prunekit
    import prunekit.training.pruner as mod

    code = textwrap.dedent(mod.__doc__.split("Plain-loop example::", 1)[1])
    gen = torch.Generator().manual_seed(0)
    loader = [(torch.randn(8, 8, generator=gen), torch.randint(0, 4, (8,), generator=gen)) for _ in range(5)]
    model = _model()
    env = {"torch": torch, "prunekit": prunekit, "model": model, "loader": loader, "epochs": 2,
           "loss_fn": nn.functional.cross_entropy}
    exec(compile(code, "pruner-docstring", "exec"), env)
    assert env["pruner"].phase == "finalized" and not has_masks(model)
    assert (model[2].weight == 0).float().mean().item() == pytest.approx(0.9, abs=1 / 256)


def test_block_pattern_is_reached_gradually_in_whole_blocks():
    model = _model()
    pruner = Pruner(model, _cfg(pattern="block:4x1", sparsity=0.5))
    pruner.prepare()
    _train(model, pruner, torch.optim.SGD(model.parameters(), lr=0.05), 20)
    assert len(pruner.history) == 4
    keep = pruner.masks()["2"]
    blocks = keep.view(4, 4, 16)  # (out blocks of 4 rows, 4 rows, in)
    assert torch.all(blocks.all(1) | ~blocks.any(1))  # each 4x1 block kept or pruned whole
    assert 1 - keep.float().mean().item() == pytest.approx(0.5)
