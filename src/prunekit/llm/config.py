"""Configs shared by the one-shot LLM methods (wanda, sparsegpt): sparsity, pattern, scope and calibration."""

from __future__ import annotations

from pydantic import Field, field_validator, model_validator

from prunekit.config import Config
from prunekit.config.rules import check_entries, check_targets_not_empty, target_sparsity
from prunekit.errors import PrunekitError
from prunekit.patterns import NM, parse_pattern


class CalibrationConfig(Config):
    """Which calibration samples the one-shot methods run through the model."""

    nsamples: int = Field(128, ge=1, description="Calibration sequences (one forward each).")
    seq_len: int = Field(256, ge=2, description="Tokens per calibration sequence (built-in corpus only).")
    seed: int = Field(0, description="Seed of the random window starts in the calibration corpus.")


class OneShotConfig(Config):
    """Sparsity, pattern, targets and calibration of a one-shot LLM method (pruned block by block)."""

    sparsity: float | None = Field(
        None, ge=0.0, lt=1.0, description="Fraction of weights to zero in each layer, in [0, 1). Implied by N:M."
    )
    pattern: str = Field("unstructured", description='"unstructured" or "N:M" (e.g. "2:4", "4:8").')
    targets: tuple[str, ...] | None = Field(
        None, description="Module names or 're:REGEX' to prune; default: every Linear inside the transformer blocks."
    )
    ignore: tuple[str, ...] = Field((), description="Module names or 're:REGEX' to leave dense.")
    strict: bool = Field(False, description="Turn every skipped layer that targets matched into an error.")
    calibration: CalibrationConfig = Field(
        default_factory=CalibrationConfig, description="Calibration samples: {nsamples, seq_len, seed}."
    )

    @field_validator("pattern")
    @classmethod
    def _unstructured_or_nm(cls, value: str) -> str:
        pat = parse_pattern(value)
        if pat.name != "unstructured" and not isinstance(pat, NM):
            raise PrunekitError(f"pattern {value!r} is not available here; choose 'unstructured' or 'N:M' (e.g. '2:4')")
        return pat.name

    @field_validator("targets", "ignore")
    @classmethod
    def _check_entries(cls, value: tuple[str, ...] | None) -> tuple[str, ...] | None:
        return check_entries(value)

    @field_validator("targets")
    @classmethod
    def _not_empty(cls, value: tuple[str, ...] | None) -> tuple[str, ...] | None:
        return check_targets_not_empty(value, "every Linear inside the transformer blocks")

    @model_validator(mode="after")
    def _sparsity_matches_pattern(self) -> OneShotConfig:
        target_sparsity(self.sparsity, self.pattern)
        return self

    @property
    def target_sparsity(self) -> float:
        """The sparsity to reach: the given one, or the one the N:M pattern implies."""
        return target_sparsity(self.sparsity, self.pattern)

    @property
    def nm(self) -> NM | None:
        """The N:M pattern, or None for unstructured."""
        pat = parse_pattern(self.pattern)
        return pat if isinstance(pat, NM) else None
