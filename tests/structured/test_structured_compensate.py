"""Compensation after structured surgery: the least-squares refit maths, and that least_squares / bn bring the
pruned model's outputs closer to the dense model's than no compensation, with verify still passing."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

import prunekit
from prunekit.errors import PrunekitError
from prunekit.methods.structured.calib import InputStats, output_error
from prunekit.methods.structured.compensate import refit
from prunekit.training.bn import recalibrate_batchnorm


def _stats(x: torch.Tensor) -> InputStats:
    s = InputStats()
    s.add(x, with_gram=True)
    return s


def test_refit_is_the_least_squares_solution_with_and_without_bias():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(200, 6, generator=g, dtype=torch.float64) @ torch.randn(6, 6, generator=g, dtype=torch.float64)
    x += 0.5  # a mean for the bias to absorb
    w, b = torch.randn(4, 6, generator=g, dtype=torch.float64), torch.randn(4, generator=g, dtype=torch.float64)
    keep = torch.tensor([True, False, True, True, False, True])
    new_w, new_b = refit(w, b, _stats(x), keep, damp=0.0)
    design = torch.cat([x[:, keep], torch.ones(200, 1, dtype=torch.float64)], 1)
    sol = torch.linalg.lstsq(design, x @ w.T + b).solution.T
    assert torch.allclose(new_w, sol[:, :-1], atol=1e-8) and torch.allclose(new_b, sol[:, -1], atol=1e-8)
    nobias_w, nobias_b = refit(w, None, _stats(x), keep, damp=0.0)
    assert nobias_b is None
    assert torch.allclose(nobias_w, torch.linalg.lstsq(x[:, keep], x @ w.T).solution.T, atol=1e-8)
    err = lambda w2, b2: float((x @ w.T + b - x[:, keep] @ w2.T - b2).norm())  # noqa: E731
    assert err(new_w, new_b) < err(w[:, keep], b)
    damped, _ = refit(w, b, _stats(x), keep, damp=10.0)
    assert damped.norm() < new_w.norm()  # the ridge shrinks the refit


def _correlated(seed: int, n: int = 6) -> list[tuple[torch.Tensor, torch.Tensor]]:
    g = torch.Generator().manual_seed(seed)
    mix = torch.randn(4, 16, generator=torch.Generator().manual_seed(99))  # 16 inputs driven by 4 factors
    return [(torch.randn(32, 4, generator=g) @ mix + 0.1 * torch.randn(32, 16, generator=g),
             torch.randint(0, 5, (32,), generator=g)) for _ in range(n)]


def _prune(model, x, data, **options):
    stage = {"method": "structured", "target": {"width_ratio": 0.5}, **options}
    return prunekit.prune(model, {"stages": [stage]}, x, data=data).stages[0]["notes"]


def _error(dense, pruned, data) -> tuple[float, float]:
    with torch.no_grad():
        return output_error([dense(x) for x, _ in data], [pruned(x) for x, _ in data])


def test_least_squares_lowers_the_output_error_of_a_correlated_mlp():
    torch.manual_seed(0)
    dense = nn.Sequential(nn.Linear(16, 32), nn.ReLU(), nn.Linear(32, 32), nn.ReLU(), nn.Linear(32, 5)).eval()
    calib, held_out = _correlated(1), _correlated(2)
    x = calib[0][0][:4]
    plain, fitted = copy.deepcopy(dense), copy.deepcopy(dense)
    _prune(plain, x, calib)
    notes = _prune(fitted, x, calib, compensate="least_squares")
    assert plain[2].weight.shape == fitted[2].weight.shape == (16, 16)
    assert _error(dense, fitted, held_out)[0] < 0.8 * _error(dense, plain, held_out)[0]
    assert any(n.startswith("verify: ok") for n in notes)  # verify ran on the uncompensated surgery
    note = next(n for n in notes if n.startswith("compensate least_squares: 2 layer(s) refit"))
    before, after = (float(v) for v in note.split("rel. error ")[1].split(",")[0].split(" -> "))
    assert after < before and before == pytest.approx(_error(dense, plain, calib)[0], rel=1e-4)


def test_bn_recalibration_helps_a_bn_cnn_after_surgery():
    torch.manual_seed(0)
    dense = nn.Sequential(nn.Conv2d(3, 16, 3, padding=1), nn.BatchNorm2d(16), nn.ReLU(),
                          nn.Conv2d(16, 16, 3, padding=1), nn.BatchNorm2d(16), nn.ReLU(),
                          nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(16, 10)).eval()
    g = torch.Generator().manual_seed(1)
    data = [(torch.randn(16, 3, 8, 8, generator=g) * 2 + 1, torch.randint(0, 10, (16,), generator=g))
            for _ in range(8)]
    recalibrate_batchnorm(dense, data[:6])  # the dense statistics fit the data, as after training
    calib, held_out = data[:6], data[6:]
    plain, recal = copy.deepcopy(dense), copy.deepcopy(dense)
    _prune(plain, calib[0][0][:4], calib)
    notes = _prune(recal, calib[0][0][:4], calib, compensate="bn")
    assert _error(dense, recal, held_out)[0] < _error(dense, plain, held_out)[0]
    assert any(n.startswith("compensate bn: BatchNorm statistics re-estimated on 6 batch(es)") for n in notes)
    assert any(n.startswith("verify: ok") for n in notes)


def test_compensation_errors_name_what_is_missing():
    mlp = nn.Sequential(nn.Linear(16, 32), nn.ReLU(), nn.Linear(32, 5)).eval()
    x = torch.randn(4, 16)
    with pytest.raises(PrunekitError, match="compensate least_squares needs calibration data; pass data="):
        _prune(copy.deepcopy(mlp), x, None, compensate="least_squares")
    with pytest.raises(PrunekitError, match="compensate: bn: .*no BatchNorm layer"):
        _prune(copy.deepcopy(mlp), x, [x], compensate="bn")


@pytest.mark.slow
def test_least_squares_keeps_a_random_bert_at_least_as_close_as_none():
    from zoo import build_bert

    dense, inputs = build_bert()
    g = torch.Generator().manual_seed(1)
    calib = [{"input_ids": torch.randint(0, 128, (4, 8), generator=g)} for _ in range(6)]
    plain, fitted = copy.deepcopy(dense), copy.deepcopy(dense)
    for model, comp in ((plain, "none"), (fitted, "least_squares")):
        prunekit.prune(model, {"stages": [{"method": "structured", "target": {"params_ratio": 0.8},
                                           "compensate": comp}]}, inputs, data=calib)
    assert fitted.config.intermediate_size == plain.config.intermediate_size < 64
    with torch.no_grad():
        ref = [dense(**b).logits for b in calib]
        cos_plain = output_error(ref, [plain(**b).logits for b in calib])[1]
        cos_fitted = output_error(ref, [fitted(**b).logits for b in calib])[1]
    assert cos_fitted >= cos_plain


def test_least_squares_refits_convolutions_through_unfolded_patches():
    torch.manual_seed(0)
    dense = nn.Sequential(nn.Conv2d(3, 12, 3, padding=1), nn.ReLU(), nn.Conv2d(12, 12, 3, padding=1, stride=2),
                          nn.ReLU(), nn.Conv2d(12, 8, 1), nn.Flatten(), nn.Linear(8 * 16, 5)).eval()
    g = torch.Generator().manual_seed(1)
    mix = torch.randn(2, 3, generator=g)  # 3 input channels driven by 2 factors: correlated channels downstream
    data = [((torch.randn(8, 8, 8, 2, generator=g) @ mix).permute(0, 3, 1, 2).contiguous(), None) for _ in range(6)]
    calib, held_out = [d[0] for d in data[:4]], data[4:]
    plain, fitted = copy.deepcopy(dense), copy.deepcopy(dense)
    _prune(plain, calib[0][:2], calib)
    notes = _prune(fitted, calib[0][:2], calib, compensate="least_squares")
    assert fitted[2].weight.shape == plain[2].weight.shape == (6, 6, 3, 3)
    assert any(n.startswith("compensate least_squares: 3 layer(s) refit") for n in notes)  # two convs and the head
    assert _error(dense, fitted, held_out)[0] < 0.8 * _error(dense, plain, held_out)[0]


def test_gpt2_conv1d_layers_are_read_and_refit_in_their_in_out_layout():
    from zoo import build_gpt2

    from prunekit.graph import DependencyGraph
    from prunekit.methods.structured.calib import calibration_batches
    from prunekit.methods.structured.evidence import build_evidence

    dense, inputs = build_gpt2()
    g = torch.Generator().manual_seed(2)
    calib = [{"input_ids": torch.randint(0, 128, (4, 8), generator=g)} for _ in range(4)]
    ev = build_evidence(dense, DependencyGraph.build(dense, inputs), "activation", calibration_batches(calib, 8))
    assert ("transformer.h.0.mlp.c_proj.weight", 0) in ev.act_sq  # Conv1D weight (in, out): inputs along dim 0
    plain, fitted = copy.deepcopy(dense), copy.deepcopy(dense)
    for model, comp in ((plain, "none"), (fitted, "least_squares")):
        notes = prunekit.prune(model, {"stages": [{"method": "structured", "target": {"params_ratio": 0.8},
                                                   "compensate": comp}]}, inputs, data=calib).stages[0]["notes"]
    assert any(n.startswith("compensate least_squares: 2 layer(s) refit") for n in notes)  # the two mlp.c_proj
    with torch.no_grad():
        ref = [dense(**b).logits for b in calib]
        err_plain = output_error(ref, [plain(**b).logits for b in calib])[0]
        err_fitted = output_error(ref, [fitted(**b).logits for b in calib])[0]
    assert err_fitted < 0.5 * err_plain


class _TokenModel(nn.Module):
    """Embedding -> Linear: the Linear sees (B, T, C) token states; a batch dict carries an attention mask."""

    def __init__(self) -> None:
        super().__init__()
        self.emb = nn.Embedding(10, 4)
        self.proj = nn.Linear(4, 3)

    def forward(self, input_ids, attention_mask=None):
        return self.proj(self.emb(input_ids))


def test_padding_tokens_are_left_out_of_the_calibration_statistics():
    from prunekit.methods.structured.calib import Batch, collect_inputs

    torch.manual_seed(0)
    model = _TokenModel().eval()
    ids = torch.tensor([[1, 2, 3, 0], [4, 5, 0, 0]])
    mask = torch.tensor([[1, 1, 1, 0], [1, 1, 0, 0]])
    stats = collect_inputs(model, [Batch({"input_ids": ids, "attention_mask": mask})], {"proj": model.proj},
                           gram=frozenset({"proj"}))["proj"]
    real = model.emb(ids)[mask.bool()].detach().double()  # the 5 real tokens only
    assert stats.count == 5
    torch.testing.assert_close(stats.total, real.sum(0))
    torch.testing.assert_close(stats.gram, real.T @ real)
    unmasked = collect_inputs(model, [Batch({"input_ids": ids})], {"proj": model.proj})["proj"]
    assert unmasked.count == 8  # without a mask every position counts
