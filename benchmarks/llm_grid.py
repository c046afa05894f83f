"""The one-shot LLM grid on the tiny Shakespeare Llama: magnitude / wanda / sparsegpt at 50%, 60%, 70% unstructured,
each uniform and with OWL, plus 2:4 and 4:8; held-out perplexity, pruning time and peak memory, and a dense row.

    python benchmarks/llm_grid.py [--nsamples 128] [--seq-len 256] [--max-chars N] [--lam 0.08] [--m 5]
                                  [--methods magnitude,wanda,sparsegpt] [--sparsities 0.5,0.6,0.7]
                                  [--patterns 2:4,4:8] [--owl-only] [--split test|val]

Every Linear in the transformer blocks is pruned (lm_head and embeddings stay dense); masks are finalized before
scoring. Calibration: `nsamples` windows of `seq_len` tokens from the Shakespeare train split (seed 0), tokenized once
with the model's own tokenizer and passed to every run as `data`, so all methods see the same samples and the pruning
time excludes tokenization. Perplexity: `prunekit.data.perplexity` (seq_len 256, stride 256, docs/llm.md) on the
test split (or `--split val`, for choosing OWL's lambda / M without looking at test), its first `max-chars`
characters when given.

magnitude + OWL: the OWL allocation (`prunekit.llm.oneshot.owl_allocation`, computed from the same calibration
samples, its time included) given to magnitude as one stage per block. Peak memory: the process's peak resident set
during pruning (VmHWM, reset through /proc/self/clear_refs after malloc_trim just before pruning) minus the resident
set before pruning, in MiB: the memory pruning adds on top of the loaded model and calibration token ids.
"""

from __future__ import annotations

import argparse
import ctypes
import gc
import re
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

import torch

import prunekit
from prunekit.data import TINY_LLAMA_RECIPE, load_dataset, perplexity, tiny_llama
from prunekit.data.cache import verify_artefact
from prunekit.llm.calibration import calibration_samples
from prunekit.llm.config import CalibrationConfig
from prunekit.llm.oneshot import owl_allocation
from prunekit.masks import finalize
from prunekit.methods.wanda.config import WandaConfig

BLOCKS = r"re:model\.layers\..*"


def _status_kib(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    return 0


def _reset_peak() -> bool:
    """Return freed heap pages to the OS (so the baseline is memory in use), then reset the peak to the current RSS."""
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass
    try:
        Path("/proc/self/clear_refs").write_text("5")
        return True
    except OSError:
        return False


def _stages(method: str, shape: dict[str, Any], owl: dict[str, float] | None, model: Any, data: Any) -> list[dict]:
    base = {"method": method, "targets": [BLOCKS]}
    if method != "magnitude":
        return [{**base, **shape, **({"owl": owl} if owl else {})}]
    base["protect_first"] = False  # same layers as the one-shot methods
    if not owl:
        return [{**base, **shape}]
    cfg = WandaConfig(sparsity=shape["sparsity"], owl=owl, targets=(BLOCKS,))
    alloc = owl_allocation(model, cfg, data=data)
    return [{**base, "targets": [rf"re:model\.layers\.{i}\..*"], "sparsity": s} for i, s in sorted(alloc.items())]


def _block_sparsities(model: Any) -> str:
    per: dict[int, list[int]] = {}
    for name, module in model.named_modules():
        m = re.fullmatch(r"model\.layers\.(\d+)\..*", name)
        if m and isinstance(module, torch.nn.Linear):
            z = per.setdefault(int(m.group(1)), [0, 0])
            z[0] += int((module.weight == 0).sum())
            z[1] += module.weight.numel()
    return " / ".join(f"{100 * z / n:.0f}" for _, (z, n) in sorted(per.items()))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--nsamples", type=int, default=128)
    parser.add_argument("--seq-len", type=int, default=256)
    parser.add_argument("--max-chars", type=int, default=None, help="score only this prefix of the test split")
    parser.add_argument("--lam", type=float, default=0.08, help="OWL lambda")
    parser.add_argument("--m", type=float, default=5.0, help="OWL M")
    parser.add_argument("--methods", default="magnitude,wanda,sparsegpt")
    parser.add_argument("--sparsities", default="0.5,0.6,0.7")
    parser.add_argument("--patterns", default="2:4,4:8")
    parser.add_argument("--split", default="test", choices=["val", "test"], help="held-out split to score")
    parser.add_argument("--owl-only", action="store_true", help="skip the dense and uniform rows (OWL sweeps)")
    args = parser.parse_args()
    torch.set_num_threads(1)
    if verify_artefact("tiny_llama", asdict(TINY_LLAMA_RECIPE)) is None:
        raise SystemExit("the tiny Llama is not trained yet; run `python -m prunekit.data` first")
    text = getattr(load_dataset("shakespeare"), args.split).text[: args.max_chars]
    model, tok = tiny_llama(progress=False)
    cfg = CalibrationConfig(nsamples=args.nsamples, seq_len=args.seq_len, seed=0)
    data = [s["input_ids"] for s in calibration_samples(model, cfg)]
    calibration = {"nsamples": args.nsamples}
    owl = {"lambda": args.lam, "M": args.m}
    methods = args.methods.split(",")
    settings: list[tuple[str, dict[str, Any], bool]] = []
    for s in (float(v) for v in args.sparsities.split(",") if v):
        settings += [] if args.owl_only else [(f"{s:.0%}", {"sparsity": s}, False)]
        settings += [(f"{s:.0%} OWL", {"sparsity": s}, True)]
    settings += [(p, {"pattern": p}, False) for p in args.patterns.split(",") if p]
    print(f"| method | sparsity | {args.split} perplexity | pruning time (s) | peak memory (MiB) | block sparsity % |")
    print("|---|---|---|---|---|---|")
    if not args.owl_only:
        print(f"| dense | - | {perplexity(model, tok, text):.3f} | 0.0 | - | - |", flush=True)
    for label, shape, with_owl in settings:
        for method in methods:
            model, tok = tiny_llama(progress=False)
            gc.collect()
            peak_ok = _reset_peak()
            before = _status_kib("VmRSS")
            start = time.perf_counter()
            stages = _stages(method, shape, owl if with_owl else None, model, data)
            if method != "magnitude":
                stages = [{**st, "calibration": calibration} for st in stages]
            prunekit.prune(model, {"stages": stages}, data=data)
            seconds = time.perf_counter() - start
            peak = f"{(_status_kib('VmHWM') - before) / 1024:.0f}" if peak_ok else "n/a"
            finalize(model)
            ppl = perplexity(model, tok, text)
            print(f"| {method} | {label} | {ppl:.3f} | {seconds:.1f} | {peak} | {_block_sparsities(model)} |",
                  flush=True)


if __name__ == "__main__":
    main()
