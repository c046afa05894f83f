"""`PrunekitCallback`: drive a `Pruner` from a Hugging Face `transformers.Trainer`.

    pruner = Pruner(model, PrunerConfig(sparsity=0.9))
    trainer = Trainer(model=model, args=args, train_dataset=ds, callbacks=[PrunekitCallback(pruner)])
    trainer.train()          # prepare at train begin, step after every optimizer step, finalize at train end

On train begin the callback prepares the pruner (with the Trainer's `max_steps` as the total when the pruner was
built without one) and attaches the Trainer's optimizer; on every step end it calls `pruner.step(global_step)`;
on train end it calls `pruner.finalize()` (masks stay attached; `prunekit.finalize(model)` bakes them).
Importing this module needs `transformers`.
"""

from __future__ import annotations

from typing import Any

from transformers import TrainerCallback

from prunekit.training.pruner import Pruner


class PrunekitCallback(TrainerCallback):
    """A `transformers.TrainerCallback` running `pruner`'s lifecycle inside `Trainer.train()`."""

    def __init__(self, pruner: Pruner) -> None:
        self.pruner = pruner

    def on_train_begin(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        pruner = self.pruner
        if pruner.phase == "new":
            if pruner.total_steps is None:
                pruner.total_steps = int(state.max_steps)
            pruner.prepare()
        optimizer = kwargs.get("optimizer")
        if optimizer is not None:
            pruner.attach_optimizer(optimizer)

    def on_step_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        self.pruner.step(int(state.global_step))

    def on_train_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        if self.pruner.phase == "prepared":
            self.pruner.finalize()
