"""Config of the `magnitude` method."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from prunekit.methods.mask_config import MaskPruningConfig


class MagnitudeConfig(MaskPruningConfig):
    """Magnitude pruning: per layer or with one global threshold, any pattern."""

    importance: Literal["l1", "l2"] = Field(
        "l1", description="l1: |w|; l2: w^2. Equal rankings for single weights; blocks sum them (L1 vs squared L2)."
    )
