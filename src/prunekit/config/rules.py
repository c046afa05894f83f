"""Validation rules several method configs share: target entries, and sparsity against the pattern.

One place for each rule, so every config gives the same error text for the same mistake.
"""

from __future__ import annotations

from typing import ClassVar

from pydantic import Field, field_validator

from prunekit.config.base import Config
from prunekit.config.targets import check_pattern
from prunekit.errors import PrunekitError
from prunekit.patterns import parse_pattern


def check_entries(value: tuple[str, ...] | None) -> tuple[str, ...] | None:
    """Validate every `targets` / `ignore` entry (a module name or 're:REGEX'); return the value unchanged."""
    for entry in value or ():
        check_pattern(entry)
    return value


def check_targets_not_empty(value: tuple[str, ...] | None, default: str) -> tuple[str, ...] | None:
    """An explicitly empty `targets` is a mistake; `default` says what omitting it targets."""
    if value is not None and len(value) == 0:
        raise PrunekitError(f"targets is empty: omit it to target {default}")
    return value


def target_sparsity(sparsity: float | None, pattern: str) -> float:
    """The sparsity to reach: the given one, or the one an N:M pattern implies.

    Raises:
        PrunekitError: sparsity missing for a pattern that implies none, or contradicting an N:M pattern.
    """
    implied = parse_pattern(pattern).implied_sparsity()
    if implied is None and sparsity is None:
        raise PrunekitError(f"sparsity is required with pattern {pattern!r} (a number in [0, 1))")
    if implied is not None and sparsity is not None and abs(sparsity - implied) > 1e-9:
        raise PrunekitError(
            f"sparsity {sparsity} contradicts pattern {pattern!r}, which implies {implied:g}; "
            "omit sparsity or set it to that value"
        )
    return float(sparsity if sparsity is not None else implied)  # type: ignore[arg-type]


class TargetedConfig(Config):
    """A config with `targets` / `ignore` fields: every entry validated, an explicitly empty `targets` refused.

    Subclasses declare the two fields and set `targets_default` (what omitting `targets` targets)."""

    targets_default: ClassVar[str] = "every Linear / Conv layer"

    @field_validator("targets", "ignore", check_fields=False)
    @classmethod
    def _check_entries(cls, value: tuple[str, ...] | None) -> tuple[str, ...] | None:
        return check_entries(value)

    @field_validator("targets", check_fields=False)
    @classmethod
    def _not_empty(cls, value: tuple[str, ...] | None) -> tuple[str, ...] | None:
        return check_targets_not_empty(value, cls.targets_default)


class LayerSelection(TargetedConfig):
    """Which layers a mask-pruning config prunes: targets / ignore, the first and last layer guards, and the
    per-layer density floor of global selection (shared by magnitude / random, the Pruner and imp)."""

    targets: tuple[str, ...] | None = Field(
        None, description="Module names or 're:REGEX' to prune; default: every Linear / Conv layer."
    )
    ignore: tuple[str, ...] = Field((), description="Module names or 're:REGEX' to leave dense.")
    protect_first: bool = Field(True, description="Leave the first layer (the one reading the input) dense.")
    protect_last: bool = Field(True, description="Leave the last layer (classifier / LM head) dense.")
    min_density: float = Field(
        0.02, ge=0.0, lt=1.0, description="Per-layer density floor that global pruning never crosses."
    )
