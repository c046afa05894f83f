"""Benchmark: torch.sparse CSR / BSR kernels vs dense on CPU, per Linear shape and sparsity, and on the real MiniLM.

Part "crossover": for each Linear weight shape (out x in) and input (batch x seq tokens), a weight pruned at random
to each sparsity (CSR) or in 4x4 blocks to the same sparsity (BSR 4x4) runs as `prunekit.runtime.SparseLinear`
(the real module: reshape, `torch.mm(sparse, x.T)`, bias) against the dense `nn.Linear` with the same zeros. Each
round is one `prunekit.runtime.InterleavedTimer` pass (the candidates in rotating order, median of `--iters` calls
each); a cell is the median over `--rounds` rounds of the within-round speedup dense / sparse. The crossover is the
lowest sparsity of the grid from which on the kernel beats dense at every higher sparsity.

Part "minilm": the real all-MiniLM-L6-v2 (`prunekit.data.minilm_path()`, `transformers.AutoModel`), every Linear
(pooler included) pruned by magnitude to `--sparsity` with each `--patterns` entry, then `prunekit.finalize`
("masked dense": zeros in dense weights). `prunekit.runtime.sparsify` (real timer) then picks per layer at the
batch's shape. End to end: p50 of `prunekit.eval.measure_latency`, the original dense, the masked dense and the
sparsified model in alternating order per round; the median over rounds of p50 and of p50 / dense p50, and the
fastest single call of each (least disturbed by other load on a shared machine). Output
agreement: cosine and max |diff| of last_hidden_state, sparsified vs masked dense.

Run:  python benchmarks/sparse_runtime.py --out /tmp/pk/sparse_runtime.md
"""

from __future__ import annotations

import argparse
import copy
import os
import statistics
import sys
import time
from pathlib import Path

import torch
from torch import Tensor, nn

import prunekit
from prunekit.api import stage
from prunekit.eval.measure import measure_latency
from prunekit.runtime import InterleavedTimer, SparseLinear, sparsify


def _parse_pair(text: str) -> tuple[int, int]:
    a, b = text.lower().split("x")
    return int(a), int(b)


def random_zeros(out_f: int, in_f: int, zeros: float, seed: int) -> nn.Linear:
    """A Linear whose weight has `zeros` of its entries set to 0 at random (exact count)."""
    torch.manual_seed(seed)
    layer = nn.Linear(in_f, out_f)
    k = round(zeros * layer.weight.numel())
    with torch.no_grad():
        layer.weight.view(-1)[torch.randperm(layer.weight.numel())[:k]] = 0
    return layer


def block_zeros(out_f: int, in_f: int, zeros: float, seed: int, block: int = 4) -> nn.Linear:
    """A Linear whose weight has `zeros` of its `block` x `block` tiles set to 0 at random (exact count)."""
    layer = random_zeros(out_f, in_f, 0.0, seed)
    tiles = (out_f // block) * (in_f // block)
    keep = torch.ones(tiles, dtype=torch.bool)
    keep[torch.randperm(tiles)[: round(zeros * tiles)]] = False
    keep = keep.reshape(out_f // block, in_f // block).repeat_interleave(block, 0).repeat_interleave(block, 1)
    with torch.no_grad():
        layer.weight.mul_(keep)
    return layer


def crossover_part(shapes, tokens, sparsities, timer, n_rounds) -> tuple[str, list[str]]:
    """The speedup table (one row per shape x tokens) and the crossover lines."""
    head = "| weight (out x in) | tokens (batch x seq) | dense ms | " + " | ".join(
        f"{s:.0%} csr / bsr4" for s in sparsities) + " | crossover csr | crossover bsr 4x4 |"
    lines = [head, "|" + "---|" * (5 + len(sparsities))]
    for out_f, in_f in shapes:
        for batch, seq in tokens:
            x = torch.randn(batch, seq, in_f)
            cells, dense_ms, wins = [], [], {"csr": [], "bsr": []}
            for i, s in enumerate(sparsities):
                dense = random_zeros(out_f, in_f, s, seed=i)
                blocky = block_zeros(out_f, in_f, s, seed=i)
                cands = {"dense": lambda m=dense: m(x), "csr": lambda m=SparseLinear.from_dense(dense, "csr"): m(x),
                         "dense_b": lambda m=blocky: m(x),
                         "bsr": lambda m=SparseLinear.from_dense(blocky, "bsr", 4): m(x)}
                rounds = [timer(f"{out_f}x{in_f}", cands) for _ in range(n_rounds)]  # ratios within a round
                csr = statistics.median(t["dense"] / t["csr"] for t in rounds)
                bsr = statistics.median(t["dense_b"] / t["bsr"] for t in rounds)
                t = {"dense": statistics.median(t["dense"] for t in rounds)}
                wins["csr"].append(csr > 1.0)
                wins["bsr"].append(bsr > 1.0)
                dense_ms.append(t["dense"])
                cells.append(f"{csr:.2f}x / {bsr:.2f}x")
            cross = {k: _crossover(v, sparsities) for k, v in wins.items()}
            lines.append(f"| {out_f}x{in_f} | {batch}x{seq} | {statistics.median(dense_ms):.3f} | "
                         + " | ".join(cells) + f" | {cross['csr']} | {cross['bsr']} |")
            print(lines[-1], flush=True)
    return "\n".join(lines), []


def _crossover(wins: list[bool], sparsities: list[float]) -> str:
    for i in range(len(wins)):
        if all(wins[i:]):
            return f"{sparsities[i]:.0%}"
    return "none"


def token_inputs(batch: int, seq: int, vocab: int, seed: int = 0) -> dict[str, Tensor]:
    ids = torch.randint(0, vocab, (batch, seq), generator=torch.Generator().manual_seed(seed))
    return {"input_ids": ids, "attention_mask": torch.ones_like(ids)}


def minilm_part(patterns, sparsity, batches, seq, rounds, iters, threads) -> str:
    from transformers import AutoModel

    from prunekit.data import minilm_path

    plain = AutoModel.from_pretrained(minilm_path()).eval()
    names = [n for n, m in plain.named_modules() if isinstance(m, nn.Linear)]
    head = ("| pattern | batch x seq | dense ms | masked dense ms | sparsified ms | speedup vs dense | "
            "speedup vs masked dense | min ms dense / masked / sparse | sparse layers | cosine vs masked | "
            "max abs diff |")
    lines = [head, "|" + "---|" * 11]
    notes = []
    for pattern in patterns:
        masked = copy.deepcopy(plain)
        prunekit.prune(masked, stage("magnitude", sparsity=sparsity, pattern=pattern, targets=names,
                                     protect_first=False, protect_last=False, strict=True))
        prunekit.finalize(masked)
        for batch in batches:
            inputs = token_inputs(batch, seq, plain.config.vocab_size)
            sparse = copy.deepcopy(masked)
            start = time.perf_counter()
            report = sparsify(sparse, inputs, threads=threads, on_slower="keep")
            took = time.perf_counter() - start
            models = {"dense": plain, "masked": masked, "sparse": sparse}
            p50 = {k: [] for k in models}
            best = {k: float("inf") for k in models}
            for r in range(rounds):
                order = list(models)[r % 3:] + list(models)[: r % 3]
                for k in order:
                    stats = measure_latency(models[k], inputs, warmup=1, iters=iters, threads=threads)
                    p50[k].append(stats.p50_ms)
                    best[k] = min(best[k], stats.min_ms)
            med = {k: statistics.median(v) for k, v in p50.items()}
            ratio = statistics.median(d / s for d, s in zip(p50["dense"], p50["sparse"]))
            ratio_m = statistics.median(d / s for d, s in zip(p50["masked"], p50["sparse"]))
            fastest = f"{best['dense']:.1f} / {best['masked']:.1f} / {best['sparse']:.1f}"
            with torch.inference_mode():
                a = masked(**inputs).last_hidden_state.flatten()
                b = sparse(**inputs).last_hidden_state.flatten()
            cos = float(torch.nn.functional.cosine_similarity(a.double(), b.double(), dim=0))
            lines.append(f"| {pattern} | {batch}x{seq} | {med['dense']:.2f} | {med['masked']:.2f} | "
                         f"{med['sparse']:.2f} | {ratio:.2f}x | {ratio_m:.2f}x | {fastest} | "
                         f"{len(report.swapped)}/{len(report.layers)} | {cos:.6f} | {float((a - b).abs().max()):.1e} |")
            print(lines[-1], flush=True)
            kinds = statistics.multimode([c.choice for c in report.layers]) if report.layers else []
            notes.append(f"{pattern}, batch {batch}: sparsify took {took:.0f} s; most common choice {kinds}; "
                         + " ".join(report.summary_lines()))
            print(notes[-1], flush=True)
    return "\n".join(lines) + "\n\n" + "\n".join(f"- {n}" for n in notes)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--part", choices=("crossover", "minilm", "all"), default="all")
    parser.add_argument("--shapes", nargs="+", default=["384x384", "1536x384", "384x1536"], help="out x in")
    parser.add_argument("--tokens", nargs="+", default=["1x8", "1x128", "8x128"], help="batch x seq")
    parser.add_argument("--sparsities", type=float, nargs="+", default=[0.5, 0.6, 0.7, 0.8, 0.9, 0.95, 0.98, 0.99])
    parser.add_argument("--patterns", nargs="+", default=["unstructured", "block:4x4"])
    parser.add_argument("--sparsity", type=float, default=0.9, help="MiniLM sparsity")
    parser.add_argument("--batches", type=int, nargs="+", default=[1, 8], help="MiniLM batch sizes")
    parser.add_argument("--seq", type=int, default=128, help="MiniLM sequence length")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--iters", type=int, default=5)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--out", type=Path, help="also write the tables as a Markdown fragment here")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    start = time.perf_counter()
    parts = []
    if args.part in ("crossover", "all"):
        timer = InterleavedTimer(rounds=1, iters=args.iters, warmup=1)
        table, _ = crossover_part([_parse_pair(s) for s in args.shapes], [_parse_pair(t) for t in args.tokens],
                                  args.sparsities, timer, args.rounds)
        parts.append(table)
    if args.part in ("minilm", "all"):
        parts.append(minilm_part(args.patterns, args.sparsity, args.batches, args.seq, args.rounds, args.iters,
                                 args.threads))
    load = ", ".join(f"{v:.1f}" for v in os.getloadavg()) if hasattr(os, "getloadavg") else "n/a"
    setup = (f"torch {torch.__version__}, {torch.get_num_threads()} thread(s), {args.rounds} rounds x {args.iters} "
             f"iters; run took {time.perf_counter() - start:.0f} s; machine load average at the end {load} "
             f"on {os.cpu_count()} CPUs")
    print(setup)
    if args.out is not None:
        command = "python benchmarks/sparse_runtime.py " + " ".join(sys.argv[1:] if argv is None else argv)
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text("\n\n".join(parts) + f"\n\n{setup}.\n\nCommand:\n\n```\n{command}\n```\n",
                            encoding="utf-8")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
