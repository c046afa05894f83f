"""The schedule formulas. Pure functions of the step; no torch, no model.

Shared conventions (Zhu & Gupta 2017, "To prune, or not to prune"):
- before `begin` the sparsity is `initial`; at and after `end` it is `final`;
- in between, sparsity changes only every `frequency` steps: the step is rounded down to
  `begin + k * frequency`, so the function is a staircase and a pruner updates masks only at those steps;
- `progress = (t_q - begin) / (end - begin)` in [0, 1], with `t_q` the rounded step.

cubic / polynomial: s_t = s_f + (s_i - s_f) * (1 - progress) ** power   (power 3 = Zhu & Gupta)
linear:             s_t = s_i + (s_f - s_i) * progress
exponential:        density falls geometrically: (1 - s_t) = (1 - s_i) ** (1 - progress) * (1 - s_f) ** progress,
                    i.e. every update prunes the same fraction of the weights that remain
constant:           s_t = s_f from `begin` on (one-shot at `begin`), s_i before
imp level:          after `round` rounds that each prune `rate` of the remaining weights: 1 - (1 - rate) ** round
"""

from __future__ import annotations

import math
from collections.abc import Callable
from functools import partial

from prunekit.errors import PrunekitError
from prunekit.registry import SCHEDULES


def _check(initial: float, final: float, begin: int, end: int, frequency: int) -> None:
    for label, value in (("initial", initial), ("final", final)):
        if not 0.0 <= value < 1.0:
            raise PrunekitError(f"schedule {label} sparsity must be in [0, 1), got {value!r}")
    if initial > final:
        raise PrunekitError(f"schedule initial sparsity {initial:g} exceeds final {final:g}; sparsity only grows")
    if begin < 0:
        raise PrunekitError(f"schedule begin must be >= 0, got {begin!r}")
    if end < begin:
        raise PrunekitError(f"schedule end ({end}) must be >= begin ({begin})")
    if frequency < 1:
        raise PrunekitError(f"schedule frequency must be >= 1 step, got {frequency!r}")


def _progress(step: int, begin: int, end: int, frequency: int) -> float | None:
    """None before begin; 1.0 at/after end; else the staircase progress in [0, 1)."""
    if step < begin:
        return None
    if step >= end:
        return 1.0
    t_q = begin + ((step - begin) // frequency) * frequency
    return (t_q - begin) / (end - begin)


def polynomial(step: int, *, initial: float = 0.0, final: float, begin: int = 0, end: int, frequency: int = 1,
               power: float = 3.0, **_: object) -> float:
    """s_f + (s_i - s_f) * (1 - progress) ** power: fast pruning early, gentle near the end (power 3 = cubic)."""
    _check(initial, final, begin, end, frequency)
    if power <= 0:
        raise PrunekitError(f"schedule power must be > 0, got {power!r}")
    p = _progress(step, begin, end, frequency)
    if p is None:
        return initial
    return final + (initial - final) * (1.0 - p) ** power


def cubic(step: int, *, initial: float = 0.0, final: float, begin: int = 0, end: int, frequency: int = 1,
          **_: object) -> float:
    """Zhu & Gupta's gradual schedule: s_f + (s_i - s_f) * (1 - (t - t0) / (n dt)) ** 3."""
    return polynomial(step, initial=initial, final=final, begin=begin, end=end, frequency=frequency, power=3.0)


def linear(step: int, *, initial: float = 0.0, final: float, begin: int = 0, end: int, frequency: int = 1,
           **_: object) -> float:
    """s_i + (s_f - s_i) * progress: the same number of weights pruned at every update."""
    _check(initial, final, begin, end, frequency)
    p = _progress(step, begin, end, frequency)
    return initial if p is None else initial + (final - initial) * p


def exponential(step: int, *, initial: float = 0.0, final: float, begin: int = 0, end: int, frequency: int = 1,
                **_: object) -> float:
    """Density decays geometrically from 1 - s_i to 1 - s_f: each update prunes the same share of what remains."""
    _check(initial, final, begin, end, frequency)
    p = _progress(step, begin, end, frequency)
    if p is None:
        return initial
    if p >= 1.0:
        return final
    return 1.0 - (1.0 - initial) ** (1.0 - p) * (1.0 - final) ** p


def constant(step: int, *, initial: float = 0.0, final: float, begin: int = 0, **_: object) -> float:
    """One-shot: `final` from step `begin` on, `initial` before."""
    if not 0.0 <= final < 1.0 or not 0.0 <= initial <= final:
        raise PrunekitError(f"schedule sparsities must satisfy 0 <= initial <= final < 1, got {initial!r}, {final!r}")
    if begin < 0:
        raise PrunekitError(f"schedule begin must be >= 0, got {begin!r}")
    return final if step >= begin else initial


def imp_level(step: int, *, rate: float = 0.2, final: float | None = None, **_: object) -> float:
    """Sparsity after `step` IMP rounds, each pruning `rate` of the remaining weights: 1 - (1 - rate) ** step.

    With `final`, the level is capped there (the last round prunes only what is left to reach it).
    """
    if not 0.0 < rate < 1.0:
        raise PrunekitError(f"IMP rate must be in (0, 1), got {rate!r}")
    if step < 0:
        raise PrunekitError(f"IMP round must be >= 0, got {step!r}")
    level = 1.0 - (1.0 - rate) ** step
    return level if final is None else min(level, final)


def imp_rounds(final: float, rate: float) -> int:
    """The number of IMP rounds needed to reach `final` sparsity at `rate` per round."""
    if not 0.0 <= final < 1.0:
        raise PrunekitError(f"IMP final sparsity must be in [0, 1), got {final!r}")
    if not 0.0 < rate < 1.0:
        raise PrunekitError(f"IMP rate must be in (0, 1), got {rate!r}")
    if final == 0.0:
        return 0
    return math.ceil(math.log(1.0 - final) / math.log(1.0 - rate) - 1e-9)


def update_steps(begin: int, end: int, frequency: int) -> list[int]:
    """The steps at which a staircase schedule changes value: begin, begin + f, ... (< end), and end."""
    steps = list(range(begin, end, frequency))
    return [*steps, end] if not steps or steps[-1] != end else steps


SCHEDULES.register("constant", constant, help="one-shot: the final sparsity from `begin` on")
SCHEDULES.register("linear", linear, help="linear ramp from initial to final sparsity between begin and end")
SCHEDULES.register("cubic", cubic, help="Zhu & Gupta: s_f + (s_i - s_f)(1 - progress)^3, fast early, gentle late")
SCHEDULES.register("polynomial", polynomial, help="s_f + (s_i - s_f)(1 - progress)^power (power 3 = cubic)")
SCHEDULES.register("exponential", exponential, help="density decays geometrically: same share of the rest per update")
SCHEDULES.register("imp", imp_level, help="IMP levels: round r has sparsity 1 - (1 - rate)^r (capped at final)")


def make_schedule(kind: str, **params: object) -> Callable[[int], float]:
    """Bind a registered schedule's parameters: `make_schedule("cubic", final=0.9, end=100)(50)`.

    Raises:
        PrunekitError: for an unknown kind (naming the closest) or invalid parameters (checked at once, at step 0).
    """
    fn = partial(SCHEDULES.get(kind), **params)
    fn(0)  # validate now, not in the middle of training
    return fn
