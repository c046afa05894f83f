"""The shapes every prunekit dataset comes in: `DatasetSplits`, `DatasetInfo`, and the small text `Dataset`s.

Also `stratified_split`, the one seeded per-class split rule the tensor datasets use.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from torch.utils.data import Dataset


@dataclass(frozen=True)
class DatasetInfo:
    """What a dataset is: task, shapes, labels, sizes, split rule and provenance."""

    name: str
    task: str
    description: str
    source: str
    citation: str
    split: str
    split_sizes: dict[str, int]
    num_classes: int | None = None
    input_shape: tuple[int, ...] | None = None
    label_names: tuple[str, ...] | None = None


@dataclass(frozen=True)
class DatasetSplits:
    """The three fixed splits of a dataset and its `info`."""

    train: Dataset
    val: Dataset
    test: Dataset
    info: DatasetInfo


class TextDataset(Dataset):
    """A list of documents (strings), with optional names (e.g. the play each came from)."""

    def __init__(self, texts: Sequence[str], names: Sequence[str] | None = None) -> None:
        self.texts = list(texts)
        self.names = list(names) if names is not None else [str(i) for i in range(len(self.texts))]
        if len(self.names) != len(self.texts):
            raise ValueError(f"{len(self.names)} names for {len(self.texts)} texts")

    def __len__(self) -> int:
        return len(self.texts)

    def __getitem__(self, i: int) -> str:
        return self.texts[i]

    @property
    def text(self) -> str:
        """All documents joined by a blank line: the stream a language model is trained or scored on."""
        return "\n\n".join(self.texts)


class LabeledTextDataset(Dataset):
    """A list of `(text, label)` pairs for text classification."""

    def __init__(self, items: Sequence[tuple[str, int]]) -> None:
        self.items = [(str(t), int(y)) for t, y in items]

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, i: int) -> tuple[str, int]:
        return self.items[i]

    @property
    def labels(self) -> list[int]:
        """The label of every item, in order."""
        return [y for _, y in self.items]


def stratified_split(labels: np.ndarray, fractions: tuple[float, float], seed: int) -> tuple[np.ndarray, ...]:
    """Split indices into (train, val, test) per class, with `fractions` = (val, test) of each class.

    Deterministic for a given seed; each returned index array is sorted.
    """
    rng = np.random.default_rng(seed)
    parts: list[list[np.ndarray]] = [[], [], []]
    for c in np.unique(labels):
        idx = rng.permutation(np.flatnonzero(labels == c))
        n_val, n_test = (int(round(f * len(idx))) for f in fractions)
        parts[2].append(idx[:n_test])
        parts[1].append(idx[n_test:n_test + n_val])
        parts[0].append(idx[n_test + n_val:])
    return tuple(np.sort(np.concatenate(p)) for p in parts)
