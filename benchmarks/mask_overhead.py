"""Benchmark: what masks cost at inference, before `finalize`. prunekit KeepMask vs torch.nn.utils.prune hooks.

The model is the real all-MiniLM-L6-v2 (`prunekit.data.minilm_path()`, loaded with `transformers.AutoModel`; a
6-layer BERT whose weights are mostly Linear). Every Linear layer (the pooler's included) is pruned to `--sparsity`
by L1 magnitude, four ways, all from the same dense weights:

- plain: the dense model, untouched (the reference: every ratio is variant / plain);
- prunekit masks: `prunekit.prune` with a magnitude stage, protections off, so all Linear layers carry a boolean
  KeepMask parametrization (the effective weight `original * mask` is recomputed on every forward);
- torch.nn.utils.prune: `l1_unstructured` on the same layers (a forward pre-hook recomputes `weight_orig * mask`,
  with a float mask, and stores the result as a plain attribute);
- finalized: the prunekit-masked model after `prunekit.finalize` (plain dense weights with zeros).

Latency: p50 of `prunekit.eval.measure_latency` (inference mode, warm-up first) per round; the variants run in
alternating order, round after round. The table shows the median over rounds of each variant's p50, and the median
over rounds of its p50 divided by plain's p50 in the same round. Batch 1, `--tokens` tokens of random ids, `--threads` intra-op threads.
Memory: bytes of every distinct tensor storage the model holds: parameters, buffers (the masks are buffers) and plain
tensor attributes of modules (torch.nn.utils.prune keeps the computed weight that way), each storage once.

Run:  python benchmarks/mask_overhead.py --tokens 8 128 --out mask_overhead.md
"""

from __future__ import annotations

import argparse
import copy
import statistics
import sys
import time
from pathlib import Path

import torch
from torch import Tensor, nn
from torch.nn.utils import prune as torch_prune

import prunekit
from prunekit.api import stage
from prunekit.data import minilm_path
from prunekit.eval.measure import measure_latency
from prunekit.masks import current_mask

VARIANTS = ("plain", "prunekit masks", "torch.nn.utils.prune", "finalized")


def held_bytes(model: nn.Module) -> int:
    """Bytes of the distinct storages behind parameters, buffers and plain tensor attributes of every module."""
    tensors: list[Tensor] = [*model.parameters(), *model.buffers()]
    for module in model.modules():
        tensors += [v for v in vars(module).values() if isinstance(v, Tensor)]
    sizes = {t.untyped_storage().data_ptr(): t.untyped_storage().nbytes() for t in tensors}
    return sum(sizes.values())


def build_variants(sparsity: float) -> dict[str, nn.Module]:
    """The four models of the comparison, from one load of the dense weights."""
    from transformers import AutoModel

    plain = AutoModel.from_pretrained(minilm_path()).eval()
    names = [n for n, m in plain.named_modules() if isinstance(m, nn.Linear)]
    st = stage("magnitude", sparsity=sparsity, targets=names, protect_first=False, protect_last=False, strict=True)
    masked, finalized = copy.deepcopy(plain), copy.deepcopy(plain)
    # Each pruned from its own copy of the dense model: finalizing a deep copy of a parametrized model would strip
    # the `weight` property from the class the copy shares with the original (a torch.nn.utils.parametrize trap).
    prunekit.prune(masked, st)
    prunekit.prune(finalized, st)
    prunekit.finalize(finalized)
    hooked = copy.deepcopy(plain)
    for name in names:
        torch_prune.l1_unstructured(hooked.get_submodule(name), "weight", amount=sparsity)
    return dict(zip(VARIANTS, (plain, masked, hooked, finalized)))


def token_inputs(tokens: int, vocab: int, seed: int = 0) -> dict[str, Tensor]:
    ids = torch.randint(0, vocab, (1, tokens), generator=torch.Generator().manual_seed(seed))
    return {"input_ids": ids, "attention_mask": torch.ones_like(ids)}


def check_outputs(models: dict[str, nn.Module], inputs: dict[str, Tensor]) -> float:
    """Largest output difference between the masked and the finalized model (same zeros: should be ~1e-6)."""
    with torch.inference_mode():
        a, b = (models[v](**inputs).last_hidden_state for v in ("prunekit masks", "finalized"))
    return float((a - b).abs().max())


def mask_mismatch(models: dict[str, nn.Module]) -> tuple[int, int]:
    """(weights whose keep decision differs between prunekit and torch.nn.utils.prune, weights masked).

    Both prune the same count per layer by |w|; they may differ only among weights of equal magnitude at the cut.
    """
    hooked = dict(models["torch.nn.utils.prune"].named_modules())
    differ = total = 0
    for name, module in models["prunekit masks"].named_modules():
        keep = current_mask(module)
        if keep is not None:
            differ += int((keep != hooked[name].weight_mask.bool()).sum())
            total += keep.numel()
    return differ, total


def time_variants(
    models: dict[str, nn.Module], inputs: dict[str, Tensor], rounds: int, iters: int, threads: int
) -> tuple[dict[str, float], dict[str, float]]:
    """Per variant: the median over rounds of its p50 (ms), and the median over rounds of p50 / plain's p50.

    The starting variant rotates every round; ratios are taken within a round, so slow drifts of a shared machine's
    load cancel out.
    """
    p50s: dict[str, list[float]] = {v: [] for v in VARIANTS}
    for r in range(rounds):
        for i in range(len(VARIANTS)):
            v = VARIANTS[(r + i) % len(VARIANTS)]
            p50s[v].append(measure_latency(models[v], inputs, warmup=2, iters=iters, threads=threads).p50_ms)
    ratios = {v: statistics.median(a / b for a, b in zip(p50s[v], p50s["plain"])) for v in VARIANTS}
    return {v: statistics.median(p) for v, p in p50s.items()}, ratios


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tokens", type=int, nargs="+", default=[8, 128], help="sequence lengths (batch 1)")
    parser.add_argument("--sparsity", type=float, default=0.5)
    parser.add_argument("--rounds", type=int, default=30, help="alternating rounds per sequence length")
    parser.add_argument("--iters", type=int, default=8, help="timed forwards per variant per round")
    parser.add_argument("--threads", type=int, default=1, help="intra-op CPU threads")
    parser.add_argument("--out", type=Path, help="also write the table as a Markdown fragment here")
    args = parser.parse_args(argv)

    start = time.perf_counter()
    models = build_variants(args.sparsity)
    mem = {v: held_bytes(m) for v, m in models.items()}
    vocab = models["plain"].config.vocab_size
    header = "| variant | " + " | ".join(f"p50 ms @{t} tok | ratio @{t}" for t in args.tokens) + " | memory MB | ratio |"
    rows: dict[str, list[str]] = {v: [] for v in VARIANTS}
    diffs = []
    differ, masked = mask_mismatch(models)
    for tokens in args.tokens:
        inputs = token_inputs(tokens, vocab)
        diffs.append(check_outputs(models, inputs))
        p50, ratio = time_variants(models, inputs, args.rounds, args.iters, args.threads)
        for v in VARIANTS:
            rows[v] += [f"{p50[v]:.2f}", f"{ratio[v]:.2f}x"]
    lines = [header, "|" + "---|" * (2 + 2 * len(args.tokens) + 1)]
    for v in VARIANTS:
        lines.append(f"| {v} | " + " | ".join(rows[v]) + f" | {mem[v] / 2**20:.1f} | {mem[v] / mem['plain']:.2f}x |")
    table = "\n".join(lines)
    elapsed = time.perf_counter() - start
    setup = (f"all-MiniLM-L6-v2, {sum(1 for m in models['plain'].modules() if isinstance(m, nn.Linear))} Linear "
             f"layers at {args.sparsity:.0%} sparsity, batch 1, torch {torch.__version__}, {args.threads} thread(s), "
             f"{args.rounds} rounds x {args.iters} iters; masked vs finalized output difference at most "
             f"{max(diffs):.1e}; prunekit and torch.nn.utils.prune masks differ on {differ} of {masked} weights "
             f"(equal magnitudes at the cut); run took {elapsed:.0f} s")
    print(table)
    print(setup)
    if args.out is not None:
        command = "python benchmarks/mask_overhead.py " + " ".join(sys.argv[1:] if argv is None else argv)
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(_fragment(table, setup, command), encoding="utf-8")
    return 0


def _fragment(table: str, setup: str, command: str) -> str:
    return f"""# Inference overhead of masks (before `finalize`)

Masks cost time and memory while they are attached: prunekit's KeepMask parametrization recomputes
`original * mask` in every forward and holds a boolean mask (1 byte per weight) next to the fp32 original;
`torch.nn.utils.prune` recomputes `weight_orig * mask` in a forward pre-hook, holds a float mask (4 bytes per weight)
and keeps the computed weight as a plain attribute. `prunekit.finalize` bakes the zeros in and removes all of it.

{table}

{setup}.

Latency is the median over alternating rounds of each variant's p50 (`prunekit.eval.measure_latency`, inference
mode, after warm-up); a ratio is the median over rounds of the variant's p50 over the plain model's p50 in the
same round. Memory counts each distinct storage held by the model
once: parameters, buffers (masks) and tensors kept as module attributes. The machine was shared with other jobs, so
absolute times are noisy; the ratios come from interleaved rounds.

Command (from the repository root, venv active):

```
{command}
```
"""


if __name__ == "__main__":
    raise SystemExit(main())
