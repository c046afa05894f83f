"""Magnitude and random importance: values, dtype, determinism, errors and registration."""

from __future__ import annotations

import pytest
import torch

from prunekit.errors import PrunekitError
from prunekit.importance import magnitude, random_scores
from prunekit.patterns import Block
from prunekit.registry import IMPORTANCE


def test_magnitude_l1_and_l2_values() -> None:
    w = torch.tensor([[-2.0, 0.5], [0.0, 3.0]], dtype=torch.float16, requires_grad=False)
    l1 = magnitude(w)
    l2 = magnitude(w, "l2")
    assert l1.dtype == l2.dtype == torch.float32
    assert l1.tolist() == [[2.0, 0.5], [0.0, 3.0]]
    assert l2.tolist() == [[4.0, 0.25], [0.0, 9.0]]


def test_block_sums_are_norms() -> None:
    w = torch.randn(8, 8)
    blocks = Block(4, 4)
    torch.testing.assert_close(blocks.unit_scores(magnitude(w, "l1"))[0], w[:4, :4].abs().sum())
    torch.testing.assert_close(blocks.unit_scores(magnitude(w, "l2"))[0], w[:4, :4].norm() ** 2)


def test_magnitude_detaches_and_rejects_unknown_norm() -> None:
    w = torch.randn(3, requires_grad=True)
    assert not magnitude(w).requires_grad
    with pytest.raises(PrunekitError, match=r"unknown norm 'l3'.*Valid norms: l1, l2"):
        magnitude(w, "l3")


def test_random_scores_are_seeded_and_uniform() -> None:
    w = torch.empty(50, 40, dtype=torch.bfloat16)
    a = random_scores(w, torch.Generator().manual_seed(7))
    b = random_scores(w, torch.Generator().manual_seed(7))
    c = random_scores(w, torch.Generator().manual_seed(8))
    assert a.shape == w.shape and a.dtype == torch.float32
    assert torch.equal(a, b) and not torch.equal(a, c)
    assert 0 <= float(a.min()) and float(a.max()) < 1
    with pytest.raises(PrunekitError, match="needs a seeded torch.Generator"):
        random_scores(w, None)


def test_registry_entries_share_one_call_form() -> None:
    assert {"l1", "l2", "random"} <= set(IMPORTANCE.names())
    w = torch.randn(4, 4)
    g = torch.Generator().manual_seed(0)
    for name in ("l1", "l2", "random"):
        scores = IMPORTANCE.get(name)(w, generator=g)
        assert scores.shape == w.shape and scores.dtype == torch.float32
    assert torch.equal(IMPORTANCE.get("l1")(w), w.abs())
    assert all(e.help for e in IMPORTANCE.entries())
