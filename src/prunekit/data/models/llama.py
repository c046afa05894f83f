"""A tiny character-level Llama (Hugging Face `LlamaForCausalLM`, with GQA) trained on the Shakespeare train plays.

On first use the model is trained from its recipe (seeded; random 256-character windows of the train split's text),
scored on the validation and held-out test plays with `perplexity()` (non-overlapping 256-token windows), compared
with unigram and bigram baselines of the same tokens scored on the same positions, and cached as a Hugging Face
folder: `config.json`, `generation_config.json`, `model.safetensors`, `tokenizer.json`, `tokenizer_config.json`
and prunekit's `manifest.json`. That folder loads offline with `AutoModelForCausalLM.from_pretrained(path)` and
`AutoTokenizer.from_pretrained(path)`. Rebuild it with `python -m prunekit.data tiny_llama`.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from prunekit.data.datasets import load_dataset
from prunekit.data.models._pretrained import check_recipe, ensure_artefact
from prunekit.data.perplexity import bigram_perplexity, perplexity, unigram_perplexity
from prunekit.data.tokenizer import SPECIAL_TOKENS, build_char_tokenizer, char_vocab, encode_chars


@dataclass(frozen=True)
class LlamaRecipe:
    """Architecture, optimisation and evaluation settings of the tiny Llama (all recorded in the manifest)."""

    hidden_size: int = 256
    num_layers: int = 4
    num_heads: int = 8
    num_kv_heads: int = 2
    intermediate_size: int = 688
    max_position_embeddings: int = 512
    rope_theta: float = 10000.0
    seq_len: int = 256
    batch_size: int = 16
    steps: int = 500
    lr: float = 3e-3
    min_lr_ratio: float = 0.1
    warmup_steps: int = 40
    weight_decay: float = 0.1
    grad_clip: float = 1.0
    seed: int = 0
    eval_seq_len: int = 256
    eval_max_tokens: int | None = None  # None: score the whole val / test text
    bigram_alphas: tuple[float, ...] = (1.0, 0.1, 0.01)


TINY_LLAMA_RECIPE = LlamaRecipe()


def build_tiny_llama(recipe: LlamaRecipe = TINY_LLAMA_RECIPE) -> Any:
    """A freshly initialised `LlamaForCausalLM` with the recipe's architecture (torch's global RNG)."""
    from transformers import LlamaConfig, LlamaForCausalLM

    ids = char_vocab()
    config = LlamaConfig(
        vocab_size=len(ids), hidden_size=recipe.hidden_size, intermediate_size=recipe.intermediate_size,
        num_hidden_layers=recipe.num_layers, num_attention_heads=recipe.num_heads,
        num_key_value_heads=recipe.num_kv_heads, max_position_embeddings=recipe.max_position_embeddings,
        rope_theta=recipe.rope_theta, tie_word_embeddings=False,
        pad_token_id=ids[SPECIAL_TOKENS[0]], bos_token_id=ids[SPECIAL_TOKENS[2]], eos_token_id=ids[SPECIAL_TOKENS[3]],
    )
    return LlamaForCausalLM(config)


def tiny_llama_path(progress: bool = True, *, recipe: LlamaRecipe | None = None) -> Path:
    """Return the cached Hugging Face folder of the trained tiny Llama, training it on first use (minutes)."""
    recipe = recipe or TINY_LLAMA_RECIPE
    check_recipe(recipe, LlamaRecipe)
    return ensure_artefact("tiny_llama", recipe, TINY_LLAMA_RECIPE, lambda tmp: _train_into(tmp, recipe, progress))


def tiny_llama(pretrained: bool = True, progress: bool = True, *,
               recipe: LlamaRecipe | None = None) -> tuple[Any, Any]:
    """Return `(LlamaForCausalLM, tokenizer)`: trained and cached (pretrained=True) or freshly initialised.

    Args:
        pretrained: Load the cached trained model (training it on first use); False gives random weights.
        progress: Show a progress bar while training.
        recipe: Training recipe; default `TINY_LLAMA_RECIPE` (hidden 256, 4 layers, 8 heads, 2 KV heads, ~2.8M
            parameters). Other recipes are cached under their own name.
    """
    recipe = recipe or TINY_LLAMA_RECIPE
    check_recipe(recipe, LlamaRecipe)
    if not pretrained:
        return build_tiny_llama(recipe), build_char_tokenizer(recipe.max_position_embeddings)
    from transformers import AutoTokenizer, LlamaForCausalLM

    path = tiny_llama_path(progress, recipe=recipe)
    model = LlamaForCausalLM.from_pretrained(path, local_files_only=True)
    return model.eval(), AutoTokenizer.from_pretrained(path, local_files_only=True)


def _lr_at(step: int, recipe: LlamaRecipe) -> float:
    """Linear warm-up, then cosine decay to `min_lr_ratio * lr` at the last step."""
    if step < recipe.warmup_steps:
        return recipe.lr * (step + 1) / recipe.warmup_steps
    span = max(1, recipe.steps - recipe.warmup_steps)
    cos = 0.5 * (1 + math.cos(math.pi * min(1.0, (step - recipe.warmup_steps) / span)))
    return recipe.lr * (recipe.min_lr_ratio + (1 - recipe.min_lr_ratio) * cos)


def train_lm(model: Any, ids: torch.Tensor, recipe: LlamaRecipe, progress: bool = True) -> list[float]:
    """Train a causal LM on random `seq_len` windows of `ids` for `recipe.steps` steps; return the step losses."""
    from tqdm.auto import tqdm

    gen = torch.Generator().manual_seed(recipe.seed)
    decay = [p for p in model.parameters() if p.ndim >= 2]
    no_decay = [p for p in model.parameters() if p.ndim < 2]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": recipe.weight_decay},
                             {"params": no_decay, "weight_decay": 0.0}], lr=recipe.lr, betas=(0.9, 0.95))
    offsets = torch.arange(recipe.seq_len)
    losses = []
    model.train()
    with tqdm(range(recipe.steps), desc="tiny_llama", disable=not progress, leave=False) as bar:
        for step in bar:
            for group in opt.param_groups:
                group["lr"] = _lr_at(step, recipe)
            starts = torch.randint(0, len(ids) - recipe.seq_len, (recipe.batch_size, 1), generator=gen)
            x = ids[starts + offsets]
            loss = model(input_ids=x, labels=x).loss
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), recipe.grad_clip)
            opt.step()
            losses.append(loss.detach().item())
            bar.set_postfix(loss=f"{losses[-1]:.3f}")
    model.eval()
    return losses


def _encode(text: str, limit: int | None) -> torch.Tensor:
    ids = torch.from_numpy(encode_chars(text))  # == the saved tokenizer's ids, without its per-character overhead
    return ids[:limit] if limit is not None else ids


def _train_into(folder: Path, recipe: LlamaRecipe, progress: bool) -> dict[str, Any]:
    splits = load_dataset("shakespeare")
    tokenizer = build_char_tokenizer(recipe.max_position_embeddings)
    train_ids = _encode(splits.train.text, None)
    val_ids = _encode(splits.val.text, recipe.eval_max_tokens)
    test_ids = _encode(splits.test.text, recipe.eval_max_tokens)
    with torch.random.fork_rng(devices=[]):  # seeded init without disturbing the caller's RNG
        torch.manual_seed(recipe.seed)
        model = build_tiny_llama(recipe)
    start, cpu_start = time.perf_counter(), time.process_time()
    losses = train_lm(model, train_ids, recipe, progress)
    seconds, cpu_seconds = time.perf_counter() - start, time.process_time() - cpu_start
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)

    eval_start = time.perf_counter()
    vocab = len(tokenizer)
    window = {"seq_len": recipe.eval_seq_len, "stride": recipe.eval_seq_len}
    tr, va, te = train_ids.numpy(), val_ids.numpy(), test_ids.numpy()
    # The bigram's smoothing is chosen on validation, as a fair baseline would be tuned.
    alpha = min(recipe.bigram_alphas, key=lambda a: bigram_perplexity(tr, va, vocab, alpha=a, **window))
    metrics = {
        "val_perplexity": perplexity(model, val_ids, progress=progress, **window),
        "test_perplexity": perplexity(model, test_ids, progress=progress, **window),
        "unigram_val_perplexity": unigram_perplexity(tr, va, vocab, alpha=1.0, **window),
        "unigram_test_perplexity": unigram_perplexity(tr, te, vocab, alpha=1.0, **window),
        "bigram_val_perplexity": bigram_perplexity(tr, va, vocab, alpha=alpha, **window),
        "bigram_test_perplexity": bigram_perplexity(tr, te, vocab, alpha=alpha, **window),
        "bigram_alpha": alpha, "unigram_alpha": 1.0,
        "final_train_loss": float(np.mean(losses[-20:])),
        "eval_tokens": {"val": len(val_ids), "test": len(test_ids)}, "train_tokens": len(train_ids),
        "protocol": f"non-overlapping windows of {recipe.eval_seq_len} tokens, mean NLL of every token but each "
                    "window's first, exp (prunekit.data.perplexity)",
    }
    data = {"dataset": "shakespeare", "split": splits.info.split, "split_sizes": splits.info.split_sizes,
            "tokenizer": f"character-level, {vocab} tokens (prunekit.data.tokenizer)"}
    return {"data": data, "metrics": metrics, "params": sum(p.numel() for p in model.parameters()),
            "train_seconds": round(seconds, 2), "train_cpu_seconds": round(cpu_seconds, 2),
            "eval_seconds": round(time.perf_counter() - eval_start, 2),
            "tokens_seen": recipe.steps * recipe.batch_size * recipe.seq_len,
            "torch_threads": torch.get_num_threads()}
