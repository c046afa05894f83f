"""Step-granular checkpoint / resume of the `iterative` stage.

After every accepted prune + fine-tune step, `save_step` writes an atomic checkpoint (`training.checkpoint`:
model.safetensors + state.pt, `latest.json` switched last) into `checkpoint_dir` (else `resume_dir`): the model's
weights, the pruning state and the global RNG. The pruning state is the `StructuredPruner`'s (its plan steps, so a
fresh model replays the removals) for `kind: structured`, and the keep_masks for `kind: mask`. `resume` restores
the latest one onto the model as it enters the stage (the dense model, as the interrupted run had it) and says how
many steps are done; the driver then skips them. Optimizers are fresh per step, so none is saved. Rank 0 alone
writes under torchrun.
"""

from __future__ import annotations

import json
from typing import Any

import torch
from torch import Tensor, nn

from prunekit.errors import PrunekitError
from prunekit.masks import attach_mask, current_mask, masked_modules
from prunekit.methods.iterative.config import IterativeConfig
from prunekit.training import distributed
from prunekit.training.checkpoint import Checkpoint, save_checkpoint

FOLDER_FIELDS = {"checkpoint_dir", "resume_dir"}


class MaskState:
    """The keep_masks of a model as a pruner-like state (`state_dict` / `load_state_dict`), so a checkpoint of the
    mask kind attaches them before the model's weights (masks included) are loaded."""

    def __init__(self, model: nn.Module) -> None:
        self.model = model

    def state_dict(self) -> dict[str, Any]:
        masks = {f"{name}:{tname}": current_mask(module, tname).cpu()  # type: ignore[union-attr]
                 for name, module, tname in masked_modules(self.model)}
        return {"masks": masks}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        modules = dict(self.model.named_modules())
        keep: Tensor
        for key, keep in state["masks"].items():
            name, tname = key.rsplit(":", 1)
            if name not in modules:
                raise PrunekitError(f"the iterative checkpoint has a mask for layer {name!r}, which this model does "
                                    "not have; resume with the same model")
            attach_mask(modules[name], keep.to(torch.bool), tname)


def _config_key(config: IterativeConfig) -> str:
    """The config without its folders: a resume must use the same pruning and fine-tuning settings."""
    return json.dumps(config.model_dump(mode="json", exclude=FOLDER_FIELDS), sort_keys=True)


def save_step(config: IterativeConfig, model: nn.Module, pruner: Any, done: int, *, dense_acc: float,
              notes: list[str], layers: dict[str, dict[str, Any]]) -> None:
    """Checkpoint the run after `done` accepted steps (nothing when no folder is set, or off rank 0)."""
    if config.save_dir is None or not distributed.is_main():
        return
    extra = {"config": _config_key(config), "dense_acc": float(dense_acc), "notes": list(notes),
             "layers": json.dumps(layers)}
    save_checkpoint(config.save_dir, done, model=model, pruner=pruner if pruner is not None else MaskState(model),
                    extra=extra)


def resume(config: IterativeConfig, model: nn.Module, pruner: Any, ckpt: Checkpoint | None) -> dict[str, Any] | None:
    """Restore `ckpt` (the latest checkpoint of `config.resume_dir`, `finetune_loop.find_checkpoint`) onto `model`
    (pruning state, weights, RNG).

    Returns None when there is none, else {"done": steps done, "dense_acc", "notes", "layers", "path"}.

    Raises:
        PrunekitError: the checkpoint was made with other settings, or does not fit the model.
    """
    if ckpt is None:
        return None
    extra = ckpt.extra
    if extra.get("config") != _config_key(config):
        raise PrunekitError(f"the checkpoint in {config.resume_dir} was made with other iterative settings; resume "
                            "with the recipe that made it (only checkpoint_dir / resume_dir may differ)")
    ckpt.restore(pruner=pruner if pruner is not None else MaskState(model), model=model, rng=True)
    return {"done": ckpt.step, "dense_acc": float(extra["dense_acc"]), "notes": list(extra["notes"]),
            "layers": json.loads(extra["layers"]), "path": str(ckpt.path)}
