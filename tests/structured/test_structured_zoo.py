"""Structured pruning over torchvision's classification models (random init, small inputs).

The model list comes from `torchvision.models.list_models(module=torchvision.models)`, so new torchvision models are
tested automatically. Each case: prune to half the MACs (macs_ratio 0.5, layer scope), the equivalence check
passes (verify runs inside the method), the forward works, params and MACs drop, the MACs ratio lands within 2% of
the target where the prunable part allows it, and the plan replays bit-identically on a fresh copy.

Default run: a fast subset of 8 families. All models: `pytest tests/structured/test_structured_zoo.py -m slow`.
Excluded models are listed in EXCLUDED with the reason.
"""

from __future__ import annotations

import copy
import warnings

import pytest
import torch
from torch import nn

from prunekit.api import stage
from prunekit.eval import count_model
from prunekit.methods.base import PruneContext
from prunekit.methods.structured import PruningPlan, apply_plan, get_plan
from prunekit.methods.structured.method import StructuredMethod

torchvision = pytest.importorskip("torchvision")

FAST = ["resnet18", "mobilenet_v2", "mobilenet_v3_small", "efficientnet_b0", "densenet121", "regnet_y_400mf",
        "convnext_tiny", "shufflenet_v2_x0_5"]
EXCLUDED: dict[str, str] = {}
"""Model name -> why it is not tested (none at the moment; see docs/_fragments/structured.md for the last run)."""
# Swin's attention (frozen in this increment) and the stream groups its code couples by `x.shape` (kept whole by
# repair) carry most of its MACs at 64 px: half the MACs is out of reach (0.67-0.72), so it only needs a real drop.
PARTLY_PRUNABLE = ("swin_",)


def input_size(name: str) -> int:
    """Smallest convenient input: 64 px, except models with a fixed or large minimum size."""
    if name.startswith(("vit_", "maxvit_")):
        return 224
    if name.startswith("inception"):
        return 96
    return 64


def _perturb(model: nn.Module) -> nn.Module:
    """Give constant-initialized tensors (zero heads, unit BN) random values, so outputs are far from trivial."""
    gen = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if p.numel() > 1 and float(p.std()) == 0.0 or p.numel() == 1:
                p.add_(0.05 * torch.randn(p.shape, generator=gen))
        for m in model.modules():
            if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.running_mean is not None:
                m.running_mean.copy_(0.1 * torch.randn(m.running_mean.shape, generator=gen))
                m.running_var.copy_(0.5 + torch.rand(m.running_var.shape, generator=gen))
    return model.eval()


def prune_zoo_model(name: str) -> dict:
    """Prune one torchvision model to half its MACs and check everything; returns the measured numbers."""
    torch.manual_seed(0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        base = _perturb(torchvision.models.get_model(name, weights=None))
    size = input_size(name)
    x = torch.randn(1, 3, size, size)
    model = copy.deepcopy(base)
    cfg = stage("structured", target={"macs_ratio": 0.5}).config
    result = StructuredMethod().apply(model, cfg, PruneContext(example_inputs=x))
    assert any(n.startswith("verify: ok") for n in result.notes), result.notes
    assert not any("INCONCLUSIVE" in n for n in result.notes), "the check ran on an all-zero output"
    before, after = count_model(base, x), count_model(model, x)
    with torch.no_grad():
        y = model(x)
    assert torch.isfinite(y).all() and y.shape == base(x).shape
    assert after.params < before.params and after.macs < before.macs
    ratio = after.macs / before.macs
    if not name.startswith(PARTLY_PRUNABLE):
        assert abs(ratio - 0.5) <= 0.02, ratio
    fresh = apply_plan(copy.deepcopy(base), PruningPlan.from_json(get_plan(model).to_json()))
    got, want = fresh.state_dict(), model.state_dict()
    assert all(torch.equal(got[k], want[k]) for k in want)
    return {"macs_ratio": ratio, "params_ratio": after.params / before.params,
            "repaired": [n for n in result.notes if n.startswith("repair")]}


@pytest.mark.parametrize("name", FAST)
def test_torchvision_fast(name):
    prune_zoo_model(name)


def _all_models() -> list:
    names = torchvision.models.list_models(module=torchvision.models)
    return [pytest.param(n, marks=pytest.mark.skip(reason=EXCLUDED[n])) if n in EXCLUDED else n
            for n in names if n not in FAST]


@pytest.mark.slow
@pytest.mark.parametrize("name", _all_models())
def test_torchvision_all(name):
    prune_zoo_model(name)
