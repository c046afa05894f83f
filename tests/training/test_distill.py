"""Distillation: the loss against its formula, its gradient, the limits alpha = 0 / 1, the frozen teacher, errors."""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import prunekit
from prunekit.training.distill import DistillConfig, Distiller, distill_loss, hidden_mse


def _logits(seed: int, shape=(6, 5), dtype=torch.float32) -> torch.Tensor:
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed), dtype=dtype) * 3


def _by_hand(s, t, y, temperature, alpha):
    def log_softmax(z):
        z = z / temperature
        return z - torch.log(torch.exp(z).sum(-1, keepdim=True))

    p_t = torch.exp(log_softmax(t))
    kl = (p_t * (log_softmax(t) - log_softmax(s))).sum(-1).mean()
    log_p = s - torch.log(torch.exp(s).sum(-1, keepdim=True))
    ce = -log_p[torch.arange(len(y)), y].mean()
    return alpha * temperature**2 * kl + (1 - alpha) * ce


@pytest.mark.parametrize(("temperature", "alpha"), [(1.0, 0.5), (4.0, 0.9), (2.5, 1.0), (0.5, 0.3)])
def test_distill_loss_matches_the_formula(temperature, alpha):
    s, t = _logits(0, dtype=torch.float64), _logits(1, dtype=torch.float64)
    y = torch.tensor([0, 1, 2, 3, 4, 0])
    got = distill_loss(s, t, y, temperature=temperature, alpha=alpha)
    assert torch.allclose(got, _by_hand(s, t, y, temperature, alpha), rtol=1e-10, atol=1e-12)


def test_alpha_zero_is_cross_entropy_and_same_logits_give_zero_kl():
    s, t = _logits(0), _logits(1)
    y = torch.tensor([4, 3, 2, 1, 0, 0])
    assert torch.allclose(distill_loss(s, t, y, temperature=3.0, alpha=0.0), F.cross_entropy(s, y))
    assert distill_loss(s, s.clone(), None, temperature=3.0, alpha=1.0).abs() < 1e-6


def test_distill_loss_gradient_check_and_no_teacher_gradient():
    s = _logits(2, (3, 4), torch.float64).requires_grad_()
    t = _logits(3, (3, 4), torch.float64).requires_grad_()
    y = torch.tensor([1, 0, 3])
    assert torch.autograd.gradcheck(lambda a: distill_loss(a, t, y, temperature=2.0, alpha=0.7), (s,))
    distill_loss(s, t, y, temperature=2.0, alpha=0.7).backward()
    assert t.grad is None and s.grad is not None


def test_sequence_logits_are_flattened_to_rows():
    s, t = _logits(4, (2, 3, 5)), _logits(5, (2, 3, 5))
    y = torch.randint(0, 5, (2, 3), generator=torch.Generator().manual_seed(0))
    flat = distill_loss(s.reshape(6, 5), t.reshape(6, 5), y.reshape(6), temperature=2.0, alpha=0.5)
    assert torch.allclose(distill_loss(s, t, y, temperature=2.0, alpha=0.5), flat)


@pytest.mark.parametrize(("kwargs", "match"), [
    (dict(temperature=0.0, alpha=0.5), r"temperature 0.0 must be > 0"),
    (dict(temperature=1.0, alpha=1.5), r"alpha 1.5 must lie in \[0, 1\]"),
])
def test_distill_loss_bad_arguments(kwargs, match):
    with pytest.raises(prunekit.PrunekitError, match=match):
        distill_loss(_logits(0), _logits(1), torch.zeros(6, dtype=torch.long), **kwargs)


def test_distill_loss_shape_and_missing_targets_errors():
    with pytest.raises(prunekit.PrunekitError, match=r"student logits \(6, 5\) and teacher logits \(6, 4\) differ"):
        distill_loss(_logits(0), _logits(1, (6, 4)), None, temperature=1.0, alpha=1.0)
    with pytest.raises(prunekit.PrunekitError, match=r"alpha 0.5 < 1 needs targets"):
        distill_loss(_logits(0), _logits(1), None, temperature=1.0, alpha=0.5)


def test_hidden_mse_value_and_errors():
    a, b = _logits(0), _logits(1)
    assert torch.allclose(hidden_mse([a, a], [b, a]), ((a - b) ** 2).mean() / 2)
    with pytest.raises(prunekit.PrunekitError, match=r"state 0 has shape \(6, 5\) in the student and \(6, 4\)"):
        hidden_mse([a], [_logits(1, (6, 4))])
    with pytest.raises(prunekit.PrunekitError, match=r"1 student and 2 teacher states"):
        hidden_mse([a], [a, a])


def _net(seed: int) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 3))


def test_distiller_teacher_is_a_frozen_copy_taken_at_construction():
    dense = _net(0)
    x, y = torch.randn(5, 4), torch.tensor([0, 1, 2, 0, 1])
    distiller = Distiller(dense, DistillConfig(temperature=2.0, alpha=0.6))
    expected_t = dense(x).detach()
    with torch.no_grad():
        dense[0].weight.zero_()  # pruning the student afterwards does not touch the teacher
    assert all(not p.requires_grad for p in distiller.teacher.parameters())
    assert all(p.requires_grad for p in dense.parameters())
    student = _net(1)
    got = distiller.loss(student, x, y)
    assert torch.allclose(got, distill_loss(student(x), expected_t, y, temperature=2.0, alpha=0.6))
    got.backward()
    assert student[0].weight.grad is not None and distiller.teacher[0].weight.grad is None


def test_distiller_hidden_mse_term():
    dense = _net(0)
    x, y = torch.randn(5, 4), torch.tensor([0, 1, 2, 0, 1])
    cfg = DistillConfig(temperature=2.0, alpha=0.5, hidden_mse=3.0, hidden_layers=("0",))
    distiller = Distiller(dense, cfg)
    same = copy.deepcopy(dense)
    pure = distill_loss(same(x), dense(x), y, temperature=2.0, alpha=0.5)
    assert torch.allclose(distiller.loss(same, x, y), pure)
    other = _net(1)
    base = distill_loss(other(x), dense(x), y, temperature=2.0, alpha=0.5)
    mse = F.mse_loss(other[0](x), dense[0](x))
    assert torch.allclose(distiller.loss(other, x, y), base + 3.0 * mse)
    bad = Distiller(dense, DistillConfig(hidden_mse=1.0, hidden_layers=("O",)))
    with pytest.raises(prunekit.PrunekitError, match=r"hidden_layers: no module named 'O'"):
        bad.loss(other, x, y)


@pytest.mark.parametrize(("kwargs", "match"), [
    (dict(hidden_mse=1.0), r"hidden_mse 1.0 needs hidden_layers"),
    (dict(hidden_layers=("0",)), r"hidden_layers is set but hidden_mse is 0"),
])
def test_distill_config_pairs_hidden_options(kwargs, match):
    with pytest.raises(ValueError, match=match):  # pydantic wraps it; recipes turn it into a PrunekitError
        DistillConfig(**kwargs)
