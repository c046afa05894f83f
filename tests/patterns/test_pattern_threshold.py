"""Exact streaming selection (`select_global`, `select_layer`) against a stable-sort reference of the concatenation."""

from __future__ import annotations

import math

import pytest
import torch

from prunekit.errors import PrunekitError
from prunekit.patterns import check_sparsity, n_to_prune, select_global, select_layer


def _layer(kind: str, shape: tuple[int, ...], g: torch.Generator) -> torch.Tensor:
    if kind == "normal":
        return torch.randn(shape, generator=g)
    if kind == "ties":  # heavy ties: integers 0..3
        return torch.randint(0, 4, shape, generator=g).float()
    if kind == "signed":  # negatives, -inf, +inf, -0.0 and +0.0
        t = torch.randint(-4, 4, shape, generator=g).float()
        t[t == -4] = -math.inf
        t[t == 3] = math.inf
        t[t == 2] = -0.0
        return t
    if kind == "tiny":  # subnormals and values sharing the high 16 key bits (exercises pass 2)
        return torch.randn(shape, generator=g) * 1e-40 + (torch.randint(0, 2, shape, generator=g) * 1.0001)
    raise AssertionError(kind)


def _reference_keep(layers: list[torch.Tensor], n: int, caps: list[int] | None = None) -> list[torch.Tensor]:
    """Walk a stable ascending sort of the concatenation, pruning while the unit's layer is under its cap."""
    cat = torch.cat([t.reshape(-1) for t in layers])
    owner = torch.cat([torch.full((t.numel(),), i) for i, t in enumerate(layers)])
    keep = torch.ones(cat.numel(), dtype=torch.bool)
    taken = [0] * len(layers)
    for idx in torch.sort(cat, stable=True).indices.tolist():
        if n == 0:
            break
        i = int(owner[idx])
        if caps is None or taken[i] < caps[i]:
            keep[idx] = False
            taken[i] += 1
            n -= 1
    return [part.reshape(t.shape) for part, t in zip(keep.split([t.numel() for t in layers]), layers)]


SHAPES = [(7, 5), (0,), (33,), (3, 2, 2, 2), (1,), (64, 9)]


@pytest.mark.parametrize("kind", ["normal", "ties", "signed", "tiny"])
@pytest.mark.parametrize("chunk_size", [5, 1 << 22])
def test_matches_stable_sort_of_concatenation(kind: str, chunk_size: int) -> None:
    g = torch.Generator().manual_seed(hash(kind) % 1000)
    layers = [_layer(kind, s, g) for s in SHAPES]
    total = sum(t.numel() for t in layers)
    for n in sorted({0, 1, total // 3, total // 2, total - 1, total}):
        sel = select_global([lambda t=t: t for t in layers], n, chunk_size=chunk_size)
        masks = [sel.keep_mask(i, t) for i, t in enumerate(layers)]
        assert sel.n_pruned == n
        assert sum(int((~m).sum()) for m in masks) == n
        assert [int((~m).sum()) for m in masks] == sel.counts
        for got, want in zip(masks, _reference_keep(layers, n)):
            assert got.shape == want.shape
            assert torch.equal(got, want)


@pytest.mark.parametrize("seed", range(6))
def test_random_layer_sets(seed: int) -> None:
    g = torch.Generator().manual_seed(seed)
    kinds = ["normal", "ties", "signed", "tiny"]
    layers = [_layer(kinds[(seed + j) % 4], (int(torch.randint(1, 60, (1,), generator=g)),), g) for j in range(4)]
    total = sum(t.numel() for t in layers)
    n = int(torch.randint(0, total + 1, (1,), generator=g))
    sel = select_global([lambda t=t: t for t in layers], n, chunk_size=16)
    for i, want in enumerate(_reference_keep(layers, n)):
        assert torch.equal(sel.keep_mask(i, layers[i]), want)


def test_score_dtypes_are_compared_as_float32() -> None:
    g = torch.Generator().manual_seed(1)
    layers = [torch.randn(40, generator=g).half(), torch.randn(30, generator=g).double(), torch.randint(0, 5, (20,))]
    sel = select_global([lambda t=t: t for t in layers], 45)
    want = _reference_keep([t.float() for t in layers], 45)
    for i, t in enumerate(layers):
        assert torch.equal(sel.keep_mask(i, t), want[i])


@pytest.mark.parametrize("kind", ["normal", "ties"])
def test_caps_are_respected_and_total_is_exact(kind: str) -> None:
    g = torch.Generator().manual_seed(3)
    layers = [_layer(kind, (n,), g) for n in (50, 80, 20, 40)]
    layers[1] -= 10  # layer 1 scores lowest: uncapped it would absorb most of the pruning
    caps = [25, 30, 0, 40]
    for n in (10, 60, 95):
        sel = select_global([lambda t=t: t for t in layers], n, max_prune=caps)
        masks = [sel.keep_mask(i, t) for i, t in enumerate(layers)]
        pruned = [int((~m).sum()) for m in masks]
        assert sum(pruned) == n
        assert all(p <= c for p, c in zip(pruned, caps))
        for got, want in zip(masks, _reference_keep(layers, n, caps)):
            assert torch.equal(got, want)


@pytest.mark.parametrize("seed", range(8))
def test_random_caps_match_the_capped_reference(seed: int) -> None:
    g = torch.Generator().manual_seed(100 + seed)
    kinds = ["normal", "ties", "signed", "tiny"]
    layers = [_layer(kinds[(seed + j) % 4], (int(torch.randint(1, 40, (1,), generator=g)),), g) for j in range(5)]
    caps = [int(torch.randint(0, t.numel() + 1, (1,), generator=g)) for t in layers]
    n = int(torch.randint(0, sum(caps) + 1, (1,), generator=g))
    sel = select_global([lambda t=t: t for t in layers], n, max_prune=caps, chunk_size=9)
    for i, want in enumerate(_reference_keep(layers, n, caps)):
        assert torch.equal(sel.keep_mask(i, layers[i]), want)
    assert sel.n_pruned == n and all(c <= cap for c, cap in zip(sel.counts, caps))


def test_many_layers_with_many_occupied_bins() -> None:
    g = torch.Generator().manual_seed(11)
    layers = [torch.randn(3000, generator=g) * 10 ** (j % 5 - 2) for j in range(30)]  # spread over many bins
    caps = [1000 if j % 3 == 0 else 3000 for j in range(30)]
    n = 40000
    sel = select_global([lambda t=t: t for t in layers], n, max_prune=caps, chunk_size=1000)
    for i, want in enumerate(_reference_keep(layers, n, caps)):
        assert torch.equal(sel.keep_mask(i, layers[i]), want)


def test_score_functions_may_share_one_output_buffer() -> None:
    g = torch.Generator().manual_seed(4)
    weights = [torch.randn(s, generator=g) for s in ((30, 20), (50,), (7, 3, 3))]
    buf = torch.empty(600)
    shared = [lambda w=w: torch.abs(w, out=buf[: w.numel()].view_as(w)) for w in weights]
    caps = [300, 40, 63]
    sel = select_global(shared, 350, max_prune=caps)
    for i, want in enumerate(_reference_keep([w.abs() for w in weights], 350, caps)):
        assert torch.equal(sel.keep_mask(i, weights[i].abs()), want)


def test_caps_that_make_the_count_unreachable_raise_with_the_maximum() -> None:
    layers = [torch.rand(10), torch.rand(10)]
    with pytest.raises(PrunekitError, match="achievable maximum: 13"):
        select_global([lambda t=t: t for t in layers], 14, max_prune=[3, 10])
    with pytest.raises(PrunekitError, match="cannot prune 21 units: the layers hold 20"):
        select_global([lambda t=t: t for t in layers], 21)


def test_nan_error_names_the_layer_and_counts() -> None:
    bad = torch.rand(100)
    bad[[3, 50]] = math.nan
    with pytest.raises(PrunekitError, match=r"scores contain NaN in layer 'fc2' \(2 of 100 values\)"):
        select_global([lambda: torch.rand(10), lambda: bad], 5, names=["fc1", "fc2"])
    with pytest.raises(PrunekitError, match=r"scores contain NaN \(2 of 100 values\)"):
        select_layer(bad, 3)
    neg_nan = torch.rand(9)
    neg_nan[0] = -math.nan
    with pytest.raises(PrunekitError, match="scores contain NaN"):
        select_layer(neg_nan, 3)


def test_bad_arguments_raise() -> None:
    fns = [lambda: torch.rand(4)]
    with pytest.raises(PrunekitError, match="n_prune = -1 must be an integer >= 0"):
        select_global(fns, -1)
    with pytest.raises(PrunekitError, match="max_prune has 2 entries but there are 1"):
        select_global(fns, 1, max_prune=[1, 1])
    with pytest.raises(PrunekitError, match=r"max_prune\[0\] = -2 must be"):
        select_global(fns, 1, max_prune=[-2])
    with pytest.raises(PrunekitError, match="names has 2 entries"):
        select_global(fns, 1, names=["a", "b"])


def test_keep_mask_rejects_scores_other_than_the_ones_solved() -> None:
    t = torch.arange(10.0)
    sel = select_global([lambda: t], 4, names=["w"])
    with pytest.raises(PrunekitError, match="layer 'w' differ .* prune 2 units, expected 4"):
        sel.keep_mask(0, t + 2)


def test_nondeterministic_score_functions_are_detected() -> None:
    sizes = iter([10, 11, 12])
    with pytest.raises(PrunekitError, match="must return the same scores"):
        select_global([lambda: torch.rand(next(sizes))], 3)


def test_layers_are_read_at_most_twice_per_solve_and_histograms_are_reused() -> None:
    layers = [torch.arange(20.0), torch.arange(20.0) + 1, torch.arange(20.0) + 1000]
    calls = [0, 0, 0]

    def fn(i: int) -> torch.Tensor:
        calls[i] += 1
        return layers[i]

    fns = [lambda i=i: fn(i) for i in range(3)]
    select_global(fns, 15)
    assert calls == [2, 2, 1]  # the third layer lies wholly above the threshold's bucket: read once
    calls[:] = [0, 0, 0]
    sel = select_global(fns, 30, max_prune=[5, 20, 20])
    assert sel.counts == [5, 20, 5]
    # the re-solve after clamping layer 0 reuses the first-pass histograms; layer 0's own cut reads it once more
    assert calls == [3, 2, 2]


def test_select_layer_matches_reference_on_conv_shape() -> None:
    g = torch.Generator().manual_seed(5)
    scores = torch.randint(0, 3, (4, 3, 3, 3), generator=g).float()
    keep = select_layer(scores, 50, chunk_size=8)
    assert keep.shape == scores.shape
    assert torch.equal(keep, _reference_keep([scores], 50)[0])


def test_rounding_is_half_up_and_sparsity_is_checked() -> None:
    assert n_to_prune(10, 0.25) == 3  # 2.5 rounds up
    assert n_to_prune(10, 0.24) == 2
    assert n_to_prune(0, 0.5) == 0
    assert n_to_prune(7, 0.0) == 0
    for bad in (1.0, -0.1, math.nan, True, "0.5"):
        with pytest.raises(PrunekitError, match=r"must be a number in \[0, 1\)"):
            check_sparsity(bad)  # type: ignore[arg-type]
