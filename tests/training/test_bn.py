"""BatchNorm recalibration re-estimates running statistics exactly from the given batches."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from prunekit.errors import PrunekitError
from prunekit.training import recalibrate_batchnorm


def test_running_stats_equal_the_data_statistics():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(2, 3, 1), nn.BatchNorm2d(3)).eval()
    batches = [torch.randn(8, 2, 4, 4) * 3 + 1 for _ in range(4)]
    with torch.no_grad():
        acts = torch.cat([model[0](b) for b in batches])
    used = recalibrate_batchnorm(model, [(b, torch.zeros(8)) for b in batches])
    assert used == 4
    bn = model[1]
    assert torch.allclose(bn.running_mean, acts.mean(dim=(0, 2, 3)), atol=1e-5)
    # per-batch unbiased variances averaged (what BN's cumulative average computes)
    per_batch = torch.stack([a.var(dim=(0, 2, 3), unbiased=True) for a in acts.split(8)]).mean(0)
    assert torch.allclose(bn.running_var, per_batch, atol=1e-4)
    assert bn.momentum == 0.1 and not model.training  # restored


def test_max_batches_and_errors():
    model = nn.Sequential(nn.Linear(3, 3), nn.BatchNorm1d(3))
    assert recalibrate_batchnorm(model, [torch.randn(4, 3) for _ in range(5)], max_batches=2) == 2
    with pytest.raises(PrunekitError, match="no batches given"):
        recalibrate_batchnorm(model, [])
    with pytest.raises(PrunekitError, match="has no BatchNorm layer"):
        recalibrate_batchnorm(nn.Linear(2, 2), [torch.randn(1, 2)])
