"""Calibration samples for one-shot LLM pruning: token ids given directly, or windows of a tokenized text.

Where the samples come from, first match wins:
1. The recipe's `calibration.file` or `calibration.dataset`, when the recipe sets one explicitly.
2. The context's `data` (`prunekit.prune(..., data=...)`), unless it is a tokenizer:
   - a string: a text, sampled as in 5.;
   - an integer tensor (B, T): one sample per row; a 1-D integer tensor: a token stream, sampled as in 5.;
   - a mapping with "input_ids" (B, T): one sample per row, with the mapping's other per-row tensors;
   - a list / tuple of those tensors or mappings: every row of every item, in order;
   - a DatasetSplits (e.g. `load_dataset("shakespeare")`): its train split's text.
   Rows: the first `nsamples`.
3. `example_inputs` holding token ids (an integer tensor (B, T), or a mapping with "input_ids"): its first
   `nsamples` rows, one sample each (with the mapping's other per-row tensors, e.g. attention_mask), when it has
   at least `nsamples` rows; with fewer rows (e.g. the one tracing sentence the CLI builds) the default dataset is
   used when a tokenizer is at hand, else the rows with a warning.
4. Otherwise the default dataset (Shakespeare's train split).
5. A text is tokenized (no special tokens) by the tokenizer passed as `data`, or else the one saved next to the model
   (`model.config._name_or_path` when it is a local folder with a tokenizer), only its first
   max(200k, 64 * nsamples * seq_len) characters so a slow tokenizer does not encode megabytes; it must give at least
   nsamples * seq_len tokens; the samples are `nsamples` windows of `seq_len` tokens at seeded random starts.
"""

from __future__ import annotations

import warnings
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


def _is_tokenizer(obj: Any) -> bool:
    return callable(obj) and hasattr(obj, "encode")


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


def text_windows(text: str, tokenizer: Any, cfg: CalibrationConfig, what: str) -> list[dict[str, Tensor]]:
    """Tokenize (a bounded prefix of) `text` and cut `cfg.nsamples` windows; `what` names the source in errors."""
    budget = min(len(text), max(200_000, 64 * cfg.nsamples * cfg.seq_len))
    enc = tokenizer(text[:budget], add_special_tokens=False, return_attention_mask=False, verbose=False)
    ids = torch.as_tensor(enc["input_ids"], dtype=torch.long).reshape(-1)
    return stream_windows(ids, cfg, what)


def stream_windows(ids: Tensor, cfg: CalibrationConfig, what: str) -> list[dict[str, Tensor]]:
    """Windows of the 1-D token stream `ids`, which must hold at least nsamples * seq_len tokens."""
    need = cfg.nsamples * cfg.seq_len
    if ids.numel() < need or ids.numel() <= cfg.seq_len:
        raise PrunekitError(
            f"{what} has {ids.numel()} tokens, fewer than nsamples * seq_len = {cfg.nsamples} * {cfg.seq_len} = "
            f"{need}; use a longer text or lower nsamples / seq_len"
        )
    return corpus_windows(ids, cfg)


def _dataset_text(name: str) -> str:
    from prunekit.data import load_dataset

    train = load_dataset(name).train
    text = getattr(train, "text", None)
    if not isinstance(text, str):
        raise PrunekitError(
            f"calibration dataset {name!r} has no plain text to sample; use a text dataset such as 'shakespeare' "
            "or a file"
        )
    return text


def _file_text(path: str) -> str:
    p = Path(path).expanduser()
    if not p.is_file():
        raise PrunekitError(f"calibration file {path!r} does not exist (resolved to {p.resolve()})")
    try:
        return p.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise PrunekitError(f"calibration file {path!r} is not UTF-8 text: {exc}") from None


def _data_samples(data: Any, cfg: CalibrationConfig) -> list[dict[str, Tensor]] | str | None:
    """Samples (or a text to tokenize) from the context's `data`; None when it holds no calibration data."""
    if data is None or _is_tokenizer(data):
        return None
    if isinstance(data, str):
        return data
    text = getattr(getattr(data, "train", None), "text", None)
    if isinstance(text, str):
        return text
    if isinstance(data, Tensor) and not data.is_floating_point() and data.ndim == 1:
        return stream_windows(data.to(torch.long), cfg, "the calibration token stream passed as data")
    rows = _rows_of(data, cfg.nsamples)
    if rows is None and isinstance(data, (list, tuple)) and data:
        rows = []
        for i, item in enumerate(data):
            got = _rows_of(item, cfg.nsamples - len(rows))
            if got is None:
                raise PrunekitError(
                    f"calibration data item {i} is a {type(item).__name__}; expected an integer tensor of token ids "
                    "or a mapping with 'input_ids'"
                )
            rows += got
            if len(rows) >= cfg.nsamples:
                break
    if rows is None:
        raise PrunekitError(
            f"calibration data of type {type(data).__name__} is not usable: pass a text, token ids (an integer "
            "tensor, a mapping with 'input_ids', or a list of those), a DatasetSplits or a tokenizer"
        )
    return rows


def calibration_samples(
    model: nn.Module, cfg: CalibrationConfig, example_inputs: Any = None, data: Any = None
) -> list[dict[str, Tensor]]:
    """The calibration samples, one model-input dict each (see the module docstring for the sources)."""
    explicit = bool({"dataset", "file"} & cfg.model_fields_set)
    text: str | None = None
    what = ""
    if not explicit:
        got = _data_samples(data, cfg)
        if isinstance(got, list):
            return got
        if got is not None:
            text, what = got, "the calibration text passed as data"
        else:
            rows = _rows_of(example_inputs, cfg.nsamples)
            if rows and len(rows) >= cfg.nsamples:
                return rows
            if rows and not (_is_tokenizer(data) or _model_tokenizer(model) is not None):
                warnings.warn(f"calibrating on the {len(rows)} row(s) of example_inputs, fewer than nsamples = "
                              f"{cfg.nsamples}: no tokenizer is at hand to sample the default dataset",
                              stacklevel=3)
                return rows
            # fewer rows than nsamples (e.g. the one tracing sentence the CLI makes) and a tokenizer at hand:
            # the default dataset gives the nsamples windows the recipe asks for
    if text is None:
        kind, value = cfg.source
        text = _file_text(value) if kind == "file" else None
        what = f"calibration {kind} {value!r}"
    tokenizer = data if _is_tokenizer(data) else _model_tokenizer(model)
    if tokenizer is None and text is not None:
        raise PrunekitError(
            f"{what} needs a tokenizer, and the model's folder (config._name_or_path) has none; pass token ids "
            "as data instead, or load the model from a folder that holds its tokenizer"
        )
    if tokenizer is None:
        raise PrunekitError(
            "no calibration data: pass token ids as example_inputs (an integer tensor (B, T) or {'input_ids': ...}) "
            "or as data, or a tokenizer as data, or load the model from a folder that holds its tokenizer"
        )
    if text is None:
        text = _dataset_text(cfg.source[1])
    return text_windows(text, tokenizer, cfg, what)
