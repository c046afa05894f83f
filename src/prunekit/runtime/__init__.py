"""Sparse runtime: run pruned weights with kernels that skip zeros, where that is measured to be faster.

- CPU: `sparsify(model, example_inputs)` swaps each Linear / 1x1 Conv2d for a CSR or BSR `torch.sparse` module
  (`SparseLinear`, `SparseConv1x1`) only where a timing at the layer's real input shape beats dense, then checks
  the whole model end to end and reverts if it got slower. `revert(model)` restores the dense layers exactly.
- CUDA: `to_semi_structured(model)` stores 2:4-pruned Linear weights as PyTorch semi-structured sparse tensors;
  without CUDA it is skipped with a clear message.
"""

from prunekit.runtime.chooser import choose, sparsify
from prunekit.runtime.kernels import KINDS
from prunekit.runtime.modules import SparseConv1x1, SparseLinear, revert
from prunekit.runtime.report import LayerChoice, SparsifyReport
from prunekit.runtime.semi_structured import SemiStructuredReport, is_two_four, to_semi_structured
from prunekit.runtime.timing import InterleavedTimer, Timer

__all__ = [
    "KINDS",
    "InterleavedTimer",
    "LayerChoice",
    "SemiStructuredReport",
    "SparseConv1x1",
    "SparseLinear",
    "SparsifyReport",
    "Timer",
    "choose",
    "is_two_four",
    "revert",
    "sparsify",
    "to_semi_structured",
]
