"""Scaling of one-shot LLM pruning: time and peak memory of wanda / sparsegpt (50%) on random-weight Llamas of three
sizes, with the runner's activations in RAM and spilled to disk.

    python benchmarks/llm_scaling.py [--nsamples 16] [--seq-len 256] [--sizes small,medium,large]
        [--methods wanda,sparsegpt]

Models (random weights, GQA with 4 query heads per key-value head, intermediate = 2 x hidden, vocab 1024): small
hidden 256 x 4 blocks, medium 512 x 8, large 1024 x 8. Every Linear in the blocks is pruned (lm_head dense).
Calibration: `nsamples` random token rows of `seq_len` (passed as `data`, so no text is tokenized). Each run is a fresh
child process with 1 torch thread and MALLOC_MMAP_THRESHOLD_=131072 (freed tensors go back to the OS, so RSS tracks
live memory). "peak growth" = VmHWM - VmRSS just before pruning (peak counter reset via /proc/self/clear_refs), i.e.
the resident memory pruning added on top of the loaded model; "cache" = bytes of the block-input cache (hidden
states + rotary cos / sin, all samples). Spill runs use memory_budget 0 (every sample on disk, in the temp folder).
Time per block = total / blocks. Linux only.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from pathlib import Path

SIZES = {"small": (256, 4), "medium": (512, 8), "large": (1024, 8)}


def _status(key: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1]) * 1024
    raise RuntimeError(f"no {key} in /proc/self/status")


def child(size: str, method: str, spill: bool, nsamples: int, seq_len: int) -> None:
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    from prunekit.llm import capture_block_inputs, find_blocks
    from prunekit.llm.spill import call_bytes
    import prunekit.methods  # noqa: F401  (registers the methods)
    from prunekit.registry import METHODS
    from prunekit.methods.base import PruneContext
    from prunekit.recipes.schema import build_config

    torch.set_num_threads(1)
    torch.manual_seed(0)
    hidden, layers = SIZES[size]
    heads = hidden // 64
    cfg = LlamaConfig(vocab_size=1024, hidden_size=hidden, intermediate_size=2 * hidden, num_hidden_layers=layers,
                      num_attention_heads=heads, num_key_value_heads=heads // 4, max_position_embeddings=seq_len)
    model = LlamaForCausalLM(cfg).eval()
    block_params = sum(p.numel() for p in find_blocks(model)[1][0].parameters())
    ids = torch.randint(0, 1024, (nsamples, seq_len), generator=torch.Generator().manual_seed(0))
    one = capture_block_inputs(model, find_blocks(model)[1][0], [{"input_ids": ids[:1]}])[0]
    cache = call_bytes(one) * nsamples
    del one
    method_cls = METHODS.get(method)
    opts: dict = {"sparsity": 0.5, "calibration": {"nsamples": nsamples}}
    if spill:
        opts["memory_budget"] = 0
    config = build_config(method_cls.config_cls, opts)
    Path("/proc/self/clear_refs").write_text("5")
    base = _status("VmRSS")
    start = time.perf_counter()
    method_cls().apply(model, config, PruneContext(data=ids))
    seconds = time.perf_counter() - start
    print(block_params, layers, cache, _status("VmHWM") - base, f"{seconds:.3f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--nsamples", type=int, default=16)
    parser.add_argument("--seq-len", type=int, default=256)
    parser.add_argument("--sizes", default="small,medium,large")
    parser.add_argument("--methods", default="wanda,sparsegpt")
    parser.add_argument("--child", nargs=3, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        size, method, spill = args.child
        child(size, method, spill == "spill", args.nsamples, args.seq_len)
        return
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MALLOC_MMAP_THRESHOLD_": "131072"}
    print(f"nsamples {args.nsamples}, seq_len {args.seq_len}")
    print("| model | params / block | method | activations | cache (MB) | total (s) | per block (s) | peak growth (MB) |")
    print("|---|---|---|---|---|---|---|---|")
    for size in args.sizes.split(","):
        hidden, layers = SIZES[size]
        for method in args.methods.split(","):
            for mode in ("ram", "spill"):
                cmd = [sys.executable, __file__, "--nsamples", str(args.nsamples), "--seq-len", str(args.seq_len),
                       "--child", size, method, mode]
                out = subprocess.run(cmd, capture_output=True, text=True, env=env, check=True)
                params, blocks, cache, growth, seconds = out.stdout.split()[-5:]
                total = float(seconds)
                print(f"| {size} ({hidden} x {layers}) | {int(params) / 1e6:.2f}M | {method} | {mode} | "
                      f"{int(cache) / 1e6:.1f} | {total:.1f} | {total / int(blocks):.2f} | {int(growth) / 1e6:.1f} |",
                      flush=True)


if __name__ == "__main__":
    main()
