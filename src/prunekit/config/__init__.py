"""Frozen, validated configs and target selection shared by every method."""

from prunekit.config.base import Config
from prunekit.config.targets import TargetSelection, match_name, select_targets

__all__ = ["Config", "TargetSelection", "match_name", "select_targets"]
