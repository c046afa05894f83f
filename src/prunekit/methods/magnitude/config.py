"""Config of the `magnitude` method."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from prunekit.methods.mask_config import MaskPruningConfig


class MagnitudeConfig(MaskPruningConfig):
    """Magnitude pruning: per layer or with one global threshold, any pattern."""

    importance: Literal["l1", "l2"] = Field(
        "l1", description="l1: absolute value; l2: square. Same ranking of single weights; a block sums them (L1 norm vs squared L2 norm)."
    )
