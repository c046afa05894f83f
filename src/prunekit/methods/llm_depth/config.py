"""Config of the `llm_depth` method."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from prunekit.config import Config
from prunekit.errors import PrunekitError
from prunekit.llm.config import CalibrationConfig


class LlmDepthConfig(Config):
    """Drop the transformer blocks whose output hidden states are most like their input (fewest blocks changed)."""

    drop: int | None = Field(None, ge=1, description="Number of blocks to remove (give drop or keep_ratio).")
    keep_ratio: float | None = Field(
        None, gt=0.0, lt=1.0,
        description="Fraction of the blocks kept, in (0, 1); round((1 - keep_ratio) * blocks) are removed.",
    )
    metric: Literal["angular", "block_influence"] = Field(
        "angular",
        description="angular: arccos(cos(h_in, h_out)) / pi (Gromov et al. 2024); block_influence: 1 - cos "
        "(ShortGPT). Averaged over the scored tokens of every calibration sequence.",
    )
    contiguous: bool = Field(
        False,
        description="true: remove the n consecutive blocks whose window input and output are closest (Gromov et "
        "al.); false: remove the n blocks with the smallest individual scores (ShortGPT).",
    )
    tokens: Literal["all", "last"] = Field(
        "all", description="Tokens scored per sequence: all (padding excluded by attention_mask) or the last one."
    )
    calibration: CalibrationConfig = Field(
        default_factory=CalibrationConfig, description="Calibration samples: {nsamples, seq_len, seed}."
    )

    @model_validator(mode="after")
    def _one_amount(self) -> LlmDepthConfig:
        if (self.drop is None) == (self.keep_ratio is None):
            raise PrunekitError("llm_depth needs exactly one of drop (blocks to remove) or keep_ratio (fraction kept)")
        return self

    def count(self, blocks: int) -> int:
        """How many of `blocks` blocks to remove.

        Raises:
            PrunekitError: when that removes no block or every block.
        """
        n = self.drop if self.drop is not None else round((1.0 - self.keep_ratio) * blocks)
        what = f"drop {self.drop}" if self.drop is not None else f"keep_ratio {self.keep_ratio:g}"
        if n >= blocks:
            raise PrunekitError(f"llm_depth: {what} removes {n} of the model's {blocks} blocks; at least one must "
                                f"stay (drop <= {blocks - 1})")
        if n < 1:
            raise PrunekitError(f"llm_depth: {what} removes no block of {blocks}; use a smaller keep_ratio")
        return n
