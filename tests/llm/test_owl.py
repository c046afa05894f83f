"""OWL: outlier ratios and the layerwise allocation against the paper's formula, and the global target on a model."""

from __future__ import annotations

import pytest
import torch
from _llm_models import tiny_llama_gqa

import prunekit
from prunekit.api import stage
from prunekit.errors import PrunekitError
from prunekit.llm import outlier_ratio, owl_sparsities
from prunekit.llm.oneshot import owl_allocation
from prunekit.methods.wanda.config import WandaConfig
from prunekit.masks import current_mask


def _naive_outlier_ratio(weights, inputs, m):
    """D_l from the paper: scores |W_ij| * ||X_j||_2 of every layer of the block, share above M * their mean."""
    scores = []
    for w, x in zip(weights, inputs):
        norms = [sum(float(x[t, j]) ** 2 for t in range(x.shape[0])) ** 0.5 for j in range(x.shape[1])]
        scores += [abs(float(w[i, j])) * norms[j] for i in range(w.shape[0]) for j in range(w.shape[1])]
    mean = sum(scores) / len(scores)
    return sum(1 for s in scores if s > m * mean) / len(scores)


def _paper_allocation(ratios, target, lam):
    """The OWL reference code: ratios min-max scaled to [0, 2 lambda], centred, added to the target density."""
    lo, hi = min(ratios), max(ratios)
    scaled = [(r - lo) * (1 / (hi - lo) * lam * 2) for r in ratios]
    mean = sum(scaled) / len(scaled)
    density = [s - mean + (1 - target) for s in scaled]
    return [1 - d for d in density]


def test_outlier_ratio_matches_naive():
    g = torch.Generator().manual_seed(0)
    weights = [torch.randn(5, 7, generator=g), torch.randn(3, 4, generator=g)]
    inputs = [torch.randn(9, 7, generator=g) * torch.exp(2 * torch.randn(7, generator=g)),
              torch.randn(9, 4, generator=g)]
    scores = [w.abs() * x.pow(2).sum(0).sqrt() for w, x in zip(weights, inputs)]
    for m in (1.0, 2.0, 5.0):
        assert outlier_ratio(scores, m) == pytest.approx(_naive_outlier_ratio(weights, inputs, m), abs=1e-12)


@pytest.mark.parametrize("target,lam", [(0.5, 0.08), (0.7, 0.08), (0.6, 0.2)])
def test_allocation_matches_paper_formula(target, lam):
    ratios = [0.012, 0.031, 0.007, 0.054, 0.02, 0.02]
    got = owl_sparsities(ratios, [10] * len(ratios), target, lam)
    assert got == pytest.approx(_paper_allocation(ratios, target, lam), abs=1e-12)
    assert max(got) - min(got) == pytest.approx(2 * lam)
    assert got[ratios.index(max(ratios))] == min(got)  # most outliers: pruned least


def test_allocation_weighted_mean_exact_and_clamped():
    ratios, params = [0.01, 0.02, 0.04, 0.08], [100, 300, 50, 250]
    for target in (0.3, 0.7, 0.95, 0.01):
        got = owl_sparsities(ratios, params, target, 0.1)
        assert sum(s * p for s, p in zip(got, params)) / sum(params) == pytest.approx(target, abs=1e-12)
        assert all(0.0 <= s <= 0.99 for s in got)
    clamped = owl_sparsities(ratios, params, 0.9, 0.12)
    assert clamped[0] == 0.99 and clamped[-1] < 0.99  # the fewest-outlier block clamps; the others absorb it
    norm = [(r - 0.01) / 0.07 for r in ratios]
    free = [s + 0.24 * n for s, n in zip(clamped, norm) if s < 0.99]  # unclamped blocks keep one common offset
    assert len(free) >= 2 and max(free) - min(free) < 1e-12
    assert owl_sparsities([0.03] * 3, [1, 2, 3], 0.6, 0.1) == pytest.approx([0.6] * 3)  # equal ratios: uniform


def test_allocation_errors():
    with pytest.raises(PrunekitError, match="2 outlier ratios for 3 blocks"):
        owl_sparsities([0.1, 0.2], [1, 1, 1], 0.5, 0.08)
    with pytest.raises(PrunekitError, match="target sparsity 0.995 is outside"):
        owl_sparsities([0.1, 0.2], [1, 1], 0.995, 0.08)


def _owl_model():
    model = tiny_llama_gqa()
    with torch.no_grad():  # give block 1 strong outlier weights, so the blocks' ratios differ clearly
        model.model.layers[1].mlp.down_proj.weight[:, :3] *= 30.0
    return model


@pytest.mark.parametrize("method,tol", [("sparsegpt", 1e-3), ("wanda", 0.5 / 32)])
def test_owl_keeps_global_sparsity_and_prunes_blocks_differently(method, tol, token_ids):
    model = _owl_model()
    opts = {"blocksize": 8} if method == "sparsegpt" else {}
    owl = {"lambda": 0.1, "M": 3}
    alloc = owl_allocation(_owl_model(), WandaConfig(sparsity=0.6, owl=owl, calibration={"nsamples": 3}), token_ids)
    assert alloc[0] > alloc[1]  # block 1 has the outliers: pruned less
    report = prunekit.prune(model, {"stages": [{"method": method, "sparsity": 0.6, "owl": owl,
                                                "calibration": {"nsamples": 3}, **opts}]}, token_ids)
    pruned = [r.name for r in report.layers if r.status == "pruned"]
    modules = dict(model.named_modules())
    zeros = total = 0
    for name in pruned:
        keep = current_mask(modules[name])
        block = int(name.split(".")[2])
        assert 1 - keep.float().mean().item() == pytest.approx(alloc[block], abs=tol), name
        zeros += int((~keep).sum())
        total += keep.numel()
    assert zeros / total == pytest.approx(0.6, abs=tol)


def test_owl_config_errors():
    with pytest.raises(PrunekitError, match="owl applies to unstructured sparsity only.*'2:4'"):
        stage("wanda", pattern="2:4", owl={"lambda": 0.08})
    with pytest.raises(PrunekitError, match="owl needs one target sparsity"):
        stage("sparsegpt", sparsity=[0.5, 0.6], owl={})
    with pytest.raises(PrunekitError, match="lamda"):
        stage("wanda", sparsity=0.5, owl={"lamda": 0.1})
