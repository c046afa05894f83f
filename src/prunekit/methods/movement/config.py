"""Config of the `movement` method: the MovementPruner's settings plus the fine-tuning recipe."""

from __future__ import annotations

from pydantic import Field

from prunekit.training.movement_config import MovementPrunerConfig


class MovementConfig(MovementPrunerConfig):
    """Movement pruning while fine-tuning on the `data` train split (AdamW, cosine learning rate)."""

    epochs: int = Field(2, ge=1, description="Passes over the train split; the schedule spans all their steps.")
    lr: float = Field(1e-3, gt=0.0, description="AdamW learning rate of the weights (cosine decay to 0 over the run).")
    score_lr: float = Field(
        1e-2, gt=0.0, description="AdamW learning rate of the movement scores (no weight decay; same cosine decay)."
    )
    batch_size: int = Field(64, ge=1, description="Samples per optimizer step (the last partial batch is dropped).")
    weight_decay: float = Field(1e-4, ge=0.0, description="AdamW (decoupled) weight decay of the weights.")
    seed: int = Field(0, description="Seed of the batch order and of any randomness inside the model (dropout).")

    def pruner_config(self) -> MovementPrunerConfig:
        """The MovementPruner's part of this config."""
        return MovementPrunerConfig(**{k: getattr(self, k) for k in MovementPrunerConfig.model_fields})
