"""Datasets: fixed, disjoint, deterministic splits; shapes; offline generation; error messages."""

from __future__ import annotations

import random
import socket

import numpy as np
import pytest
import torch

from prunekit.data import datasets as ds_mod
from prunekit.data import example_inputs, list_datasets, load_dataset
from prunekit.data.splits import stratified_split
from prunekit.errors import PrunekitError


def test_list_datasets_names_all_four():
    assert set(list_datasets()) == {"digits", "mnist1d", "shakespeare", "shakespeare-genre"}
    assert all(isinstance(h, str) and h for h in list_datasets().values())


def test_unknown_dataset_names_valid_choices():
    with pytest.raises(PrunekitError, match=r"unknown dataset 'digit'.*Did you mean: digits.*Valid datasets: digits, "):
        load_dataset("digit")


def test_unknown_option_is_rejected():
    with pytest.raises(PrunekitError, match=r"unknown option 'seed' for dataset 'digits'; valid options: \(none\)"):
        load_dataset("digits", seed=3)
    with pytest.raises(PrunekitError, match=r"valid options: passage_lines"):
        load_dataset("shakespeare-genre", lines=3)


def test_stratified_split_is_deterministic_disjoint_and_stratified():
    labels = np.repeat(np.arange(5), 40)
    a = stratified_split(labels, (0.15, 0.15), seed=7)
    b = stratified_split(labels, (0.15, 0.15), seed=7)
    c = stratified_split(labels, (0.15, 0.15), seed=8)
    assert all(np.array_equal(x, y) for x, y in zip(a, b))
    assert not np.array_equal(a[2], c[2])
    allidx = np.concatenate(a)
    assert len(allidx) == len(labels) == len(np.unique(allidx))
    for part, n in zip(a, (28, 6, 6)):
        assert np.all(np.bincount(labels[part]) == n)


def _rows(ds):
    return {tuple(row.flatten().tolist()) for row in ds.tensors[0]}


def test_digits_splits_fixed_and_scaled():
    d = load_dataset("digits")
    assert d.info.split_sizes == {"train": 1259, "val": 269, "test": 269}
    assert (len(d.train), len(d.val), len(d.test)) == (1259, 269, 269)
    x, y = d.train.tensors
    assert x.shape[1:] == (1, 8, 8) == d.info.input_shape and x.dtype == torch.float32 and y.dtype == torch.int64
    assert float(x.min()) == 0.0 and float(x.max()) == 1.0
    assert d.info.num_classes == 10 and len(d.info.label_names) == 10
    # every class is in every split, in proportion
    for split in (d.val, d.test):
        counts = torch.bincount(split.tensors[1], minlength=10)
        assert counts.min() >= 25
    again = load_dataset("digits")
    assert torch.equal(again.test.tensors[0], d.test.tensors[0])


def test_digits_split_indices_disjoint():
    x, y = ds_mod._digits_arrays()
    tr, va, te = stratified_split(y, (0.15, 0.15), seed=ds_mod.DIGITS_SEED)
    assert not (set(tr) & set(va)) and not (set(tr) & set(te)) and not (set(va) & set(te))
    assert len(tr) + len(va) + len(te) == len(y) == 1797


def test_mnist1d_offline_fixed_and_leaves_global_rng_alone(monkeypatch):
    def no_network(*args, **kwargs):
        raise AssertionError("mnist1d tried to open a network connection")

    monkeypatch.setattr(socket.socket, "connect", no_network)
    ds_mod._mnist1d_arrays.cache_clear()
    random.seed(123)
    np.random.seed(123)
    expected_py, expected_np = random.random(), np.random.rand()
    random.seed(123)
    np.random.seed(123)
    d = load_dataset("mnist1d")
    assert (random.random(), np.random.rand()) == (expected_py, expected_np)
    assert d.info.split_sizes == {"train": 3501, "val": 499, "test": 1000}
    assert d.train.tensors[0].shape == (3501, 1, 40) and d.test.tensors[0].shape == (1000, 1, 40)
    assert d.train.tensors[0].dtype == torch.float32
    assert not (_rows(d.train) & _rows(d.val)) and not (_rows(d.train) & _rows(d.test))
    ds_mod._mnist1d_arrays.cache_clear()
    again = load_dataset("mnist1d")
    assert torch.equal(again.val.tensors[0], d.val.tensors[0])


def test_example_inputs_shapes():
    assert example_inputs("digits").shape == (4, 1, 8, 8)
    assert example_inputs("mnist1d", batch_size=2).shape == (2, 1, 40)
    texts = example_inputs("shakespeare-genre", batch_size=3)
    assert len(texts) == 3 and all(isinstance(t, str) and t for t in texts)
    plays = example_inputs("shakespeare")
    assert len(plays) == 4 and all(isinstance(t, str) and t for t in plays)
    with pytest.raises(PrunekitError, match=r"batch_size must be a positive integer, got 0"):
        example_inputs("digits", batch_size=0)
