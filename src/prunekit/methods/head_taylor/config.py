"""Config of the `head_taylor` method: how many heads go, in how many steps, and the fine-tune between steps."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from prunekit.config import Config
from prunekit.training.distill import DistillConfig


class HeadTaylorConfig(Config):
    """Remove attention heads ranked by Taylor importance abs(dL/d gate_h), in steps with a fine-tune after each."""

    heads_ratio: float = Field(
        gt=0.0, lt=1.0,
        description="Fraction of the attention heads removed, in (0, 1) (0.5: half of them). Uniform: every layer "
        "loses round(ratio * heads) of its heads; global: round(ratio * all heads) in total.",
    )
    steps: int = Field(
        1, ge=1, le=64,
        description="Prune in this many steps (score, remove an equal share of the heads, fine-tune, re-score).",
    )
    uniform: bool = Field(
        True,
        description="true: every layer keeps the same number of heads, so a Hugging Face config that names the "
        "head size (Llama, Qwen2: head_dim) gets num_attention_heads edited and save_pretrained + from_pretrained "
        "reloads the model (BERT derives the head size from hidden_size / num_attention_heads: config left alone, "
        "the PruningPlan rebuilds it); false: one global ranking, per-layer counts, rebuilt from the PruningPlan.",
    )
    importance: Literal["taylor", "l1", "random"] = Field(
        "taylor",
        description="Head score: taylor = mean abs(dL/d gate_h) over the scoring batches (Michel et al.); "
        "baselines: l1 = l1 norm of the head's output-projection input columns (data-free), random (seeded by `seed`).",
    )
    min_heads: int = Field(1, ge=1, description="Heads every layer keeps at least.")
    normalize: Literal["l2", "none"] = Field(
        "l2", description="Per-layer normalisation of the scores before a global ranking (Michel et al.: l2)."
    )
    per_example: bool = Field(
        True, description="Absolute gate gradient per example (Michel et al.); false: per batch (signs cancel)."
    )
    score_batches: int = Field(16, ge=1, description="Train batches whose gradients score the heads at each step.")
    epochs: float = Field(
        1.0, ge=0.0,
        description="Fine-tune passes over the train split after each step (fractions allowed; 0: no fine-tune).",
    )
    lr: float = Field(3e-5, gt=0.0, description="AdamW learning rate of the fine-tune (linear decay to 0 per step).")
    batch_size: int = Field(32, ge=1, description="Samples per scoring batch and per fine-tune step.")
    weight_decay: float = Field(0.01, ge=0.0, description="AdamW (decoupled) weight decay.")
    max_length: int = Field(
        64, ge=1, description="Text datasets: tokens per passage (tokenized with the model's own tokenizer)."
    )
    tokenizer: str | None = Field(
        None,
        description="Text datasets: folder of the tokenizer (AutoTokenizer.from_pretrained, offline); default: the "
        "model's own folder (config.name_or_path). Tensor datasets need none.",
    )
    verify: bool = Field(
        True, description="After each removal, check the pruned model equals the original with those heads zeroed."
    )
    seed: int = Field(0, description="Seed of the batch order (scoring and fine-tune).")
    distill: DistillConfig | None = Field(
        None, description="Distil every fine-tune from the dense model: {temperature, alpha, hidden_mse, "
        "hidden_layers} (the teacher gets the same, tokenized, inputs; hidden_mse needs layers whose output width "
        "head removal keeps); null: plain cross-entropy."
    )
