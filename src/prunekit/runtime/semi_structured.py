"""GPU 2:4: store 2:4-pruned Linear weights as PyTorch semi-structured sparse tensors (CUDA sparse tensor cores).

`torch.sparse.to_sparse_semi_structured` compresses a weight whose every group of 4 consecutive input weights holds
at most 2 non-zeros into values + metadata; `F.linear` then runs the CUTLASS / cuSPARSELt 2:4 kernel. It needs a
CUDA device (compute capability >= 8.0), fp16 / bf16 weights (or int8), and shapes the kernels tile (checked here:
rows a multiple of 32 and columns a multiple of 64, the strictest of torch's minimum tile sizes). Without CUDA the
whole conversion is skipped with one clear message; layers that do not qualify keep dense, each with its reason.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import Tensor, nn

from prunekit.errors import PrunekitError

SEMI_DTYPES = (torch.float16, torch.bfloat16)
NO_CUDA = ("2:4 semi-structured kernels need CUDA (torch.cuda.is_available() is False on this machine; "
           "torch {version}); skipped")


def is_two_four(matrix: Tensor) -> bool:
    """True when every group of 4 consecutive entries along each row of the 2-D `matrix` has at most 2 non-zeros."""
    if matrix.ndim != 2 or matrix.shape[1] % 4:
        return False
    groups = (matrix != 0).reshape(matrix.shape[0], -1, 4).sum(dim=-1)
    return bool((groups <= 2).all())


@dataclass
class SemiStructuredReport:
    """Which Linear layers now hold semi-structured weights, which kept dense and why, and any overall message."""

    converted: list[str] = field(default_factory=list)
    skipped: dict[str, str] = field(default_factory=dict)
    message: str = ""

    @property
    def ran(self) -> bool:
        """False when the whole conversion was skipped (no CUDA)."""
        return not self.message


def _skip_reason(module: nn.Linear) -> str | None:
    w = module.weight
    if w.device.type != "cuda":
        return f"weight on {w.device.type}; move the model to CUDA first"
    if w.dtype not in SEMI_DTYPES:
        return f"dtype {str(w.dtype).replace('torch.', '')}; semi-structured kernels need float16 / bfloat16"
    rows, cols = w.shape
    if rows % 32 or cols % 64:
        return f"shape {rows}x{cols}; needs rows % 32 == 0 and columns % 64 == 0"
    if not is_two_four(w.detach()):
        return "weight is not 2:4 sparse (a group of 4 inputs holds more than 2 non-zeros)"
    return None


def to_semi_structured(model: nn.Module, *, strict: bool = False) -> SemiStructuredReport:
    """Convert every qualifying 2:4-pruned `nn.Linear` weight to a semi-structured sparse tensor, in place.

    Args:
        model: a finalized model (masks baked in) in float16 / bfloat16 on a CUDA device.
        strict: raise `PrunekitError` instead of returning a skipped report when CUDA is missing.

    Returns:
        A `SemiStructuredReport`; without CUDA its `message` says the path was skipped and nothing changed.
    """
    if not torch.cuda.is_available():
        message = NO_CUDA.format(version=torch.__version__)
        if strict:
            raise PrunekitError(message)
        return SemiStructuredReport(message=message)
    from torch.sparse import to_sparse_semi_structured

    report = SemiStructuredReport()
    for name, module in model.named_modules():
        if not isinstance(module, nn.Linear):
            continue
        reason = _skip_reason(module)
        if reason is not None:
            report.skipped[name] = reason
            continue
        module.weight = nn.Parameter(to_sparse_semi_structured(module.weight.detach()), requires_grad=False)
        report.converted.append(name)
    return report
