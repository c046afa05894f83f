"""`StructuredPrunerConfig`: the structured engine's config plus WHEN to remove channels during training.

The removal count is the engine's `steps` (or the length of `at_steps`); removal i of n brings the model to a
remaining ratio that falls along `ramp` (geometric: ratio**(i/n), as the one-shot `steps:` does; or a registered
schedule's shape applied to the removed fraction 1 - ratio) and is re-scored on the model as training left it.
"""

from __future__ import annotations

from pydantic import Field, field_validator, model_validator

from prunekit.errors import PrunekitError, choices_text, suggest
from prunekit.methods.structured.config import StructuredConfig
from prunekit.registry import SCHEDULES
from prunekit.schedules import make_schedule

DEFAULT_END_FRACTION = 0.75  # as ScheduleConfig: the last removal at 3/4 of the run, the rest recovers


def _ramp_kinds() -> list[str]:
    return ["geometric", *(k for k in SCHEDULES.names() if k not in ("imp", "constant"))]


class StructuredPrunerConfig(StructuredConfig):
    """Remove whole channels at chosen optimizer steps while the model trains (see `StructuredPruner`)."""

    at_steps: tuple[int, ...] | None = Field(
        None,
        description="Optimizer steps after which channels are removed (strictly increasing, >= 0; 0 = before "
        "training); one removal per entry. Unset: `steps` removals spread evenly from `begin` to `end`.",
    )
    begin: int = Field(0, ge=0, description="Step of the first removal when at_steps is unset.")
    end: int | None = Field(
        None, ge=0,
        description="Step of the last removal when at_steps is unset; default: 3/4 of total_steps (the rest recovers).",
    )
    ramp: str = Field(
        "geometric",
        description="How the remaining ratio falls over the n removals: geometric (removal i keeps ratio**(i/n) of "
        "the original), or a schedule kind (linear, cubic, polynomial, exponential) shaping the removed fraction.",
    )
    recalibrate_bn: bool = Field(
        True,
        description="After each removal re-estimate BatchNorm statistics on `calib_batches` batches of the data "
        "(when data is given and the model has BatchNorm; compensate: bn already does it).",
    )

    @field_validator("ramp")
    @classmethod
    def _known_ramp(cls, value: str) -> str:
        kinds = _ramp_kinds()
        if value not in kinds:
            raise PrunekitError(f"unknown ramp {value!r}.{suggest(value, kinds)} Valid: {choices_text(kinds)}")
        return value

    @field_validator("at_steps")
    @classmethod
    def _increasing(cls, value: tuple[int, ...] | None) -> tuple[int, ...] | None:
        if value is None:
            return value
        if not value:
            raise PrunekitError("at_steps is empty; give at least one optimizer step (or leave it unset)")
        if value[0] < 0 or any(b <= a for a, b in zip(value, value[1:])):
            raise PrunekitError(f"at_steps must be strictly increasing steps >= 0, got {list(value)}")
        return value

    @model_validator(mode="after")
    def _counts_agree(self) -> StructuredPrunerConfig:
        if self.at_steps is not None and self.steps not in (1, len(self.at_steps)):
            raise PrunekitError(f"steps ({self.steps}) disagrees with at_steps ({len(self.at_steps)} entries); "
                                "give one of them")
        if self.end is not None and self.end < self.begin:
            raise PrunekitError(f"end ({self.end}) must be >= begin ({self.begin})")
        return self

    @property
    def removals(self) -> int:
        """How many removals the run makes."""
        return len(self.at_steps) if self.at_steps is not None else self.steps

    def removal_steps(self, total_steps: int | None) -> list[int]:
        """The optimizer steps after which each removal happens.

        Raises:
            PrunekitError: `end` unset without total_steps, or too few steps between begin and end for n removals.
        """
        if self.at_steps is not None:
            return list(self.at_steps)
        n = self.steps
        end = self.end
        if end is None:
            if total_steps is None:
                raise PrunekitError("StructuredPruner: neither at_steps nor end is set and total_steps is unknown; "
                                    "pass StructuredPruner(..., total_steps=N) or set at_steps / end")
            end = max(self.begin, int(round(DEFAULT_END_FRACTION * total_steps)))
        if n == 1:
            return [self.begin]
        if end - self.begin < n - 1:
            raise PrunekitError(f"{n} removals need {n - 1} steps between begin ({self.begin}) and end ({end}); "
                                "lower steps or widen the range")
        return [self.begin + round((end - self.begin) * i / (n - 1)) for i in range(n)]

    def goals(self) -> list[float]:
        """Remaining ratio (of the ORIGINAL model) after each removal, ending exactly at the target ratio."""
        n, ratio = self.removals, self.target.ratio
        if self.ramp == "geometric" or ratio >= 1.0:
            return [ratio ** ((i + 1) / n) for i in range(n)]
        removed = make_schedule(self.ramp, initial=0.0, final=1.0 - ratio, begin=0, end=n, frequency=1, power=3.0)
        return [1.0 - removed(i + 1) for i in range(n)]

    def engine_config(self) -> StructuredConfig:
        """The structured engine's part of this config (one removal per engine step)."""
        fields = {k: getattr(self, k) for k in StructuredConfig.model_fields}
        fields["steps"] = self.removals
        return StructuredConfig(**fields)
