"""Config of the `movement` method: the MovementPruner's settings plus the shared fine-tuning recipe."""

from __future__ import annotations

from pydantic import Field

from prunekit.training.finetune_config import FinetuneFields
from prunekit.training.movement_config import MovementPrunerConfig


class MovementConfig(FinetuneFields, MovementPrunerConfig):
    """Movement pruning while fine-tuning on the `data` train split (AdamW, cosine learning rate, optional distill,
    BatchNorm recalibration, checkpoint / resume)."""

    score_lr: float = Field(
        1e-2, gt=0.0, description="AdamW learning rate of the movement scores (no weight decay; same cosine decay)."
    )
    seed: int = Field(0, description="Seed of the batch order and of any randomness inside the model (dropout).")

    def pruner_config(self) -> MovementPrunerConfig:
        """The MovementPruner's part of this config."""
        return MovementPrunerConfig(**{k: getattr(self, k) for k in MovementPrunerConfig.model_fields})
