"""prunekit.llm: one-shot LLM pruning plumbing: the sequential block runner, per-layer input statistics, calibration
data and the per-layer sparsity allocation (lists, regex mappings, OWL). The methods (`wanda`, `sparsegpt`) live in
`prunekit.methods`; their maths are pure functions there.
"""

from __future__ import annotations

from prunekit.llm.calibration import calibration_samples
from prunekit.llm.owl import outlier_ratio, owl_sparsities
from prunekit.llm.runner import BlockCall, block_output, capture_block_inputs, find_blocks, run_blocks

__all__ = [
    "BlockCall", "block_output", "calibration_samples", "capture_block_inputs", "find_blocks", "outlier_ratio",
    "owl_sparsities", "run_blocks",
]
