"""Config of the `finetune` stage: the shared fine-tuning recipe (epochs, AdamW + cosine, BN, checkpoints, distill)."""

from __future__ import annotations

from pydantic import Field

from prunekit.training.finetune_loop import FinetuneFields


class FinetuneConfig(FinetuneFields):
    """Fine-tune the pruned model on the `data` train split; pruned weights stay zero (masks stay attached)."""

    seed: int = Field(0, description="Seed of the batch order and of the global RNG (dropout) during fine-tuning.")
