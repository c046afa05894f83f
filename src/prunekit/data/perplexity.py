"""Held-out perplexity of a causal language model, and the n-gram baselines scored the same way.

Protocol (the sliding-window recipe of the Hugging Face perplexity guide):

1. Tokenize the whole held-out text once, with no special tokens: ids[0..N-1].
2. Windows start at 0, stride, 2*stride, ...; each window is ids[begin : min(begin + seq_len, N)]; the last window is
   the one that reaches the end of the text.
3. In each window only the tokens not scored by an earlier window are targets (with stride == seq_len, the default,
   the windows do not overlap and every token is a target), and a window's first token is never a target because the
   model has no context for it. Each target token t is predicted from the tokens before it inside its window.
4. perplexity = exp(sum of target NLLs / number of targets), natural log.

So with the default stride == seq_len = 256, N - ceil(N / 256) tokens are scored. A model that outputs the uniform
distribution over V tokens scores exactly V. `unigram_perplexity` and `bigram_perplexity` score the same target
positions (a scored token always has its previous token in the window), so the three numbers are comparable.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from prunekit.errors import PrunekitError


def window_spans(n_tokens: int, seq_len: int, stride: int) -> list[tuple[int, int, int]]:
    """Return `(begin, end, first_target)` per window; targets are window positions first_target..end-begin-1."""
    _check_windows(n_tokens, seq_len, stride)
    spans = []
    prev_end = 0
    for begin in range(0, n_tokens, stride):
        end = min(begin + seq_len, n_tokens)
        n_new = end - prev_end
        spans.append((begin, end, max(1, (end - begin) - n_new)))
        prev_end = end
        if end == n_tokens:
            break
    return spans


def target_mask(n_tokens: int, seq_len: int, stride: int) -> np.ndarray:
    """Boolean mask over the token stream: True where the protocol scores that token."""
    mask = np.zeros(n_tokens, dtype=bool)
    for begin, end, first in window_spans(n_tokens, seq_len, stride):
        mask[begin + first:end] = True
    return mask


def _check_windows(n_tokens: int, seq_len: int, stride: int) -> None:
    if not isinstance(seq_len, int) or seq_len < 2:
        raise PrunekitError(f"seq_len must be an integer >= 2, got {seq_len!r}")
    if not isinstance(stride, int) or not 1 <= stride <= seq_len:
        raise PrunekitError(f"stride must be an integer from 1 to seq_len={seq_len}, got {stride!r}")
    if n_tokens < 2:
        raise PrunekitError(f"perplexity needs at least 2 tokens of text, got {n_tokens}")


def _as_ids(tokenizer_or_ids: Any, text: str | None) -> torch.Tensor:
    if isinstance(tokenizer_or_ids, (torch.Tensor, np.ndarray, list, tuple)):
        if text is not None:
            raise PrunekitError("pass either token ids, or a tokenizer and text, not ids and text")
        ids = torch.as_tensor(tokenizer_or_ids, dtype=torch.long)
        return ids.reshape(-1)
    if text is None:
        raise PrunekitError("perplexity got a tokenizer but no text to score")
    if not callable(tokenizer_or_ids):
        raise PrunekitError(f"expected a tokenizer or token ids, got {type(tokenizer_or_ids).__name__}")
    # verbose=False: a held-out text is meant to be longer than the model's context (it is cut into windows).
    enc = tokenizer_or_ids(text, add_special_tokens=False, return_attention_mask=False, verbose=False)
    return torch.as_tensor(enc["input_ids"], dtype=torch.long).reshape(-1)


@torch.no_grad()
def perplexity(model: torch.nn.Module, tokenizer_or_ids: Any, text: str | None = None, *, seq_len: int = 256,
               stride: int = 256, batch_size: int = 8, device: str | torch.device | None = None,
               progress: bool = False) -> float:
    """Perplexity of a causal LM on one text, by the protocol in the module docstring.

    Args:
        model: Maps `input_ids` (B, T) to logits (B, T, V): a Hugging Face causal LM (`.logits`) or a plain module.
        tokenizer_or_ids: A Hugging Face tokenizer (then `text` is required) or the token ids themselves.
        text: The held-out text to score.
        seq_len: Window length in tokens (at most the model's context).
        stride: Step between window starts; `stride == seq_len` gives non-overlapping windows.
        batch_size: Windows per forward pass.
        device: Where to run; default: the device of the model's first parameter (CPU for a parameterless model).
        progress: Show a tqdm bar over the windows.

    Returns:
        exp(mean NLL per scored token).
    """
    from tqdm.auto import tqdm

    ids = _as_ids(tokenizer_or_ids, text)
    spans = window_spans(len(ids), seq_len, stride)
    if device is None:
        p = next(iter(model.parameters()), None)
        device = p.device if p is not None else torch.device("cpu")
    was_training = model.training
    model.eval()
    total, count = 0.0, 0
    bar = tqdm(total=len(spans), desc="perplexity", disable=not progress, leave=False)
    try:
        # Windows of equal length share a batch (only the last window can be shorter).
        by_len: dict[int, list[tuple[int, int, int]]] = {}
        for s in spans:
            by_len.setdefault(s[1] - s[0], []).append(s)
        for length, group in by_len.items():
            for i in range(0, len(group), batch_size):
                chunk = group[i:i + batch_size]
                x = torch.stack([ids[b:e] for b, e, _ in chunk]).to(device)
                out = model(input_ids=x)
                logits = getattr(out, "logits", out).float()
                logp = torch.log_softmax(logits[:, :-1], dim=-1)
                nll = -logp.gather(-1, x[:, 1:, None]).squeeze(-1)  # nll[:, t-1] is the NLL of token t
                keep = torch.zeros_like(nll, dtype=torch.bool)
                for row, (_, _, first) in enumerate(chunk):
                    keep[row, first - 1:] = True
                total += float(nll[keep].double().sum())
                count += int(keep.sum())
                bar.update(len(chunk))
    finally:
        bar.close()
        model.train(was_training)
    return math.exp(total / count)


def _counts_ok(ids: np.ndarray, vocab_size: int, what: str) -> np.ndarray:
    ids = np.asarray(ids, dtype=np.int64).reshape(-1)
    if ids.size and (ids.min() < 0 or ids.max() >= vocab_size):
        raise PrunekitError(f"{what} token ids must lie in [0, {vocab_size}), got [{ids.min()}, {ids.max()}]")
    return ids


def unigram_perplexity(train_ids: Sequence[int] | np.ndarray, eval_ids: Sequence[int] | np.ndarray, vocab_size: int,
                       *, alpha: float = 1.0, seq_len: int = 256, stride: int = 256) -> float:
    """Perplexity of an add-`alpha` unigram model fitted on `train_ids`, on the protocol's targets of `eval_ids`."""
    train = _counts_ok(train_ids, vocab_size, "train")
    ev = _counts_ok(eval_ids, vocab_size, "eval")
    counts = np.bincount(train, minlength=vocab_size).astype(np.float64) + alpha
    logp = np.log(counts / counts.sum())
    mask = target_mask(len(ev), seq_len, stride)
    return float(np.exp(-logp[ev[mask]].mean()))


def bigram_perplexity(train_ids: Sequence[int] | np.ndarray, eval_ids: Sequence[int] | np.ndarray, vocab_size: int,
                      *, alpha: float = 1.0, seq_len: int = 256, stride: int = 256) -> float:
    """Perplexity of an add-`alpha` bigram model P(t | previous token) fitted on `train_ids`, same targets."""
    train = _counts_ok(train_ids, vocab_size, "train")
    ev = _counts_ok(eval_ids, vocab_size, "eval")
    pair = np.bincount(train[:-1] * vocab_size + train[1:], minlength=vocab_size * vocab_size)
    counts = pair.reshape(vocab_size, vocab_size).astype(np.float64) + alpha
    logp = np.log(counts / counts.sum(axis=1, keepdims=True))
    pos = np.flatnonzero(target_mask(len(ev), seq_len, stride))
    return float(np.exp(-logp[ev[pos - 1], ev[pos]].mean()))
