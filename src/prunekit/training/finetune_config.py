"""`FinetuneFields`: the fine-tuning recipe that training stages (`gmp`, `finetune`) share, as config fields; its
`CheckpointFolders` part (checkpoint_dir, resume_dir) is shared with `iterative` too."""

from __future__ import annotations

from pydantic import Field, model_validator

from prunekit.config import Config
from prunekit.errors import PrunekitError
from prunekit.training.distill import DistillConfig


class CheckpointFolders(Config):
    """Where a training stage writes its resumable checkpoints and where it resumes from (`gmp`, `finetune`,
    `iterative`; `prunekit prune --resume DIR` sets both per stage)."""

    checkpoint_dir: str | None = Field(
        None, description="Folder of the checkpoints (default: `resume_dir` when resuming)."
    )
    resume_dir: str | None = Field(
        None, description="Resume from the latest checkpoint in this folder (starts at step 0 when it has none)."
    )

    @property
    def save_dir(self) -> str | None:
        """Where checkpoints go: checkpoint_dir, else resume_dir."""
        return self.checkpoint_dir or self.resume_dir


class FinetuneFields(CheckpointFolders):
    """The fine-tuning recipe shared by training stages: epochs, AdamW + cosine, BN, checkpoints, distillation."""

    epochs: int = Field(2, ge=1, description="Passes over the train split (a gmp schedule spans all their steps).")
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
    distill: DistillConfig | None = Field(
        None, description="Distil from the dense teacher: {temperature, alpha, hidden_mse, hidden_layers}; "
        "null: plain cross-entropy."
    )

    @model_validator(mode="after")
    def _checkpoint_folder(self) -> FinetuneFields:
        if self.checkpoint_every is not None and self.checkpoint_dir is None and self.resume_dir is None:
            raise PrunekitError("checkpoint_every needs a folder: set checkpoint_dir (or resume_dir)")
        return self
