"""Config of the `structured` method: what to remove (a target ratio), how to rank channels, and the guards."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, field_validator, model_validator

from prunekit.config import Config
from prunekit.config.targets import check_pattern
from prunekit.errors import PrunekitError

TARGET_KINDS = ("width_ratio", "params_ratio", "macs_ratio", "latency_ratio")


class StructuredTarget(Config):
    """Exactly one ratio in (0, 1]: the fraction that REMAINS (`macs_ratio: 0.5` = half the MACs left)."""

    width_ratio: float | None = Field(
        None, gt=0.0, le=1.0, description="Fraction of the prunable channels kept (per group, or in total for global)."
    )
    params_ratio: float | None = Field(None, gt=0.0, le=1.0, description="Fraction of the parameters kept.")
    macs_ratio: float | None = Field(
        None, gt=0.0, le=1.0, description="Fraction of the MACs (on the example inputs) kept."
    )
    latency_ratio: float | None = Field(
        None, gt=0.0, le=1.0,
        description="Fraction of the latency of one forward on the example inputs kept, as predicted by per-op "
        "latency tables measured on this device (threads, batch) and cached (prunekit.graph.latency).",
    )

    @model_validator(mode="after")
    def _exactly_one(self) -> StructuredTarget:
        given = [k for k in TARGET_KINDS if getattr(self, k) is not None]
        if len(given) != 1:
            raise PrunekitError(
                f"target needs exactly one of {', '.join(TARGET_KINDS)} (got {', '.join(given) or 'none'})"
            )
        return self

    @property
    def kind(self) -> str:
        """Which ratio was given: "width_ratio", "params_ratio", "macs_ratio" or "latency_ratio"."""
        return next(k for k in TARGET_KINDS if getattr(self, k) is not None)

    @property
    def ratio(self) -> float:
        """The value of the given ratio."""
        return float(getattr(self, self.kind))


class StructuredConfig(Config):
    """Remove whole channels (conv filters, linear neurons) and their coupled slices; the model gets smaller."""

    target: StructuredTarget = Field(
        description="What remains, one of {width_ratio: x}, {params_ratio: x}, {macs_ratio: x}, {latency_ratio: x} "
        "with x in (0, 1]."
    )
    importance: Literal[
        "l1", "l2", "bn_scale", "random", "fpgm", "lamp", "taylor", "hessian", "activation", "activation_fluct"
    ] = Field(
        "l1",
        description="Channel score: l1 / l2 norm of every slice in the group (each member normalized by its mean, "
        "then averaged); bn_scale: absolute gamma of the group's norm layers (l2 where a group has none); random "
        "(seeded); fpgm: summed distance of a unit's filter to the other filters (geometric median: near = "
        "redundant); lamp: LAMP of the l2 scores (differs from l2 only with scope global). Need data: taylor "
        "abs(sum of w*grad), hessian sum of 0.5*w^2*grad^2 (empirical Fisher), activation: input norm of the "
        "channel times its weight-column norm in the consuming layers (Wanda-sp / FLAP), activation_fluct: input "
        "variance times squared column norm (FLAP). Data kinds fall back to l2 in a group without evidence.",
    )
    steps: int = Field(
        1, ge=1, le=64,
        description="Prune in this many steps, re-scoring after each; step i reaches ratio**(i/steps) of the "
        "original model (one plan step per step).",
    )
    compensate: Literal["none", "bn", "least_squares"] = Field(
        "none",
        description="After surgery (and after verify): bn re-estimates BatchNorm statistics on the calibration "
        "batches; least_squares refits the kept input columns and bias of every Linear / Conv2d (groups 1) / "
        "transformers Conv1D that lost input channels, from the dense model's calibration inputs (ridge-damped, float64). Needs data; the plan "
        "replays the removal, not these weight updates.",
    )
    calib_batches: int = Field(8, ge=1, description="Calibration batches taken from the data (data-driven kinds, "
                               "compensation).")
    batch_size: int = Field(32, ge=1, description="Batch size when the data is a dataset (DatasetSplits: train split).")
    damp: float = Field(0.1, ge=0.0, description="least_squares ridge damping, relative to the mean input energy.")
    scope: Literal["layer", "global"] = Field(
        "layer",
        description="layer: every group keeps the same fraction of its channels; global: one score threshold "
        "across groups (normalized scores), so some groups keep more than others.",
    )
    round_to: int = Field(1, ge=1, description="Keep channel counts per group a multiple of this (e.g. 8).")
    min_channels: int = Field(1, ge=1, description="Per-group floor of kept channels.")
    ignore: tuple[str, ...] = Field(
        (), description="Module names or 're:REGEX' whose channels are never removed (in or out)."
    )
    verify: bool = Field(
        True, description="After surgery, check the pruned model equals the original with removed channels zeroed."
    )
    repair: bool = Field(
        True,
        description="When verify fails (model code using sizes the graph cannot see), find the groups whose removal "
        "changes the output, keep them whole, and select again (at most 3 times); false: raise instead.",
    )
    strict: bool = Field(False, description="Raise on any op the dependency graph has no channel rule for.")
    seed: int = Field(0, description="Seed of the random importance.")
    uniform_layers: bool | None = Field(
        None,
        description="Groups that repeat across blocks (same tensors up to the block index) keep the same channel "
        "count, each ranked within its own block. None: on for Hugging Face models, off otherwise.",
    )
    hf_config: bool | None = Field(
        None,
        description="Hugging Face models: keep whole the groups whose sizes the model's config cannot express, and "
        "edit model.config so save_pretrained + from_pretrained rebuilds the pruned model (needs uniform_layers). "
        "None: on for Hugging Face models.",
    )

    @model_validator(mode="after")
    def _hf_needs_uniform(self) -> StructuredConfig:
        if self.hf_config and self.uniform_layers is False:
            raise PrunekitError(
                "hf_config: true needs uniform_layers: true or unset (a Hugging Face config has one size per kind, "
                "not one per layer)"
            )
        return self

    @field_validator("ignore")
    @classmethod
    def _check_entries(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        for entry in value:
            check_pattern(entry)
        return value
