"""`llm_width`: structured width pruning of a transformer LLM (whole attention heads / key-value groups and MLP
channels), scored from calibration activations, with optional bias or least-squares compensation.

A thin method over the `structured` engine: it builds a `StructuredConfig` (uniform layers, Hugging Face config
editing) and feeds it the LLM calibration windows of `prunekit.llm.calibration`.
"""
