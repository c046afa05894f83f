"""prunekit.llm: one-shot LLM pruning plumbing: the sequential block runner, per-layer input statistics and
calibration data. The methods (`wanda`, `sparsegpt`) live in `prunekit.methods`; their maths are pure functions there.
"""

from __future__ import annotations

from prunekit.llm.runner import BlockCall, block_output, capture_block_inputs, find_blocks, run_blocks

__all__ = ["BlockCall", "block_output", "capture_block_inputs", "find_blocks", "run_blocks"]
