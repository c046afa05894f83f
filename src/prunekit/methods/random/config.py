"""Config of the `random` method."""

from __future__ import annotations

from pydantic import Field

from prunekit.methods.mask_config import MaskPruningConfig


class RandomConfig(MaskPruningConfig):
    """Random pruning: seeded, reproducible, any pattern and scope."""

    seed: int = Field(0, description="Seed of the random scores; the same seed gives the same masks.")
