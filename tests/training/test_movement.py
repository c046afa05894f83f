"""Movement pruning: the straight-through maths, scores that move as Sanh et al. specify, hard / soft lifecycles,
finalize into KeepMasks, Linear / Conv / Hugging Face BERT models, and the `movement` recipe stage."""

from __future__ import annotations

import pytest
import torch
from torch import nn
from torch.nn.utils import parametrize

import prunekit
from prunekit.errors import PrunekitError
from prunekit.importance.movement import StraightThrough, ThresholdMask, TopKMask, movement, sigmoid_l1, topk_keep
from prunekit.masks import KeepMask, current_mask
from prunekit.patterns.threshold import n_to_prune
from prunekit.recipes import parse_recipe
from prunekit.schedules import ScheduleConfig
from prunekit.training.movement import MovementPruner, MovementScores


def mlp() -> nn.Sequential:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(8, 32), nn.ReLU(), nn.Linear(32, 48), nn.ReLU(), nn.Linear(48, 16), nn.ReLU(),
                         nn.Linear(16, 4))


def cnn() -> nn.Sequential:
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(1, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, 16, 3, padding=1), nn.ReLU(),
                         nn.Conv2d(16, 16, 3, padding=1), nn.ReLU(), nn.Flatten(), nn.Linear(16 * 64, 4))


def task(shape: tuple[int, ...], n: int = 64) -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(1)
    x = torch.randn(n, *shape, generator=gen)
    return x, (x.flatten(1)[:, :4].sum(1) > 0).long() + 2 * (x.flatten(1)[:, -4:].sum(1) > 0).long()


def run(model, cfg, steps=12, x_y=None, lr=1e-2, score_lr=5e-2, check=None):
    """A plain user loop: Adam on weights and scores, regulariser added, pruner.step after each optimizer step."""
    x, y = x_y if x_y is not None else task((8,))
    pruner = MovementPruner(model, cfg, total_steps=steps).prepare()
    opt = torch.optim.Adam(pruner.param_groups(lr, score_lr))
    for t in range(1, steps + 1):
        loss = nn.functional.cross_entropy(model(x), y) + pruner.regularisation_loss()
        opt.zero_grad()
        loss.backward()
        opt.step()
        pruner.step(t)
        if check is not None:
            check(t, pruner)
    return pruner


def layer_sparsity(masks: dict[str, torch.Tensor]) -> dict[str, float]:
    return {n: 1.0 - m.float().mean().item() for n, m in masks.items()}


# ----- pure maths --------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("n,sparsity", [(10, 0.0), (10, 0.5), (97, 0.9), (1000, 0.97), (7, 0.99)])
def test_topk_keeps_exactly_k_of_the_highest_scores(n, sparsity):
    scores = torch.randn(n, generator=torch.Generator().manual_seed(n))
    keep = topk_keep(scores, sparsity)
    assert int(keep.sum()) == n - n_to_prune(n, sparsity)
    if 0 < int(keep.sum()) < n:
        assert scores[keep].min() > scores[~keep].max()


@pytest.mark.parametrize("fn,arg", [(TopKMask.apply, 0.6), (ThresholdMask.apply, 0.1)])
def test_straight_through_gradient_reaches_the_scores_unchanged(fn, arg):
    scores = torch.randn(5, 7, requires_grad=True)
    upstream = torch.randn(5, 7)
    mask = fn(scores, arg)
    assert set(mask.unique().tolist()) <= {0.0, 1.0}
    (mask * upstream).sum().backward()
    assert torch.equal(scores.grad, upstream)
    s2 = scores.detach().clone().requires_grad_()
    (StraightThrough.apply(s2, mask.bool()) * upstream).sum().backward()
    assert torch.equal(s2.grad, upstream)


def test_threshold_mask_and_sigmoid_l1():
    s = torch.tensor([-2.0, 0.0, 0.5, 3.0])
    assert ThresholdMask.apply(s, 0.25).tolist() == [0.0, 0.0, 1.0, 1.0]
    expected = torch.sigmoid(s).sum().item() + torch.sigmoid(s[:2]).sum().item()
    assert sigmoid_l1([s, s[:2]]).item() == pytest.approx(expected)
    assert torch.equal(movement(torch.tensor([1.0, -1.0]), torch.tensor([2.0, 2.0])), torch.tensor([-2.0, 2.0]))


# ----- scores move as specified ------------------------------------------------------------------------------------
def test_scores_follow_minus_lr_times_sum_of_grad_times_weight_under_sgd():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 3, bias=False))
    w = model[0].weight.detach().clone()
    eta, n_steps = 0.05, 6
    pruner = MovementPruner(model, {"sparsity": 0.5, "schedule": {"kind": "constant"}, "score_init": "magnitude",
                                    "protect_first": False, "protect_last": False}, total_steps=n_steps).prepare()
    model[0].parametrizations.weight.original.requires_grad_(False)  # weights frozen: only the scores learn
    (scores,) = pruner.score_parameters()
    s0 = scores.detach().clone()
    assert torch.equal(s0, w.abs())
    opt = torch.optim.SGD(pruner.score_parameters(), lr=eta)
    gen = torch.Generator().manual_seed(3)
    expected_sum = torch.zeros_like(w)
    s_by_hand = s0.clone()
    for t in range(1, n_steps + 1):
        x, target = torch.randn(5, 4, generator=gen), torch.randn(5, 3, generator=gen)
        # by hand: W' = W * topk(S), y = x W'^T, L = mean((y - t)^2)  ->  dL/dW' = 2 / (B * O) * (y - t)^T x
        w_eff = w * topk_keep(s_by_hand, 0.5).float()
        grad_eff = 2.0 / (5 * 3) * (x @ w_eff.T - target).T @ x
        expected_sum += grad_eff * w
        s_by_hand = s0 - eta * expected_sum
        loss = ((model(x) - target) ** 2).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
        pruner.step(t)
    assert torch.allclose(scores.detach() - s0, -eta * expected_sum, atol=1e-6, rtol=0)
    assert not torch.equal(scores.detach(), s0)


def test_weights_moving_away_from_zero_gain_score_and_toward_zero_lose_it():
    model = nn.Sequential(nn.Linear(2, 1, bias=False))
    with torch.no_grad():
        model[0].weight.copy_(torch.tensor([[0.5, 0.5]]))
    pruner = MovementPruner(model, {"sparsity": 0.5, "schedule": {"begin": 100, "end": 100}, "score_init": "constant",
                                    "protect_first": False, "protect_last": False}).prepare()
    opt = torch.optim.SGD(pruner.param_groups(lr=0.05, score_lr=0.1), lr=0.05)
    x = torch.tensor([[1.0, -1.0]])
    for t in range(1, 4):  # loss -y = -(w0 - w1): w0 grows away from 0, w1 shrinks toward 0
        loss = -model(x).sum()
        opt.zero_grad()
        loss.backward()
        opt.step()
        pruner.step(t)
    w = model[0].parametrizations.weight.original.detach()[0]
    s = pruner.score_parameters()[0].detach()[0]
    assert w[0] > 0.5 and 0 < w[1] < 0.5
    assert s[0] > 0 > s[1]
    pruner.step(100)  # now prune half: the weight that moved toward zero goes, although |w1| was never smallest
    assert pruner.masks()["0"].tolist() == [[True, False]]


# ----- hard / soft -------------------------------------------------------------------------------------------------
def test_hard_masks_follow_the_schedule_exactly():
    cfg = {"sparsity": 0.9, "schedule": {"begin": 3, "end": 15}}
    sched = ScheduleConfig(begin=3, end=15).build(0.9)
    seen = []

    def check(t, pruner):
        for name, keep in pruner.masks().items():
            assert int((~keep).sum()) == n_to_prune(keep.numel(), sched(t)), (t, name)
        seen.append(pruner.masks()["2"].clone())

    pruner = run(mlp(), cfg, steps=20, check=check)
    assert sorted(pruner.layers) == ["2", "4"]
    assert all(abs(v - 0.9) < 1e-3 for v in layer_sparsity(pruner.masks()).values())
    assert pruner.applied == pytest.approx(0.9)


def test_soft_regularisation_drives_sparsity_up_with_lambda():
    sparsity = {}
    for lam in (0.0, 0.05):
        cfg = {"mode": "soft", "regularization": lam, "threshold": -0.05, "schedule": {"end": 10}}
        pruner = run(mlp(), cfg, steps=40)
        masks = pruner.masks()
        sparsity[lam] = 1 - sum(int(m.sum()) for m in masks.values()) / sum(m.numel() for m in masks.values())
        assert pruner.lam == pytest.approx(lam)  # ramped to the full lambda by schedule.end
    assert sparsity[0.05] > sparsity[0.0] + 0.3


def test_soft_lambda_ramps_on_the_schedule_shape_and_keeps_min_density():
    model = mlp()
    pruner = MovementPruner(model, {"mode": "soft", "regularization": 2.0, "threshold": 5.0, "min_density": 0.1,
                                    "schedule": {"end": 10}, "score_init": "constant"}).prepare()
    for t, frac in ((0, 0.0), (5, 1 - 0.5 ** 3), (10, 1.0)):
        pruner.step(t)
        assert pruner.lam == pytest.approx(2.0 * frac)
    for keep in pruner.masks().values():  # every score (0) is below the threshold: the 10% floor is kept
        assert int(keep.sum()) == -(-keep.numel() // 10)
    n_scores = sum(s.numel() for s in pruner.score_parameters())
    assert pruner.regularisation_loss().item() == pytest.approx(2.0 * 0.5 * n_scores)  # lambda * sum(sigmoid(0))


# ----- finalize, models, misuse --------------------------------------------------------------------------------------
@pytest.mark.parametrize("mode", ["hard", "soft"])
def test_finalize_gives_keepmasks_no_scores_and_the_same_outputs(mode):
    model = mlp()
    cfg = {"sparsity": 0.8} if mode == "hard" else {"mode": "soft", "regularization": 0.05, "threshold": -0.05}
    pruner = run(model, cfg, steps=10)
    x = task((8,))[0]
    before, masks = model(x).detach(), pruner.masks()
    result = pruner.finalize()
    assert not any(isinstance(p, MovementScores) for p in model.modules())
    assert not any("scores" in n for n, _ in model.named_parameters())
    for name in pruner.layers:
        module = dict(model.named_modules())[name]
        assert [type(p) for p in module.parametrizations.weight] == [KeepMask]
        assert torch.equal(current_mask(module), masks[name])
        assert bool((module.parametrizations.weight.original[~masks[name]] == 0).all())
        assert result.layers[name]["sparsity"] == pytest.approx(1 - masks[name].float().mean().item())
    assert torch.equal(model(x), before)
    prunekit.finalize(model)
    assert torch.equal(model(x), before)
    assert [n for n, _ in model.named_parameters()] == [n for n, _ in mlp().named_parameters()]


def test_score_access_needs_a_prepared_pruner():  # the shared lifecycle checks: tests/training/test_lifecycle.py
    pruner = MovementPruner(mlp(), {"sparsity": 0.5}, total_steps=10)
    with pytest.raises(PrunekitError, match=r"score_parameters\(\) needs a prepared pruner \(phase new\)"):
        pruner.score_parameters()
    pruner.prepare().finalize()
    with pytest.raises(PrunekitError, match=r"regularisation_loss\(\) needs a prepared pruner \(phase finalized\)"):
        pruner.regularisation_loss()
    with pytest.raises(PrunekitError, match="schedule end is not set and total_steps is unknown"):
        MovementPruner(mlp(), {"sparsity": 0.5}).prepare()


def test_cnn_and_an_earlier_mask_are_respected():
    model = cnn()
    prunekit.prune(model, {"stages": [{"method": "magnitude", "sparsity": 0.5, "targets": ["2"]}]})
    earlier = current_mask(model[2]).clone()
    pruner = run(model, {"sparsity": 0.75, "schedule": {"end": 6}}, steps=8, x_y=task((1, 8, 8)))
    assert sorted(pruner.layers) == ["2", "4"]  # first conv and the Linear head are protected
    masks = pruner.masks()
    assert not bool((masks["2"] & ~earlier).any())  # pruned by the earlier stage: stays pruned
    assert all(v == pytest.approx(0.75, abs=1e-3) for v in layer_sparsity(masks).values())
    pruner.finalize()
    assert [type(p) for p in model[2].parametrizations.weight] == [KeepMask]
    assert torch.equal(current_mask(model[2]), masks["2"])


def test_allocation_splits_the_sparsity_across_layers():
    model = mlp()
    pruner = run(model, {"sparsity": 0.8, "allocation": {"kind": "erk"}, "schedule": {"end": 6}}, steps=8)
    sp = layer_sparsity(pruner.masks())
    sizes = {n: m.numel() for n, m in pruner.masks().items()}
    assert abs(sp["2"] - sp["4"]) > 0.01
    assert sum(sp[n] * sizes[n] for n in sp) / sum(sizes.values()) == pytest.approx(0.8, abs=2e-3)


def test_tiny_hf_bert_encoder_linears():
    transformers = pytest.importorskip("transformers")
    torch.manual_seed(0)
    cfg = transformers.BertConfig(vocab_size=64, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                                  intermediate_size=64, max_position_embeddings=32, num_labels=3)
    model = transformers.BertForSequenceClassification(cfg)
    ids = torch.randint(0, 64, (8, 12), generator=torch.Generator().manual_seed(0))
    labels = torch.randint(0, 3, (8,), generator=torch.Generator().manual_seed(1))
    pruner = MovementPruner(model, {"sparsity": 0.9, "targets": ["re:bert\\.encoder\\..*"], "protect_first": False},
                            total_steps=6).prepare()
    assert len(pruner.layers) == 12
    opt = torch.optim.AdamW(pruner.param_groups(1e-3, 1e-2))
    for t in range(1, 7):
        loss = model(input_ids=ids, labels=labels).loss
        opt.zero_grad()
        loss.backward()
        opt.step()
        pruner.step(t)
    model.eval()
    before = model(input_ids=ids).logits.detach()
    pruner.finalize()
    assert all(v == pytest.approx(0.9, abs=1e-3) for v in layer_sparsity(pruner.masks()).values())
    prunekit.finalize(model)
    assert torch.allclose(model(input_ids=ids).logits, before, atol=1e-6)
    assert not any(parametrize.is_parametrized(m) for m in model.modules())


# ----- recipe stage ------------------------------------------------------------------------------------------------
def test_movement_stage_on_the_digits_cnn():
    from prunekit.data import digits_cnn, load_dataset

    model = digits_cnn(progress=False)
    recipe = {"stages": [{"method": "movement", "sparsity": 0.8, "epochs": 1, "batch_size": 128, "lr": 1e-3}]}
    report = prunekit.prune(model, recipe, torch.zeros(2, 1, 8, 8), data=load_dataset("digits"))
    pruned = [row for row in report.layers if row.status == "pruned"]
    assert len(pruned) >= 3
    for row in pruned:
        keep = current_mask(dict(model.named_modules())[row.name])
        assert 1 - keep.float().mean().item() == pytest.approx(0.8, abs=1e-3)
        assert row.sparsity == pytest.approx(0.8, abs=1e-3)
    notes = report.stages[0]["notes"]
    assert "hard movement over 9 steps (1 epochs x 9); val accuracy per epoch: " in notes[-1]
    assert not any(isinstance(m, MovementScores) for m in model.modules())


@pytest.mark.parametrize("stage,message", [
    ({"mode": "medium", "sparsity": 0.5}, "mode"),
    ({"mode": "hard"}, "movement mode 'hard' needs sparsity"),
    ({"mode": "soft", "sparsity": 0.5}, "movement mode 'soft' takes no sparsity"),
    ({"mode": "soft", "allocation": {"kind": "erk"}}, "allocation applies to movement mode 'hard' only"),
    ({"sparsity": 1.2}, "sparsity"),
    ({"sparsity": 0.99}, r"sparsity 0.99 is above 1 - min_density \(0.98\)"),
    ({"sparsity": 0.5, "score_lr": 0}, "score_lr"),
    ({"sparsity": 0.5, "schedule": {"kind": "cubik"}}, "unknown schedule kind 'cubik'.*cubic"),
    ({"sparsity": 0.5, "score_init": "random"}, "score_init"),
])
def test_bad_config_values_give_one_line_errors(stage, message):
    with pytest.raises(PrunekitError, match=message) as err:
        parse_recipe({"stages": [{"method": "movement", **stage}]})
    assert "\n" not in str(err.value)


def test_movement_stage_needs_data():
    with pytest.raises(PrunekitError, match="movement fine-tunes the model and needs data"):
        prunekit.prune(mlp(), {"stages": [{"method": "movement", "sparsity": 0.5}]}, torch.zeros(2, 8))
