"""Config of the `imp` method (iterative magnitude pruning with rewinding)."""

from __future__ import annotations

from typing import Any

from pydantic import Field, field_validator, model_validator

from prunekit.config.rules import LayerSelection
from prunekit.errors import PrunekitError
from prunekit.training.allocation import AllocationConfig, check_reachable
from prunekit.training.distill import DistillConfig


class ImpConfig(LayerSelection):
    """Lottery tickets: train, prune p of the remaining weights globally by magnitude, rewind, repeat."""

    rounds: int = Field(
        5, ge=1, description="Pruning rounds; round r keeps about (1 - prune_per_round)^r of the weights."
    )
    prune_per_round: float = Field(
        0.2, gt=0.0, lt=1.0, description="Fraction of the remaining targeted weights pruned each round, in (0, 1)."
    )
    rewind: str | int = Field(
        "init", description="init: surviving weights go back to their values at the start; an integer k: to their "
        "values after k training steps of the dense run (late rewinding); rounds then train steps k..T."
    )
    epochs: int = Field(10, ge=1, description="Epochs of each training run (the dense one and every round's).")
    lr: float = Field(4e-3, gt=0.0, description="Peak AdamW learning rate (20% linear warm-up, then cosine decay).")
    batch_size: int = Field(64, ge=1, description="Samples per training step.")
    weight_decay: float = Field(5e-4, ge=0.0, description="AdamW weight decay.")
    seed: int = Field(
        0, description="Seed of the batch order; the control of round r draws its weights with seed + 1000 + r."
    )
    control: bool = Field(
        True, description="Also train the random re-initialization control each round (same mask, fresh weights, "
        "same steps) and report it beside the ticket."
    )
    distill: DistillConfig | None = Field(
        None, description="Distil every round's training from the trained dense model: {temperature, alpha, "
        "hidden_mse, hidden_layers}; null: plain cross-entropy."
    )

    allocation: AllocationConfig | None = Field(
        None, description="{kind: uniform | erk | lamp | sensitivity, file, erk_power}: split each round's overall "
        "level 1 - (1 - p)^r across the targeted layers; null: one global magnitude threshold (the classic IMP)."
    )

    checkpoint_dir: str | None = Field(
        None, description="Write a round checkpoint here after the dense run and after every round (atomic)."
    )
    resume_dir: str | None = Field(
        None, description="Continue from the latest round checkpoint in this folder (starts afresh when it holds "
        "none; it is also the checkpoint folder when checkpoint_dir is unset). Only rounds may differ from the "
        "checkpointed run."
    )

    @property
    def target_sparsity(self) -> float:
        """The sparsity of the targeted layers after the last round, up to rounding: 1 - (1 - p)^rounds."""
        return 1.0 - (1.0 - self.prune_per_round) ** self.rounds

    @model_validator(mode="after")
    def _allocation_reachable(self) -> ImpConfig:
        check_reachable(self.allocation, self.target_sparsity)
        return self

    @field_validator("rewind", mode="before")
    @classmethod
    def _rewind(cls, value: Any) -> str | int:
        if value == "init" and isinstance(value, str):
            return value
        if isinstance(value, int) and not isinstance(value, bool) and value >= 0:
            return value
        raise PrunekitError("use 'init' (the weights at the start) or an integer "
                            "k >= 0 (the weights after k training steps: late rewinding)")

