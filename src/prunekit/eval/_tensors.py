"""Small tensor-identity helpers: which storage a tensor lives in, and a key that is equal for identical views.

Used to count shared (tied) parameters once, to attribute ops to the layer that owns a weight, and to save each
shared tensor once.
"""

from __future__ import annotations

import torch


def storage_ptr(tensor: torch.Tensor) -> int:
    """Address of the tensor's storage, 0 when it has none (meta tensors, some subclasses)."""
    try:
        return tensor.untyped_storage().data_ptr()
    except (RuntimeError, NotImplementedError, TypeError):
        return 0


def tensor_key(tensor: torch.Tensor) -> tuple:
    """A key equal for two tensors exactly when they view the same elements of the same storage."""
    ptr = storage_ptr(tensor)
    if ptr == 0:  # no real storage: fall back to object identity
        return ("id", id(tensor))
    return (ptr, tensor.storage_offset(), tuple(tensor.shape), tuple(tensor.stride()), tensor.dtype)
