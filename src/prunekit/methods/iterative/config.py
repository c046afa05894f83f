"""Config of the `iterative` method: what to prune (structured channels or mask sparsity), in how many steps, how
long to fine-tune after each step, and the optional accuracy-drop budget."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from prunekit.errors import PrunekitError
from prunekit.methods.structured.config import StructuredConfig, StructuredTarget
from prunekit.training.allocation import AllocationConfig
from prunekit.training.distill import DistillConfig
from prunekit.training.finetune_config import CheckpointFolders

STRUCTURED_IMPORTANCE = StructuredConfig.model_fields["importance"].annotation.__args__  # type: ignore[union-attr]
MASK_IMPORTANCE = ("l1", "l2")


class IterativeConfig(CheckpointFolders):
    """Prune -> fine-tune, `steps` times, to a final target; decisions on the validation split only. With a
    checkpoint folder (`checkpoint_dir` / `resume_dir`) every accepted step is checkpointed, and a resume skips them."""

    kind: Literal["structured", "mask"] = Field(
        description="structured: remove whole channels (the model gets smaller; needs `target`); mask: zero weights "
        "by magnitude (needs `sparsity`)."
    )
    steps: int = Field(3, ge=1, le=64, description="Prune steps; step i of n reaches the target's i/n share "
                       "geometrically (structured: ratio**(i/n) remains; mask: density (1 - sparsity)**(i/n)).")
    target: StructuredTarget | None = Field(
        None, description="structured: what remains at the end, one of {width_ratio: x}, {params_ratio: x}, "
        "{macs_ratio: x}, {latency_ratio: x} with x in (0, 1]."
    )
    sparsity: float | None = Field(None, gt=0.0, lt=1.0, description="mask: final fraction of targeted weights zeroed.")
    importance: str = Field(
        "l1", description="structured: any importance of the structured method (l1, l2, bn_scale, taylor, ...); "
        "mask: l1 or l2 (magnitude)."
    )
    scope: Literal["layer", "global"] = Field(
        "layer", description="layer: every layer / group to the same ratio; global: one threshold across them."
    )
    round_to: int = Field(1, ge=1, description="structured: keep channel counts per group a multiple of this.")
    min_channels: int = Field(1, ge=1, description="structured: per-group floor of kept channels.")
    ignore: tuple[str, ...] = Field((), description="Module names or 're:REGEX' never pruned.")
    allocation: AllocationConfig | None = Field(
        None, description="mask: {kind: uniform | erk | lamp | sensitivity, file, erk_power}: how each step's "
        "sparsity is split across the targeted layers (needs scope: layer); null: every layer at the same sparsity."
    )
    finetune_epochs: int = Field(1, ge=0, description="Fine-tuning epochs on the train split after each step.")
    lr: float = Field(1e-3, gt=0.0, description="AdamW learning rate at the start of each step's fine-tune (cosine "
                      "decay to 0 over it).")
    batch_size: int = Field(64, ge=1, description="Samples per optimizer step (the last partial batch is dropped).")
    weight_decay: float = Field(1e-4, ge=0.0, description="AdamW (decoupled) weight decay.")
    seed: int = Field(0, description="Seed of the batch order and of the global RNG during fine-tuning.")
    recalibrate_bn: bool = Field(
        True, description="structured: re-estimate BatchNorm statistics on train batches right after each removal."
    )
    distill: DistillConfig | None = Field(
        None, description="Distil every fine-tune from the dense model: {temperature, alpha, hidden_mse, "
        "hidden_layers} (hidden_mse: mask kind only, structured layers change width); null: plain cross-entropy."
    )
    max_accuracy_drop: float | None = Field(
        None, ge=0.0, le=1.0,
        description="Stop when a step's val accuracy (after its fine-tune) is more than this below the dense val "
        "accuracy: roll back to the previous step's model and stop. null: no budget.",
    )

    @model_validator(mode="after")
    def _kind_fields(self) -> IterativeConfig:
        if self.kind == "structured":
            if self.target is None:
                raise PrunekitError("iterative kind structured needs target: {macs_ratio: x} (or width_ratio, "
                                    "params_ratio, latency_ratio)")
            if self.sparsity is not None:
                raise PrunekitError("iterative kind structured takes target, not sparsity (that is kind mask)")
            if self.distill is not None and self.distill.hidden_mse > 0:
                raise PrunekitError("iterative kind structured: distill.hidden_mse compares hidden activations, whose "
                                    "widths the removals change; use hidden_mse: 0 (logit distillation)")
            if self.allocation is not None:
                raise PrunekitError("iterative: allocation splits a sparsity across layers and needs kind mask "
                                    "(structured targets are spread by the structured engine's scope)")
            if self.importance not in STRUCTURED_IMPORTANCE:
                raise PrunekitError(f"iterative structured: unknown importance {self.importance!r}; valid: "
                                    f"{', '.join(STRUCTURED_IMPORTANCE)}")
        else:
            if self.sparsity is None:
                raise PrunekitError("iterative kind mask needs sparsity: x in (0, 1)")
            if self.target is not None:
                raise PrunekitError("iterative kind mask takes sparsity, not target (that is kind structured)")
            if self.importance not in MASK_IMPORTANCE:
                raise PrunekitError(f"iterative mask: unknown importance {self.importance!r}; valid: l1, l2")
            if self.allocation is not None and self.scope == "global":
                raise PrunekitError("iterative: allocation cannot be combined with scope 'global' (one threshold "
                                    "decides every layer's sparsity); use scope: layer with an allocation")
        return self

    def step_goals(self) -> list[float]:
        """Per step: structured, the remaining ratio of the original; mask, the sparsity of the targeted weights."""
        n = self.steps
        if self.kind == "structured":
            return [self.target.ratio ** ((i + 1) / n) for i in range(n)]  # type: ignore[union-attr]
        density = 1.0 - float(self.sparsity)  # type: ignore[arg-type]
        return [1.0 - density ** ((i + 1) / n) for i in range(n)]
