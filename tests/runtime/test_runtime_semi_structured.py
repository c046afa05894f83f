"""GPU 2:4 conversion: the 2:4 check on CPU, the clear skip without CUDA, and the real conversion with CUDA."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from prunekit.errors import PrunekitError
from prunekit.runtime import is_two_four, to_semi_structured

CUDA = torch.cuda.is_available()


def _two_four(rows: int, cols: int) -> torch.Tensor:
    w = torch.randn(rows, cols)
    groups = w.reshape(rows, -1, 4)
    drop = groups.abs().argsort(dim=-1)[..., :2]
    return groups.scatter(-1, drop, 0.0).reshape(rows, cols)


def test_is_two_four():
    w = _two_four(8, 16)
    assert is_two_four(w)
    w[0, :3] = 1.0
    assert not is_two_four(w)
    assert not is_two_four(torch.zeros(4, 6))  # columns not a multiple of 4


@pytest.mark.skipif(CUDA, reason="checks the CPU-only skip message")
def test_without_cuda_skips_with_clear_message():
    model = nn.Sequential(nn.Linear(64, 32))
    before = model[0].weight.clone()
    report = to_semi_structured(model)
    assert not report.ran and report.converted == []
    assert report.message.startswith("2:4 semi-structured kernels need CUDA (") and report.message.endswith("skipped")
    assert torch.equal(model[0].weight, before) and model[0].weight.layout == torch.strided
    with pytest.raises(PrunekitError, match="need CUDA"):
        to_semi_structured(model, strict=True)


@pytest.mark.skipif(not CUDA, reason="2:4 semi-structured kernels need CUDA")
def test_cuda_converts_two_four_linear_and_keeps_output():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(128, 64), nn.ReLU(), nn.Linear(64, 64)).half().cuda()
    with torch.no_grad():
        model[0].weight.copy_(_two_four(64, 128).half())
    x = torch.randn(32, 128, dtype=torch.half, device="cuda")
    expected = model(x)
    report = to_semi_structured(model)
    assert report.ran and report.converted == ["0"]
    assert "not 2:4" in report.skipped["2"]
    torch.testing.assert_close(model(x), expected, rtol=1e-2, atol=1e-2)
