"""Config of the `gmp` method: the Pruner's settings plus the fine-tuning recipe and checkpointing."""

from __future__ import annotations

from pydantic import Field, model_validator

from prunekit.errors import PrunekitError
from prunekit.training.pruner_config import PrunerConfig


class GmpConfig(PrunerConfig):
    """Gradual magnitude pruning while fine-tuning on the `data` train split (AdamW, cosine learning rate)."""

    epochs: int = Field(2, ge=1, description="Passes over the train split; the schedule spans all their steps.")
    lr: float = Field(
        1e-3, gt=0.0, description="AdamW learning rate at the first step (cosine decay to 0 over the run)."
    )
    batch_size: int = Field(64, ge=1, description="Samples per optimizer step (the last partial batch is dropped).")
    weight_decay: float = Field(1e-4, ge=0.0, description="AdamW (decoupled) weight decay.")
    recalibrate_bn: bool = Field(
        True, description="Re-estimate BatchNorm statistics on train batches at the end (noted and skipped without BN)."
    )
    checkpoint_every: int | None = Field(
        None, ge=1, description="Save a resumable checkpoint every N optimizer steps into `checkpoint_dir`."
    )
    checkpoint_dir: str | None = Field(
        None, description="Folder of the checkpoints (default: `resume_dir` when resuming)."
    )
    resume_dir: str | None = Field(
        None, description="Resume from the latest checkpoint in this folder (starts at step 0 when it has none)."
    )

    @model_validator(mode="after")
    def _checkpoint_folder(self) -> GmpConfig:
        if self.checkpoint_every is not None and self.checkpoint_dir is None and self.resume_dir is None:
            raise PrunekitError("checkpoint_every needs a folder: set checkpoint_dir (or resume_dir)")
        return self

    def pruner_config(self) -> PrunerConfig:
        """The Pruner's part of this config."""
        return PrunerConfig(**{k: getattr(self, k) for k in PrunerConfig.model_fields})
