"""Structured LLM pruning of the tiny Shakespeare Llama: `llm_width` (heads / MLP channels, with and without
compensation) and `llm_depth` (whole blocks): held-out perplexity, parameters, measured CPU latency, pruning time.

    python benchmarks/llm_structured.py [--nsamples 64] [--seq-len 256] [--max-chars N] [--rounds 15]

Calibration: `nsamples` windows of `seq-len` tokens from the Shakespeare train split (seed 0), tokenized by the
model's own tokenizer. Perplexity: `prunekit.data.perplexity` (seq_len 256, stride 256) on the test split (its first
`max-chars` characters when given). Latency: one forward of a (1, 256) token batch, 1 torch thread, dense and pruned
timed alternately (`rounds` rounds of 5 forwards each after a warm-up), so both see the same load; the table gives
the fastest round per forward (least disturbed by other processes) and the speed-up of the fastest and of the median
rounds.
"""

from __future__ import annotations

import argparse
import statistics
import time
from dataclasses import asdict

import torch

import prunekit
from prunekit.data import TINY_LLAMA_RECIPE, load_dataset, perplexity, tiny_llama
from prunekit.data.cache import verify_artefact

SETTINGS = [
    *[("llm_width", f"params {r}, global, {c}", {"target": {"params_ratio": r}, "scope": "global", "compensate": c})
      for r in (0.8, 0.7, 0.6) for c in ("none", "bias", "least_squares")],
    *[("llm_width", f"params 0.7, layer, {c}", {"target": {"params_ratio": 0.7}, "scope": "layer", "compensate": c})
      for c in ("none", "bias", "least_squares")],
    ("llm_depth", "drop 1, angular", {"drop": 1}),
    ("llm_depth", "drop 2, angular", {"drop": 2}),
    ("llm_depth", "drop 2, angular, contiguous", {"drop": 2, "contiguous": True}),
    ("llm_depth", "drop 2, block_influence", {"drop": 2, "metric": "block_influence"}),
]


def _params(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


@torch.inference_mode()
def interleaved_latency(dense: torch.nn.Module, pruned: torch.nn.Module, rounds: int,
                        seq: int = 256) -> tuple[list[float], list[float]]:
    """Seconds per forward of dense and pruned, one value per round, on the same (1, seq) ids, timed alternately."""
    ids = torch.randint(0, dense.config.vocab_size, (1, seq), generator=torch.Generator().manual_seed(0))
    times: dict[int, list[float]] = {0: [], 1: []}
    models = (dense, pruned)
    for m in models:
        for _ in range(3):
            m(input_ids=ids, use_cache=False)
    for _ in range(rounds):
        for k, m in enumerate(models):
            start = time.perf_counter()
            for _ in range(5):
                m(input_ids=ids, use_cache=False)
            times[k].append((time.perf_counter() - start) / 5)
    return times[0], times[1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--nsamples", type=int, default=64)
    parser.add_argument("--seq-len", type=int, default=256)
    parser.add_argument("--max-chars", type=int, default=None, help="score only this prefix of the test split")
    parser.add_argument("--rounds", type=int, default=15)
    args = parser.parse_args()
    torch.set_num_threads(1)
    if verify_artefact("tiny_llama", asdict(TINY_LLAMA_RECIPE)) is None:
        raise SystemExit("the tiny Llama is not trained yet; run `python -m prunekit.data` first")
    text = load_dataset("shakespeare").test.text[: args.max_chars]
    calibration = {"nsamples": args.nsamples, "seq_len": args.seq_len, "seed": 0}
    dense, tok = tiny_llama(progress=False)
    dense.eval()
    base = _params(dense)
    print("| method | setting | params | test perplexity | pruning time (s) | latency dense / pruned (ms, fastest) "
          "| speed-up fastest / median |")
    print("|---|---|---|---|---|---|---|")
    print(f"| dense | - | {base / 1e6:.3f}M (1.000) | {perplexity(dense, tok, text):.3f} | 0.0 | - | - |", flush=True)
    for method, label, opts in SETTINGS:
        model, _ = tiny_llama(progress=False)
        model.eval()
        start = time.perf_counter()
        prunekit.prune(model, {"stages": [{"method": method, "calibration": calibration, **opts}]})
        seconds = time.perf_counter() - start
        ppl = perplexity(model, tok, text)
        t_dense, t_pruned = interleaved_latency(dense, model, args.rounds)
        fast = min(t_dense) / min(t_pruned)
        med = statistics.median(t_dense) / statistics.median(t_pruned)
        n = _params(model)
        print(f"| {method} | {label} | {n / 1e6:.3f}M ({n / base:.3f}) | {ppl:.3f} | {seconds:.1f} | "
              f"{min(t_dense) * 1e3:.1f} / {min(t_pruned) * 1e3:.1f} | {fast:.2f}x / {med:.2f}x |", flush=True)


if __name__ == "__main__":
    main()
