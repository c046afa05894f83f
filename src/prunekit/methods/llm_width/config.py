"""Config of the `llm_width` method."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, field_validator

from prunekit.config import Config
from prunekit.config.targets import check_pattern
from prunekit.errors import PrunekitError
from prunekit.llm.config import CalibrationConfig
from prunekit.methods.structured.config import StructuredTarget

PARTS = ("attention", "mlp", "hidden")


class LlmWidthConfig(Config):
    """Remove whole attention heads (GQA: key-value groups with their query heads) and MLP channels of every block."""

    target: StructuredTarget = Field(
        description="What remains, one of {width_ratio: x} (fraction of the prunable heads / channels kept: per "
        "group with scope layer, in total with global), {params_ratio: x} (of the whole model, embeddings "
        "included), {macs_ratio: x}, {latency_ratio: x} with x in (0, 1]."
    )
    parts: tuple[Literal["attention", "mlp", "hidden"], ...] = Field(
        ("attention", "mlp"),
        description="What may shrink: attention (whole heads / key-value groups), mlp (intermediate channels), "
        "hidden (the residual stream, off by default); the rest is kept whole.",
    )
    importance: Literal["activation", "activation_fluct", "l1", "l2", "random"] = Field(
        "activation",
        description="Channel score: activation = input norm times weight-column norm (Wanda-sp), activation_fluct "
        "= input variance times squared column norm (FLAP), or the data-free l1 / l2 / random of `structured`.",
    )
    scope: Literal["layer", "global"] = Field(
        "global",
        description="global: one threshold over normalized scores, so attention and MLP may keep different "
        "fractions (FLAP-style adaptive width); layer: heads and MLP channels keep the same fraction.",
    )
    compensate: Literal["none", "bias", "least_squares"] = Field(
        "least_squares",
        description="bias: add W[:, removed] @ mean(x[removed]) to the bias of every layer that lost input "
        "channels (FLAP; adds zero biases through the model config's bias flags, e.g. Llama attention_bias / "
        "mlp_bias); least_squares: refit the kept input columns (and an existing bias) from the dense model's "
        "calibration inputs; none.",
    )
    damp: float = Field(0.01, ge=0.0, description="least_squares ridge damping, relative to the mean input energy.")
    round_to: int = Field(1, ge=1, description="Keep channel counts per group a multiple of this (e.g. 8 or 64).")
    ignore: tuple[str, ...] = Field(
        (), description="Module names or 're:REGEX' whose channels are never removed (in or out)."
    )
    verify: bool = Field(
        True, description="After surgery, check the pruned model equals the original with removed channels zeroed."
    )
    batch_size: int = Field(8, ge=1, description="Calibration sequences per forward pass.")
    calibration: CalibrationConfig = Field(
        default_factory=CalibrationConfig, description="Calibration samples: {nsamples, seq_len, seed}."
    )

    @field_validator("parts")
    @classmethod
    def _parts(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        if not value:
            raise PrunekitError(f"parts is empty; choose one or more of {', '.join(PARTS)}")
        return tuple(dict.fromkeys(value))

    @field_validator("ignore")
    @classmethod
    def _check_entries(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        for entry in value:
            check_pattern(entry)
        return value
