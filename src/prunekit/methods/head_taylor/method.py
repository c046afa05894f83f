"""The `head_taylor` method: score attention heads by Taylor importance, remove the lowest physically through the
structured engine, fine-tune, repeat.

Per step: trace the dependency graph (which also finds the heads, `training.head_importance`), accumulate
|dL/d gate_h| over `score_batches` train batches, normalise per layer, choose the heads (`importance.head_taylor`),
cut their slices with the graph's groups (`graph.remove_slices`, the same PlanStep the `structured` method records,
so `get_plan(model)` / plan.json / `prunekit.load` replay it), check the cut model equals the uncut one with those
heads zeroed, edit the Hugging Face config when it can express the new sizes (uniform: `num_attention_heads`),
then fine-tune on the train split. The validation split is only evaluated (noted per step); the test split is
never read. Batches are deterministic for a seed.

Data: `ctx.data` with a `.train` split (and optionally `.val`) of tuples whose last element is the label. The other
elements are the model's positional inputs (a tensor; or e.g. input_ids, attention_mask) or a dict of keyword
inputs; a text item (a string, e.g. shakespeare-genre passages) is tokenized with the model's own tokenizer.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn
from torch.utils.data import Dataset, default_collate

from prunekit.errors import PrunekitError
from prunekit.importance.head_taylor import normalize_layers
from prunekit.methods.base import Method, PruneContext, StageResult, register_method
from prunekit.methods.head_taylor.config import HeadTaylorConfig
from prunekit.methods.head_taylor.surgery import HeadPruner
from prunekit.training.distill import Distiller, model_logits
from prunekit.training.finetune_loop import teacher_source
from prunekit.training.head_importance import HeadBlock, head_importance


class _Feeder:
    """Turns dataset items into (model inputs, labels) and runs the model; tokenizes text with the model's own."""

    def __init__(self, model: nn.Module, config: HeadTaylorConfig) -> None:
        self.model, self.config, self._tok = model, config, None
        p = next(iter(model.parameters()), None)
        self.device = p.device if p is not None else torch.device("cpu")

    def _tokenizer(self) -> Any:
        if self._tok is None:
            folder = self.config.tokenizer or getattr(getattr(self.model, "config", None), "name_or_path", "")
            try:
                from transformers import AutoTokenizer

                self._tok = AutoTokenizer.from_pretrained(str(folder)) if folder else None
            except Exception as exc:  # not a folder with tokenizer files: say what to give
                raise PrunekitError(f"head_taylor: text data needs a tokenizer; could not load one from {folder!r} "
                                    f"({type(exc).__name__}); set tokenizer: FOLDER or give token-id tensors") from None
            if self._tok is None:
                raise PrunekitError("head_taylor: text data needs a tokenizer; set tokenizer: FOLDER (the model has "
                                    "no name_or_path) or give token-id tensors")
        return self._tok

    def inputs(self, items: list[Any]) -> tuple[Any, Tensor]:
        if not isinstance(items[0], (tuple, list)) or len(items[0]) < 2:
            raise PrunekitError(f"head_taylor needs (inputs..., label) items, got {type(items[0]).__name__}")
        labels = torch.as_tensor([int(it[-1]) for it in items]).to(self.device)
        if isinstance(items[0][0], str):
            enc = self._tokenizer()([it[0] for it in items], padding=True, truncation=True,
                                    max_length=self.config.max_length, return_tensors="pt")
            return {k: v.to(self.device) for k, v in enc.items() if k in ("input_ids", "attention_mask")}, labels
        x = default_collate([tuple(it[:-1]) for it in items])
        if isinstance(x[0], dict):
            return {k: v.to(self.device) for k, v in x[0].items()}, labels
        return tuple(t.to(self.device) for t in x), labels

    def logits(self, x: Any) -> Tensor:
        return model_logits(self.model, x)

    def loss(self, model: nn.Module, batch: tuple[Any, Tensor]) -> Tensor:
        return nn.functional.cross_entropy(self.logits(batch[0]), batch[1])

    def batches(self, ds: Dataset, seed: int, count: int) -> list[tuple[Any, Tensor]] | Any:
        """`count` batches from seeded permutations of `ds` (a generator: one batch in memory at a time)."""
        size = min(self.config.batch_size, len(ds))
        gen = torch.Generator().manual_seed(seed)
        perm, pos = torch.randperm(len(ds), generator=gen), 0
        for _ in range(count):
            if pos + size > len(ds):
                perm, pos = torch.randperm(len(ds), generator=gen), 0
            yield self.inputs([ds[int(i)] for i in perm[pos:pos + size]])
            pos += size

    @torch.no_grad()
    def accuracy(self, ds: Dataset) -> float:
        was = self.model.training
        self.model.eval()
        correct = 0
        for start in range(0, len(ds), 128):
            x, y = self.inputs([ds[i] for i in range(start, min(start + 128, len(ds)))])
            correct += int((self.logits(x).argmax(-1) == y).sum())
        self.model.train(was)
        return correct / len(ds)


def _scores(model: nn.Module, blocks: list[HeadBlock], feeder: _Feeder, train: Dataset, config: HeadTaylorConfig,
            i: int) -> dict[str, Tensor]:
    """Per-head scores of step `i` by `config.importance`."""
    if config.importance == "taylor":
        batches = feeder.batches(train, config.seed * 7919 + i, config.score_batches)
        return head_importance(model, blocks, batches, feeder.loss, config.per_example)
    if config.importance == "random":
        gen = torch.Generator().manual_seed(config.seed * 7919 + i)
        return {b.name: torch.rand(b.heads, generator=gen) for b in blocks}
    out = {}
    for b in blocks:  # l1 of each head's output-projection input columns
        cols = model.get_submodule(b.name).weight.detach().abs().sum(0).float().cpu()
        out[b.name] = torch.zeros(b.heads).index_add_(0, b.head_of_col, cols)
    return out


def _trace_inputs(ctx: PruneContext, feeder: _Feeder, train: Dataset) -> Any:
    if ctx.example_inputs is not None:
        return ctx.example_inputs
    x, _ = feeder.inputs([train[i] for i in range(min(2, len(train)))])
    return x


@register_method
class HeadTaylorMethod(Method):
    """Attention-head pruning by Taylor importance abs(dL/d gate_h) (Michel et al. 2019), heads removed physically."""

    name = "head_taylor"
    config_cls = HeadTaylorConfig

    def apply(self, model: nn.Module, config: HeadTaylorConfig, ctx: PruneContext) -> StageResult:  # type: ignore[override]
        train, val = _splits(ctx.data)
        feeder = _Feeder(model, config)
        trace = _trace_inputs(ctx, feeder, train)
        pruner = HeadPruner(model, trace, verify=config.verify)  # raises when the model has no attention heads
        start = pruner.heads
        total_heads = sum(start.values())
        if config.uniform and len(set(start.values())) > 1:
            counts = sorted(set(start.values()))
            raise PrunekitError(f"uniform: true needs the same head count in every layer, got {counts}; "
                                "use uniform: false")
        per_layer = next(iter(start.values()))
        pool = per_layer if config.uniform else total_heads
        goal = round(config.heads_ratio * pool)
        if goal == 0:
            where = "per layer" if config.uniform else "in total"
            ratio = f"{config.heads_ratio:g}"
            raise PrunekitError(f"heads_ratio {ratio} removes round({ratio} * {pool}) = 0 heads {where}; use at least "
                                f"{1 / pool:.3g}")
        notes: list[str] = []
        distiller = None
        if config.distill is not None and config.epochs > 0:  # a frozen copy of the dense model, before any removal
            distiller = Distiller(teacher_source(model, ctx), config.distill)
            notes.append(f"fine-tuning distilled from the dense model (T={config.distill.temperature:g}, "
                         f"alpha={config.distill.alpha:g})")
        removed = 0
        left = dict(start)  # a layer left with one unit may have no prunable group any more: counted here
        for i in range(1, config.steps + 1):
            share = round(goal * i / config.steps) - removed
            if share > 0:
                scores = normalize_layers(_scores(model, pruner.blocks, feeder, train, config, i), config.normalize)
                remove, step_notes = pruner.remove(scores, share, uniform=config.uniform, min_heads=config.min_heads)
                got = sum(len(v) for v in remove.values())
                for name, heads in remove.items():
                    left[name] -= len(heads)
                removed += share if config.uniform else got
                notes.append(f"step {i}/{config.steps}: removed {got} head(s) in {len(remove)} layer(s)"
                             + "".join(f"; {n}" for n in step_notes))
            self._finetune(model, feeder, train, config, i, distiller)
            if val is not None:
                notes.append(f"step {i}/{config.steps}: val accuracy {feeder.accuracy(val):.4f}")
        layers = {n: {"status": "pruned" if left[n] < start[n] else "skipped",
                      "reason": f"heads {start[n]} -> {left[n]}"} for n in start}
        result = StageResult(method=self.name, layers=layers)
        kept = sum(left.values())
        result.notes.append(f"head_taylor: {total_heads} -> {kept} heads (importance {config.importance}, "
                            f"{'uniform' if config.uniform else 'global'}"
                            f", normalize {config.normalize}, {config.steps} step(s), {config.score_batches} scoring "
                            f"batch(es) of {config.batch_size}, fine-tune {config.epochs:g} epoch(s) per step); the "
                            "test split was not read")
        result.notes.extend(notes)
        return result

    def _finetune(self, model: nn.Module, feeder: _Feeder, train: Dataset, config: HeadTaylorConfig, i: int,
                  distiller: Distiller | None) -> None:
        steps = round(config.epochs * len(train) / min(config.batch_size, len(train)))
        if steps == 0:
            return
        params = [p for p in model.parameters() if p.requires_grad]
        opt = torch.optim.AdamW(params, lr=config.lr, weight_decay=config.weight_decay)
        sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 1.0 - s / steps)
        torch.manual_seed(config.seed + i)  # dropout
        model.train()
        try:
            for batch in feeder.batches(train, config.seed * 104_729 + i, steps):
                loss = feeder.loss(model, batch) if distiller is None else distiller.loss(model, *batch)
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                sched.step()
        finally:
            model.eval()


def _splits(data: Any) -> tuple[Dataset, Dataset | None]:
    if data is None:
        raise PrunekitError("head_taylor scores heads from gradients and needs data: pass prunekit.prune(..., "
                            "data=load_dataset('shakespeare-genre')) or `prunekit prune --data NAME`")
    train = getattr(data, "train", None)
    if train is None or len(train) == 0:
        raise PrunekitError(f"head_taylor needs data with a non-empty .train split of (inputs..., label) items, got "
                            f"{type(data).__name__}")
    val = getattr(data, "val", None)
    return train, (val if val is not None and len(val) else None)
