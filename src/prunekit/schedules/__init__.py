"""Sparsity schedules: pure `step -> sparsity` functions, registered in `prunekit.registry.SCHEDULES`.

Every registered schedule has the call form `fn(step, *, initial, final, begin, end, frequency, power, rate)`
(unused keywords ignored) and returns the sparsity in [0, 1) that should hold after `step` optimizer steps.
`make_schedule(kind, ...)` binds the parameters and returns a one-argument function.
"""

from prunekit.schedules.functions import (
    constant,
    cubic,
    exponential,
    imp_level,
    imp_rounds,
    linear,
    make_schedule,
    polynomial,
    update_steps,
)
from prunekit.schedules.config import ScheduleConfig

__all__ = [
    "ScheduleConfig", "constant", "cubic", "exponential", "imp_level", "imp_rounds", "linear", "make_schedule",
    "polynomial", "update_steps",
]
