"""Benchmark (CUDA only): dense vs 2:4 semi-structured sparse Linear latency on the GPU at hand.

For each weight shape (out x in: MiniLM's and Llama-like ones) and each token count (batch x seq flattened), a
random fp16 (or bf16) weight is pruned 2:4 by magnitude (the 2 largest of every 4 consecutive inputs kept), then
`F.linear(x, W)` with W dense vs W as `torch.sparse.to_sparse_semi_structured(W)` is timed with CUDA events
(warm-up first, median of `--iters`). The table gives both times, the speedup dense / 2:4 and the max |diff|.
Part 2 runs the real module path: MiniLM (`prunekit.data.minilm_path()`) pruned 2:4 with `prunekit.prune`,
finalized, fp16 on CUDA, `prunekit.runtime.to_semi_structured`, end to end dense vs 2:4 (cosine of outputs).

Without CUDA the script stops at once with a clear message (exit code 2).

Run:  python benchmarks/gpu_24.py --out gpu_24.md
"""

from __future__ import annotations

import argparse
import copy
import statistics
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

SHAPES = ["384x384", "1536x384", "384x1536", "4096x4096", "11008x4096", "4096x11008", "14336x4096"]


def two_four(out_f: int, in_f: int, dtype: torch.dtype) -> torch.Tensor:
    w = torch.randn(out_f, in_f, device="cuda", dtype=dtype)
    groups = w.reshape(out_f, -1, 4)
    drop = groups.abs().argsort(dim=-1)[..., :2]
    return groups.scatter(-1, drop, 0).reshape(out_f, in_f)


def cuda_time(fn, warmup: int, iters: int) -> float:
    """Median milliseconds of `fn()` over `iters` CUDA-event-timed calls after `warmup` calls."""
    for _ in range(warmup):
        fn()
    torch.cuda.synchronize()
    times = []
    for _ in range(iters):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        fn()
        end.record()
        end.synchronize()
        times.append(start.elapsed_time(end))
    return statistics.median(times)


def layer_table(shapes, tokens, dtype, warmup, iters) -> str:
    from torch.sparse import to_sparse_semi_structured

    lines = ["| weight (out x in) | tokens | dense ms | 2:4 ms | speedup | max abs diff |", "|---|---|---|---|---|---|"]
    for shape in shapes:
        out_f, in_f = (int(v) for v in shape.split("x"))
        w = two_four(out_f, in_f, dtype)
        try:
            ws = to_sparse_semi_structured(w)
        except Exception as exc:  # noqa: BLE001 - report and go on with the next shape
            lines.append(f"| {shape} | - | - | - | conversion failed: {type(exc).__name__}: {exc} | - |")
            continue
        for n in tokens:
            x = torch.randn(n, in_f, device="cuda", dtype=dtype)
            with torch.inference_mode():
                try:
                    diff = float((F.linear(x, w) - F.linear(x, ws)).abs().max())
                    dense = cuda_time(lambda: F.linear(x, w), warmup, iters)
                    sparse = cuda_time(lambda: F.linear(x, ws), warmup, iters)
                    row = f"| {shape} | {n} | {dense:.4f} | {sparse:.4f} | {dense / sparse:.2f}x | {diff:.1e} |"
                except Exception as exc:  # noqa: BLE001
                    row = f"| {shape} | {n} | - | - | failed: {type(exc).__name__}: {str(exc)[:80]} | - |"
            lines.append(row)
            print(row, flush=True)
    return "\n".join(lines)


def minilm_table(batches, seq, dtype, warmup, iters) -> str:
    from transformers import AutoModel

    import prunekit
    from prunekit.api import stage
    from prunekit.data import minilm_path
    from prunekit.runtime import to_semi_structured

    plain = AutoModel.from_pretrained(minilm_path()).eval()
    names = [n for n, m in plain.named_modules() if isinstance(m, nn.Linear)]
    prunekit.prune(plain, stage("magnitude", sparsity=0.5, pattern="2:4", targets=names, protect_first=False,
                                protect_last=False, strict=True))
    prunekit.finalize(plain)
    dense = plain.to("cuda", dtype)
    sparse = copy.deepcopy(dense)
    report = to_semi_structured(sparse)
    lines = [f"MiniLM 2:4 ({len(report.converted)} of {len(names)} Linear converted; skipped: "
             f"{sorted(set(report.skipped.values())) or 'none'})", "",
             "| batch x seq | dense ms | 2:4 ms | speedup | cosine |", "|---|---|---|---|---|"]
    for batch in batches:
        ids = torch.randint(0, dense.config.vocab_size, (batch, seq), device="cuda")
        inputs = {"input_ids": ids, "attention_mask": torch.ones_like(ids)}
        with torch.inference_mode():
            a = dense(**inputs).last_hidden_state.float().flatten()
            b = sparse(**inputs).last_hidden_state.float().flatten()
            d = cuda_time(lambda: dense(**inputs), warmup, iters)
            s = cuda_time(lambda: sparse(**inputs), warmup, iters)
        cos = float(F.cosine_similarity(a, b, dim=0))
        lines.append(f"| {batch}x{seq} | {d:.3f} | {s:.3f} | {d / s:.2f}x | {cos:.5f} |")
        print(lines[-1], flush=True)
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shapes", nargs="+", default=SHAPES, help="out x in")
    parser.add_argument("--tokens", type=int, nargs="+", default=[1, 16, 64, 256, 1024, 4096, 16384])
    parser.add_argument("--dtype", choices=("float16", "bfloat16"), default="float16")
    parser.add_argument("--batches", type=int, nargs="+", default=[1, 8, 32, 128], help="MiniLM batches (seq 128)")
    parser.add_argument("--seq", type=int, default=128)
    parser.add_argument("--warmup", type=int, default=10)
    parser.add_argument("--iters", type=int, default=50)
    parser.add_argument("--skip-minilm", action="store_true")
    parser.add_argument("--out", type=Path)
    args = parser.parse_args(argv)
    if not torch.cuda.is_available():
        print(f"gpu_24.py: 2:4 semi-structured kernels need CUDA (torch.cuda.is_available() is False; torch "
              f"{torch.__version__}); nothing measured", file=sys.stderr)
        return 2
    start = time.perf_counter()
    dtype = getattr(torch, args.dtype)
    props = torch.cuda.get_device_properties(0)
    from torch.sparse import SparseSemiStructuredTensor

    setup = (f"{props.name} (sm {props.major}.{props.minor}), torch {torch.__version__}, CUDA {torch.version.cuda}, "
             f"{args.dtype}, backend {'CUTLASS' if SparseSemiStructuredTensor._FORCE_CUTLASS else 'cuSPARSELt'}"
             f" (torch default), median of {args.iters} after {args.warmup} warm-up")
    print(setup, flush=True)
    parts = [layer_table(args.shapes, args.tokens, dtype, args.warmup, args.iters)]
    if not args.skip_minilm:
        try:
            parts.append(minilm_table(args.batches, args.seq, dtype, args.warmup, args.iters))
        except Exception as exc:  # noqa: BLE001 - the layer table above still counts
            parts.append(f"MiniLM part failed: {type(exc).__name__}: {exc}")
            print(parts[-1], flush=True)
    setup += f"; run took {time.perf_counter() - start:.0f} s"
    print(setup)
    if args.out is not None:
        command = "python benchmarks/gpu_24.py " + " ".join(sys.argv[1:] if argv is None else argv)
        args.out.write_text("\n\n".join(parts) + f"\n\n{setup}.\n\nCommand:\n\n```\n{command}\n```\n",
                            encoding="utf-8")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
