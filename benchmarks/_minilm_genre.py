"""Shared helpers for the MiniLM genre benchmarks (movement pruning, Taylor head pruning).

The task: Shakespeare passages -> comedy / history / tragedy (`load_dataset("shakespeare-genre")`, 3 balanced
classes, chance 33%), a fixed subset of each split (the splits are already shuffled with a fixed seed, so the first
`n` items are a seeded, roughly balanced sample), tokenized with MiniLM's own tokenizer to `max_len` tokens.
The model: `transformers.BertForSequenceClassification.from_pretrained(minilm_path(), num_labels=3)`, offline (the
classifier head is new, seeded). Everything here runs on CPU; call `torch.set_num_threads(1)` in the script.

Stable API (imported by minilm_movement.py and the head-pruning benchmark):
    load_genre(n_train=3000, n_val=600, n_test=900, max_len=64) -> GenreData
    build_classifier(seed=0) -> BertForSequenceClassification (pretrained encoder, fresh 3-way head)
    train(model, data, steps, lr, batch_size=32, weight_decay=0.01, seed=0, warmup=0.1, param_groups=None,
          extra_loss=None, on_step=None, progress=None, on_optimizer=None) -> list[float] (training losses)
    evaluate(model, data, split="test", batch_size=128) -> accuracy in [0, 1]
    dense_classifier(data=None, steps=DENSE_STEPS, lr=DENSE_LR) -> fine-tuned dense model, cached in DENSE_DIR
    encoder_linears(model) -> names of the nn.Linear layers inside the encoder blocks
    ENCODER_TARGETS: the prunekit target regex for those layers (embeddings, pooler, classifier excluded)
"""

from __future__ import annotations

import math
import os
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from prunekit.data import load_dataset, minilm_path

MAX_LEN = 64
SIZES = {"train": 3000, "val": 600, "test": 900}
DENSE_STEPS = 240
DENSE_LR = 5e-5
DENSE_DIR = Path.home() / ".cache" / "prunekit" / "bench" / "minilm_genre_dense"
ENCODER_TARGETS = ["re:bert\\.encoder\\.layer\\..*"]


@dataclass
class Split:
    """One tokenized split: input ids and attention mask (N, T) int64, labels (N,) int64."""

    input_ids: torch.Tensor
    attention_mask: torch.Tensor
    labels: torch.Tensor

    def __len__(self) -> int:
        return int(self.labels.numel())

    def batch(self, idx: torch.Tensor) -> dict[str, torch.Tensor]:
        """The model keyword inputs for rows `idx`, trimmed to the longest real sequence in the batch."""
        mask = self.attention_mask[idx]
        width = max(1, int(mask.sum(1).max()))
        return {"input_ids": self.input_ids[idx, :width], "attention_mask": mask[:, :width]}


@dataclass
class GenreData:
    """The tokenized train / val / test subsets and the settings that produced them."""

    train: Split
    val: Split
    test: Split
    max_len: int

    def split(self, name: str) -> Split:
        if name not in ("train", "val", "test"):
            raise ValueError(f"split must be train, val or test, got {name!r}")
        return getattr(self, name)

    def describe(self) -> str:
        return (f"shakespeare-genre, first {len(self.train)} train / {len(self.val)} val / {len(self.test)} test "
                f"passages, MiniLM tokenizer, max {self.max_len} tokens")


def tokenizer():
    """MiniLM's own tokenizer, from its local folder."""
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(minilm_path())


def load_genre(n_train: int = SIZES["train"], n_val: int = SIZES["val"], n_test: int = SIZES["test"],
               max_len: int = MAX_LEN) -> GenreData:
    """Tokenize the first `n_*` passages of each shakespeare-genre split (padded to `max_len`)."""
    genre = load_dataset("shakespeare-genre")
    tok = tokenizer()

    def encode(items: list[tuple[str, int]]) -> Split:
        enc = tok([t for t, _ in items], padding="max_length", truncation=True, max_length=max_len,
                  return_tensors="pt")
        return Split(enc["input_ids"], enc["attention_mask"], torch.tensor([y for _, y in items]))

    return GenreData(encode(genre.train.items[:n_train]), encode(genre.val.items[:n_val]),
                     encode(genre.test.items[:n_test]), max_len)


def build_classifier(seed: int = 0) -> nn.Module:
    """The pretrained MiniLM encoder with a fresh (seeded) 3-way classification head, offline."""
    from transformers import BertForSequenceClassification
    from transformers.utils import logging as hf_logging

    torch.manual_seed(seed)
    verbosity = hf_logging.get_verbosity()
    hf_logging.set_verbosity_error()  # "newly initialized classifier" is expected here
    try:
        return BertForSequenceClassification.from_pretrained(minilm_path(), num_labels=3)
    finally:
        hf_logging.set_verbosity(verbosity)


def encoder_linears(model: nn.Module) -> list[str]:
    """Names of the nn.Linear layers inside the encoder blocks (what the benchmarks prune)."""
    return [n for n, m in model.named_modules() if isinstance(m, nn.Linear) and ".encoder.layer." in f".{n}"]


def batches(n: int, batch_size: int, steps: int, seed: int):
    """Deterministic mini-batch indices: seeded permutations of range(n), one after another, `steps` batches."""
    gen = torch.Generator().manual_seed(seed)
    perm, pos = torch.randperm(n, generator=gen), 0
    for _ in range(steps):
        if pos + batch_size > n:
            perm, pos = torch.randperm(n, generator=gen), 0
        yield perm[pos:pos + batch_size]
        pos += batch_size


def train(model: nn.Module, data: GenreData, steps: int, lr: float, batch_size: int = 32,
          weight_decay: float = 0.01, seed: int = 0, warmup: float = 0.1,
          param_groups: list[dict] | None = None, extra_loss: Callable[[], torch.Tensor] | None = None,
          on_step: Callable[[int], None] | None = None, progress: str | None = None,
          on_optimizer: Callable[[torch.optim.Optimizer], None] | None = None) -> list[float]:
    """Fine-tune on the train subset with AdamW, linear warm-up then cosine decay of every group's lr.

    Args:
        param_groups: AdamW parameter groups (e.g. movement scores with their own lr); default: every parameter
            that requires grad, at `lr` / `weight_decay`.
        extra_loss: called each step, added to the cross-entropy (e.g. a soft-movement regulariser).
        on_step: called with the 1-based global step after each optimizer step (e.g. `pruner.step`).
        progress: a label; when given, a line with the mean loss is printed every ~10% of the steps.
        on_optimizer: called once with the AdamW optimizer before the first step (e.g. `pruner.attach_optimizer`).
    Returns the per-step training losses.
    """
    groups = param_groups or [{"params": [p for p in model.parameters() if p.requires_grad]}]
    opt = torch.optim.AdamW(groups, lr=lr, weight_decay=weight_decay)
    n_warm = int(warmup * steps)

    def factor(step: int) -> float:
        if step < n_warm:
            return (step + 1) / n_warm
        return 0.5 * (1 + math.cos(math.pi * (step - n_warm) / max(1, steps - n_warm)))

    sched = torch.optim.lr_scheduler.LambdaLR(opt, factor)
    if on_optimizer is not None:
        on_optimizer(opt)
    losses: list[float] = []
    model.train()
    start = time.perf_counter()
    for step, idx in enumerate(batches(len(data.train), batch_size, steps, seed), start=1):
        out = model(**data.train.batch(idx))
        loss = nn.functional.cross_entropy(out.logits, data.train.labels[idx])
        total = loss + extra_loss() if extra_loss is not None else loss
        opt.zero_grad(set_to_none=True)
        total.backward()
        opt.step()
        sched.step()
        losses.append(float(loss.detach()))
        if on_step is not None:
            on_step(step)
        if progress and (step % max(1, steps // 10) == 0 or step == steps):
            recent = losses[-max(1, steps // 10):]
            print(f"  [{progress}] step {step}/{steps} loss {sum(recent) / len(recent):.3f} "
                  f"({time.perf_counter() - start:.0f}s)", flush=True)
    model.eval()
    return losses


@torch.inference_mode()
def evaluate(model: nn.Module, data: GenreData, split: str = "test", batch_size: int = 128) -> float:
    """Accuracy of `model` on one tokenized split."""
    part = data.split(split)
    was_training = model.training
    model.eval()
    correct = 0
    for i in range(0, len(part), batch_size):
        idx = torch.arange(i, min(i + batch_size, len(part)))
        correct += int((model(**part.batch(idx)).logits.argmax(-1) == part.labels[idx]).sum())
    model.train(was_training)
    return correct / max(1, len(part))


def dense_classifier(data: GenreData | None = None, steps: int = DENSE_STEPS, lr: float = DENSE_LR,
                     folder: Path = DENSE_DIR) -> nn.Module:
    """The fine-tuned dense classifier: loaded from `folder` when present, else fine-tuned once and saved there.

    The cache is keyed by nothing but the folder: delete it to re-train with other settings. While another process
    fine-tunes it (a `<folder>.lock` file holding a live pid), this waits for that result instead.
    """
    from transformers import BertForSequenceClassification

    lock = folder.with_name(folder.name + ".lock")  # another process fine-tuning it: wait instead of repeating it
    while not (folder / "config.json").is_file() and _holder(lock) is not None:
        print(f"waiting for the dense fine-tune of pid {_holder(lock)} ({lock})", flush=True)
        time.sleep(15)
    if (folder / "config.json").is_file():
        return BertForSequenceClassification.from_pretrained(folder).eval()
    folder.parent.mkdir(parents=True, exist_ok=True)
    lock.write_text(str(os.getpid()))
    try:
        model = _fine_tune_dense(data, steps, lr, folder)
    finally:
        lock.unlink(missing_ok=True)
    return model


def _holder(lock: Path) -> int | None:
    """The pid in `lock` when that process is alive, else None."""
    try:
        pid = int(lock.read_text().strip())
        os.kill(pid, 0)
    except (OSError, ValueError):
        return None
    return pid


def _fine_tune_dense(data: GenreData | None, steps: int, lr: float, folder: Path) -> nn.Module:
    data = data or load_genre()
    model = build_classifier(seed=0)
    train(model, data, steps=steps, lr=lr, seed=0, progress="dense fine-tune")
    folder.parent.mkdir(parents=True, exist_ok=True)
    tmp = folder.with_name(folder.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    model.save_pretrained(tmp)
    tokenizer().save_pretrained(tmp)
    if folder.exists() and not (folder / "config.json").is_file():
        shutil.rmtree(folder)  # an incomplete earlier attempt
    if not folder.exists():
        tmp.replace(folder)  # atomic: a half-written cache is never picked up
    return model.eval()
