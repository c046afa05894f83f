"""`MovementPrunerConfig`: which layers movement pruning scores (LayerSelection), hard or soft, and its schedule.

hard: the sparsity rises on `schedule` (cubic with `begin` = warm-up steps by default) and each layer keeps the
top-k of its scores at its share of the scheduled sparsity (uniform, or split by `allocation`).
soft: no sparsity target; a weight is kept while its score exceeds `threshold`, and `regularization` (lambda,
ramped on the same schedule's shape) pushes every score down; the final sparsity is whatever the threshold leaves.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from prunekit.config.rules import LayerSelection
from prunekit.errors import PrunekitError
from prunekit.schedules import ScheduleConfig
from prunekit.training.allocation import AllocationConfig


class MovementPrunerConfig(LayerSelection):
    """Movement pruning (Sanh et al. 2020): learned scores decide the mask; hard (top-k) or soft (threshold)."""

    mode: Literal["hard", "soft"] = Field(
        "hard", description="hard: top-k of the scores per layer at the scheduled sparsity; soft: keep where "
        "score > threshold, with the sigmoid L1 regulariser (final sparsity not set in advance)."
    )
    sparsity: float | None = Field(
        None, ge=0.0, lt=1.0, description="hard only (required there): the final fraction of weights to zero."
    )
    schedule: ScheduleConfig = Field(
        default_factory=ScheduleConfig,
        description="{kind, initial, begin, end, frequency, power}: hard: how sparsity rises (begin = warm-up "
        "steps); soft: the shape of lambda's ramp from 0 to `regularization`.",
    )
    score_init: Literal["constant", "magnitude"] = Field(
        "magnitude", description="Initial scores: magnitude (abs(W), so the first hard mask is the magnitude mask; "
        "the default because on short budgets it measured better: docs/benchmarks.md section 26) or constant "
        "(every score 0, as Sanh et al.; ranks start arbitrary and need many steps of movement to sort)."
    )
    threshold: float = Field(
        -0.1, description="soft only: a weight is kept while its score > threshold (scores start at abs(W), or at "
        "0 with score_init: constant)."
    )
    regularization: float = Field(
        1e-3, ge=0.0, description="soft only: final lambda of lambda * sum(sigmoid(scores)) added to the loss "
        "(per-score pull; larger = sparser)."
    )
    allocation: AllocationConfig | None = Field(
        None, description="hard only: {kind, file, erk_power} (kind uniform, erk, lamp or sensitivity): split of the "
        "final sparsity across layers (computed once at prepare; every layer follows the schedule in proportion)."
    )

    @model_validator(mode="after")
    def _mode_fields(self) -> MovementPrunerConfig:
        if self.mode == "hard" and self.sparsity is None:
            raise PrunekitError("movement mode 'hard' needs sparsity (a number in [0, 1)), e.g. sparsity: 0.9")
        if self.mode == "soft":
            if self.sparsity is not None:
                raise PrunekitError("movement mode 'soft' takes no sparsity (threshold and regularization decide "
                                    "it); remove sparsity or use mode: hard")
            if self.allocation is not None:
                raise PrunekitError("allocation applies to movement mode 'hard' only; remove it or use mode: hard")
        if self.mode == "hard" and self.sparsity is not None and self.sparsity > 1.0 - self.min_density + 1e-12:
            raise PrunekitError(f"sparsity {self.sparsity:g} is above 1 - min_density ({1 - self.min_density:g}); "
                                "lower sparsity or min_density")
        return self

    @property
    def target_sparsity(self) -> float:
        """hard: the final sparsity; soft: 0 (not set in advance)."""
        return float(self.sparsity or 0.0)
