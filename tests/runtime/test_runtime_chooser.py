"""The per-layer chooser on fixed synthetic timing tables: it never keeps a slower kernel and picks the fastest."""

from __future__ import annotations

import random

import pytest
import torch
from torch import nn

import prunekit
from prunekit.errors import PrunekitError
from prunekit.runtime import InterleavedTimer, SparseConv1x1, SparseLinear, choose, sparsify


def _zero(layer: nn.Module, zeros: float, seed: int) -> nn.Module:
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        layer.weight[torch.rand(layer.weight.shape, generator=g) < zeros] = 0
    return layer


def _zero_blocks(layer: nn.Linear, zeros: float, seed: int, block: int = 4) -> nn.Linear:
    g = torch.Generator().manual_seed(seed)
    rows, cols = layer.weight.shape
    keep = torch.rand(rows // block, cols // block, generator=g) >= zeros
    keep = keep.repeat_interleave(block, 0).repeat_interleave(block, 1)
    with torch.no_grad():
        layer.weight.mul_(keep)
    return layer


class Net(nn.Module):
    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.a = _zero_blocks(nn.Linear(16, 32), 0.75, 1)  # 4x4 blocks: BSR is a candidate
        self.b = _zero(nn.Linear(32, 16), 0.9, 2)
        self.c = _zero(nn.Linear(16, 16), 0.2, 3)  # below min_sparsity: never timed
        self.conv = _zero(nn.Conv2d(16, 8, 1), 0.9, 4)
        self.unused = _zero(nn.Linear(16, 16), 0.9, 5)

    def forward(self, x):
        h = self.c(self.b(torch.relu(self.a(x))))
        return self.conv(h.transpose(1, 2).unsqueeze(-1)).squeeze(-1)


class TableTimer:
    """Returns fixed times per (scope, label); records what it was asked."""

    def __init__(self, table: dict[str, dict[str, float]], default: float = 1.0):
        self.table, self.default, self.asked = table, default, {}

    def __call__(self, scope, candidates):
        self.asked[scope] = list(candidates)
        return {k: self.table.get(scope, {}).get(k, self.default) for k in candidates}


X = torch.randn(2, 5, 16)


def test_chooser_picks_the_fastest_and_keeps_dense_when_sparse_is_not_faster():
    model = Net()
    expected = model(X).detach()
    table = {
        "a": {"dense": 1.0, "csr": 0.5, "bsr 4x4": 0.7},   # csr fastest
        "b": {"dense": 1.0, "csr": 0.97, "bsr 4x4": 1.2},  # csr 3% faster: under the 5% margin
        "conv": {"dense": 1.0, "csr": 2.0, "bsr 4x4": 3.0},  # sparse slower
        "<model>": {"dense": 10.0, "sparse": 8.0},
    }
    timer = TableTimer(table)
    report = sparsify(model, X, timer=timer, bsr_sizes=(4,))
    rows = {c.name: c for c in report.layers}
    assert rows["a"].choice == "csr" and isinstance(model.a, SparseLinear)
    assert rows["a"].speedup == pytest.approx(2.0)
    assert rows["b"].choice == "dense" and type(model.b) is nn.Linear
    assert rows["conv"].choice == "dense" and type(model.conv) is nn.Conv2d
    assert "c" not in timer.asked and "min_sparsity" in rows["c"].reason
    assert rows["unused"].reason == "not called by the forward on the example inputs"
    assert rows["a"].input_shape == (2, 5, 16) and rows["conv"].input_shape == (2, 16, 5, 1)
    assert rows["a"].timings_ms == table["a"]
    assert timer.asked["b"] == ["dense", "csr"]  # random zeros leave few empty 4x4 blocks: no BSR candidate
    assert report.model_speedup == pytest.approx(1.25) and report.slower_overall is False
    assert [c.name for c in report.swapped] == ["a"]
    torch.testing.assert_close(model(X), expected, rtol=1e-5, atol=1e-5)
    text = report.to_markdown()
    assert "| a | Linear | 32x16 | 2x5x16 | " in text and "1 of 5 layers run a sparse kernel" in text


def test_chooser_never_picks_a_slower_kernel_on_random_tables():
    rng = random.Random(0)
    labels = ["dense", "csr", "bsr 4x4", "bsr 8x8"]
    for _ in range(500):
        times = {k: rng.uniform(0.1, 2.0) for k in labels}
        margin = rng.choice([0.0, 0.05, 0.2])
        chosen = choose(times, margin)
        assert times[chosen] <= times["dense"]
        best = min(times, key=times.get)
        if best != "dense" and times[best] <= (1 - margin) * times["dense"]:
            assert chosen == best
        else:
            assert chosen == "dense"


def test_whole_model_slower_is_reported_and_reverted_by_default():
    model = Net()
    table = {"a": {"dense": 1.0, "csr": 0.5}, "b": {"dense": 1.0, "csr": 0.5},
             "conv": {"dense": 1.0, "csr": 0.5}, "<model>": {"dense": 5.0, "sparse": 6.0}}
    report = sparsify(model, X, kinds=("dense", "csr"), timer=TableTimer(table))
    assert report.slower_overall is True and report.reverted and report.swapped == []
    assert type(model.a) is nn.Linear and type(model.conv) is nn.Conv2d
    assert "slower than dense end to end (6.00 ms vs 5.00 ms); reverted" in report.messages[0]


def test_whole_model_slower_can_be_kept_and_reverted_later():
    model = Net()
    table = {"a": {"dense": 1.0, "csr": 0.5}, "conv": {"dense": 1.0, "csr": 0.5},
             "<model>": {"dense": 5.0, "sparse": 6.0}}
    report = sparsify(model, X, kinds=("csr",), timer=TableTimer(table), on_slower="keep")
    assert isinstance(model.a, SparseLinear) and isinstance(model.conv, SparseConv1x1)
    assert "report.revert(model) restores dense" in report.messages[0]
    assert report.revert(model) == 2 and type(model.a) is nn.Linear and report.swapped == []


def test_skips_dtype_and_masked_models():
    model = nn.Sequential(_zero(nn.Linear(8, 8), 0.9, 0)).to(torch.bfloat16)
    report = sparsify(model, torch.randn(2, 8, dtype=torch.bfloat16), timer=TableTimer({}))
    assert "dtype bfloat16" in report.layers[0].reason and report.layers[0].choice == "dense"
    masked = nn.Sequential(nn.Linear(8, 8))
    prunekit.prune(masked, prunekit.api.stage("magnitude", sparsity=0.5, protect_first=False,
                                              protect_last=False))
    with pytest.raises(PrunekitError, match=r"call prunekit.finalize\(model\) before sparsify"):
        sparsify(masked, torch.randn(2, 8), timer=TableTimer({}))


@pytest.mark.parametrize("kwargs,match", [
    ({"kinds": ("dense", "cs")}, r"unknown kernel kind 'cs'; choose from bsr, csr, dense\. Did you mean: csr"),
    ({"kinds": "csr"}, "kinds must be a non-empty list"),
    ({"margin": 1.5}, r"margin must be a number in \[0, 1\), got 1.5"),
    ({"min_sparsity": -0.1}, "min_sparsity must be a number"),
    ({"threads": 0}, "threads must be an integer >= 1"),
    ({"on_slower": "ignore"}, "unknown on_slower 'ignore'; choose from keep, revert"),
    ({"bsr_sizes": (1,)}, "bsr_sizes must be integers >= 2"),
])
def test_bad_options_raise(kwargs, match):
    with pytest.raises(PrunekitError, match=match):
        sparsify(Net(), X, timer=TableTimer({}), **kwargs)


def test_timer_must_answer_every_candidate():
    def bad_timer(scope, candidates):
        return {"dense": 1.0}

    def fails_on_b(scope, candidates):
        if scope == "b":
            return {"dense": 1.0, "csr": -1.0}
        return {"dense": 1.0, "csr": 0.5}

    with pytest.raises(PrunekitError, match=r"timer for a must return a positive time .* missing \['csr'"):
        sparsify(Net(), X, kinds=("csr",), timer=bad_timer)
    model = Net()
    with pytest.raises(PrunekitError, match=r"timer for b .* invalid \{'csr': -1.0\}"):
        sparsify(model, X, kinds=("csr",), timer=fails_on_b)
    assert type(model.a) is nn.Linear  # "a" was swapped before "b" failed: put back


def test_real_timer_runs_and_output_is_unchanged():
    model = Net()
    expected = model(X).detach()
    report = sparsify(model, X, timer=InterleavedTimer(rounds=1, iters=1, warmup=0), threads=1)
    assert report.threads == 1
    for row in report.layers:
        assert all(t > 0 for t in row.timings_ms.values())
        assert row.timings_ms == {} or row.timings_ms[row.choice] <= row.timings_ms["dense"]
    torch.testing.assert_close(model(X), expected, rtol=1e-5, atol=1e-5)


class Flattens(nn.Module):
    """Calls .view on a layer output: the sparse path's strided output cannot be viewed that way."""

    def __init__(self):
        super().__init__()
        self.a = _zero(nn.Linear(16, 8), 0.9, 0)

    def forward(self, x):
        return self.a(x).view(-1)


def test_model_that_fails_with_sparse_layers_is_reverted():
    model = Flattens()
    x = torch.randn(4, 16)
    report = sparsify(model, x, kinds=("csr",), timer=TableTimer({"a": {"dense": 1.0, "csr": 0.1}}))
    assert report.reverted and type(model.a) is nn.Linear
    assert report.messages[0].startswith("the sparsified model failed to run (") and "reverted" in report.messages[0]
    assert model(x).shape == (32,)


def test_outputs_that_differ_are_reverted(monkeypatch):
    model = Net()
    monkeypatch.setattr(SparseLinear, "forward", lambda self, x: torch.zeros(*x.shape[:-1], self.out_features))
    report = sparsify(model, X, kinds=("csr",), timer=TableTimer({"a": {"dense": 1.0, "csr": 0.1}}))
    assert report.reverted and type(model.a) is nn.Linear
    assert "outputs differ from dense" in report.messages[0]
