"""StructuredPruner: channels removed at exactly the chosen steps, optimizer re-pointed with sliced state, plan
replay, BN recalibration, guarded lifecycle and config errors."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader

from prunekit.errors import PrunekitError
from prunekit.eval import count_model
from prunekit.masks import attach_mask
from prunekit.methods.structured import apply_plan, get_plan
from prunekit.training.structured_pruner import StructuredPruner, StructuredPrunerConfig

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _gmp_toy import toy_data, toy_model  # noqa: E402

X = torch.randn(2, 1, 8, 8, generator=torch.Generator().manual_seed(1))
DENSE = (8, 16, 32)


def _widths(model):
    return (model[0].out_channels, model[3].out_channels, model[8].out_features)


def _train(model, pruner, opt, steps, start=0):
    """Optimizer steps start+1..start+steps on toy batches, pruner.step after each; [(step, changed, widths)]."""
    loader = DataLoader(toy_data().train, batch_size=16)
    log = []
    for i, (x, y) in zip(range(steps), loader):
        loss = F.cross_entropy(model(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        changed = pruner.step(start + i + 1)
        log.append((start + i + 1, changed, _widths(model)))
    return log


def _kept(size, removed):
    gone = set(removed)
    return torch.tensor([i for i in range(size) if i not in gone])


def test_channels_shrink_at_exactly_the_chosen_steps_and_reach_the_target():
    model = toy_model()
    dense_macs = count_model(model, X).macs
    pruner = StructuredPruner(model, {"target": {"macs_ratio": 0.5}, "at_steps": [2, 5]}, X, total_steps=7)
    pruner.prepare()
    assert _widths(model) == DENSE  # nothing due at step 0
    opt = torch.optim.SGD(model.parameters(), lr=0.01)
    pruner.attach_optimizer(opt)
    log = _train(model, pruner, opt, 7)
    assert [s for s, changed, _ in log if changed] == [2, 5]
    widths = [DENSE] + [w for _, _, w in log]
    assert [s for s in range(1, 8) if widths[s] != widths[s - 1]] == [2, 5]
    assert all(a > b for a, b in zip(widths[1], widths[2])) and all(a >= b for a, b in zip(widths[2], widths[5]))
    ratio = count_model(model, X).macs / dense_macs
    assert ratio == pytest.approx(pruner.reached, abs=1e-6)
    assert abs(ratio - 0.5) < 0.03
    result = pruner.finalize()
    assert result.layers["0"] == {"status": "pruned", "reason": f"out channels 8 -> {model[0].out_channels}"}
    assert any(n.startswith("removal 2 at step 5: macs_ratio goal 0.5000") for n in result.notes)


def test_optimizer_is_repointed_at_the_new_parameters_and_updates_them():
    model = toy_model()
    pruner = StructuredPruner(model, {"target": {"width_ratio": 0.5}, "at_steps": [1]}, X)
    pruner.prepare()
    opt = torch.optim.AdamW(model.parameters(), lr=0.01)
    sched = torch.optim.lr_scheduler.StepLR(opt, step_size=1, gamma=0.5)
    pruner.attach_optimizer(opt)
    _train(model, pruner, opt, 1)
    params = list(model.parameters())
    in_opt = [p for g in opt.param_groups for p in g["params"]]
    assert {id(p) for p in in_opt} == {id(p) for p in params} and len(in_opt) == len(params)  # no stale parameter
    before = [p.detach().clone() for p in params]
    _train(model, pruner, opt, 1, start=1)
    assert all(not torch.equal(b, p) for b, p in zip(before, model.parameters()) if p.grad is not None)
    assert all(p.grad is not None for p in model.parameters())
    sched.step()  # the scheduler still drives the same optimizer object
    assert opt.param_groups[0]["lr"] == pytest.approx(0.005)


@pytest.mark.parametrize("make_opt, keys", [
    (lambda ps: torch.optim.Adam(ps, lr=0.01, amsgrad=True), ("exp_avg", "exp_avg_sq", "max_exp_avg_sq")),
    (lambda ps: torch.optim.SGD(ps, lr=0.01, momentum=0.9), ("momentum_buffer",)),
])
def test_surviving_optimizer_state_is_the_old_state_at_the_kept_indices(make_opt, keys):
    model = toy_model()
    pruner = StructuredPruner(model, {"target": {"width_ratio": 0.5}, "at_steps": [3]}, X)
    pruner.prepare()
    opt = make_opt(model.parameters())
    pruner.attach_optimizer(opt)
    _train(model, pruner, opt, 2)
    names = ("3.weight", "4.weight", "8.weight", "10.weight")
    old = {n: {k: v.clone() for k, v in opt.state[dict(model.named_parameters())[n]].items()} for n in names}
    pruner.step(3)
    removals = get_plan(model).steps[-1].removals()
    new_params = dict(model.named_parameters())
    for n in names:
        assert n in removals
        state = opt.state[new_params[n]]
        for key in keys:
            expect = old[n][key]
            for dim, removed in removals[n].items():
                expect = expect.index_select(dim, _kept(expect.shape[dim], removed))
            assert state[key].shape == new_params[n].shape
            assert torch.equal(state[key], expect), (n, key)
        if "step" in old[n]:
            assert torch.equal(state["step"], old[n]["step"])
    _train(model, pruner, opt, 1, start=3)  # and the optimizer steps with the sliced state


def test_the_plan_replays_the_final_model_on_the_base_model():
    model = toy_model()
    pruner = StructuredPruner(model, {"target": {"params_ratio": 0.4}, "steps": 2, "begin": 1, "end": 3}, X)
    pruner.prepare()
    opt = torch.optim.Adam(model.parameters(), lr=0.01)
    pruner.attach_optimizer(opt)
    _train(model, pruner, opt, 4)
    pruner.finalize()
    plan = get_plan(model)
    assert len(plan.steps) == 2
    fresh = apply_plan(toy_model(), type(plan).from_json(plan.to_json()))
    fresh.load_state_dict(model.state_dict())
    model.eval()
    fresh.eval()
    assert torch.equal(fresh(X), model(X))


def test_removal_steps_spread_over_the_schedule_and_finalize_does_the_rest():
    model = toy_model()
    pruner = StructuredPruner(model, {"target": {"width_ratio": 0.5}, "steps": 3}, X, total_steps=100)
    pruner.prepare()
    assert pruner.at_steps[0] == 0 and pruner.at_steps[-1] == 75 and len(pruner.at_steps) == 3
    assert pruner.done == 1 and _widths(model)[0] < 8  # step 0 removal made by prepare()
    result = pruner.finalize()
    assert pruner.done == 3
    assert any("training stopped at step 0, before removal 2 of 3 (step 38)" in n for n in result.notes)
    assert model[0].out_channels == 4


def test_ramps_end_at_the_target():
    geo = StructuredPrunerConfig(target={"macs_ratio": 0.25}, steps=2).goals()
    assert geo == pytest.approx([0.5, 0.25])
    cubic = StructuredPrunerConfig(target={"macs_ratio": 0.25}, steps=3, ramp="cubic").goals()
    removed = [0.75 * (1 - (1 - i / 3) ** 3) for i in (1, 2, 3)]
    assert cubic == pytest.approx([1 - r for r in removed])


def test_batchnorm_is_recalibrated_after_each_removal_when_data_is_given():
    model = toy_model()
    pruner = StructuredPruner(model, {"target": {"width_ratio": 0.5}, "at_steps": [0], "calib_batches": 3,
                                      "batch_size": 8}, X, data=toy_data())
    pruner.prepare()
    assert int(model[1].num_batches_tracked) == 3  # reset, then 3 batches (cumulative average)
    assert model[1].running_mean.shape == (4,)
    no_data = StructuredPruner(toy_model(), {"target": {"width_ratio": 0.5}, "at_steps": [0]}, X)
    notes = no_data.prepare().finalize().notes
    assert any("no data given: BatchNorm statistics were not re-estimated" in n for n in notes)


def test_a_model_with_masks_is_refused():
    masked = toy_model()
    attach_mask(masked[3], torch.ones_like(masked[3].weight, dtype=torch.bool))
    with pytest.raises(PrunekitError, match=r"'3' has a mask attached; call prunekit.finalize\(model\) first"):
        StructuredPruner(masked, {"target": {"width_ratio": 0.5}}, X).prepare()


def test_bad_configs_are_one_line_errors():
    target = {"width_ratio": 0.5}
    with pytest.raises(PrunekitError, match=r"total_steps is unknown; pass StructuredPruner\(..., total_steps=N\)"):
        StructuredPruner(toy_model(), {"target": target, "steps": 2}, X).prepare()
    for bad, message in [
        ({"at_steps": [3, 3]}, r"at_steps: at_steps must be strictly increasing steps >= 0, got \[3, 3\]$"),
        ({"steps": 2, "at_steps": [1, 2, 3]}, r"steps \(2\) disagrees with at_steps \(3 entries\)"),
        ({"ramp": "cubik"}, r"ramp: unknown ramp 'cubik'.*cubic"),
        ({"importance": "l3"}, r"importance: Input should be 'l1', 'l2'"),
        ({"at_step": [1]}, r"at_step: Extra inputs are not permitted"),
    ]:
        with pytest.raises(PrunekitError, match=r"^StructuredPruner config: " + message) as info:
            StructuredPruner(toy_model(), {"target": target, **bad}, X)
        assert "\n" not in str(info.value)
    with pytest.raises(ValueError, match=r"unknown ramp 'cubik'"):
        StructuredPrunerConfig(target=target, ramp="cubik")
    with pytest.raises(PrunekitError, match=r"at_steps \[1, 9\] go past total_steps \(5\)"):
        StructuredPruner(toy_model(), {"target": target, "at_steps": [1, 9]}, X, total_steps=5).prepare()
    with pytest.raises(PrunekitError, match=r"3 removals need 2 steps between begin \(0\) and end \(1\)"):
        StructuredPruner(toy_model(), {"target": target, "steps": 3, "end": 1}, X).prepare()
    with pytest.raises(PrunekitError, match=r"needs example_inputs"):
        StructuredPruner(toy_model(), {"target": target}, None)


def test_state_of_another_shape_is_reset_with_a_note():
    model = toy_model()
    pruner = StructuredPruner(model, {"target": {"width_ratio": 0.5}, "at_steps": [1]}, X)
    pruner.prepare()
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    pruner.attach_optimizer(opt)
    opt.state[model[3].weight] = {"row_factor": torch.ones(16)}  # factored state (Adafactor-like): cannot be sliced
    pruner.step(1)
    assert model[3].weight not in opt.state
    assert "optimizer state of another shape than its parameter was reset: row_factor (16,)" in pruner.notes


def _run_with_optional_resume(folder=None):
    """6 Adam steps with removals at steps 2 and 4; with `folder`, checkpoint after step 3 and resume from it on a
    fresh base model, pruner, optimizer (as after kill -9)."""
    from prunekit.training.checkpoint import load_checkpoint, save_checkpoint

    cfg = {"target": {"macs_ratio": 0.5}, "at_steps": [2, 4]}
    model = toy_model()
    pruner = StructuredPruner(model, cfg, X, total_steps=6).prepare()
    opt = torch.optim.Adam(model.parameters(), lr=0.01)
    pruner.attach_optimizer(opt)
    batches = list(DataLoader(toy_data().train, batch_size=16))[:6]
    for step, (x, y) in enumerate(batches, start=1):
        loss = F.cross_entropy(model(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        pruner.step(step)
        if folder is not None and step == 3:
            save_checkpoint(folder, step, model=model, optimizer=opt, pruner=pruner)
            model = toy_model()  # a fresh base model, as a restarted process builds it
            pruner = StructuredPruner(model, cfg, X, total_steps=6)
            ckpt = load_checkpoint(folder)
            ckpt.restore(pruner=pruner, model=model)  # replays removal 1, then loads the weights
            opt = torch.optim.Adam(model.parameters(), lr=0.01)
            pruner.attach_optimizer(opt)
            ckpt.restore(optimizer=opt, rng=True)
    pruner.finalize()
    return model, get_plan(model)


def test_resume_from_a_checkpoint_gives_the_uninterrupted_result(tmp_path):
    straight, plan = _run_with_optional_resume()
    resumed, resumed_plan = _run_with_optional_resume(tmp_path / "ckpt")
    assert len(resumed_plan.steps) == 2 and resumed_plan.to_json() == plan.to_json()
    a, b = straight.state_dict(), resumed.state_dict()
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    with pytest.raises(PrunekitError, match=r"load_state_dict\(\) needs a fresh pruner"):
        StructuredPruner(toy_model(), {"target": {"macs_ratio": 0.5}, "at_steps": [1]}, X).prepare().load_state_dict({})
    state = StructuredPruner(toy_model(), {"target": {"macs_ratio": 0.5}, "at_steps": [1]}, X).prepare().state_dict()
    with pytest.raises(PrunekitError, match=r"made with another config; use the same one"):
        StructuredPruner(toy_model(), {"target": {"macs_ratio": 0.4}, "at_steps": [1]}, X).load_state_dict(state)


def test_the_docstring_plain_loop_example_runs():
    import textwrap

    import prunekit
    import prunekit.training.structured_pruner as mod

    code = textwrap.dedent(mod.__doc__.split("Plain-loop example::", 1)[1])
    loader = list(DataLoader(toy_data().train, batch_size=32))
    model = toy_model()
    env = {"torch": torch, "prunekit": prunekit, "model": model, "loader": loader, "epochs": 2, "x": X,
           "loss_fn": F.cross_entropy}
    exec(compile(code, "structured-pruner-docstring", "exec"), env)
    pruner = env["pruner"]
    assert pruner.phase == "finalized" and pruner.done == 3 and pruner.at_steps[::2] == [0, 9]  # 3/4 of 12 steps
    assert [h["step"] for h in pruner.history] == pruner.at_steps  # all reached inside the loop
    assert len(env["plan"].steps) == 3
    assert abs(count_model(model, X).macs / count_model(toy_model(), X).macs - 0.5) < 0.03
