"""Masks on weights: attach keep_masks as parametrizations, read them back, bake them in.

While a model may still train, a keep_mask lives as a `torch.nn.utils.parametrize` parametrization, so every forward
uses `original * mask` and gradients never revive a pruned weight's effective value. `finalize` writes the zeros into
plain weights and removes every parametrization (and any `torch.nn.utils.prune` hook), leaving an ordinary model.
"""

from prunekit.masks.parametrize import (
    KeepMask,
    attach_mask,
    current_mask,
    finalize,
    has_masks,
    import_torch_prune,
    import_torch_prune_state_dict,
    masked_modules,
)

__all__ = [
    "KeepMask",
    "attach_mask",
    "current_mask",
    "finalize",
    "has_masks",
    "import_torch_prune",
    "import_torch_prune_state_dict",
    "masked_modules",
]
