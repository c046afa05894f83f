"""Calibration samples for one-shot LLM pruning: given token ids, or windows of the built-in Shakespeare corpus.

Where the samples come from, first match wins:
1. `example_inputs` holding token ids (an integer tensor (B, T), or a mapping with "input_ids"): each row is one
   sample (with the mapping's other per-row tensors, e.g. attention_mask), the first `nsamples` rows.
2. Otherwise `nsamples` windows of `seq_len` tokens at seeded random starts in the Shakespeare train split (its first
   max(200k, 64 * nsamples * seq_len) characters, so a slow tokenizer does not encode all 4 MB), tokenized (no special
   tokens) with the tokenizer passed as the context's `data`, or else the one saved next to the model
   (`model.config._name_or_path` when it is a local folder with a tokenizer).
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from prunekit.errors import PrunekitError
from prunekit.llm.config import CalibrationConfig


def _rows_of(inputs: Any, nsamples: int) -> list[dict[str, Tensor]] | None:
    if isinstance(inputs, Tensor) and not inputs.is_floating_point() and inputs.ndim in (1, 2):
        ids = inputs.reshape(1, -1) if inputs.ndim == 1 else inputs
        return [{"input_ids": ids[i : i + 1]} for i in range(min(nsamples, ids.shape[0]))]
    if isinstance(inputs, Mapping) and isinstance(inputs.get("input_ids"), Tensor):
        ids = inputs["input_ids"]
        ids = ids.reshape(1, -1) if ids.ndim == 1 else ids
        per_row = {k: v for k, v in inputs.items() if isinstance(v, Tensor) and v.shape[:1] == ids.shape[:1]}
        return [{k: v[i : i + 1] for k, v in per_row.items()} for i in range(min(nsamples, ids.shape[0]))]
    return None


def _model_tokenizer(model: nn.Module) -> Any:
    path = getattr(getattr(model, "config", None), "_name_or_path", "") or ""
    if not path or not Path(path).is_dir():
        return None
    from transformers import AutoTokenizer

    try:
        return AutoTokenizer.from_pretrained(path, local_files_only=True)
    except (OSError, ValueError):  # a model folder without tokenizer files
        return None


def corpus_windows(ids: Tensor, cfg: CalibrationConfig) -> list[dict[str, Tensor]]:
    """`cfg.nsamples` windows of `cfg.seq_len` tokens at seeded random starts in the 1-D token stream `ids`."""
    if ids.numel() <= cfg.seq_len:
        raise PrunekitError(f"calibration corpus has {ids.numel()} tokens, fewer than seq_len={cfg.seq_len} + 1")
    g = torch.Generator().manual_seed(cfg.seed)
    starts = torch.randint(0, ids.numel() - cfg.seq_len, (cfg.nsamples,), generator=g)
    return [{"input_ids": ids[s : s + cfg.seq_len].reshape(1, -1)} for s in starts.tolist()]


def calibration_samples(
    model: nn.Module, cfg: CalibrationConfig, example_inputs: Any = None, data: Any = None
) -> list[dict[str, Tensor]]:
    """The calibration samples, one model-input dict each (see the module docstring for the sources)."""
    rows = _rows_of(example_inputs, cfg.nsamples)
    if rows:
        return rows
    tokenizer = data if callable(data) and hasattr(data, "encode") else _model_tokenizer(model)
    if tokenizer is None:
        raise PrunekitError(
            "no calibration data: pass token ids as example_inputs (an integer tensor (B, T) or {'input_ids': ...}), "
            "or a tokenizer as data, or load the model from a folder that holds its tokenizer"
        )
    from prunekit.data import load_dataset

    text = load_dataset("shakespeare").train.text
    # Tokenize only what the windows can reach on average: enough text for every sample, not the whole corpus.
    budget = min(len(text), max(200_000, 64 * cfg.nsamples * cfg.seq_len))
    enc = tokenizer(text[:budget], add_special_tokens=False, return_attention_mask=False, verbose=False)
    return corpus_windows(torch.as_tensor(enc["input_ids"], dtype=torch.long).reshape(-1), cfg)
