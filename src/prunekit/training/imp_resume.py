"""Round-level checkpoints of a lottery-ticket (IMP) run, so a long run survives a crash or `kill -9`.

After the dense training (round 0) and after every round, `save_round` writes one checkpoint with
`training.checkpoint.save_checkpoint` (atomic: temp folder + rename, then `latest.json`): the model's tensors with
their masks (model.safetensors), and in the state: the keep_masks, the rewind point (the weights IMP rewinds to),
the dense teacher's weights when the run distils, every finished round's numbers, the RNG states and a fingerprint
of the settings. `load_round` reads the latest one back and refuses a checkpoint made with other settings (the
number of rounds may grow: a finished 5-round run resumed with `rounds: 8` trains rounds 6-8 only).

Why round granularity: a round's training restarts from the rewind point, so everything a later round needs is the
masks, the rewind point and (with distillation) the teacher; the ticket's trained weights are kept for the final
model. A resumed run ends with the same masks, weights and accuracies as an uninterrupted one (tested).
"""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from prunekit.errors import PrunekitError
from prunekit.masks import attach_mask, current_mask, masked_modules
from prunekit.training.checkpoint import Checkpoint, latest_checkpoint, load_checkpoint, save_checkpoint

FORMAT = 1


def fingerprint(**settings: Any) -> str:
    """The settings a resumed run must share with the checkpointed one, as canonical JSON."""
    return json.dumps(settings, sort_keys=True, default=str)


def save_round(folder: str | Path, round_: int, model: nn.Module, *, rewind: dict[str, Tensor],
               teacher: dict[str, Tensor] | None, rounds: list[Any], settings: str) -> Path:
    """Checkpoint the run after `round_` (0 = the dense training) into `folder`, atomically."""
    masks = {f"{name}|{tname}": current_mask(m, tname).cpu()  # type: ignore[union-attr]
             for name, m, tname in masked_modules(model)}
    extra = {
        "imp_format": FORMAT,
        "settings": settings,
        "rounds": [asdict(r) for r in rounds],
        "masks": masks,
        "rewind": {k: v.detach().cpu().clone() for k, v in rewind.items()},
        "teacher": {k: v.detach().cpu().clone() for k, v in (teacher or {}).items()},
    }
    return save_checkpoint(folder, round_, model=model, extra=extra)


def load_round(folder: str | Path, settings: str, rounds: int) -> Checkpoint | None:
    """The latest round checkpoint in `folder` (None when it holds none yet).

    Raises:
        PrunekitError: the checkpoint is not an IMP one, was made with other settings, or is past `rounds`.
    """
    if latest_checkpoint(folder) is None:
        return None
    ck = load_checkpoint(folder)
    extra = ck.extra
    if extra.get("imp_format") != FORMAT:
        raise PrunekitError(f"{ck.path} is not an imp round checkpoint (format {extra.get('imp_format')!r}); "
                            "give imp its own resume folder")
    if extra.get("settings") != settings:
        old, new = json.loads(extra["settings"]), json.loads(settings)
        diff = sorted(k for k in old.keys() | new.keys() if old.get(k) != new.get(k))
        raise PrunekitError(f"{ck.path} was made with other imp settings ({', '.join(diff)} differ); resume with "
                            "the same settings (only rounds may change) or use a new folder")
    if ck.step > rounds:
        raise PrunekitError(f"{ck.path} holds round {ck.step}, past rounds={rounds}; raise rounds to at least "
                            f"{ck.step} or use a new folder")
    return ck


def restore_round(ck: Checkpoint, model: nn.Module) -> None:
    """Attach the checkpoint's masks to the (fresh) model, then load its tensors and the RNG states."""
    modules = dict(model.named_modules())
    for key, keep in ck.extra["masks"].items():
        name, tname = key.rsplit("|", 1)
        if name not in modules:
            raise PrunekitError(f"{ck.path} has a mask for layer {name!r}, which this model does not have")
        attach_mask(modules[name], keep.to(torch.bool), tname)
    ck.restore(model=model, rng=True)
