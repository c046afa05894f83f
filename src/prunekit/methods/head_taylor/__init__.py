"""`head_taylor`: attention-head pruning by Taylor importance (Michel et al. 2019), heads removed physically."""

from prunekit.methods.head_taylor.surgery import HeadPruner, remove_heads

__all__ = ["HeadPruner", "remove_heads"]
