"""Benchmark: per-layer sparsity allocation (uniform vs ERK vs LAMP vs sensitivity) for gmp on the digits CNN.

1. Sensitivity analysis of the cached pretrained digits CNN (`prunekit.data.digits_cnn`) on the VALIDATION split:
   each prunable layer pruned alone by magnitude at 0.5 / 0.7 / 0.8 / 0.9 / 0.95 / 0.98 (what `prunekit analyze`
   does), written to a temp sensitivity.json (and, with --plot, the curves to a PNG).
2. For each sparsity and each allocation: `gmp` (cubic schedule, AdamW, cosine LR from --lr, batch 64, BN
   re-estimated at the end) for --epochs epochs, on the same default-targeted layers (first conv and classifier
   protected), from the same dense model and seed. Only the per-layer split of the sparsity differs.

Columns: test accuracy right after one-shot magnitude pruning at the allocation (no training; BatchNorm statistics
re-estimated on the train split), and after gmp, on the held-out test split (never read by the analysis or by gmp's
decisions); mean +- standard deviation over --seeds. One torch thread.

Run:  python benchmarks/allocation_digits.py --sparsities 0.9,0.95 --epochs 5 --seeds 0,1,2 \
          --plot docs/img/sensitivity_digits.png
"""

from __future__ import annotations

import argparse
import copy
import statistics
import tempfile
import time
from pathlib import Path

import torch

import prunekit
from prunekit.api import stage
from prunekit.data import digits_cnn, evaluate_classifier, example_inputs, load_dataset
from prunekit.eval.sensitivity import analyze_sensitivity
from prunekit.training.bn import recalibrate_batchnorm
from prunekit.training.pruner import Pruner

KINDS = ("uniform", "erk", "lamp", "sensitivity")


def _oneshot(dense: torch.nn.Module, s: float, alloc: dict | None, x: torch.Tensor, data) -> float:
    from prunekit.layers import execution_order

    model = copy.deepcopy(dense)
    pruner = Pruner(model, {"sparsity": s, "schedule": {"kind": "constant"}, "allocation": alloc}, total_steps=1,
                    execution_order=execution_order(model, x))
    pruner.prepare()
    pruner.finalize()
    loader = torch.utils.data.DataLoader(data.train, batch_size=64, shuffle=False)
    recalibrate_batchnorm(model, (xb for xb, _ in loader))
    return evaluate_classifier(model, data.test)


def run(sparsities: list[float], epochs: int, lr: float, seeds: list[int], plot: str | None) -> list[dict]:
    torch.set_num_threads(1)
    data = load_dataset("digits")
    dense = digits_cnn(progress=False)
    x = example_inputs("digits")
    work = Path(tempfile.mkdtemp(prefix="alloc-digits-"))
    t = time.perf_counter()
    res = analyze_sensitivity(copy.deepcopy(dense), lambda m: evaluate_classifier(m, data.val), progress=False)
    res.model, res.data = "prunekit.data:digits_cnn", "digits"
    res.to_json(work / "sensitivity.json")
    print(f"sensitivity analysis: {len(res.curves.layers)} layers x {len(res.curves.sparsities)} sparsities in "
          f"{time.perf_counter() - t:.1f} s (dense val accuracy {res.curves.dense:.4f})")
    if plot:
        res.plot(plot, title="digits CNN: each layer pruned alone (magnitude), validation accuracy")
    rows = [{"sparsity": 0.0, "kind": "dense", "oneshot": None, "test": [evaluate_classifier(dense, data.test)],
             "seconds": 0.0}]
    for s in sparsities:
        for kind in KINDS:
            alloc = None if kind == "uniform" else {"kind": kind}
            if kind == "sensitivity":
                alloc["file"] = str(work / "sensitivity.json")
            accs, t = [], time.perf_counter()
            for seed in seeds:
                model = copy.deepcopy(dense)
                prunekit.prune(model, stage("gmp", sparsity=s, epochs=epochs, lr=lr, batch_size=64, seed=seed,
                                            allocation=alloc), x, data=data)
                accs.append(evaluate_classifier(model, data.test))
            rows.append({"sparsity": s, "kind": kind, "oneshot": _oneshot(dense, s, alloc, x, data), "test": accs,
                         "seconds": (time.perf_counter() - t) / len(seeds)})
            print(f"  {s:.0%} {kind}: {accs}", flush=True)
    return rows


def render(rows: list[dict], epochs: int, lr: float, seeds: list[int]) -> str:
    lines = [f"digits CNN, gmp cubic for {epochs} epochs (lr {lr:g}, batch 64), seeds {seeds}, test split (held out)",
             "", "| sparsity | allocation | test acc, one-shot + BN re-estimate (no training) | test acc after gmp | "
             "time per run (s) |", "|---|---|---|---|---|"]
    for r in rows:
        one = f"{r['oneshot']:.4f}" if r["oneshot"] is not None else "-"
        mean = statistics.fmean(r["test"])
        spread = f" ± {statistics.stdev(r['test']):.4f}" if len(r["test"]) > 1 else ""
        lines.append(f"| {r['sparsity']:.0%} | {r['kind']} | {one} | {mean:.4f}{spread} | {r['seconds']:.1f} |")
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sparsities", default="0.9,0.95")
    ap.add_argument("--epochs", type=int, default=5)
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--seeds", default="0")
    ap.add_argument("--plot", help="write the sensitivity curves to this PNG")
    args = ap.parse_args()
    sparsities = [float(v) for v in args.sparsities.split(",")]
    seeds = [int(v) for v in args.seeds.split(",")]
    print(render(run(sparsities, args.epochs, args.lr, seeds, args.plot), args.epochs, args.lr, seeds))


if __name__ == "__main__":
    main()
