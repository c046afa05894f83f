"""`StructuredPruner`: physically remove channels at chosen steps of any training loop, optimizer state kept.

    prepare()  ->  step(global_step) after every optimizer step  ->  finalize()

Each removal is one step of the structured engine (`prunekit.methods.structured`): dependency graph on the model as
training left it, importance, selection to the removal's share of the target, surgery, equivalence check, plan step
recorded (so `get_plan(model)` / `apply_plan` / `prunekit.load` replay the final shapes). Surgery creates new, smaller
Parameters, so the optimizer would keep updating the dead ones: the Pruner re-points the attached optimizer IN PLACE
at the new Parameters (LR schedulers holding it keep working) and slices every per-element state tensor (Adam's
exp_avg / exp_avg_sq, SGD's momentum_buffer) to the kept indices, so the surviving channels keep their momentum.
Per-parameter state of another shape (factored optimizers) cannot be sliced and is reset, with a note.
After each removal BatchNorm statistics are re-estimated on a few batches of `data` when given. `state_dict()` /
`load_state_dict()` fit `prunekit.training.checkpoint`: on resume the pruner replays its removals on a fresh base
model first, so the saved weights and optimizer state fit (restore order: pruner, model, optimizer).

Plain-loop example::

    from prunekit.training.structured_pruner import StructuredPruner

    pruner = StructuredPruner(model, {"target": {"macs_ratio": 0.5}, "steps": 3}, example_inputs=x[:2],
                              total_steps=epochs * len(loader), data=loader)
    pruner.prepare()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    pruner.attach_optimizer(opt)                       # re-pointed at the smaller parameters after each removal
    step = 0
    for _ in range(epochs):
        for x, y in loader:
            loss = loss_fn(model(x), y)
            opt.zero_grad(); loss.backward(); opt.step()
            step += 1
            pruner.step(step)                          # removes channels at the chosen steps
    result = pruner.finalize()                         # any removal not reached yet is done now
    plan = prunekit.methods.structured.get_plan(model)  # replays the final shapes on the base model
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from typing import Any

import torch
from pydantic import ValidationError
from torch import nn

from prunekit.errors import PrunekitError
from prunekit.graph import DependencyGraph
from prunekit.methods.base import PruneContext, StageResult
from prunekit.methods.structured.calib import calibration_batches, model_device, to_device
from prunekit.methods.structured.config import StructuredConfig
from prunekit.methods.structured.method import (
    StructuredMethod,
    _calibration,
    _check_no_masks,
    _ignored_modules,
    _layer_info,
    _no_kv_cache,
    _sizes,
)
from prunekit.methods.structured.plan import PlanStep, PruningPlan, apply_plan, get_plan, record_step
from prunekit.methods.structured.schedule import Schedule
from prunekit.training.bn import recalibrate_batchnorm
from prunekit.training.lifecycle import (
    FINAL,
    NEW,
    PREPARED,
    check_finalize,
    check_fresh,
    check_prepare,
    check_step,
    check_total_steps,
)
from prunekit.training.optim_rebind import rebind_optimizer
from prunekit.training.structured_pruner_config import StructuredPrunerConfig

__all__ = ["StructuredPruner", "StructuredPrunerConfig", "rebind_optimizer"]

STATE_FORMAT = 1
_BN = nn.modules.batchnorm._BatchNorm


@dataclass
class _Ramp(Schedule):
    """The engine's step schedule with explicit per-removal goals (remaining ratio of the ORIGINAL model)."""

    goals: tuple[float, ...] = ()

    def step_config(self, config: StructuredConfig, graph: DependencyGraph, index: int) -> StructuredConfig:
        return self.goal_config(config, graph, self.goals[index])

    def advance(self, reached: float) -> None:
        if self.kind in ("width_ratio", "latency_ratio"):
            self.overall *= reached
        else:
            self.overall = reached * (self.current or 1.0) / (self.orig or 1.0)


def _build_config(data: dict[str, Any]) -> StructuredPrunerConfig:
    """Validate a dict config, turning pydantic's report into one line naming the key."""
    try:
        return StructuredPrunerConfig(**data)
    except ValidationError as exc:
        err = exc.errors()[0]
        loc = ".".join(str(p) for p in err.get("loc", ()))
        msg = str(err.get("msg", "invalid")).removeprefix("Value error, ")
        raise PrunekitError(f"StructuredPruner config: {loc + ': ' if loc else ''}{msg}") from None


class StructuredPruner:
    """Remove channels at chosen optimizer steps of a training loop; see the module docstring for the lifecycle.

    Args:
        model: pruned in place (must carry no masks).
        config: a `StructuredPrunerConfig` or a dict of its fields.
        example_inputs: inputs for tracing and the equivalence check (a Tensor, tuple or dict of kwargs).
        total_steps: optimizer steps of the run; needed when neither `at_steps` nor `end` is set.
        data: batches for data-driven importance, compensation and BN recalibration (the forms `prunekit.prune`
            accepts: a DataLoader, a list of batches or (inputs, targets) pairs, or a DatasetSplits' train split).
        optimizer: re-pointed at the new parameters after each removal (also settable: `attach_optimizer`).
    """

    def __init__(self, model: nn.Module, config: StructuredPrunerConfig | dict[str, Any], example_inputs: Any, *,
                 total_steps: int | None = None, data: Any = None,
                 optimizer: torch.optim.Optimizer | None = None) -> None:
        if isinstance(config, dict):
            config = _build_config(config)
        if not isinstance(config, StructuredPrunerConfig):
            raise PrunekitError(
                f"StructuredPruner config must be a StructuredPrunerConfig or a dict, got {type(config).__name__}"
            )
        check_total_steps(total_steps)
        if example_inputs is None:
            raise PrunekitError("StructuredPruner needs example_inputs (a batch the model accepts) to trace the model")
        self.model, self.config, self.total_steps, self.optimizer = model, config, total_steps, optimizer
        self.data = data
        self._ctx = PruneContext(example_inputs=example_inputs, data=data)
        self._engine = config.engine_config()
        self.phase = NEW
        self.last_step = 0
        self.at_steps: list[int] = []
        self.done = 0  # removals made so far
        self.history: list[dict[str, Any]] = []  # per removal: step, goal, reached, channels removed, seconds
        self.notes: list[str] = []
        self._goal: _Ramp | None = None
        self._before: dict[str, dict[str, Any]] = {}
        self._groups: list[Any] = []
        self._steps: list[PlanStep] = []  # the plan steps this pruner made (a checkpoint replays them)

    # ----- lifecycle -------------------------------------------------------------------------------------------
    def prepare(self) -> StructuredPruner:
        """Check the model, fix the removal steps, and make any removal due at step 0. Call once, before training."""
        check_prepare(self)
        self._setup()
        self.phase = PREPARED
        self._due(0)
        return self

    def _setup(self) -> None:
        _check_no_masks(self.model)
        cfg = self.config
        self.at_steps = cfg.removal_steps(self.total_steps)
        if self.total_steps is not None and self.at_steps[-1] > self.total_steps:
            raise PrunekitError(f"at_steps {self.at_steps} go past total_steps ({self.total_steps}); "
                                "the last removal would never happen")
        self._ignored = _ignored_modules(self.model, cfg.ignore)
        self._batches = _calibration(self._engine, self._ctx)
        self._bn_batches = self._recalibration_batches()
        self._goal = _Ramp(cfg.target.kind, cfg.target.ratio, cfg.removals, goals=tuple(cfg.goals()))
        self._before = _sizes(self.model)

    def attach_optimizer(self, optimizer: torch.optim.Optimizer) -> None:
        """Re-point this optimizer at the new parameters after every removal from now on (state sliced)."""
        self.optimizer = optimizer

    def step(self, global_step: int) -> bool:
        """Call after each optimizer step with the number of optimizer steps done; True when channels were removed.

        After a True, the model's parameters are new objects: the attached optimizer was updated, anything else
        holding the old parameters (a second optimizer, an EMA copy) must be rebuilt by the caller.
        """
        return self._due(check_step(self, global_step))

    def finalize(self) -> StageResult:
        """End the run: make the removals training did not reach, and report per-layer changes and notes."""
        check_finalize(self)
        if self.done < len(self.at_steps):
            self.notes.append(f"training stopped at step {self.last_step}, before removal {self.done + 1} of "
                              f"{len(self.at_steps)} (step {self.at_steps[self.done]}); removed the rest at once")
            while self.done < len(self.at_steps):
                self._remove()
        self.phase = FINAL
        return self.report()

    def report(self) -> StageResult:
        """Per-layer rows ("out channels 64 -> 32") against the model at prepare(), the notes and the history."""
        if self.done and not self._groups:  # resumed: the groups of the model as it is now
            self._groups = DependencyGraph.build(self.model, self._ctx.example_inputs).groups
        out = StageResult(method="structured_pruner",
                          layers=_layer_info(self.model, self._groups, self._before, self._ignored)
                          if self._groups else {})
        out.notes.extend(self.notes)
        for h in self.history:
            out.notes.append(f"removal {h['index']} at step {h['step']}: {self.config.target.kind} goal "
                             f"{h['goal']:.4f}, reached {h['reached']:.4f} of the original; "
                             f"{h['channels']} channels removed in {h['seconds']:.2f}s")
        return out

    @property
    def reached(self) -> float:
        """The target ratio reached so far, relative to the model at prepare() (analytic, from the cost model)."""
        return self._goal.overall if self._goal is not None else 1.0

    # ----- removal ---------------------------------------------------------------------------------------------
    def _due(self, step: int) -> bool:
        changed = False
        while self.done < len(self.at_steps) and self.at_steps[self.done] <= step:
            self._remove()
            changed = True
        return changed

    def _remove(self) -> None:
        start = time.perf_counter()
        model, index, goal = self.model, self.done, self._goal
        if goal is None:  # prepare() sets it; _remove is only reached after prepare()
            raise PrunekitError("StructuredPruner: internal error, removal before prepare()")
        was_training = model.training
        before = dict(model.named_parameters(remove_duplicate=False))
        plan = get_plan(model)
        known = len(plan.steps) if plan is not None else 0
        try:
            with _no_kv_cache(model):
                graph, notes = StructuredMethod()._step(model, self._engine, self._ctx, self._ignored,
                                                        self._batches, goal, index)
        finally:
            model.train(was_training)
        plan = get_plan(model)
        step: PlanStep = plan.steps[-1] if plan is not None and len(plan.steps) > known else PlanStep()
        self._groups = graph.groups
        self._steps.append(step)
        self.notes.extend(f"removal {index + 1}: {n}" for n in notes if not n.startswith("structured: "))
        if self.optimizer is not None:
            after = dict(model.named_parameters(remove_duplicate=False))
            self.notes.extend(rebind_optimizer(self.optimizer, before, after, step.removals()))
        if self._bn_batches:
            device = model_device(model)
            recalibrate_batchnorm(model, (to_device(b.inputs, device) for b in self._bn_batches))
        self.done += 1
        self.history.append({
            "index": index + 1, "step": self.last_step, "goal": goal.goals[index], "reached": goal.overall,
            "channels": sum(g.channels_before - g.channels_after for g in step.groups),
            "seconds": time.perf_counter() - start,
        })

    # ----- state -----------------------------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        """The pruning state in plain types: phase, step, removals made, the schedule's progress and the plan steps
        this pruner made (for `prunekit.training.checkpoint.save_checkpoint(..., pruner=...)`)."""
        goal = self._goal
        return {
            "format": STATE_FORMAT,
            "config": self.config.model_dump_json(),
            "phase": self.phase,
            "last_step": self.last_step,
            "done": self.done,
            "goal": [goal.orig, goal.current, goal.overall] if goal is not None else None,
            "plan": PruningPlan(list(self._steps)).to_dict(),
            "history": [dict(h) for h in self.history],
            "notes": list(self.notes),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Resume on a fresh copy of the base model (instead of `prepare`): replays the saved removals, so the
        model gets the checkpoint's shapes; then load the model's weights and build the optimizer.

        Raises:
            PrunekitError: the pruner was already prepared, or the state comes from another config or format.
        """
        check_fresh(self)
        if state.get("format") != STATE_FORMAT:
            raise PrunekitError(f"structured pruning state format {state.get('format')!r} is not {STATE_FORMAT}")
        if json.loads(state["config"]) != json.loads(self.config.model_dump_json()):
            raise PrunekitError("the saved structured pruning state was made with another config; use the same one")
        self._setup()
        plan = PruningPlan.from_dict(state["plan"])
        apply_plan(self.model, plan)  # checks every tensor's shape against the plan: the base model is required
        for step in plan.steps:
            record_step(self.model, step)
        self._steps = list(plan.steps)
        if state["goal"] is not None and self._goal is not None:
            self._goal.orig, self._goal.current, self._goal.overall = state["goal"]
        self.phase = state["phase"]
        self.last_step = int(state["last_step"])
        self.done = int(state["done"])
        self.history = [dict(h) for h in state["history"]]
        self.notes = list(state["notes"])

    def _recalibration_batches(self) -> list[Any]:
        cfg = self.config
        if not cfg.recalibrate_bn or cfg.compensate == "bn":
            return []
        if not any(isinstance(m, _BN) and m.track_running_stats for m in self.model.modules()):
            self.notes.append("no BatchNorm layer: recalibrate_bn had nothing to do")
            return []
        if self.data is None:
            self.notes.append("no data given: BatchNorm statistics were not re-estimated after the removals")
            return []
        return calibration_batches(self.data, cfg.calib_batches, cfg.batch_size, cfg.seed)
