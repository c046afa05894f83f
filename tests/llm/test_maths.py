"""Wanda and SparseGPT maths against plain per-row / per-column loops written from the papers' equations."""

from __future__ import annotations

import pytest
import torch

from prunekit.errors import PrunekitError
from prunekit.methods.sparsegpt.solver import HessianAccumulator, sparsegpt_prune
from prunekit.methods.wanda.scores import InputNormAccumulator, wanda_keep_mask
from prunekit.patterns import NM, Unstructured, n_to_prune


def _layer(rows=12, cols=32, tokens=200, seed=0):
    g = torch.Generator().manual_seed(seed)
    w = torch.randn(rows, cols, generator=g)
    scale = torch.exp(torch.randn(cols, generator=g))  # heterogeneous feature scales, as in LLM activations
    mix = torch.eye(cols) + 0.3 * torch.randn(cols, cols, generator=g)  # correlated features
    x = (torch.randn(tokens, cols, generator=g) @ mix) * scale
    return w, x


def _hessian(x):
    acc = HessianAccumulator(x.shape[1])
    for chunk in x.split(37):  # uneven batches: the running average must equal the one-shot formula
        acc.add(chunk)
    return acc.hessian()


def _ref_wanda(w, x, sparsity=None, n=None, m=None):
    norms = [sum(float(x[t, j]) ** 2 for t in range(x.shape[0])) ** 0.5 for j in range(x.shape[1])]
    keep = torch.ones_like(w, dtype=torch.bool)
    for i in range(w.shape[0]):
        score = [abs(float(w[i, j])) * norms[j] for j in range(w.shape[1])]
        if m is None:
            cols = sorted(range(len(score)), key=lambda j: (score[j], j))[: n_to_prune(len(score), sparsity)]
        else:
            cols = []
            for g0 in range(0, len(score), m):
                grp = sorted(range(g0, g0 + m), key=lambda j: (score[j], j))
                cols += grp[: m - n]
        for j in cols:
            keep[i, j] = False
    return keep


def _ref_sparsegpt(w, h, sparsity=None, n=None, m=None, blocksize=8, percdamp=0.01):
    """OBS column by column: saliency w^2 / [H_F^-1]_cc, update -w_c / [H_F^-1]_cc * [H_F^-1]_{c,:}, eliminate c."""
    w, h = w.double().clone(), h.double().clone()
    rows, cols = w.shape
    dead = torch.diag(h) == 0
    h[dead, dead] = 1.0
    w[:, dead] = 0.0
    h += percdamp * torch.mean(torch.diag(h)) * torch.eye(cols, dtype=h.dtype)
    hinv = torch.linalg.inv(h)
    inv_rows = []
    for c in range(cols):  # Gaussian elimination: the inverse Hessian of the columns not yet visited
        inv_rows.append(hinv[c].clone())
        hinv = hinv - torch.outer(hinv[:, c], hinv[c, :]) / hinv[c, c]
    d = [float(inv_rows[c][c]) for c in range(cols)]
    keep = torch.ones(rows, cols, dtype=torch.bool)
    done = 0
    for b0 in range(0, cols, blocksize):
        b1 = min(b0 + blocksize, cols)
        if m is None:
            count = n_to_prune(rows * b1, sparsity) - done
            done += count
            cells = [(float(w[r, c]) ** 2 / d[c], r * (b1 - b0) + c - b0, r, c)
                     for r in range(rows) for c in range(b0, b1)]
            for _, _, r, c in sorted(cells)[:count]:
                keep[r, c] = False
        for c in range(b0, b1):
            if m is not None and (c - b0) % m == 0:
                for r in range(rows):
                    grp = sorted(range(c, c + m), key=lambda j: (float(w[r, j]) ** 2 / d[j], j))
                    for j in grp[: m - n]:
                        keep[r, j] = False
            for r in range(rows):
                if not keep[r, c]:
                    w[r, c:] -= float(w[r, c]) / d[c] * inv_rows[c][c:]
                    w[r, c] = 0.0
    return w.float(), keep


@pytest.mark.parametrize("sparsity,nm", [(0.5, None), (0.3, None), (None, (2, 4))])
def test_wanda_matches_reference(sparsity, nm):
    w, x = _layer(rows=6, cols=16, tokens=40)
    acc = InputNormAccumulator(16)
    for chunk in x.split(9):
        acc.add(chunk)
    keep = wanda_keep_mask(w, acc.norms(), sparsity, NM(*nm) if nm else None)
    ref = _ref_wanda(w, x, sparsity, *(nm or (None, None)))
    assert torch.equal(keep, ref)
    assert (keep.sum(dim=1) == keep.sum(dim=1)[0]).all()  # every row keeps the same count


def test_hessian_accumulator_is_two_xxt_over_n():
    _, x = _layer()
    x64 = x.double()
    assert torch.allclose(_hessian(x).double(), 2 * x64.t() @ x64 / x.shape[0], rtol=1e-5, atol=1e-4)


@pytest.mark.parametrize("sparsity,nm,blocksize", [(0.5, None, 8), (0.6, None, 12), (None, (2, 4), 8)])
def test_sparsegpt_matches_reference(sparsity, nm, blocksize):
    w, x = _layer()
    h = _hessian(x)
    h[5, :] = 0.0  # a dead input
    h[:, 5] = 0.0
    new_w, keep = sparsegpt_prune(w, h, sparsity, NM(*nm) if nm else None, blocksize=blocksize)
    ref_w, ref_keep = _ref_sparsegpt(w, h, sparsity, *(nm or (None, None)), blocksize=blocksize)
    assert torch.equal(keep, ref_keep)
    assert torch.allclose(new_w, ref_w, rtol=1e-3, atol=1e-3)
    assert torch.all(new_w[~keep] == 0)
    if nm:
        assert NM(*nm).check(keep)
    else:
        assert int((~keep).sum()) == n_to_prune(w.numel(), sparsity)


def _recon(w, new_w, x):
    return float(((x @ w.t() - x @ new_w.t()) ** 2).sum())


@pytest.mark.parametrize("pattern", ["unstructured", "2:4"])
def test_reconstruction_error_ordering(pattern):
    w, x = _layer(rows=32, cols=64, tokens=400, seed=3)
    nm = NM(2, 4) if pattern == "2:4" else None
    s = None if nm else 0.5
    mag_scores = w.abs()
    mag_keep = nm.keep_mask(mag_scores) if nm else Unstructured().keep_mask(mag_scores, 0.5)
    acc = InputNormAccumulator(64)
    acc.add(x)
    wanda_keep = wanda_keep_mask(w, acc.norms(), s, nm)
    sgpt_w, _ = sparsegpt_prune(w, _hessian(x), s, nm, blocksize=16)
    err_mag, err_wanda, err_sgpt = _recon(w, w * mag_keep, x), _recon(w, w * wanda_keep, x), _recon(w, sgpt_w, x)
    assert err_sgpt <= err_wanda <= err_mag


def test_cholesky_failure_raises_dampening_with_a_warning():
    w, _ = _layer(rows=4, cols=8)
    h = -torch.eye(8)  # negative definite: only a large dampening... never helps, so it must end in an error
    h_fixable = torch.ones(8, 8) * 1e-3 - torch.eye(8) * 1e-4  # indefinite, fixed by enough dampening
    with pytest.warns(RuntimeWarning, match="Cholesky failed for layer 'blk.q'"):
        new_w, keep = sparsegpt_prune(w, h_fixable, 0.5, layer="blk.q", percdamp=1e-4)
    assert torch.isfinite(new_w).all() and int((~keep).sum()) == 16
    with pytest.warns(RuntimeWarning), pytest.raises(PrunekitError, match="stays singular"):
        sparsegpt_prune(w, h, 0.5, layer="blk.k")


def test_sparsegpt_input_errors():
    w, x = _layer(rows=4, cols=8)
    with pytest.raises(PrunekitError, match="exactly one of sparsity"):
        sparsegpt_prune(w, _hessian(x))
    with pytest.raises(PrunekitError, match="blocksize 6 must be a multiple of M=4"):
        sparsegpt_prune(w, _hessian(x), nm=NM(2, 4), blocksize=6)
