"""Re-point an optimizer at the smaller Parameters structured surgery created, keeping the surviving state.

`remove_slices` replaces every touched Parameter by a new, smaller one, so an optimizer built before would keep
updating the dead tensors. `rebind_optimizer` swaps the new Parameters into the optimizer's param groups in place
(the same optimizer object, so LR schedulers stay attached) and slices every per-element state tensor (Adam's
exp_avg / exp_avg_sq / max_exp_avg_sq, SGD's momentum_buffer) to the kept indices of each dim, the same complement
`remove_slices` keeps of the weights. State of another shape (factored optimizers) is reset, with a note.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn

__all__ = ["kept_slices", "rebind_optimizer"]


def kept_slices(t: Tensor, dims: dict[int, list[int]]) -> Tensor:
    """`t` without the removed indices of each dim (the same complement `remove_slices` keeps)."""
    for dim, removed in sorted(dims.items()):
        gone = set(removed)
        keep = torch.tensor([i for i in range(t.shape[dim]) if i not in gone], dtype=torch.long, device=t.device)
        t = t.index_select(dim, keep)
    return t


@torch.no_grad()
def rebind_optimizer(optimizer: torch.optim.Optimizer, before: dict[str, nn.Parameter],
                     after: dict[str, nn.Parameter], removals: dict[str, dict[int, list[int]]]) -> list[str]:
    """Point `optimizer` at the parameters surgery created and slice their per-element state to the kept indices.

    Args:
        optimizer: updated in place (same object, so LR schedulers stay attached).
        before: name -> Parameter before surgery (every alias name of a tied parameter).
        after: name -> Parameter after surgery.
        removals: the plan step's {tensor name: {dim: removed indices}}.

    Returns:
        Notes (e.g. state that could not be sliced and was reset).
    """
    replaced: dict[int, tuple[nn.Parameter, nn.Parameter, dict[int, list[int]]]] = {}
    for name, old in before.items():
        new = after.get(name)
        if new is None or new is old or id(old) in replaced:
            continue
        aliases = [n for n, p in before.items() if p is old]
        dims = next((removals[a] for a in aliases if a in removals), {})
        replaced[id(old)] = (old, new, dims)
    for group in optimizer.param_groups:
        group["params"] = [replaced[id(p)][1] if id(p) in replaced else p for p in group["params"]]
    reset = []
    for old, new, dims in replaced.values():
        state = optimizer.state.pop(old, None)
        if not state:
            continue
        sliced: dict[str, Any] = {}
        for key, value in state.items():
            kept = kept_slices(value, dims) if isinstance(value, Tensor) and value.shape == old.shape else None
            if kept is not None and kept.shape == new.shape:
                sliced[key] = kept.clone()
            elif isinstance(value, Tensor) and value.dim() > 0:
                sliced = {}
                reset.append(f"{key} {tuple(value.shape)}")
                break
            else:
                sliced[key] = value
        if sliced:
            optimizer.state[new] = sliced
    return [f"optimizer state of another shape than its parameter was reset: {', '.join(reset[:3])}"] if reset else []
