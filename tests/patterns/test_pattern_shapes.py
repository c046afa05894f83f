"""Unstructured, N:M and block patterns against naive per-unit references; pattern parsing and registration."""

from __future__ import annotations

import math

import pytest
import torch

from prunekit.errors import PrunekitError
from prunekit.patterns import NM, Block, Unstructured, n_to_prune, parse_pattern, view_2d
from prunekit.registry import PATTERNS


def _scores(shape: tuple[int, ...], ties: bool, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, 4, shape, generator=g).float() if ties else torch.randn(shape, generator=g)


def _lowest(flat: torch.Tensor, n: int) -> torch.Tensor:
    """Keep mask pruning the n lowest of a 1-D tensor, lower index first on ties (stable sort)."""
    keep = torch.ones(flat.numel(), dtype=torch.bool)
    keep[torch.sort(flat, stable=True).indices[:n]] = False
    return keep


# ---- unstructured -----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("shape", [(16, 12), (8, 3, 3, 3), (37,), ()])
@pytest.mark.parametrize("ties", [False, True])
def test_unstructured_prunes_exact_count_like_stable_sort(shape: tuple[int, ...], ties: bool) -> None:
    scores = _scores(shape, ties)
    for s in (0.0, 0.3, 0.5, 0.9):
        keep = Unstructured().keep_mask(scores, s)
        assert keep.shape == scores.shape and keep.dtype == torch.bool
        assert int((~keep).sum()) == n_to_prune(scores.numel(), s)
        assert torch.equal(keep.reshape(-1), _lowest(scores.reshape(-1), n_to_prune(scores.numel(), s)))


def test_unstructured_errors_and_check() -> None:
    p = Unstructured()
    with pytest.raises(PrunekitError, match="pattern unstructured needs a sparsity"):
        p.keep_mask(torch.rand(4), None)
    with pytest.raises(PrunekitError, match=r"sparsity 1.0 is out of range"):
        p.keep_mask(torch.rand(4), 1.0)
    bad = torch.rand(3, 4)
    bad[0, 0] = math.nan
    with pytest.raises(PrunekitError, match=r"scores contain NaN \(1 of 12 values\)"):
        p.keep_mask(bad, 0.5)
    assert p.check(torch.rand(3, 4)) and p.check(torch.zeros(3, 4))
    assert p.supports_global and p.implied_sparsity() is None
    assert p.unsupported_reason((0, 4)) is not None and p.unsupported_reason((3, 4)) is None


# ---- N:M --------------------------------------------------------------------------------------------------------


def _nm_reference(scores: torch.Tensor, n: int, m: int) -> torch.Tensor:
    groups = view_2d(scores).reshape(-1, m)
    keep = torch.stack([_lowest(g, m - n) for g in groups])
    return keep.reshape(scores.shape)


@pytest.mark.parametrize("nm", [(2, 4), (4, 8), (1, 4)])
@pytest.mark.parametrize("shape", [(6, 16), (4, 2, 2, 2), (1, 3, 8)])
@pytest.mark.parametrize("ties", [False, True])
def test_nm_matches_per_group_reference(nm: tuple[int, int], shape: tuple[int, ...], ties: bool) -> None:
    n, m = nm
    p = NM(n, m)
    scores = _scores(shape, ties, seed=n * 10 + m)
    keep = p.keep_mask(scores, None)
    assert keep.shape == scores.shape
    assert torch.equal(keep, _nm_reference(scores, n, m))
    assert (view_2d(keep).reshape(-1, m).sum(dim=1) == n).all()
    assert p.check(keep) and p.check(torch.randn(shape) * keep)
    assert torch.equal(p.keep_mask(scores, 1 - n / m), keep)


def test_nm_chunks_of_groups_give_the_same_mask(monkeypatch: pytest.MonkeyPatch) -> None:
    import prunekit.patterns.nm as nm_module

    scores = _scores((5, 24), ties=True, seed=9)
    whole = NM(2, 4).keep_mask(scores, None)
    monkeypatch.setattr(nm_module, "_GROUPS_PER_CHUNK", 7)
    assert torch.equal(NM(2, 4).keep_mask(scores, None), whole)
    assert torch.equal(whole, _nm_reference(scores, 2, 4))


def test_nm_ties_keep_the_higher_index() -> None:
    keep = NM(2, 4).keep_mask(torch.tensor([[1.0, 1.0, 1.0, 1.0, 5.0, 0.0, 5.0, 5.0]]), None)
    assert keep.tolist() == [[False, False, True, True, False, False, True, True]]


def test_nm_check_false_cases() -> None:
    p = NM(2, 4)
    assert not p.check(torch.ones(2, 8))
    assert not p.check(torch.tensor([[1.0, 1.0, 1.0, 0.0]]))
    assert not p.check(torch.zeros(2, 6))  # 6 is not divisible by 4
    assert p.check(torch.tensor([[0.0, 1.0, 0.0, 0.0]]))  # fewer than N kept is still 2:4


def test_nm_errors() -> None:
    p = NM(2, 4)
    with pytest.raises(PrunekitError, match=r"pattern 2:4 fixes sparsity at 0.5 .* but sparsity 0.7 was requested"):
        p.keep_mask(torch.rand(2, 8), 0.7)
    with pytest.raises(PrunekitError, match=r"input dimension 10 .* not divisible by M=4"):
        p.keep_mask(torch.rand(2, 10), None)
    assert "not divisible by M=4" in p.unsupported_reason((8, 3, 3, 3))  # 27 = 3 * 3 * 3
    assert p.unsupported_reason((8, 4, 3, 3)) is None
    assert p.implied_sparsity() == 0.5 and not p.supports_global
    with pytest.raises(PrunekitError, match="no global selection"):
        p.unit_scores(torch.rand(2, 8))
    bad = torch.rand(2, 8)
    bad[1, [2, 5, 7]] = math.nan
    with pytest.raises(PrunekitError, match=r"scores contain NaN \(3 of 16 values\)"):
        p.keep_mask(bad, None)


# ---- block ------------------------------------------------------------------------------------------------------


def _block_reference(scores: torch.Tensor, r: int, c: int, sparsity: float) -> tuple[torch.Tensor, int]:
    view = view_2d(scores)
    rows, cols = view.shape
    starts = [(i, j) for i in range(0, rows, r) for j in range(0, cols, c)]
    sums = torch.tensor([float(view[i : i + r, j : j + c].sum()) for i, j in starts])
    n = n_to_prune(len(starts), sparsity)
    unit_keep = _lowest(sums, n)
    keep = torch.ones_like(view, dtype=torch.bool)
    for (i, j), k in zip(starts, unit_keep.tolist()):
        keep[i : i + r, j : j + c] = k
    return keep.reshape(scores.shape), n


@pytest.mark.parametrize("block", [(1, 4), (4, 1), (4, 4)])
@pytest.mark.parametrize("shape", [(16, 16), (10, 7), (6, 2, 3, 3), (9,)])
@pytest.mark.parametrize("ties", [False, True])
def test_block_matches_reference(block: tuple[int, int], shape: tuple[int, ...], ties: bool) -> None:
    r, c = block
    p = Block(r, c)
    scores = _scores(shape, ties, seed=r + 7 * c).abs()
    for s in (0.25, 0.5, 0.8):
        keep = p.keep_mask(scores, s)
        want, n_blocks = _block_reference(scores, r, c, s)
        assert torch.equal(keep, want)
        assert int((p.unit_scores(keep.float()) == 0).sum()) == n_blocks  # exactly that many whole blocks pruned
        assert p.check(keep) and p.check(torch.rand(shape) + 1 * keep)


def test_block_units_round_trip_and_check() -> None:
    p = Block(2, 3)
    assert p.grid((5, 7)) == (3, 3)
    units = p.unit_scores(torch.ones(5, 7))
    assert units.tolist() == [6, 6, 2, 6, 6, 2, 3, 3, 1]  # partial edge blocks sum what they hold
    unit_keep = torch.tensor([True, False, True, True, True, True, False, True, True])
    full = p.expand(unit_keep, (5, 7))
    assert full.shape == (5, 7) and not full[0:2, 3:6].any() and not full[4, 0:3].any()
    assert int(full.sum()) == 35 - 6 - 3
    torch.testing.assert_close(p.unit_scores(full.float()), units * unit_keep)
    half = torch.ones(4, 6)
    half[0, 0] = 0  # one zero inside a kept block breaks block structure
    assert not p.check(half)
    with pytest.raises(PrunekitError, match="4 block decisions do not match shape"):
        p.expand(torch.ones(4, dtype=torch.bool), (5, 7))


# ---- parsing and registry ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("spec", "expected"),
    [("unstructured", Unstructured()), ("2:4", NM(2, 4)), (" 4:8 ", NM(4, 8)), ("1:4", NM(1, 4)),
     ("block:4x1", Block(4, 1)), ("BLOCK:1x4", Block(1, 4)), ("block:4x4", Block(4, 4))],
)
def test_parse_valid(spec: str, expected: object) -> None:
    p = parse_pattern(spec)
    assert p == expected
    assert parse_pattern(p.name) == p and parse_pattern(p) is p


@pytest.mark.parametrize("spec", ["3:2", "0:4", "2:0", "4:4", "block:0x4", "block:4", "foo", "", "2:4:8"])
def test_parse_errors_list_valid_forms(spec: str) -> None:
    with pytest.raises(PrunekitError, match=rf"pattern '{spec}'.*Valid forms: 'unstructured', 'N:M' with 0 < N < M"):
        parse_pattern(spec)


def test_pattern_families_are_registered() -> None:
    assert {"unstructured", "n:m", "block"} <= set(PATTERNS.names())
    assert PATTERNS.get("n:m")(2, 4) == NM(2, 4)
    assert all(e.help for e in PATTERNS.entries())
    with pytest.raises(PrunekitError, match="N:M pattern 4:2 is invalid"):
        NM(4, 2)
    with pytest.raises(PrunekitError, match="block pattern needs integer sizes >= 1, got R=0"):
        Block(0, 4)
