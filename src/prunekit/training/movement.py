"""`MovementPruner`: movement pruning (Sanh, Wolf & Rush 2020) inside any training loop, with a guarded lifecycle.

    prepare()  ->  step(global_step) after every optimizer step  ->  finalize()

`prepare` gives every targeted Linear / Conv weight a parametrization `W -> W * M(S)` with a learnable score tensor
S of the weight's shape (initialised to |W| by default, or to 0 with `score_init: constant`). The scores are ordinary
parameters of the model: put `score_parameters()` in the optimizer with their own learning rate (Sanh et al. use a
much larger one than the weights', and no weight decay); `param_groups(lr, score_lr, weight_decay)` builds both
groups. The straight-through estimator sends dL/dW' * W to each score (see `prunekit.importance.movement`).

hard: `step` sets each layer's sparsity from the schedule (cubic after `schedule.begin` warm-up steps by default)
and every forward keeps exactly the top-k scores of each layer; masks may change at every step (weights can come
back while their scores rise), but the count always equals the schedule's.
soft: every forward keeps the weights whose score > threshold; add `regularisation_loss()` (lambda *
sum(sigmoid(S)) over all scores, lambda ramped on the schedule's shape) to the task loss.

`finalize` turns the learned masks into prunekit KeepMasks (zeros written into the pruned weights) and removes the
scores, so `prunekit.finalize`, export and reports treat the model exactly as after magnitude pruning.

Plain-loop example::

    from prunekit.training.movement import MovementPruner

    pruner = MovementPruner(model, {"mode": "hard", "sparsity": 0.9, "schedule": {"begin": 100}},
                            total_steps=epochs * len(loader))
    pruner.prepare()                                          # adds the scores: build the optimizer after this
    opt = torch.optim.AdamW(pruner.param_groups(lr=3e-5, score_lr=1e-2, weight_decay=0.01))
    step = 0
    for _ in range(epochs):
        for x, y in loader:
            loss = loss_fn(model(x), y) + pruner.regularisation_loss()   # zero in hard mode
            opt.zero_grad(); loss.backward(); opt.step()
            step += 1
            pruner.step(step)
    pruner.finalize()                                         # KeepMasks attached, scores gone
    prunekit.finalize(model)                                  # bake the zeros in when training is over

Checkpoints: `state_dict()` / `load_state_dict()` fit `prunekit.training.checkpoint` (restore order: pruner, which
attaches the scores, then the model, whose state dict holds their values, then the optimizer). The `movement`
recipe stage runs this pruner on the shared fine-tune loop (`training.finetune_run`): distillation, BatchNorm
recalibration, checkpoint / resume and torchrun as in `gmp`.
"""

from __future__ import annotations

import json
from typing import Any

import torch
from torch import Tensor, nn
from torch.nn.utils import parametrize

from prunekit.config.targets import select_targets
from prunekit.errors import PrunekitError
from prunekit.importance.movement import sigmoid_l1
from prunekit.masks import KeepMask, attach_mask, current_mask
from prunekit.methods.base import PruneContext, StageResult
from prunekit.methods.mask_pipeline import protected_layers
from prunekit.training.allocation import layer_sparsities
from prunekit.training.lifecycle import (
    FINAL,
    NEW,
    PREPARED,
    build_schedule,
    check_finalize,
    check_fresh,
    check_prepare,
    check_step,
    check_total_steps,
)
from prunekit.training.movement_config import MovementPrunerConfig
from prunekit.training.movement_scores import MovementScores

__all__ = ["MovementPruner", "MovementPrunerConfig", "MovementScores"]

STATE_FORMAT = 1


class MovementPruner:
    """Movement-prune `model` while it trains, as `config` says; see the module docstring for the lifecycle.

    Args:
        model: the model being trained (scores attached as parametrizations, then KeepMasks at finalize).
        config: a `MovementPrunerConfig` or a dict of its fields.
        total_steps: optimizer steps of the whole run; needed when `config.schedule.end` is unset (3/4 of it).
        execution_order: module names in execution order, to find the first layer (protect_first).
    """

    def __init__(self, model: nn.Module, config: MovementPrunerConfig | dict[str, Any], *,
                 total_steps: int | None = None, execution_order: list[str] | None = None) -> None:
        if isinstance(config, dict):
            config = MovementPrunerConfig(**config)
        if not isinstance(config, MovementPrunerConfig):
            raise PrunekitError(f"MovementPruner config must be a MovementPrunerConfig or a dict, "
                                f"got {type(config).__name__}")
        check_total_steps(total_steps)
        self.model, self.config, self.total_steps = model, config, total_steps
        self._ctx = PruneContext(execution_order=execution_order)
        self.phase = NEW
        self.last_step = 0
        self.layers: list[str] = []
        self.skipped: dict[str, str] = {}
        self.final_share: dict[str, float] = {}  # hard: each layer's final sparsity
        self.applied = 0.0  # hard: the scheduled overall sparsity now in force
        self.history: list[tuple[int, float]] = []  # hard: (step, overall sparsity) whenever it changed
        self.lam = 0.0  # soft: the regularisation weight now in force
        self.notes: list[str] = []
        self.schedule: Any = None

    # ----- lifecycle -------------------------------------------------------------------------------------------
    def prepare(self) -> MovementPruner:
        """Resolve the targeted layers and attach their scores; apply the step-0 schedule. Call once."""
        check_prepare(self)
        cfg = self.config
        self._build_schedule()
        sel = select_targets(self.model, cfg.targets, cfg.ignore,
                             protected=protected_layers(self.model, cfg, self._ctx))  # type: ignore[arg-type]
        self.skipped = dict(sel.skipped)
        if cfg.mode == "hard":
            self.final_share = layer_sparsities(self.model, list(sel.targeted), cfg.target_sparsity,
                                                cfg.allocation, max_sparsity=1.0 - cfg.min_density)
        self._attach_all(list(sel.targeted))
        self.phase = PREPARED
        self._update(0)
        return self

    def _build_schedule(self) -> None:
        cfg = self.config
        final = cfg.target_sparsity if cfg.mode == "hard" else 0.5  # soft: only the ramp's shape is used
        self.schedule = build_schedule(self, cfg.schedule, final)

    def _attach_all(self, layers: list[str]) -> None:
        modules = dict(self.model.named_modules())
        for name in layers:
            if name not in modules:
                raise PrunekitError(f"saved movement state names layer {name!r}, which this model does not have")
            self._check_plain(name, modules[name])
        self.layers = layers
        for name in layers:
            self._attach(name, modules[name])

    def _check_plain(self, name: str, module: nn.Module) -> None:
        if parametrize.is_parametrized(module, "weight"):
            others = [type(p).__name__ for p in module.parametrizations["weight"]  # type: ignore[index]
                      if not isinstance(p, KeepMask)]
            if others:
                raise PrunekitError(f"layer {name!r}: weight already carries parametrization(s) {', '.join(others)}; "
                                    "movement pruning needs a plain weight or prunekit masks (finalize first)")

    def _attach(self, name: str, module: nn.Module) -> None:
        base = current_mask(module)
        weight = module.weight.detach()
        init = weight.abs() if self.config.score_init == "magnitude" else torch.zeros_like(weight)
        min_keep = max(1, int(-(-self.config.min_density * weight.numel() // 1)))
        scorer = MovementScores(init, self.config.mode, base, min_keep, self.config.threshold)
        if base is not None:  # fold the earlier KeepMask into the scores' base; one parametrization chain
            order = next(p.param_order for p in module.parametrizations["weight"]  # type: ignore[index]
                         if isinstance(p, KeepMask))
            parametrize.remove_parametrizations(module, "weight", leave_parametrized=False)  # the raw original
            scorer.param_order = order  # type: ignore[assignment]
        else:
            scorer.param_order = list(module._parameters)  # type: ignore[assignment]
        parametrize.register_parametrization(module, "weight", scorer)

    def step(self, global_step: int) -> None:
        """Call after each optimizer step with the number of optimizer steps done (1 after the first)."""
        self._update(check_step(self, global_step))

    def finalize(self) -> StageResult:
        """End the run: the learned masks become KeepMasks, the scores are removed; returns the report."""
        check_finalize(self)
        final = self.config.target_sparsity
        if self.config.mode == "hard" and self.applied < final - 1e-12:
            self.notes.append(f"training stopped at step {self.last_step}, before the schedule reached sparsity "
                              f"{final:g} (it had {self.applied:g}); the top-k masks were cut to {final:g} at once")
            self._set_hard(final)
        result = self.report()
        modules = dict(self.model.named_modules())
        for name in self.layers:
            module = modules[name]
            scorer = self._scorer(module)
            keep, order = scorer.keep().clone(), scorer.param_order  # type: ignore[attr-defined]
            parametrize.remove_parametrizations(module, "weight", leave_parametrized=False)
            params = module._parameters
            ordered = {k: params[k] for k in order if k in params}
            ordered.update({k: v for k, v in params.items() if k not in ordered})
            params.clear()
            params.update(ordered)
            with torch.no_grad():
                module.weight.masked_fill_(~keep, 0)  # as the Pruner: pruned originals are zero too
            attach_mask(module, keep)
        self.phase = FINAL
        result.notes.append(self._summary())
        return result

    # ----- state -----------------------------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        """The pruning state in plain types: phase, step, layers, each layer's final share, notes.

        The scores are parameters of the model and the masks follow from them, so they are in the model's state
        dict; `prunekit.training.checkpoint` saves both (a resumed run is bit-identical to an uninterrupted one).
        """
        return {
            "format": STATE_FORMAT,
            "config": self.config.model_dump_json(),
            "phase": self.phase,
            "last_step": self.last_step,
            "layers": list(self.layers),
            "skipped": dict(self.skipped),
            "final_share": dict(self.final_share),
            "notes": list(self.notes),
            "history": [[s, v] for s, v in self.history],
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore a saved state into a fresh MovementPruner (instead of `prepare`): attaches the scores of the
        saved layers; then load the model's state dict (it holds the scores' values) and build the optimizer.

        Raises:
            PrunekitError: the pruner was already prepared, or the state is finalized, from another config or
                another format.
        """
        check_fresh(self)
        if state.get("format") != STATE_FORMAT:
            raise PrunekitError(f"movement pruning state format {state.get('format')!r} is not {STATE_FORMAT}")
        if json.loads(state["config"]) != json.loads(self.config.model_dump_json()):
            raise PrunekitError("the saved movement pruning state was made with another config; use the same one")
        if state["phase"] != PREPARED:
            raise PrunekitError(f"a {state['phase']} movement pruning state cannot be resumed (only a prepared one)")
        self._build_schedule()
        self.skipped = dict(state["skipped"])
        self.final_share = {k: float(v) for k, v in state["final_share"].items()}
        self.notes = list(state["notes"])
        self.history = [(int(a), float(b)) for a, b in state.get("history", [])]
        self._attach_all(list(state["layers"]))
        self.phase = PREPARED
        self.last_step = int(state["last_step"])
        self._update(self.last_step)

    # ----- what the user's loop needs --------------------------------------------------------------------------
    def attach_optimizer(self, optimizer: torch.optim.Optimizer) -> None:
        """Nothing to do (for the shared fine-tune loop): a movement mask may give a weight back, so the optimizer's
        state on currently masked entries is kept."""

    def score_parameters(self) -> list[nn.Parameter]:
        """The learnable scores, one per targeted layer (give them to the optimizer, typically at a larger lr)."""
        self._need_prepared("score_parameters")
        modules = dict(self.model.named_modules())
        return [self._scorer(modules[n]).scores for n in self.layers]

    def param_groups(self, lr: float, score_lr: float, weight_decay: float = 0.0) -> list[dict[str, Any]]:
        """Optimizer groups: the model's other trainable parameters at (lr, weight_decay); scores at score_lr, no
        weight decay (decay would drag every score toward 0 and bias the mask)."""
        self._need_prepared("param_groups")
        scores = self.score_parameters()
        ids = {id(s) for s in scores}
        rest = [p for p in self.model.parameters() if p.requires_grad and id(p) not in ids]
        return [{"params": rest, "lr": lr, "weight_decay": weight_decay},
                {"params": scores, "lr": score_lr, "weight_decay": 0.0}]

    def regularisation_loss(self) -> Tensor:
        """soft: lambda * sum(sigmoid(S)) over every score (lambda at the current step); hard: a zero tensor."""
        self._need_prepared("regularisation_loss")
        scores = self.score_parameters()
        if self.config.mode == "hard" or self.lam == 0.0:
            return scores[0].new_zeros(())
        return self.lam * sigmoid_l1(scores)

    def masks(self) -> dict[str, Tensor]:
        """The current keep_mask of every targeted layer (True = kept), by module name."""
        modules = dict(self.model.named_modules())
        if self.phase == FINAL:
            return {n: m for n in self.layers if (m := current_mask(modules[n])) is not None}
        return {n: self._scorer(modules[n]).keep().clone() for n in self.layers}

    def report(self) -> StageResult:
        """Per-layer rows (pruned with achieved sparsity, or skipped with the reason) and notes."""
        out = StageResult(method="movement", notes=list(self.notes))
        for name, reason in self.skipped.items():
            out.layers[name] = {"status": "skipped", "reason": reason}
        for name, keep in self.masks().items():
            out.layers[name] = {"status": "pruned", "pattern": "unstructured",
                                "sparsity": 1.0 - keep.float().mean().item()}
        return out

    # ----- internals -------------------------------------------------------------------------------------------
    def _need_prepared(self, what: str) -> None:
        if self.phase != PREPARED:
            raise PrunekitError(f"MovementPruner.{what}() needs a prepared pruner (phase {self.phase}); call "
                                "prepare() first, and use it before finalize()")

    @staticmethod
    def _scorer(module: nn.Module) -> MovementScores:
        return next(p for p in module.parametrizations["weight"]  # type: ignore[index]
                    if isinstance(p, MovementScores))

    def _update(self, step: int) -> None:
        s = float(self.schedule(step))
        if self.config.mode == "hard":
            self._set_hard(s)
        else:
            self.lam = self.config.regularization * s / 0.5

    def _set_hard(self, overall: float) -> None:
        final = self.config.target_sparsity
        modules = dict(self.model.named_modules())
        for name in self.layers:  # every layer follows the schedule in proportion to its final share
            layer_final = self.final_share[name]
            share = overall if layer_final == final else (layer_final * overall / final if final > 0 else 0.0)
            self._scorer(modules[name]).sparsity = min(share, layer_final)
        if not self.history or self.history[-1][1] != overall:
            self.history.append((self.last_step, overall))
        self.applied = overall

    def _summary(self) -> str:
        masks = self.masks()
        total = sum(m.numel() for m in masks.values())
        achieved = 1.0 - sum(int(m.sum()) for m in masks.values()) / max(1, total)
        if self.config.mode == "hard":
            return (f"movement (hard): {self.config.schedule.kind} schedule to sparsity {self.config.sparsity:g} "
                    f"from step {self.config.schedule.begin}; achieved {achieved:.4f} over {len(masks)} layers")
        return (f"movement (soft): threshold {self.config.threshold:g}, lambda {self.config.regularization:g}; "
                f"achieved sparsity {achieved:.4f} over {len(masks)} layers")
