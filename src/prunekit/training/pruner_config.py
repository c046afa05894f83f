"""`PrunerConfig`: what a gradual pruner prunes (targets, pattern, scope, importance) and when (schedule).

It is deliberately not a `MaskPruningConfig`: a gradual method needs training data and steps, so the one-shot
conformance suite (which runs every `MaskPruningConfig` method without data) does not apply to it. Each mask update
builds the equivalent one-shot config (`mask_config(sparsity)`) and runs the shared mask pipeline.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from prunekit.config.rules import LayerSelection
from prunekit.errors import PrunekitError
from prunekit.methods.magnitude.config import MagnitudeConfig
from prunekit.methods.mask_config import MaskPruningConfig
from prunekit.methods.random.config import RandomConfig
from prunekit.patterns import parse_pattern
from prunekit.schedules import ScheduleConfig
from prunekit.training.allocation import AllocationConfig, check_reachable


class PrunerConfig(LayerSelection):
    """Gradual mask pruning: the final sparsity, pattern, scope, targets, importance and schedule."""

    sparsity: float | None = Field(
        None, ge=0.0, lt=1.0, description="Final fraction of weights to zero in [0, 1). Implied by an N:M pattern."
    )
    pattern: str = Field(
        "unstructured",
        description='"unstructured", "N:M" (applied whole at the first update) or "block:RxC" (e.g. "block:4x1").',
    )
    scope: Literal["layer", "global"] = Field(
        "layer", description="layer: each targeted layer to the sparsity; global: one threshold across all of them."
    )
    strict: bool = Field(False, description="Turn every skipped layer that targets matched into an error.")
    importance: Literal["l1", "l2", "random"] = Field(
        "l1",
        description="Score re-computed at every update: l1 absolute value, l2 square, or random (seeded; a baseline).",
    )
    seed: int = Field(0, description="Seed of the random importance (and, in gmp, of shuffling and training).")
    schedule: ScheduleConfig = Field(
        default_factory=ScheduleConfig,
        description="{kind, initial, begin, end, frequency, power}: how sparsity rises with the optimizer step.",
    )

    allocation: AllocationConfig | None = Field(
        None, description="{kind: uniform | erk | lamp | sensitivity, file, erk_power}: how each update's overall "
        "sparsity is split across the targeted layers (needs scope: layer); null: every layer at the same sparsity."
    )

    @model_validator(mode="after")
    def _valid_as_mask_config(self) -> PrunerConfig:
        self.mask_config(self.sparsity)  # the one-shot rules (sparsity vs pattern, scope, min_density) apply too
        if self.allocation is not None and self.scope == "global":
            raise PrunekitError("allocation cannot be combined with scope 'global' (one threshold decides every "
                                "layer's sparsity); use scope: layer with an allocation, or drop the allocation")
        if self.allocation is not None and self.is_nm:
            raise PrunekitError(f"pattern {self.pattern!r} fixes every layer's sparsity; an allocation needs "
                                "'unstructured' or 'block:RxC'")
        check_reachable(self.allocation, self.target_sparsity)
        return self

    @property
    def target_sparsity(self) -> float:
        """The final sparsity: the given one, or the one the N:M pattern implies."""
        return self.mask_config(self.sparsity).target_sparsity

    @property
    def is_nm(self) -> bool:
        """True for N:M patterns, which cannot be reached gradually and are applied whole."""
        return parse_pattern(self.pattern).implied_sparsity() is not None

    def mask_config(self, sparsity: float | None, **overrides: object) -> MaskPruningConfig:
        """The one-shot config (magnitude or random) that prunes to `sparsity` with these settings."""
        fields = {k: getattr(self, k) for k in MaskPruningConfig.model_fields}
        fields.update(sparsity=None if self.is_nm else sparsity, **overrides)
        if self.importance == "random":
            return RandomConfig(seed=self.seed, **fields)
        return MagnitudeConfig(importance=self.importance, **fields)
