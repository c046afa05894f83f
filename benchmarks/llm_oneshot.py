"""One-shot pruning of the tiny Shakespeare Llama: held-out (test split) perplexity of dense / magnitude / wanda /
sparsegpt at 50% unstructured and 2:4, with the pruning time.

    python benchmarks/llm_oneshot.py [--nsamples 128] [--seq-len 256] [--max-chars N]

Calibration: `nsamples` windows of `seq_len` characters from the Shakespeare train split (seed 0), tokenized with the
model's own tokenizer (found next to the model). Perplexity: `prunekit.data.perplexity` on the test split (its first
`max-chars` characters when given; seq_len 256, stride 256). magnitude prunes the same layers (every Linear in the blocks; lm_head left dense).
"""

from __future__ import annotations

import argparse
import time
from dataclasses import asdict

import prunekit
from prunekit.data import TINY_LLAMA_RECIPE, load_dataset, perplexity, tiny_llama
from prunekit.data.cache import verify_artefact
from prunekit.masks import finalize


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--nsamples", type=int, default=128)
    parser.add_argument("--seq-len", type=int, default=256)
    parser.add_argument("--max-chars", type=int, default=None, help="score only this prefix of the test split")
    args = parser.parse_args()
    if verify_artefact("tiny_llama", asdict(TINY_LLAMA_RECIPE)) is None:
        raise SystemExit("the tiny Llama is not trained yet; run `python -m prunekit.data` first")
    text = load_dataset("shakespeare").test.text[: args.max_chars]
    calibration = {"nsamples": args.nsamples, "seq_len": args.seq_len, "seed": 0}
    model, tok = tiny_llama(progress=False)
    rows = [("dense", "-", perplexity(model, tok, text), 0.0)]
    for pattern in ("unstructured", "2:4"):
        shape = {"sparsity": 0.5} if pattern == "unstructured" else {"pattern": "2:4"}
        for method in ("magnitude", "wanda", "sparsegpt"):
            model, tok = tiny_llama(progress=False)
            stage = {"method": method, **shape, "targets": ["re:model\\.layers\\..*"]}
            if method == "magnitude":
                stage["protect_first"] = False  # same layers as the one-shot methods
            else:
                stage["calibration"] = calibration
            start = time.perf_counter()
            prunekit.prune(model, {"stages": [stage]})
            seconds = time.perf_counter() - start
            finalize(model)
            rows.append((method, "50%" if pattern == "unstructured" else "2:4", perplexity(model, tok, text), seconds))
    print("| method | sparsity | test perplexity | pruning time (s) |")
    print("|---|---|---|---|")
    for method, label, ppl, seconds in rows:
        print(f"| {method} | {label} | {ppl:.3f} | {seconds:.1f} |")


if __name__ == "__main__":
    main()
