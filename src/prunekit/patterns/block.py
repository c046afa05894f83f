"""Block pattern: R x C tiles of the 2-D view are kept or pruned whole.

Blocks tile the 2-D view from its top-left corner. When the view's size is not a multiple of the block, the blocks at
the right / bottom edges are partial (smaller) blocks, scored like every block by the SUM of their scores. With
magnitude importance that makes a block's score its L1 norm (or squared L2 norm), so a partial block is scored by the
norm of the weights it actually holds. Sparsity counts blocks: exactly floor(s * n_blocks + 0.5) blocks are pruned,
lowest score first, lower block index (row-major over the block grid) first on ties.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import Tensor

from prunekit.errors import PrunekitError
from prunekit.patterns.base import Pattern, nonzero_pattern, shape_2d, view_2d


@dataclass(frozen=True)
class Block(Pattern):
    """Prune whole R x C blocks of the 2-D view (spec "block:RxC", e.g. "block:4x1"); edge blocks may be partial.

    Attributes:
        rows: block height (along the output dimension), >= 1.
        cols: block width (along the input dimension), >= 1.
    """

    rows: int
    cols: int
    name: str = field(default="", init=False)

    def __post_init__(self) -> None:
        for label, v in (("R", self.rows), ("C", self.cols)):
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise PrunekitError(f"block pattern needs integer sizes >= 1, got {label}={v!r} (e.g. block:4x1)")
        object.__setattr__(self, "name", f"block:{self.rows}x{self.cols}")

    def grid(self, shape: torch.Size | tuple[int, ...]) -> tuple[int, int]:
        """Number of block rows and block columns (partial edge blocks included) for a tensor of `shape`."""
        rows, cols = shape_2d(shape)
        return -(-rows // self.rows), -(-cols // self.cols)

    def unit_scores(self, scores: Tensor) -> Tensor:
        """Sum of the float32 scores in each block, 1-D in row-major block order."""
        view = view_2d(scores.detach()).to(torch.float32)
        gr, gc = self.grid(scores.shape)
        pad_r, pad_c = gr * self.rows - view.shape[0], gc * self.cols - view.shape[1]
        if pad_r or pad_c:  # zeros add nothing to a sum, so padded edge blocks are scored by what they hold
            view = F.pad(view, (0, pad_c, 0, pad_r))
        return view.reshape(gr, self.rows, gc, self.cols).sum(dim=(1, 3)).reshape(-1)

    def expand(self, unit_keep: Tensor, shape: torch.Size | tuple[int, ...]) -> Tensor:
        """Per-block decisions (row-major over the block grid) -> element keep_mask of `shape`."""
        shape = torch.Size(shape)
        gr, gc = self.grid(shape)
        if unit_keep.numel() != gr * gc:
            raise PrunekitError(
                f"{unit_keep.numel()} block decisions do not match shape {tuple(shape)}: "
                f"{self.name} gives a {gr}x{gc} grid of blocks"
            )
        rows, cols = shape_2d(shape)
        full = unit_keep.to(torch.bool).reshape(gr, 1, gc, 1).expand(gr, self.rows, gc, self.cols)
        return full.reshape(gr * self.rows, gc * self.cols)[:rows, :cols].reshape(shape)

    def check(self, t: Tensor) -> bool:
        """True when every block (partial edge blocks included) is either entirely zero or entirely nonzero.

        A kept block that happens to contain an exact zero weight fails: for weights this check is strict.
        """
        if self.unsupported_reason(t.shape) is not None:
            return False
        kept = nonzero_pattern(t)
        counts = self.unit_scores(kept.to(torch.float32))
        sizes = self.unit_scores(torch.ones(kept.shape, dtype=torch.float32, device=kept.device))
        return bool(((counts == 0) | (counts == sizes)).all())
