"""The config shared by mask-pruning methods (magnitude, random, and later ones that choose weights one by one)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, field_validator, model_validator

from prunekit.config.rules import LayerSelection, target_sparsity
from prunekit.errors import PrunekitError
from prunekit.patterns import parse_pattern


class MaskPruningConfig(LayerSelection):
    """Sparsity, pattern, scope, targets and the guards every mask-pruning method shares."""

    sparsity: float | None = Field(
        None, ge=0.0, lt=1.0, description="Fraction of weights to zero in [0, 1). Implied by an N:M pattern."
    )
    pattern: str = Field(
        "unstructured", description='"unstructured", "N:M" (e.g. "2:4") or "block:RxC" (e.g. "block:4x1").'
    )
    scope: Literal["layer", "global"] = Field(
        "layer", description="layer: each targeted layer to the sparsity; global: one threshold across all of them."
    )
    strict: bool = Field(False, description="Turn every skipped layer that targets matched into an error.")

    @field_validator("pattern")
    @classmethod
    def _canonical_pattern(cls, value: str) -> str:
        return parse_pattern(value).name

    @model_validator(mode="after")
    def _cross_field(self) -> MaskPruningConfig:
        pat = parse_pattern(self.pattern)
        target = target_sparsity(self.sparsity, self.pattern)
        if self.scope == "global" and not pat.supports_global:
            raise PrunekitError(
                f"scope 'global' does not apply to pattern {self.pattern!r} (every group of M is pruned alike); "
                "use scope: layer"
            )
        if self.scope == "layer" and 1.0 - target < self.min_density - 1e-12:
            raise PrunekitError(
                f"sparsity {target:g} leaves density {1 - target:g}, below min_density {self.min_density:g}; "
                "lower sparsity or min_density"
            )
        return self

    @property
    def target_sparsity(self) -> float:
        """The sparsity to reach: the given one, or the one the N:M pattern implies."""
        return target_sparsity(self.sparsity, self.pattern)
