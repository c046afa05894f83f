"""Config of the `wanda` method."""

from __future__ import annotations

from prunekit.llm.config import OneShotConfig


class WandaConfig(OneShotConfig):
    """Wanda: scores |W| * ||x_j||_2, compared within each output row (unstructured) or group of M (N:M)."""
