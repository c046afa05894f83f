"""The pure label maths of the dependency graph: reshape blocks, index-exact reshapes, broadcasting, masks, atoms."""

from __future__ import annotations

import pytest
import torch

from prunekit.errors import PrunekitError
from prunekit.graph._atoms import AtomTable
from prunekit.graph._labels import broadcast_merge, keep_mask, permuted, reshape_blocks, reshape_label, without


def test_reshape_blocks():
    assert reshape_blocks((2, 8, 4, 4), (2, 128)) == [([0], [0]), ([1, 2, 3], [1])]
    assert reshape_blocks((2, 24, 5, 5), (2, 3, 8, 5, 5)) == [([0], [0]), ([1], [1, 2]), ([2], [3]), ([3], [4])]
    assert reshape_blocks((2, 16, 1, 1), (2, 16)) == [([0], [0]), ([1], [1]), ([2], []), ([3], [])]
    assert reshape_blocks((6,), (4,)) is None
    assert reshape_blocks((0, 3), (3, 0)) is None


def test_union_find_keeps_frozen_reasons_and_limits():
    atoms = AtomTable(limit=10)
    a = atoms.new(4)
    atoms.freeze(a[:1], "model output")
    atoms.union(int(a[1]), int(a[0]))
    assert atoms.frozen_reason(atoms.find(int(a[1]))) == "model output"
    assert atoms.frozen_reason(atoms.find(int(a[2]))) is None
    atoms.union_pairs(a[2:3], a[3:4])
    assert atoms.find(int(a[2])) == atoms.find(int(a[3]))
    with pytest.raises(PrunekitError, match="more than 10 channel atoms"):
        atoms.new(7)


def test_flatten_repeats_each_channel_over_its_positions():
    atoms = AtomTable()
    ids = atoms.new(3)
    out = reshape_label(atoms, {1: ids}, (2, 3, 2, 2), (2, 12), "test")
    assert out[1].tolist() == [int(i) for i in ids.repeat_interleave(4)]
    back = reshape_label(atoms, out, (2, 12), (2, 3, 2, 2), "test")  # unflatten: exactly the channel dim again
    assert set(back) == {1} and back[1].tolist() == ids.tolist()


def test_shuffle_split_couples_positions_across_groups_and_merge_maps_exactly():
    atoms = AtomTable()
    ids = atoms.new(6)  # channels c = g * 3 + j for 2 groups of 3
    split = reshape_label(atoms, {1: ids}, (1, 6, 1, 1), (1, 2, 3, 1, 1), "test")
    assert set(split) == {2}  # the groups dim is fixed, the per-group position dim carries the channels
    for j in range(3):  # position j of group 0 and of group 1 are one unit
        assert atoms.find(int(ids[j])) == atoms.find(int(ids[3 + j]))
    assert atoms.find(int(ids[0])) != atoms.find(int(ids[1]))
    swapped = permuted(split, [0, 2, 1, 3, 4])  # transpose(1, 2): (1, 3, 2, 1, 1)
    merged = reshape_label(atoms, swapped, (1, 3, 2, 1, 1), (1, 6, 1, 1), "test")
    roots = [atoms.find(int(i)) for i in merged[1]]
    expected = [atoms.find(int(ids[c])) for c in (0, 3, 1, 4, 2, 5)]  # the shuffled order of the channels
    assert roots == expected


def test_merging_two_channel_dims_freezes_them():
    atoms = AtomTable()
    a, b = atoms.new(2), atoms.new(3)
    out = reshape_label(atoms, {0: a, 1: b}, (2, 3), (6,), "test")
    assert out == {}
    assert atoms.frozen_reason(atoms.find(int(a[0]))).startswith("reshape at test merges two channel dims")


def test_broadcast_merge_unions_and_freezes_against_free_tensors():
    atoms = AtomTable()
    x, s = atoms.new(4), atoms.new(4)
    out = broadcast_merge(atoms, [({1: x}, (2, 4, 3, 3)), ({1: s}, (2, 4, 1, 1))], (2, 4, 3, 3), "why")
    assert out[1] is x and all(atoms.find(int(i)) == atoms.find(int(j)) for i, j in zip(x, s))
    assert atoms.frozen_reason(atoms.find(int(x[0]))) is None
    broadcast_merge(atoms, [({1: x}, (2, 4, 3, 3)), ({}, (1, 1, 3, 3))], (2, 4, 3, 3), "spatial map")
    assert atoms.frozen_reason(atoms.find(int(x[0]))) is None  # size 1 along channels: broadcasts, no constraint
    broadcast_merge(atoms, [({1: x}, (2, 4, 3, 3)), ({}, (2, 4, 3, 3))], (2, 4, 3, 3), "constant")
    assert atoms.frozen_reason(atoms.find(int(x[0]))) == "constant"


def test_keep_mask_and_without():
    ids = torch.tensor([0, 1, 1, 2])
    keep_atom = torch.tensor([True, False, True])
    mask = keep_mask({1: ids}, keep_atom, 3)
    assert mask.shape == (1, 4, 1) and mask.flatten().tolist() == [True, False, False, True]
    assert keep_mask({1: ids}, torch.ones(3, dtype=torch.bool), 3) is None
    assert without({0: ids, 2: ids}, [1]) == {0: ids, 1: ids}
