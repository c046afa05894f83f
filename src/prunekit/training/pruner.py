"""`Pruner`: gradual mask pruning inside any training loop, with a guarded lifecycle.

    prepare()  ->  step(global_step) after every optimizer step  ->  finalize()

`prepare` resolves the targeted layers once and attaches a KeepMask to each (all-True until the schedule says
otherwise), so the parameter set is fixed before the optimizer is built and a resumed run sees the same order.
`step` asks the schedule for the sparsity after `global_step` optimizer steps and, when it rose, re-scores the
effective weights (already-pruned ones score -inf, so masks only shrink) and ANDs the new keep_masks in.

Why pruned weights stay zero under any optimizer: the forward uses `original * mask`, so the effective weight is
zero whatever the optimizer does to `original`. The Pruner also zeroes `original` and the optimizer's per-weight
state (Adam's exp_avg / exp_avg_sq, SGD's momentum_buffer) on pruned entries after every step: then a pruned entry
gets no gradient, no momentum and (decoupled) weight decay of zero, so `original` stays exactly zero too and a
checkpoint or an accidental mask removal cannot bring back stale values.

Per-layer allocation: with `allocation` set (uniform / erk / lamp / sensitivity, `prunekit.training.allocation`),
each update's overall sparsity s is split as `layer_sparsities(model, layers, s, allocation)` (exact weighted mean
s, each layer capped at 1 - min_density) and every layer is pruned to its own share (scope layer only).

Plain-loop example::

    from prunekit.training.pruner import Pruner, PrunerConfig

    pruner = Pruner(model, PrunerConfig(sparsity=0.9, schedule={"kind": "cubic"}),
                    total_steps=epochs * len(loader))
    pruner.prepare()                                   # attaches masks: build the optimizer after this
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    pruner.attach_optimizer(opt)                       # its state on pruned entries is zeroed too
    step = 0
    for _ in range(epochs):
        for x, y in loader:
            loss = loss_fn(model(x), y)
            opt.zero_grad(); loss.backward(); opt.step()
            step += 1
            pruner.step(step)
    pruner.finalize()                                  # final sparsity guaranteed; masks stay attached
    prunekit.finalize(model)                           # bake the zeros in when training is over
"""

from __future__ import annotations

import json
import zlib
from typing import Any

import torch
from torch import Tensor, nn

from prunekit.config.targets import select_targets
from prunekit.errors import PrunekitError
from prunekit.importance import magnitude, random_scores
from prunekit.masks import attach_mask, current_mask
from prunekit.masks import finalize as bake_masks
from prunekit.methods.base import PruneContext, StageResult
from prunekit.methods.mask_pipeline import _drop_unsupported, protected_layers, run_mask_pruning
from prunekit.patterns import parse_pattern
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
from prunekit.training.pruner_config import PrunerConfig

__all__ = ["Pruner", "PrunerConfig"]

STATE_FORMAT = 1


def _layer_generator(seed: int, name: str) -> torch.Generator:
    # The same seeding as the `random` method: (seed, layer name) -> the same scores at every update.
    return torch.Generator().manual_seed((seed * 1_000_003 + zlib.crc32(name.encode())) % (2**63))


class Pruner:
    """Prune `model` gradually while it trains, as `config` says; see the module docstring for the lifecycle.

    Args:
        model: the model being trained (pruned in place through KeepMask parametrizations).
        config: a `PrunerConfig` or a dict of its fields.
        total_steps: optimizer steps of the whole run; needed when `config.schedule.end` is unset (3/4 of it).
        optimizer: its per-weight state is zeroed on pruned entries (also settable later: `attach_optimizer`).
        execution_order: module names in execution order, to find the first layer (protect_first); default:
            registration order.
    """

    def __init__(self, model: nn.Module, config: PrunerConfig | dict[str, Any], *, total_steps: int | None = None,
                 optimizer: torch.optim.Optimizer | None = None, execution_order: list[str] | None = None) -> None:
        if isinstance(config, dict):
            config = PrunerConfig(**config)
        if not isinstance(config, PrunerConfig):
            raise PrunekitError(f"Pruner config must be a PrunerConfig or a dict, got {type(config).__name__}")
        check_total_steps(total_steps)
        self.model = model
        self.config = config
        self.total_steps = total_steps
        self.optimizer = optimizer
        self.schedule: Any = None  # built by prepare(), once the total number of steps is known
        self._ctx = PruneContext(execution_order=execution_order)
        self.phase = NEW
        self.last_step = 0
        self.applied = 0.0  # the sparsity target last applied
        self.layers: list[str] = []
        self.skipped: dict[str, str] = {}
        self.result = StageResult(method="pruner")
        self.history: list[tuple[int, float]] = []  # (step, sparsity target) at every mask update

    # ----- lifecycle -------------------------------------------------------------------------------------------
    def prepare(self) -> Pruner:
        """Resolve the targeted layers, attach their masks, apply the schedule's step-0 sparsity. Call once."""
        check_prepare(self)
        cfg = self.config
        self._build_schedule()
        mcfg = cfg.mask_config(cfg.sparsity)
        sel = select_targets(self.model, cfg.targets, cfg.ignore,
                             protected=protected_layers(self.model, mcfg, self._ctx), strict=cfg.strict)
        modules = dict(self.model.named_modules())
        self.layers = _drop_unsupported(sel, modules, parse_pattern(cfg.pattern), cfg.strict)
        self.skipped = dict(sel.skipped)
        for name in self.layers:
            weight = modules[name].weight
            attach_mask(modules[name], torch.ones(weight.shape, dtype=torch.bool, device=weight.device))
        self.phase = PREPARED
        self._update(0)
        return self

    def _build_schedule(self) -> None:
        self.schedule = build_schedule(self, self.config.schedule, self.config.target_sparsity)

    def attach_optimizer(self, optimizer: torch.optim.Optimizer) -> None:
        """Zero this optimizer's per-weight state on pruned entries at every step from now on."""
        self.optimizer = optimizer
        self._zero_pruned()

    def step(self, global_step: int) -> bool:
        """Call after each optimizer step with the number of optimizer steps done (1 after the first).

        Returns True when the masks changed at this step.
        """
        global_step = check_step(self, global_step)
        changed = self._update(global_step)
        if not changed:
            self._zero_pruned()
        return changed

    def finalize(self, bake: bool = False) -> StageResult:
        """End the run: make sure the final sparsity holds (pruning to it at once if training stopped early).

        Masks stay attached unless `bake` (then `prunekit.finalize` bakes the zeros and removes them).
        """
        check_finalize(self)
        final = self.config.target_sparsity
        if self.applied < final - 1e-12 or (self.config.is_nm and not self.history):
            self.result.notes.append(
                f"training stopped at step {self.last_step}, before the schedule reached sparsity {final:g} "
                f"(it had {self.applied:g}); pruned to {final:g} at once"
            )
            self._apply(final)
        self.phase = FINAL
        result = self.report()
        if bake:
            bake_masks(self.model)
        return result

    def report(self) -> StageResult:
        """Per-layer rows (pruned with pattern and achieved sparsity, or skipped with the reason) and notes."""
        out = StageResult(method="pruner", notes=list(self.result.notes))
        for name, reason in self.skipped.items():
            out.layers[name] = {"status": "skipped", "reason": reason}
        pattern = parse_pattern(self.config.pattern).name
        for name, keep in self.masks().items():
            out.layers[name] = {"status": "pruned", "pattern": pattern, "sparsity": 1.0 - keep.float().mean().item()}
        return out

    # ----- masks -----------------------------------------------------------------------------------------------
    def _update(self, step: int) -> bool:
        target = float(self.schedule(step))
        if self.config.is_nm:
            due = not self.history and target > 0.0
        else:
            due = target > self.applied + 1e-12
        if due:
            self._apply(target)
        return due

    def _apply(self, sparsity: float) -> None:
        cfg = self.config
        mcfg = cfg.mask_config(sparsity, targets=tuple(self.layers), ignore=(), protect_first=False,
                               protect_last=False)

        def score(name: str, w: Tensor) -> Tensor:
            if cfg.importance == "random":
                return random_scores(w, _layer_generator(cfg.seed, name))
            return magnitude(w, norm=cfg.importance)

        per_layer = None
        if cfg.allocation is not None and not cfg.is_nm:
            per_layer = layer_sparsities(self.model, self.layers, sparsity, cfg.allocation,
                                         max_sparsity=1.0 - cfg.min_density)
        res = run_mask_pruning(self.model, mcfg, self._ctx, "pruner", score, layer_sparsity=per_layer)
        for name, reason in self.skipped.items():
            res.layers.setdefault(name, {"status": "skipped", "reason": reason})
        res.notes = self.result.notes
        self.result = res
        self.applied = cfg.target_sparsity if cfg.is_nm else sparsity
        self.history.append((self.last_step, self.applied))
        self._zero_pruned()

    def masks(self) -> dict[str, Tensor]:
        """The current keep_mask of every targeted layer (True = kept), by module name."""
        modules = dict(self.model.named_modules())
        return {n: m for n in self.layers if (m := current_mask(modules[n])) is not None}

    @torch.no_grad()
    def _zero_pruned(self) -> None:
        modules = dict(self.model.named_modules())
        state = self.optimizer.state if self.optimizer is not None else {}
        for name in self.layers:
            module = modules[name]
            keep = current_mask(module)
            if keep is None or bool(keep.all()):
                continue
            original = module.parametrizations.weight.original  # type: ignore[union-attr]
            original.masked_fill_(~keep, 0)
            for value in state.get(original, {}).values():
                if isinstance(value, Tensor) and value.shape == original.shape:
                    value.masked_fill_(~keep, 0)

    # ----- state -----------------------------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        """The pruning state: phase, step, applied sparsity, update history, layers and their masks (plain types)."""
        return {
            "format": STATE_FORMAT,
            "config": self.config.model_dump_json(),
            "phase": self.phase,
            "last_step": self.last_step,
            "applied": self.applied,
            "history": [[s, v] for s, v in self.history],
            "layers": list(self.layers),
            "skipped": dict(self.skipped),
            "masks": {n: m.clone().cpu() for n, m in self.masks().items()},
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore a saved pruning state into a fresh Pruner (instead of `prepare`); attaches the saved masks.

        Raises:
            PrunekitError: the Pruner was already prepared, the state comes from another config or format, or
                the model carries masks that differ from the saved ones.
        """
        check_fresh(self)
        if state.get("format") != STATE_FORMAT:
            raise PrunekitError(f"pruning state format {state.get('format')!r} is not {STATE_FORMAT}")
        if json.loads(state["config"]) != json.loads(self.config.model_dump_json()):
            raise PrunekitError("the saved pruning state was made with another PrunerConfig; use the same config")
        self._build_schedule()
        modules = dict(self.model.named_modules())
        for name, keep in state["masks"].items():
            if name not in modules:
                raise PrunekitError(f"saved mask for layer {name!r}, which this model does not have")
            module = modules[name]
            attach_mask(module, keep.to(torch.bool))
            if not torch.equal(current_mask(module).cpu(), keep.to(torch.bool)):  # type: ignore[union-attr]
                raise PrunekitError(f"layer {name!r} already carries a different mask; load into a fresh model")
        self.layers = list(state["layers"])
        self.skipped = dict(state["skipped"])
        self.phase = state["phase"]
        self.last_step = int(state["last_step"])
        self.applied = float(state["applied"])
        self.history = [(int(s), float(v)) for s, v in state["history"]]
        self._zero_pruned()
