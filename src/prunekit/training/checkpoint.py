"""Checkpoint and resume of a pruning-while-training run, safe against `kill -9` at any point.

A checkpoint is a folder `step-00000123/` holding
  model.safetensors   the model's state dict (masks included, as the parametrizations' buffers)
  state.pt            optimizer, LR scheduler, pruner state, RNG states (torch, CUDA, numpy, python), step and
                      `extra` (e.g. the metrics so far): plain tensors / lists / dicts only, read back with
                      `torch.load(weights_only=True)`, so loading never unpickles code.
It is built as a hidden temp folder and renamed into place; only then is `latest.json` (itself written to a temp
file and `os.replace`d) switched to it, and older checkpoints are deleted. A run killed at any instant leaves
`latest.json` pointing at a complete checkpoint (or no `latest.json` at all).

Restore order matters with masks: the pruner's state first (it attaches the masks, so the model's state dict keys
and parameter order match), then the model, then an optimizer built over the masked model, then the scheduler.
`Checkpoint.restore` takes whichever of them you pass, in that order.
"""

from __future__ import annotations

import json
import os
import random
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from prunekit._atomic import atomic_write_text
from prunekit.errors import PrunekitError

LATEST = "latest.json"
MODEL_FILE = "model.safetensors"
STATE_FILE = "state.pt"


def rng_state() -> dict[str, Any]:
    """Every global RNG's state as plain tensors and lists (torch, CUDA when present, numpy, python)."""
    np_kind, np_keys, np_pos, np_gauss, np_cached = np.random.get_state()
    py_version, py_state, py_gauss = random.getstate()
    state: dict[str, Any] = {
        "torch": torch.get_rng_state(),
        "numpy": {"kind": np_kind, "keys": torch.from_numpy(np_keys.astype(np.int64)), "pos": int(np_pos),
                  "has_gauss": int(np_gauss), "cached": float(np_cached)},
        "python": {"version": py_version, "state": list(py_state), "gauss": py_gauss},
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    """Restore what `rng_state` returned."""
    torch.set_rng_state(state["torch"])
    n = state["numpy"]
    np.random.set_state((n["kind"], n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"], n["cached"]))
    p = state["python"]
    random.setstate((p["version"], tuple(p["state"]), p["gauss"]))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def save_checkpoint(folder: str | Path, step: int, *, model: nn.Module, optimizer: Any = None, scheduler: Any = None,
                    pruner: Any = None, extra: dict[str, Any] | None = None, keep: int = 1) -> Path:
    """Atomically write checkpoint `step` under `folder`, point `latest.json` at it, keep the newest `keep`."""
    from safetensors.torch import save_file

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    name = f"step-{step:08d}"
    tmp = Path(tempfile.mkdtemp(dir=folder, prefix=f".{name}."))
    try:
        tensors = {k: v.detach().cpu().clone().contiguous() for k, v in model.state_dict().items()}
        save_file(tensors, str(tmp / MODEL_FILE))
        state = {
            "step": int(step),
            "optimizer": optimizer.state_dict() if optimizer is not None else None,
            "scheduler": scheduler.state_dict() if scheduler is not None else None,
            "pruner": pruner.state_dict() if pruner is not None else None,
            "rng": rng_state(),
            "extra": extra or {},
        }
        torch.save(state, tmp / STATE_FILE)
        for f in (tmp / MODEL_FILE, tmp / STATE_FILE):
            with open(f, "rb") as fh:
                os.fsync(fh.fileno())
        final = folder / name
        if final.exists():
            shutil.rmtree(final)
        os.replace(tmp, final)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    atomic_write_text(folder / LATEST, json.dumps({"step": int(step), "dir": name}) + "\n")
    kept = sorted(p for p in folder.glob("step-*") if p.is_dir())
    for old in kept[:-keep] if keep > 0 else []:
        if old.name != name:
            shutil.rmtree(old, ignore_errors=True)
    for stale in folder.glob(".step-*"):  # temp folders of a run killed while writing
        shutil.rmtree(stale, ignore_errors=True)
    return final


def latest_checkpoint(folder: str | Path) -> Path | None:
    """The checkpoint `latest.json` points at, or None when `folder` holds none yet."""
    folder = Path(folder)
    pointer = folder / LATEST
    if not pointer.is_file():
        return None
    try:
        path = folder / json.loads(pointer.read_text(encoding="utf-8"))["dir"]
    except (ValueError, KeyError, TypeError) as exc:
        raise PrunekitError(f"{pointer}: not a prunekit checkpoint pointer ({exc})") from None
    if not (path / MODEL_FILE).is_file() or not (path / STATE_FILE).is_file():
        raise PrunekitError(f"{pointer} points at {path.name}, which is incomplete or missing")
    return path


@dataclass
class Checkpoint:
    """A checkpoint read back: the model's tensors and the training state, ready to `restore`."""

    path: Path
    step: int
    model_state: dict[str, torch.Tensor]
    state: dict[str, Any] = field(repr=False)

    @property
    def extra(self) -> dict[str, Any]:
        """What the run stored beside the state (e.g. metrics so far)."""
        return self.state.get("extra") or {}

    def restore(self, *, pruner: Any = None, model: nn.Module | None = None, optimizer: Any = None,
                scheduler: Any = None, rng: bool = False) -> None:
        """Load the given pieces, in the safe order: pruner (attaches masks), model, optimizer, scheduler, RNG.

        Raises:
            PrunekitError: a piece was asked for that the checkpoint does not hold, or the model does not match.
        """
        for label, obj in (("pruner", pruner), ("optimizer", optimizer), ("scheduler", scheduler)):
            if obj is not None and self.state.get(label) is None:
                raise PrunekitError(f"checkpoint {self.path} holds no {label} state")
        if pruner is not None:
            pruner.load_state_dict(self.state["pruner"])
        if model is not None:
            try:
                model.load_state_dict(self.model_state, strict=True)
            except RuntimeError as exc:
                first = str(exc).strip().splitlines()[0]
                raise PrunekitError(
                    f"checkpoint {self.path} does not fit this model ({first}); restore the pruner first "
                    "(it attaches the masks) and use the same model architecture"
                ) from None
        if optimizer is not None:
            optimizer.load_state_dict(self.state["optimizer"])
        if scheduler is not None:
            scheduler.load_state_dict(self.state["scheduler"])
        if rng:
            set_rng_state(self.state["rng"])


def load_checkpoint(path: str | Path) -> Checkpoint:
    """Read a checkpoint folder, or the latest one of a run folder (tensors only: weights_only, safetensors).

    Raises:
        PrunekitError: nothing loadable at `path`.
    """
    from safetensors.torch import load_file

    path = Path(path)
    if (path / LATEST).is_file():
        path = latest_checkpoint(path) or path
    if not (path / MODEL_FILE).is_file() or not (path / STATE_FILE).is_file():
        raise PrunekitError(f"{path} is not a prunekit checkpoint (expected {MODEL_FILE} and {STATE_FILE})")
    state = torch.load(path / STATE_FILE, map_location="cpu", weights_only=True)
    return Checkpoint(path=path, step=int(state["step"]), model_state=load_file(str(path / MODEL_FILE)), state=state)
