"""The runner's activation cache: one cached block call per calibration sample, in RAM up to a byte budget, on disk
past it.

The sequential runner keeps, for every calibration sample, the arguments of the current block (hidden states plus
keyword arguments such as attention masks and rotary embeddings). For a big model or many long samples that cache
outgrows RAM, so `ActivationCache` keeps calls in memory while their tensors fit in `budget` bytes and writes the
rest to a temporary folder: each spilled sample's hidden states in one file (rewritten after every block) and its
other tensors in another (written once). Non-tensor parts (None, flags, ...) stay in RAM in a skeleton. Files are
plain tensors written with `torch.save` and read back with `weights_only=True`, one sample at a time, so a walk over
a spilled cache holds one sample's activations. The folder is removed by `close()` (or leaving the `with` block),
also on error. Reading a tensor back from disk gives the same bits, so results equal the in-RAM walk exactly.
"""

from __future__ import annotations

import re
import shutil
import tempfile
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from prunekit.errors import PrunekitError

_UNITS = {"": 1, "b": 1, "k": 10**3, "kb": 10**3, "m": 10**6, "mb": 10**6, "g": 10**9, "gb": 10**9,
          "t": 10**12, "tb": 10**12, "kib": 2**10, "mib": 2**20, "gib": 2**30, "tib": 2**40}


def parse_bytes(value: int | float | str | None) -> int | None:
    """A byte count from an int or a string such as "2GiB", "512MB", "1.5 GB" (None stays None).

    Raises:
        PrunekitError: for a negative number or a string that is not NUMBER[UNIT].
    """
    if value is None:
        return None
    if isinstance(value, bool):
        raise PrunekitError(f"memory budget {value!r} is not a size; give bytes (an integer) or e.g. '2GiB', '512MB'")
    if isinstance(value, (int, float)):
        number, unit = float(value), ""
    else:
        match = re.fullmatch(r"\s*([0-9]*\.?[0-9]+)\s*([A-Za-z]*)\s*", str(value))
        if match is None or match.group(2).lower() not in _UNITS:
            raise PrunekitError(
                f"memory budget {value!r} is not a size; give bytes (an integer) or NUMBER UNIT with UNIT one of "
                "B, KB, MB, GB, TB, KiB, MiB, GiB, TiB (e.g. '2GiB')"
            )
        number, unit = float(match.group(1)), match.group(2).lower()
    if number < 0:
        raise PrunekitError(f"memory budget {value!r} is negative; give 0 or more bytes")
    return int(number * _UNITS[unit])


@dataclass
class BlockCall:
    """One cached call of a block: its positional and keyword arguments (tensors on CPU)."""

    args: tuple[Any, ...]
    kwargs: dict[str, Any]

    def hidden(self) -> Tensor:
        """The hidden states this call feeds the block."""
        return self.args[0] if self.args else self.kwargs["hidden_states"]

    def with_hidden(self, hidden: Any) -> BlockCall:
        """The same call with new hidden states."""
        if self.args:
            return BlockCall((hidden, *self.args[1:]), self.kwargs)
        return BlockCall(self.args, {**self.kwargs, "hidden_states": hidden})


@dataclass(frozen=True)
class _Slot:
    """Stands for the k-th spilled tensor of a call's skeleton (k = -1: the hidden states)."""

    index: int


def _strip(obj: Any, tensors: list[Tensor]) -> Any:
    """`obj` with every tensor replaced by a _Slot into `tensors` (appended)."""
    if isinstance(obj, Tensor):
        tensors.append(obj)
        return _Slot(len(tensors) - 1)
    if isinstance(obj, tuple):
        return tuple(_strip(o, tensors) for o in obj)
    if isinstance(obj, list):
        return [_strip(o, tensors) for o in obj]
    if isinstance(obj, Mapping):
        return {k: _strip(v, tensors) for k, v in obj.items()}
    return obj


def _fill(obj: Any, tensors: list[Tensor], hidden: Tensor | None) -> Any:
    if isinstance(obj, _Slot):
        return hidden if obj.index < 0 else tensors[obj.index]
    if isinstance(obj, tuple):
        return tuple(_fill(o, tensors, hidden) for o in obj)
    if isinstance(obj, list):
        return [_fill(o, tensors, hidden) for o in obj]
    if isinstance(obj, Mapping):
        return {k: _fill(v, tensors, hidden) for k, v in obj.items()}
    return obj


def call_bytes(call: BlockCall) -> int:
    """Bytes held by the tensors of a call."""
    tensors: list[Tensor] = []
    _strip((call.args, call.kwargs), tensors)
    return sum(t.numel() * t.element_size() for t in tensors)


def _compact(t: Tensor) -> Tensor:
    """`t` owning exactly its bytes (torch.save writes a view's whole storage)."""
    t = t.detach().contiguous()
    return t if t.untyped_storage().nbytes() == t.numel() * t.element_size() else t.clone()


def _load(path: Path) -> Any:
    return torch.load(path, map_location="cpu", weights_only=True)


class ActivationCache:
    """Block calls per calibration sample: kept in RAM while they fit in `budget` bytes, spilled to disk past it.

    Args:
        budget: bytes of tensors to keep in RAM; None keeps everything in RAM, 0 spills every sample.
        spill_dir: folder in which the temporary spill folder is made (default: the system's temp folder).
    """

    def __init__(self, budget: int | None = None, spill_dir: str | Path | None = None) -> None:
        self.budget = budget
        self.spill_dir = spill_dir
        self.ram_bytes = 0
        self.folder: Path | None = None
        self._ram: dict[int, BlockCall] = {}
        self._disk: dict[int, BlockCall] = {}  # skeletons: tensors replaced by _Slot
        self._count = 0

    def __enter__(self) -> ActivationCache:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Remove the spill folder and forget every sample."""
        self._ram.clear()
        self._disk.clear()
        self.ram_bytes = 0
        if self.folder is not None:
            shutil.rmtree(self.folder, ignore_errors=True)
            self.folder = None

    def __len__(self) -> int:
        return self._count

    @property
    def spilled(self) -> int:
        """How many samples live on disk."""
        return len(self._disk)

    def _dir(self) -> Path:
        if self.folder is None:
            if self.spill_dir is not None:
                Path(self.spill_dir).mkdir(parents=True, exist_ok=True)
            self.folder = Path(tempfile.mkdtemp(prefix="prunekit-spill-", dir=self.spill_dir))
        return self.folder

    def _hidden_path(self, i: int) -> Path:
        return self._dir() / f"{i}.hidden.pt"

    def append(self, call: BlockCall) -> None:
        """Add the next sample's call: in RAM if it fits the budget, else on disk."""
        i = self._count
        size = call_bytes(call)
        if self.budget is None or self.ram_bytes + size <= self.budget:
            self._ram[i] = call
            self.ram_bytes += size
        else:
            tensors: list[Tensor] = []
            hidden = call.hidden()
            marked = call.with_hidden(_Slot(-1))  # the hidden states get their own file, the rest one together
            skeleton = _strip((marked.args, marked.kwargs), tensors)
            torch.save([_compact(t) for t in tensors], self._dir() / f"{i}.static.pt")
            torch.save(_compact(hidden), self._hidden_path(i))
            self._disk[i] = BlockCall(*skeleton)
        self._count += 1

    def __getitem__(self, i: int) -> BlockCall:
        """Sample i's call, read back from disk when it was spilled."""
        if i in self._ram:
            return self._ram[i]
        if i not in self._disk:
            raise IndexError(f"activation cache has {self._count} samples, no sample {i}")
        skeleton = self._disk[i]
        tensors = _load(self._dir() / f"{i}.static.pt")
        hidden = _load(self._hidden_path(i))
        args, kwargs = _fill((skeleton.args, skeleton.kwargs), tensors, hidden)
        return BlockCall(args, kwargs)

    def __iter__(self) -> Iterator[BlockCall]:
        for i in range(self._count):
            yield self[i]

    def set_hidden(self, i: int, hidden: Tensor) -> None:
        """Replace sample i's hidden states (the next block's input); a spilled sample's file is rewritten."""
        if i in self._ram:
            old = self._ram[i]
            self.ram_bytes += hidden.numel() * hidden.element_size() - old.hidden().numel() * old.hidden().element_size()
            self._ram[i] = old.with_hidden(hidden)
        elif i in self._disk:
            torch.save(_compact(hidden), self._hidden_path(i))
        else:
            raise IndexError(f"activation cache has {self._count} samples, no sample {i}")

    def hidden_states(self) -> list[Tensor]:
        """Every sample's current hidden states (all loaded into RAM)."""
        return [self[i].hidden() for i in range(self._count)]
