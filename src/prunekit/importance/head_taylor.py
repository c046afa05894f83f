"""Taylor importance of attention heads (pure tensor maths; no model plumbing).

Michel et al. 2019 ("Are Sixteen Heads Really Better than One?") put a gate xi_h = 1 on every head's output and
score the head by the expected absolute gradient of the loss with respect to it:

    I_h = E_x | dL(x) / d xi_h | = E_x | sum_{t, d} A_h(x)[t, d] * dL(x) / dA_h(x)[t, d] |

where A_h is the head's output (the input of the attention output projection, split into heads). This is the
first-order Taylor estimate of the loss change when the head is removed (Molchanov et al. 2017/2019): removing
head h changes the loss by about -dL/dxi_h. The absolute value is taken per example (`per_example=True`, as in
Michel et al.) or per batch (cheaper when only a batch gradient exists: gradients of opposite sign then cancel).

Michel et al. normalise each layer's scores by their l2 norm before a global ranking, so that layers with large
gradients do not lose all their heads last; `normalize_layers` does that.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
from torch import Tensor

from prunekit.errors import PrunekitError

NORMALIZE = ("l2", "none")


def gate_importance(grad: Tensor, per_example: bool = True) -> Tensor:
    """Per-head score from gate gradients.

    Args:
        grad: dL/d gate, shaped (heads,) (one gate per head for the whole batch) or (examples, heads) (one gate
            per example and head, so that each row is that example's gradient).
        per_example: with a 2-D `grad`, sum |row| over examples (Michel); False: |sum of rows| (per batch).

    Returns:
        float32 (heads,) of summed absolute gradients (divide by the example count for the mean).
    """
    if grad.dim() == 1:
        return grad.detach().abs().float()
    if grad.dim() != 2:
        raise PrunekitError(f"gate gradient must be (heads,) or (examples, heads), got shape {tuple(grad.shape)}")
    g = grad.detach().float()
    return g.abs().sum(0) if per_example else g.sum(0).abs()


def activation_importance(act: Tensor, grad: Tensor, per_example: bool = True) -> Tensor:
    """Per-head score from a head output and its gradient, both shaped (examples, ..., heads, head_dim).

    The gate gradient of head h for one example is sum over every middle dim (tokens) and head_dim of act * grad;
    its absolute value is summed over examples (`per_example`), or the sum over examples is taken first.

    Returns:
        float32 (heads,).
    """
    if act.shape != grad.shape:
        raise PrunekitError(f"activation {tuple(act.shape)} and gradient {tuple(grad.shape)} shapes differ")
    if act.dim() < 3:
        raise PrunekitError(f"need (examples, ..., heads, head_dim), got shape {tuple(act.shape)}")
    prod = (act.detach().float() * grad.detach().float()).sum(-1)  # (examples, ..., heads)
    per = prod.reshape(prod.shape[0], -1, prod.shape[-1]).sum(1)  # (examples, heads)
    return gate_importance(per, per_example)


def normalize_layers(scores: Mapping[str, Tensor], norm: str = "l2") -> dict[str, Tensor]:
    """Each layer's scores divided by their l2 norm (Michel et al.), or unchanged with "none"."""
    if norm not in NORMALIZE:
        raise PrunekitError(f"normalize {norm!r} is not one of {', '.join(NORMALIZE)}")
    if norm == "none":
        return {k: v.float() for k, v in scores.items()}
    return {k: v.float() / v.float().norm().clamp_min(1e-30) for k, v in scores.items()}


def heads_to_remove(scores: Mapping[str, Tensor], count: int, uniform: bool,
                    min_heads: int = 1) -> dict[str, list[int]]:
    """The lowest-scoring heads to remove now.

    Args:
        scores: layer -> (heads,) scores of the heads still present.
        count: heads to remove: per layer when `uniform`, in total otherwise.
        uniform: every layer loses `count` heads (its own lowest); else one global ranking of all scores.
        min_heads: every layer keeps at least this many heads (global ranking skips heads below the floor).

    Returns:
        layer -> sorted head indices to remove (layers losing none are omitted). Ties go to the lower index.
    """
    if count < 0 or min_heads < 1:
        raise PrunekitError(f"count must be >= 0 and min_heads >= 1 (got {count}, {min_heads})")
    out: dict[str, list[int]] = {}
    if uniform:
        for name, s in scores.items():
            k = min(count, s.numel() - min_heads)
            if k > 0:
                order = torch.argsort(s.float(), stable=True)
                out[name] = sorted(order[:k].tolist())
        return out
    flat = sorted((float(v), i, name, h) for i, (name, s) in enumerate(scores.items())
                  for h, v in enumerate(s.tolist()))
    left = {name: s.numel() for name, s in scores.items()}
    for _, _, name, h in flat:
        if count == 0:
            break
        if left[name] > min_heads:
            out.setdefault(name, []).append(h)
            left[name] -= 1
            count -= 1
    return {k: sorted(v) for k, v in out.items()}
