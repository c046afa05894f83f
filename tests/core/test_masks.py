"""KeepMask parametrizations: attach, combine, train, finalize, and import from torch.nn.utils.prune."""

from __future__ import annotations

import pytest
import torch
from torch import nn
from torch.nn.utils import parametrize, prune

from prunekit.errors import PrunekitError
from prunekit.masks import (
    attach_mask,
    current_mask,
    finalize,
    has_masks,
    import_torch_prune,
    import_torch_prune_state_dict,
    masked_modules,
)


def _mask(shape, density=0.5, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.rand(shape, generator=g) < density


def test_attach_applies_mask_and_keeps_original():
    lin = nn.Linear(6, 4)
    orig = lin.weight.detach().clone()
    keep = _mask((4, 6))
    attach_mask(lin, keep)
    assert torch.equal(lin.weight, orig * keep)
    assert parametrize.is_parametrized(lin, "weight")
    assert torch.equal(current_mask(lin), keep)


def test_masks_compose_by_and():
    lin = nn.Linear(6, 4)
    a, b = _mask((4, 6), seed=1), _mask((4, 6), seed=2)
    attach_mask(lin, a)
    attach_mask(lin, b)
    assert torch.equal(current_mask(lin), a & b)
    assert len(lin.parametrizations.weight) == 1


def test_training_keeps_pruned_weights_zero():
    lin = nn.Linear(8, 3)
    keep = _mask((3, 8))
    attach_mask(lin, keep)
    opt = torch.optim.SGD(lin.parameters(), lr=0.5, momentum=0.9, weight_decay=0.1)
    for _ in range(5):
        opt.zero_grad()
        lin(torch.randn(4, 8)).pow(2).sum().backward()
        opt.step()
    assert torch.all(lin.weight[~keep] == 0)


def test_finalize_bakes_zeros_and_removes_everything():
    model = nn.Sequential(nn.Linear(5, 5), nn.ReLU(), nn.Linear(5, 2))
    keep = _mask((5, 5))
    attach_mask(model[0], keep)
    prune.l1_unstructured(model[2], "weight", amount=0.5)
    expected0 = model[0].weight.detach().clone()
    expected2 = model[2].weight.detach().clone()
    x = torch.randn(3, 5)
    y = model(x)
    finalize(model)
    assert not has_masks(model)
    assert list(masked_modules(model)) == []
    assert set(dict(model.named_parameters())) == {"0.weight", "0.bias", "2.weight", "2.bias"}
    assert torch.equal(model[0].weight, expected0)
    assert torch.equal(model[2].weight, expected2)
    assert torch.allclose(model(x), y)
    assert set(model.state_dict()) == {"0.weight", "0.bias", "2.weight", "2.bias"}
    finalize(model)  # idempotent


def test_import_torch_prune_converts_hooks_to_masks():
    lin = nn.Linear(10, 4)
    prune.random_unstructured(lin, "weight", amount=0.3)
    effective = lin.weight.detach().clone()
    mask = lin.weight_mask.bool().clone()
    assert import_torch_prune(lin) == 1
    assert not hasattr(lin, "weight_orig")
    assert torch.equal(current_mask(lin), mask)
    assert torch.equal(lin.weight, effective)


def test_attach_on_torch_pruned_module_combines_masks():
    lin = nn.Linear(10, 4)
    prune.random_unstructured(lin, "weight", amount=0.3)
    old = lin.weight_mask.bool().clone()
    new = _mask((4, 10), seed=3)
    attach_mask(lin, new)
    assert torch.equal(current_mask(lin), old & new)


def test_import_torch_prune_state_dict():
    lin = nn.Linear(5, 3)
    prune.l1_unstructured(lin, "weight", amount=0.4)
    sd = import_torch_prune_state_dict(lin.state_dict())
    assert set(sd) == {"weight", "bias"}
    assert torch.equal(sd["weight"], lin.weight.detach())
    with pytest.raises(PrunekitError, match="unpaired _orig/_mask keys for: weight"):
        import_torch_prune_state_dict({"weight_orig": torch.ones(2)})


def test_attach_rejects_wrong_shape():
    with pytest.raises(PrunekitError, match=r"mask shape \(2, 2\) does not match weight shape \(4, 6\)"):
        attach_mask(nn.Linear(6, 4), torch.ones(2, 2, dtype=torch.bool))
