"""Configs shared by the one-shot LLM methods (wanda, sparsegpt): sparsity, pattern, scope, OWL and calibration."""

from __future__ import annotations

import re
from typing import Any, ClassVar

from pydantic import ConfigDict, Field, field_validator, model_validator

from prunekit.config import Config
from prunekit.config.rules import TargetedConfig, target_sparsity
from prunekit.errors import PrunekitError
from prunekit.llm.spill import parse_bytes
from prunekit.patterns import NM, parse_pattern


class CalibrationConfig(Config):
    """Which calibration samples the one-shot methods run through the model.

    The text comes from `dataset` (a registered text dataset's train split, "shakespeare" by default) or from `file`
    (a UTF-8 text file; giving it unsets the default dataset). Both set, or both null, is an error.
    """

    dataset: str | None = Field(
        "shakespeare", description="Text dataset whose train split is sampled; unset when `file` is given."
    )
    file: str | None = Field(None, description="Path of a UTF-8 text file to sample instead of a dataset.")
    nsamples: int = Field(128, ge=1, description="Calibration sequences (one forward each).")
    seq_len: int = Field(256, ge=2, description="Tokens per calibration sequence (text sources only).")
    seed: int = Field(0, description="Seed of the random window starts in the calibration text.")

    @model_validator(mode="before")
    @classmethod
    def _file_replaces_default_dataset(cls, data: Any) -> Any:
        if isinstance(data, dict) and data.get("file") is not None and "dataset" not in data:
            return {**data, "dataset": None}
        return data

    @model_validator(mode="after")
    def _one_source(self) -> CalibrationConfig:
        if self.dataset is not None and self.file is not None:
            raise PrunekitError(
                f"calibration takes one of dataset or file, got both (dataset={self.dataset!r}, file={self.file!r})"
            )
        if self.dataset is None and self.file is None:
            raise PrunekitError(
                "calibration needs a source: set dataset (e.g. 'shakespeare') or file (a text file), got neither"
            )
        return self

    @property
    def source(self) -> tuple[str, str]:
        """("file", path) or ("dataset", name): where the calibration text comes from."""
        if self.file is not None:
            return "file", self.file
        return "dataset", str(self.dataset)


class OwlConfig(Config):
    """OWL (Yin et al., 2024): non-uniform block sparsity from each block's share of outlier Wanda scores."""

    model_config = ConfigDict(populate_by_name=True, serialize_by_alias=True)

    lam: float = Field(
        0.08, alias="lambda", ge=0.0, lt=0.5,
        description="Half-width of the sparsity range: block sparsities span target - lambda .. target + lambda.",
    )
    m: float = Field(
        5.0, alias="M", gt=0.0, description="A score is an outlier when it exceeds M times its block's mean score."
    )


class OneShotConfig(TargetedConfig):
    """Sparsity, pattern, targets and calibration of a one-shot LLM method (pruned block by block)."""

    targets_default: ClassVar[str] = "every Linear inside the transformer blocks"

    sparsity: float | tuple[float, ...] | dict[str, float] | None = Field(
        None,
        description="Fraction of weights to zero in each layer, in [0, 1): one number, a list with one per "
        "transformer block, or a mapping REGEX -> sparsity (first regex that fully matches the layer name wins). "
        "Implied by N:M.",
    )
    pattern: str = Field("unstructured", description='"unstructured" or "N:M" (e.g. "2:4", "4:8").')
    owl: OwlConfig | None = Field(
        None,
        description="OWL layerwise sparsity {lambda, M}: blocks with more activation outliers pruned less, the "
        "parameter-weighted mean kept exactly at `sparsity` (unstructured, one number only).",
    )
    targets: tuple[str, ...] | None = Field(
        None, description="Module names or 're:REGEX' to prune; default: every Linear inside the transformer blocks."
    )
    ignore: tuple[str, ...] = Field((), description="Module names or 're:REGEX' to leave dense.")
    strict: bool = Field(False, description="Turn every skipped layer that targets matched into an error.")
    calibration: CalibrationConfig = Field(
        default_factory=CalibrationConfig,
        description="Calibration samples: {dataset | file, nsamples, seq_len, seed}.",
    )
    memory_budget: int | str | None = Field(
        None,
        description="Bytes (or a size such as '2GiB', '512MB') of cached block activations kept in RAM; samples "
        "past it are spilled to a temporary folder on disk and read back one at a time (null: all in RAM).",
    )
    spill_dir: str | None = Field(
        None, description="Folder in which the temporary spill folder is made (default: the system's temp folder)."
    )

    @field_validator("memory_budget", mode="before")
    @classmethod
    def _budget_bytes(cls, value: Any) -> int | None:
        return parse_bytes(value)

    @field_validator("pattern")
    @classmethod
    def _unstructured_or_nm(cls, value: str) -> str:
        pat = parse_pattern(value)
        if pat.name != "unstructured" and not isinstance(pat, NM):
            raise PrunekitError(f"pattern {value!r} is not available here; choose 'unstructured' or 'N:M' (e.g. '2:4')")
        return pat.name

    @field_validator("sparsity")
    @classmethod
    def _sparsity_values(
        cls, value: float | tuple[float, ...] | dict[str, float] | None
    ) -> float | tuple[float, ...] | dict[str, float] | None:
        if value is None:
            return None
        if isinstance(value, dict):
            if not value:
                raise PrunekitError("sparsity mapping is empty: give REGEX -> sparsity entries, or one number")
            for key in value:
                try:
                    re.compile(key)
                except re.error as exc:
                    raise PrunekitError(f"sparsity key {key!r} is not a valid regular expression: {exc}") from None
            items = list(value.items())
        elif isinstance(value, tuple):
            if not value:
                raise PrunekitError("sparsity list is empty: give one value per transformer block, or one number")
            items = [(f"[{i}]", v) for i, v in enumerate(value)]
        else:
            items = [("", value)]
        for where, v in items:
            if not 0.0 <= v < 1.0:
                label = f"sparsity{where if where.startswith('[') else (f' for {where!r}' if where else '')}"
                raise PrunekitError(f"{label} = {v} is outside [0, 1)")
        return value

    @model_validator(mode="after")
    def _sparsity_matches_pattern(self) -> OneShotConfig:
        per_layer = isinstance(self.sparsity, (tuple, dict))
        if self.owl is not None and self.nm is not None:
            raise PrunekitError(
                f"owl applies to unstructured sparsity only (it varies sparsity per block), not to pattern "
                f"{self.pattern!r}; drop owl or use pattern: unstructured"
            )
        if per_layer and self.nm is not None:
            raise PrunekitError(
                f"a per-layer sparsity list / mapping does not apply to pattern {self.pattern!r} (N:M fixes the "
                "sparsity); use pattern: unstructured"
            )
        if self.owl is not None and per_layer:
            raise PrunekitError("owl needs one target sparsity (a number), not a per-layer list / mapping")
        if not per_layer:
            target_sparsity(self.sparsity, self.pattern)  # type: ignore[arg-type]
        return self

    @property
    def target_sparsity(self) -> float | None:
        """The sparsity to reach: the given number, or the one the N:M pattern implies; None for a per-layer list."""
        if isinstance(self.sparsity, (tuple, dict)):
            return None
        return target_sparsity(self.sparsity, self.pattern)

    @property
    def nm(self) -> NM | None:
        """The N:M pattern, or None for unstructured."""
        pat = parse_pattern(self.pattern)
        return pat if isinstance(pat, NM) else None
