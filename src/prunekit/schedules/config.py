"""`ScheduleConfig`: the `schedule: {...}` block of gradual recipes (gmp, the Pruner).

It lives beside the formulas (layer 1), so it derives from pydantic directly with the same settings as
`prunekit.config.Config` (frozen, unknown keys forbidden, defaults validated), which sits in a higher layer.
The final sparsity is not part of it: it is the method's `sparsity`.
"""

from __future__ import annotations

from collections.abc import Callable

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from prunekit.errors import PrunekitError, choices_text, suggest
from prunekit.registry import SCHEDULES
from prunekit.schedules.functions import make_schedule, update_steps

DEFAULT_END_FRACTION = 0.75


class ScheduleConfig(BaseModel):
    """How sparsity grows with the optimizer step: kind, begin / end steps, update frequency."""

    model_config = ConfigDict(frozen=True, extra="forbid", validate_default=True, use_attribute_docstrings=True)

    kind: str = Field("cubic", description="constant, linear, cubic, polynomial or exponential (see `prunekit list`).")
    initial: float = Field(0.0, ge=0.0, lt=1.0, description="Sparsity before `begin` (and the ramp's start).")
    begin: int = Field(0, ge=0, description="Optimizer step where pruning starts.")
    end: int | None = Field(
        None, ge=0, description="Step where the final sparsity is reached; default: 3/4 of the total steps."
    )
    frequency: int = Field(1, ge=1, description="Masks are updated every `frequency` steps between begin and end.")
    power: float = Field(3.0, gt=0.0, description="Exponent of the `polynomial` kind (cubic = 3).")

    @field_validator("kind")
    @classmethod
    def _known_kind(cls, value: str) -> str:
        kinds = [k for k in SCHEDULES.names() if k != "imp"]
        if value not in kinds:
            raise PrunekitError(
                f"unknown schedule kind {value!r}.{suggest(value, kinds)} Valid kinds: {choices_text(kinds)}"
            )
        return value

    @model_validator(mode="after")
    def _order(self) -> ScheduleConfig:
        if self.end is not None and self.end < self.begin:
            raise PrunekitError(f"schedule end ({self.end}) must be >= begin ({self.begin})")
        return self

    def resolved_end(self, total_steps: int | None) -> int:
        """`end`, or 3/4 of `total_steps` (at least `begin`) when unset.

        Raises:
            PrunekitError: when `end` is unset and the total number of steps is unknown.
        """
        if self.end is not None:
            return self.end
        if total_steps is None:
            raise PrunekitError("schedule end is not set; give schedule.end (a step) or the total number of steps")
        return max(self.begin, int(round(DEFAULT_END_FRACTION * total_steps)))

    def build(self, final: float, total_steps: int | None = None) -> Callable[[int], float]:
        """The bound `step -> sparsity` function reaching `final` at `resolved_end(total_steps)`."""
        if self.initial > final:
            raise PrunekitError(f"schedule initial sparsity {self.initial:g} exceeds the final sparsity {final:g}")
        return make_schedule(self.kind, initial=self.initial, final=final, begin=self.begin,
                             end=self.resolved_end(total_steps), frequency=self.frequency, power=self.power)

    def updates(self, total_steps: int | None = None) -> list[int]:
        """Steps where the sparsity may change (constant: only `begin`)."""
        if self.kind == "constant":
            return [self.begin]
        return update_steps(self.begin, self.resolved_end(total_steps), self.frequency)
