"""The guarded lifecycle the training-time pruners share: prepare() -> step(global_step)* -> finalize().

`Pruner`, `StructuredPruner` and `MovementPruner` call these checks at the top of the matching method, so misuse
(prepare twice, step before prepare or after finalize, a global_step that goes back, finalize twice, loading a
state into a used pruner) raises the same one-line PrunekitError, naming the class and what to call instead. Each
pruner keeps `phase` (NEW / PREPARED / FINAL) and `last_step` as attributes; the checks read and set them.
"""

from __future__ import annotations

import numbers
from typing import Any

from prunekit.errors import PrunekitError

NEW, PREPARED, FINAL = "new", "prepared", "finalized"


def _who(pruner: Any) -> str:
    return type(pruner).__name__


def check_prepare(pruner: Any) -> None:
    """prepare() is allowed once, on a new pruner."""
    who = _who(pruner)
    if pruner.phase == PREPARED:
        raise PrunekitError(f"{who}.prepare() was already called; call it once, before the training loop")
    if pruner.phase == FINAL:
        raise PrunekitError(f"{who}.prepare() after finalize(); build a new {who} for another run")


def check_step(pruner: Any, global_step: Any) -> int:
    """step(global_step) needs a prepared pruner and a non-decreasing integer step; sets and returns `last_step`."""
    who = _who(pruner)
    if pruner.phase == NEW:
        raise PrunekitError(f"{who}.step() called before prepare(); call pruner.prepare() first, before training")
    if pruner.phase == FINAL:
        raise PrunekitError(f"{who}.step() called after finalize(); the run is over (build a new {who})")
    integral = isinstance(global_step, numbers.Integral) and not isinstance(global_step, bool)
    if not integral or global_step < pruner.last_step:
        raise PrunekitError(
            f"{who}.step({global_step!r}): global_step must be an integer >= the last one ({pruner.last_step}); "
            "pass the count of optimizer steps since the start of training, not a per-epoch index"
        )
    pruner.last_step = int(global_step)
    return pruner.last_step


def check_finalize(pruner: Any) -> None:
    """finalize() is allowed once, after prepare()."""
    who = _who(pruner)
    if pruner.phase == NEW:
        raise PrunekitError(f"{who}.finalize() called before prepare(); call prepare(), train with step(), "
                            "then finalize()")
    if pruner.phase == FINAL:
        raise PrunekitError(f"{who}.finalize() was already called")


def check_fresh(pruner: Any) -> None:
    """load_state_dict() replaces prepare(): only on a new pruner."""
    if pruner.phase != NEW:
        raise PrunekitError(f"{_who(pruner)}.load_state_dict() needs a fresh pruner; call it instead of prepare()")


def check_total_steps(total_steps: Any) -> int | None:
    """A pruner's `total_steps` argument: None or a positive integer."""
    if total_steps is not None and (isinstance(total_steps, bool) or not isinstance(total_steps, int)
                                    or total_steps < 1):
        raise PrunekitError(f"total_steps must be a positive integer, got {total_steps!r}")
    return total_steps


def build_schedule(pruner: Any, schedule: Any, final: float) -> Any:
    """The pruner's `step -> sparsity` function from its ScheduleConfig, reaching `final` (uses `total_steps`)."""
    who = _who(pruner)
    if schedule.end is None and pruner.total_steps is None:
        raise PrunekitError(f"{who}.prepare(): schedule end is not set and total_steps is unknown; pass "
                            f"{who}(..., total_steps=N) or set schedule.end (the step where the final sparsity is "
                            "reached)")
    return schedule.build(final, pruner.total_steps)

