"""Config of the `gmp` method: the Pruner's settings plus the shared fine-tuning recipe (with optional `distill`)."""

from __future__ import annotations

from prunekit.training.finetune_loop import FinetuneFields
from prunekit.training.pruner_config import PrunerConfig


class GmpConfig(FinetuneFields, PrunerConfig):
    """Gradual magnitude pruning while fine-tuning on the `data` train split (AdamW, cosine learning rate)."""

    def pruner_config(self) -> PrunerConfig:
        """The Pruner's part of this config."""
        return PrunerConfig(**{k: getattr(self, k) for k in PrunerConfig.model_fields})
